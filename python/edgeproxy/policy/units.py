"""Durations and byte sizes as SREs write them: ``250ms``, ``30s``, ``5m``; ``4MiB``, ``512KiB``."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}


def parse_duration(value: Any) -> float:
    """Seconds, from a number (seconds) or a string with a unit (ms, s, m, h, d)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 250ms, 30s or 5m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("expected a duration such as 250ms, 30s or 5m")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes, from an integer or a string with a unit (KiB, MiB, GiB, KB, MB, GB)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 4MiB or 65536")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ValueError("expected a size such as 4MiB, 512KiB or 65536 (bytes)")
    if size <= 0:
        raise ValueError("a size must be greater than zero")
    return size


# The JSON Schema (for editors) says what the validators accept: a number or a string with a unit.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": _DURATION.pattern},
            ],
            "description": "Seconds, or a string with a unit: 250ms, 30s, 5m, 1h, 14d.",
        }
    ),
]
ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0},
                {"type": "string", "pattern": _SIZE.pattern},
            ],
            "description": "Bytes, or a string with a unit: 512KiB, 4MiB, 1GB.",
        }
    ),
]


def format_duration(seconds: float) -> str:
    """``250ms``, ``30s``, ``5m``, ``1h``, ``14d``: as an SRE would write it (whole minutes,
    hours and days shortened; anything else in seconds)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """``4MiB``, ``512KiB``, ``65536`` (bytes): the largest binary unit that divides it."""
    for unit in ("GiB", "MiB", "KiB"):
        step = _SIZE_UNITS[unit]
        if size >= step and size % step == 0:
            return f"{size // step}{unit}"
    return str(size)

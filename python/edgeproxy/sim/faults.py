"""Fault descriptions: what a simulated provider should do wrong, and how often."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Final

FAULT_MODES: Final = frozenset(
    {
        "none",
        "status",
        "refuse",
        "reset",
        "hang",
        "slow_first_token",
        "cut",
        "stall",
        "malformed",
        "no_done",
        "overloaded",
        "echo_key",
        "keepalive_only",
        "bad_signature",
        "huge_signature",
    }
)

_INT_FIELDS: Final = frozenset({"status", "after_tokens", "count"})
_FLOAT_FIELDS: Final = frozenset({"retry_after", "ttft", "rate"})
_OPTIONAL_FIELDS: Final = frozenset({"retry_after", "error_code", "count"})


@dataclass(frozen=True, slots=True)
class Fault:
    """One misbehaviour of a simulated provider.

    ``rate`` and ``count`` select which requests are affected; they do not apply to ``refuse``,
    which is a property of the listening socket rather than of a request.
    """

    mode: str = "none"
    status: int = 503
    retry_after: float | None = None
    error_code: str | None = None
    ttft: float = 5.0
    after_tokens: int = 3
    rate: float = 1.0
    count: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(
                f"unknown fault mode {self.mode!r}; expected one of {', '.join(sorted(FAULT_MODES))}"
            )
        _check_int("status", self.status, 400, 599)
        if self.retry_after is not None:
            _check_float("retry_after", self.retry_after, 0.0, math.inf)
        if self.error_code is not None and (
            not isinstance(self.error_code, str) or not self.error_code
        ):
            raise ValueError("fault error_code must be a non-empty string or null")
        _check_float("ttft", self.ttft, 0.0, math.inf)
        _check_int("after_tokens", self.after_tokens, 0, None)
        _check_float("rate", self.rate, 0.0, 1.0)
        if self.count is not None:
            _check_int("count", self.count, 1, None)

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Fault:
        """Build a fault from decoded JSON, raising ValueError with a readable message."""
        if not isinstance(data, Mapping):
            raise ValueError("fault must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        if "mode" not in data:
            raise ValueError("fault field 'mode' is required")
        kwargs: dict[str, object] = {}
        for key, value in data.items():
            # JSON has one number type: accept 2 for 2.0, but never bools or strings.
            if key in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            kwargs[str(key)] = value
        return cls(**kwargs)  # type: ignore[arg-type]  # values are type-checked in __post_init__


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"fault {name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"fault {name} must be {bounds}, got {value}")


def _check_float(name: str, value: object, low: float, high: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"fault {name} must be a number, got {value!r}")
    if math.isnan(value) or value < low or value > high:
        bounds = f"between {low} and {high}" if high != math.inf else f">= {low}"
        raise ValueError(f"fault {name} must be {bounds}, got {value}")


def parse_fault_spec(spec: str) -> Fault:
    """Parse a CLI fault spec such as ``status:429:retry_after=2`` or ``cut:after_tokens=5``.

    Grammar: ``MODE[:STATUS][:key=value]...``; ``,`` may be used instead of ``:`` between
    options. A bare integer is only allowed as the status of mode ``status``.
    """
    parts = [p.strip() for p in re.split(r"[:,]", spec.strip())]
    if not parts[0]:
        raise ValueError("empty fault spec")
    data: dict[str, object] = {"mode": parts[0].lower()}
    for part in parts[1:]:
        if not part:
            continue
        if "=" in part:
            key, _, raw = part.partition("=")
            key = key.strip()
            if key in data:
                raise ValueError(f"fault spec sets {key!r} twice: {spec!r}")
            data[key] = _coerce(key, raw.strip())
        elif part.isdigit() and data["mode"] == "status" and "status" not in data:
            data["status"] = int(part)
        else:
            raise ValueError(f"cannot parse {part!r} in fault spec {spec!r}; expected key=value")
    return Fault.from_dict(data)


def _coerce(key: str, raw: str) -> object:
    if key in _OPTIONAL_FIELDS and raw.lower() in {"", "none", "null"}:
        return None
    try:
        if key in _INT_FIELDS:
            return int(raw)
        if key in _FLOAT_FIELDS:
            return float(raw)
    except ValueError:
        kind = "an integer" if key in _INT_FIELDS else "a number"
        raise ValueError(f"fault {key} must be {kind}, got {raw!r}") from None
    return raw

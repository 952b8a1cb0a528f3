"""Command-line settings that a flag, an environment variable or a default can give.

Containers are configured by environment (``EDGEPROXY_PORT=9000``), people by flags; both name
the same setting. A flag wins over its variable, the variable over the default. ``--help`` shows
each setting's default and its variable, and a variable with a bad value is reported by its name
(``EDGEPROXY_PORT='x': ...``) rather than as a flag the user never typed.

A setting's argparse default is None (so "not given" is visible); ``resolve_settings`` fills in
the variable or the default after parsing, for the settings of the command that runs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SETTINGS = "_edgeproxy_settings"


@dataclass(frozen=True)
class Setting:
    dest: str
    env: str | None
    default: Any
    parse: Callable[[str], Any]


def add_setting(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    env: str | None,
    default: Any,
    parse: Callable[[str], Any],
    help: str,
    shown: str | None = None,
    metavar: str | None = None,
) -> None:
    """``flag`` (e.g. ``--port``) with ``env`` (e.g. ``EDGEPROXY_PORT``) and ``default``;
    ``shown`` is how the default reads in ``--help`` (``str(default)`` if not given)."""
    dest = flag.lstrip("-").replace("-", "_")
    where = f"default: {shown if shown is not None else default}"
    if env is not None:
        where += f"; env {env}"
    parser.add_argument(
        flag,
        dest=dest,
        default=None,
        type=_for_argparse(parse),
        metavar=metavar or dest.upper(),
        help=f"{help} ({where})",
    )
    settings: list[Setting] = list(parser.get_default(_SETTINGS) or [])
    settings.append(Setting(dest, env, default, parse))
    parser.set_defaults(**{_SETTINGS: settings})


def resolve_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """Fill every setting the flags left unset from its variable or its default; return the
    message for a variable whose value does not parse (None when all is well)."""
    for setting in getattr(args, _SETTINGS, None) or []:
        if getattr(args, setting.dest) is not None:
            continue
        raw = environ.get(setting.env) if setting.env is not None else None
        if raw is None or raw == "":
            setattr(args, setting.dest, setting.default)
            continue
        try:
            setattr(args, setting.dest, setting.parse(raw))
        except ValueError as exc:
            return f"{setting.env}={raw!r}: {exc}"
    return None


def _for_argparse(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(raw: str) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            # argparse shows ArgumentTypeError's message as it is (a ValueError's is dropped).
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


# -- parsers ---------------------------------------------------------------------------------------


def port(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("a port is 0 (any free port) to 65535")
    return value


def positive_int(raw: str) -> int:
    value = _int(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def seconds(raw: str) -> float:
    """Seconds as a number (``2.5``), not negative."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected seconds as a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number of seconds, 0 or more")
    return value


def text(raw: str) -> str:
    return raw


def one_of(choices: Sequence[str]) -> Callable[[str], str]:
    def choose(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    choose.__name__ = "choice"
    return choose


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None

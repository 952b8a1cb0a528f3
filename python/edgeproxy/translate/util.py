"""Small helpers shared by request and response translation."""

from __future__ import annotations

from typing import Any

from edgeproxy._core import TranslationError


def refuse(param: str, message: str) -> TranslationError:
    """A ``TranslationError`` naming ``param`` (``str(exc)`` is ``"param: message"``).

    The same class the Rust stream translators raise, with the same ``param`` and ``message``
    attributes; ``raise refuse("n", "...")``.
    """
    err = TranslationError(f"{param}: {message}")
    err.param = param
    err.message = message
    return err


def as_dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise refuse(param, "expected an object")
    return value


def as_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise refuse(param, "expected an array")
    return value


def as_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise refuse(param, "expected a string")
    return value

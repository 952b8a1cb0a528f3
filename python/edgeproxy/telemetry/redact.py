"""Scrub secrets from free text before it reaches a span, a metric label or a log line.

Two nets: patterns for things that look like credentials (``Bearer …``, ``sk-…``, ``api_key=…``),
and the exact values registered with ``register_secrets`` (the provider keys a policy loaded).
The telemetry facade never reads a candidate's headers in the first place; this is for text that
came from elsewhere (an upstream's error message that echoes the key, an exception string).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

REDACTED = "[REDACTED]"

_PATTERNS = re.compile(
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{4,}"
    r"|\bsk-[A-Za-z0-9_-]{8,}"
    r"|(?i:api[_-]?key|x-api-key|authorization|access[_-]?token|secret)[\"']?\s*[:=]\s*[\"']?[^\s\"',;}&]{4,}"
)

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_exact: re.Pattern[str] | None = None

# Shorter values are too likely to match ordinary text (and too weak to be real keys).
MIN_SECRET_LENGTH = 8


def register_secrets(values: Iterable[str]) -> None:
    """Add exact secret values (e.g. every provider key of a newly loaded policy)."""
    global _secrets, _exact
    with _lock:
        fresh = _secrets | {v for v in values if len(v) >= MIN_SECRET_LENGTH}
        if fresh == _secrets:
            return
        _secrets = fresh
        ordered = sorted(fresh, key=len, reverse=True)
        _exact = re.compile("|".join(re.escape(v) for v in ordered))


def clear_secrets() -> None:
    """Forget the registered values (tests)."""
    global _secrets, _exact
    with _lock:
        _secrets, _exact = frozenset(), None


def redact(text: str) -> str:
    exact = _exact
    if exact is not None:
        text = exact.sub(REDACTED, text)
    return _PATTERNS.sub(REDACTED, text)

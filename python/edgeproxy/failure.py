"""What went wrong with one upstream attempt, and whether another candidate may be tried."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FailureClass(enum.StrEnum):
    CONNECT_ERROR = "connect_error"  # refused, unreachable, DNS
    CONNECT_TIMEOUT = "connect_timeout"
    RESET = "reset"  # the connection dropped before a complete response
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"
    RESPONSE_TIMEOUT = "response_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    RATE_LIMITED = "rate_limited"  # 429
    QUOTA_EXHAUSTED = "quota_exhausted"  # 429 insufficient_quota: no retry, eject long
    SERVER_ERROR = "server_error"  # 5xx (and 408/409, which OpenAI's own SDK retries)
    OVERLOADED = "overloaded"  # 529 / overloaded_error: fail over; breakers count it like 5xx
    MALFORMED = "malformed"  # a 200 whose body or SSE is not what the wire promises
    CUT = "cut"  # a stream that ended before it was complete
    CONTEXT_LENGTH = "context_length"  # the prompt does not fit: only larger windows may help
    CLIENT_ERROR = "client_error"  # a 4xx caused by the request itself: never failed over
    DEADLINE = "deadline"  # the request's total time ran out


TIMEOUTS = frozenset(
    {
        FailureClass.CONNECT_TIMEOUT,
        FailureClass.FIRST_TOKEN_TIMEOUT,
        FailureClass.RESPONSE_TIMEOUT,
        FailureClass.IDLE_TIMEOUT,
        FailureClass.DEADLINE,
    }
)


def classify_status(status: int, code: str | None = None) -> FailureClass | None:
    """The class of an upstream HTTP status (and its error code); None for success."""
    if 200 <= status < 300:
        return None
    if code == "insufficient_quota":
        return FailureClass.QUOTA_EXHAUSTED
    if code == "context_length_exceeded":
        return FailureClass.CONTEXT_LENGTH
    if status == 429:
        return FailureClass.RATE_LIMITED
    if status >= 500 or status in (408, 409):
        return FailureClass.SERVER_ERROR
    return FailureClass.CLIENT_ERROR


@dataclass(eq=False)
class AttemptFailure(Exception):
    """One failed attempt. ``status``/``body``/``content_type`` are kept for 4xx pass-through."""

    failure: FailureClass
    detail: str
    status: int | None = None
    body: bytes = b""
    content_type: str = "application/json"
    retry_after: float | None = None
    code: str | None = None  # the upstream's own error code, e.g. "insufficient_quota"

    @property
    def may_fail_over(self) -> bool:
        return self.failure is not FailureClass.CLIENT_ERROR

    def __str__(self) -> str:
        return f"{self.failure}: {self.detail}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (the delta-seconds form)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # the HTTP-date form is rare on LLM APIs; ignore it rather than guess
    return seconds if seconds >= 0 else None

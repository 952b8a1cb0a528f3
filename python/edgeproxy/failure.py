"""What went wrong with one upstream attempt, and whether another candidate may be tried.

A leaf module: both wires (``upstreams.openai``, ``upstreams.anthropic``), the attempt loop and
the breakers read it, so what an upstream's status or ``Retry-After`` means is decided here once.
"""

from __future__ import annotations

import enum
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from edgeproxy.errors import EdgeProxyError


class FailureClass(enum.StrEnum):
    CONNECT_ERROR = "connect_error"  # refused, unreachable, DNS, a base URL no client can use
    CONNECT_TIMEOUT = "connect_timeout"
    RESET = "reset"  # the connection dropped before a complete response
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"
    RESPONSE_TIMEOUT = "response_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    RATE_LIMITED = "rate_limited"  # 429
    QUOTA_EXHAUSTED = "quota_exhausted"  # 429 insufficient_quota: no retry, eject long
    SERVER_ERROR = "server_error"  # 5xx (and 408/409, which OpenAI's own SDK retries)
    OVERLOADED = "overloaded"  # 529 / overloaded_error: fail over; breakers count it like 5xx
    # A 3xx (304 included): the proxy follows no redirect (it would carry the provider key to
    # wherever the upstream points) and never hands one to a client that asked for an answer.
    REDIRECT = "redirect"
    MALFORMED = "malformed"  # a 200 whose body or SSE is not what the wire promises
    CUT = "cut"  # a stream that ended before it was complete
    CONTEXT_LENGTH = "context_length"  # the prompt does not fit: only larger windows may help
    # The proxy's own configuration, not the request: the proxy holds the provider key and names
    # the upstream model itself (from the policy), so the client can fix neither. Fail over, no
    # retry of the same candidate, eject it long (like QUOTA_EXHAUSTED).
    AUTH_REJECTED = "auth_rejected"  # 401/403: the proxy's key is wrong, revoked or lacks access
    MODEL_NOT_FOUND = "model_not_found"  # 404: the model was retired/renamed, or a wrong base URL
    CLIENT_ERROR = "client_error"  # a 4xx caused by the request itself: never failed over
    DEADLINE = "deadline"  # the request's total time ran out
    # Anything else that went wrong inside an attempt (a bug, an error nobody classified): that
    # attempt failed, the next candidate may still answer.
    INTERNAL = "internal_error"


TIMEOUTS = frozenset(
    {
        FailureClass.CONNECT_TIMEOUT,
        FailureClass.FIRST_TOKEN_TIMEOUT,
        FailureClass.RESPONSE_TIMEOUT,
        FailureClass.IDLE_TIMEOUT,
        FailureClass.DEADLINE,
    }
)


# The upstream refused the proxy's configuration (its key, its model name, its base URL): every
# request to that candidate fails the same way until an operator fixes the policy or the key.
MISCONFIGURED = frozenset({FailureClass.AUTH_REJECTED, FailureClass.MODEL_NOT_FOUND})

# OpenAI's own codes for the two (any status: some OpenAI-compatible servers answer them 400).
_AUTH_CODES = frozenset({"invalid_api_key"})
_MODEL_CODES = frozenset({"model_not_found"})


def is_redirect(status: int | None) -> bool:
    return status is not None and 300 <= status < 400


def classify_status(status: int, code: str | None = None) -> FailureClass | None:
    """The class of an upstream HTTP status (and its error code); None for success.

    A 401/403 or 404 is not the client's doing: the proxy sends its own key, to a URL and a
    model named by the policy. Only what the request itself carries (400, 413, 422, ...) is a
    CLIENT_ERROR, handed back as it is.
    """
    if 200 <= status < 300:
        return None
    if is_redirect(status):
        return FailureClass.REDIRECT  # whatever its body says
    if code == "insufficient_quota":
        return FailureClass.QUOTA_EXHAUSTED
    if code == "context_length_exceeded":
        return FailureClass.CONTEXT_LENGTH
    if status == 429:
        return FailureClass.RATE_LIMITED
    if status >= 500 or status in (408, 409):
        return FailureClass.SERVER_ERROR
    if status in (401, 403) or code in _AUTH_CODES:
        return FailureClass.AUTH_REJECTED
    if status == 404 or code in _MODEL_CODES:
        return FailureClass.MODEL_NOT_FOUND
    return FailureClass.CLIENT_ERROR


# -- Retry-After ---------------------------------------------------------------------------------

# A Retry-After beyond this is not a rate limit but a broken or hostile upstream: ignored. What is
# accepted is bounded again where it is used (``retry_policy.max_retry_after`` for a wait,
# ``outlier_detection.max_ejection_time`` for an ejection).
MAX_RETRY_AFTER = 86_400.0
# RFC 9110 delay-seconds is 1*DIGIT; a fraction is tolerated (some upstreams send "1.5"). ASCII
# digits only, and bounded: no "1e308", "inf", "nan", "-1", "5_000" or 300-digit numbers.
_DELAY_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?", re.ASCII)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when absent or unusable.

    Both RFC 9110 forms: delay-seconds, or an HTTP-date (seconds from ``now``, the wall clock
    unless given; a date already past means 0). Anything else, or more than a day, is ignored
    rather than guessed at.
    """
    if not value:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        seconds: float | None = float(text)
    else:
        seconds = _seconds_until_http_date(text, time.time() if now is None else now)
    if seconds is None or not 0.0 <= seconds <= MAX_RETRY_AFTER:  # also rejects NaN
        return None
    return seconds


def _seconds_until_http_date(text: str, now: float) -> float | None:
    if len(text) > 64:  # the longest legal HTTP-date is 37 characters
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime() form or "-0000": every HTTP-date is GMT
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(eq=False)
class AttemptFailure(EdgeProxyError):
    """One failed attempt. ``status``/``body``/``content_type`` are kept for 4xx pass-through."""

    failure: FailureClass
    detail: str
    status: int | None = None
    body: bytes = b""
    content_type: str = "application/json"
    retry_after: float | None = None
    code: str | None = None  # the upstream's own error code, e.g. "insufficient_quota"

    def __post_init__(self) -> None:
        # A wire may classify by the body's error type first; a 3xx is never the client's
        # answer, whatever its body claims, so it can never be passed through.
        if is_redirect(self.status):
            self.failure = FailureClass.REDIRECT

    @property
    def may_fail_over(self) -> bool:
        return self.failure is not FailureClass.CLIENT_ERROR

    def __str__(self) -> str:
        return f"{self.failure}: {self.detail}"

"""``Retry-After`` as the wires read it (``failure.parse_retry_after``): the two RFC 9110 forms,
and every hostile value an upstream can send ignored rather than obeyed."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from edgeproxy.failure import (
    MAX_RETRY_AFTER,
    AttemptFailure,
    FailureClass,
    classify_status,
    parse_retry_after,
)

NOW = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("5", 5.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("86400", 86_400.0),
        ("Sun, 06 Nov 1994 08:50:37 GMT", 60.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:47 GMT", 10.0),  # RFC 850
        ("Sun Nov  6 08:49:57 1994", 20.0),  # asctime
        ("Sun, 06 Nov 1994 08:00:00 GMT", 0.0),  # already past: now
    ],
)
def test_both_forms_are_read(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "1e308",
        "inf",
        "Infinity",
        "nan",
        "-1",
        "+5",
        "5_000",
        "0x10",
        "\u00b2",  # a superscript two: a digit to str.isdigit, not to HTTP
        "\u0665",  # an Arabic-Indic five
        "86401",  # more than a day: a broken or hostile upstream
        "1" * 320,
        "Sun, 06 Nov 2094 08:49:37 GMT",  # a century away
        "Sun, 06 Nov 1994 08:49:37 GMT" * 3,
        "tomorrow",
    ],
)
def test_hostile_or_unusable_values_are_ignored(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_the_wall_clock_is_used_for_a_date_when_none_is_given() -> None:
    import time

    soon = formatdate(time.time() + 30, usegmt=True)
    parsed = parse_retry_after(soon)
    assert parsed is not None and 25 <= parsed <= MAX_RETRY_AFTER


@pytest.mark.parametrize("status", [300, 301, 302, 303, 304, 307, 308])
def test_a_redirect_is_a_failure_that_fails_over(status: int) -> None:
    assert classify_status(status) is FailureClass.REDIRECT
    assert classify_status(status, "insufficient_quota") is FailureClass.REDIRECT
    # Whatever a wire made of its body, a 3xx is never passed through to the client.
    failure = AttemptFailure(FailureClass.CLIENT_ERROR, "HTTP 301", status=status)
    assert failure.failure is FailureClass.REDIRECT and failure.may_fail_over

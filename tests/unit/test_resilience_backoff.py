"""Full-jitter backoff bounds and the retry / fail over / give up decision."""

from __future__ import annotations

import random

import pytest

from edgeproxy.failure import FailureClass
from edgeproxy.resilience.backoff import Action, Backoff, decide
from edgeproxy.snapshot import BackoffSettings

SETTINGS = BackoffSettings(base=0.25, cap=8.0)


@pytest.mark.parametrize("retry", range(10))
def test_every_draw_is_within_zero_and_the_capped_exponential(retry: int) -> None:
    backoff = Backoff(SETTINGS, random.Random(retry))
    ceiling = min(8.0, 0.25 * 2**retry)
    assert backoff.ceiling(retry) == ceiling
    draws = [backoff.delay(retry) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in draws)
    # Full jitter spreads over the whole interval, not a fixed point or a half of it.
    assert min(draws) < 0.05 * ceiling and max(draws) > 0.95 * ceiling


def test_retry_after_is_a_floor() -> None:
    backoff = Backoff(SETTINGS, random.Random(1))
    assert all(backoff.delay(n, retry_after=3.0) >= 3.0 for n in range(8) for _ in range(200))
    # A Retry-After above the cap is still honoured: waiting less only earns another 429.
    assert backoff.delay(0, retry_after=30.0) == 30.0
    small = [backoff.delay(5, retry_after=0.1) for _ in range(500)]
    assert all(0.1 <= d <= 8.0 for d in small) and max(small) > 4.0


def test_a_huge_retry_number_is_capped_not_an_overflow() -> None:
    assert Backoff(SETTINGS).ceiling(10_000) == 8.0


def test_a_seeded_rng_makes_delays_reproducible() -> None:
    a = [Backoff(SETTINGS, random.Random(42)).delay(3) for _ in range(3)]
    b = [Backoff(SETTINGS, random.Random(42)).delay(3) for _ in range(3)]
    c = Backoff(SETTINGS, random.Random(43)).delay(3)
    assert a == b and c != a[0]


def _decide(failure: FailureClass = FailureClass.SERVER_ERROR, **kw: object) -> tuple[str, float]:
    args: dict[str, object] = {
        "retry_after": None,
        "retries_on_candidate": 0,
        "next_candidate": False,
        "attempts_left": 2,
        "remaining": 60.0,
        "budget_allows": True,
        "backoff": Backoff(SETTINGS, random.Random(0)),
    }
    args.update(kw)
    decision = decide(failure, **args)  # type: ignore[arg-type]
    return decision.action, decision.delay


def test_fail_over_comes_first_and_does_not_wait() -> None:
    assert _decide(next_candidate=True, retry_after=5.0) == (Action.FAIL_OVER, 0.0)


def test_an_empty_budget_does_not_stop_a_failover() -> None:
    # Whether a failover spends depends on the candidate it lands on: the loop asks the budget
    # when it admits that candidate (free onto a healthy one), so decide() must not refuse it.
    assert _decide(next_candidate=True, budget_allows=False) == (Action.FAIL_OVER, 0.0)


def test_retry_the_same_candidate_when_nothing_else_is_left() -> None:
    action, delay = _decide(FailureClass.RATE_LIMITED, retry_after=2.0)
    assert action is Action.RETRY_SAME and delay >= 2.0
    action, delay = _decide(FailureClass.SERVER_ERROR)
    assert action is Action.RETRY_SAME and 0 <= delay <= 0.25


@pytest.mark.parametrize(
    ("kw", "failure"),
    [
        ({"next_candidate": True}, FailureClass.CLIENT_ERROR),  # the request is at fault
        ({"next_candidate": True}, FailureClass.DEADLINE),
        ({"next_candidate": True, "remaining": 0.5}, FailureClass.SERVER_ERROR),
        ({"next_candidate": True, "attempts_left": 0}, FailureClass.SERVER_ERROR),
        ({"budget_allows": False}, FailureClass.SERVER_ERROR),  # a same-candidate retry
        ({}, FailureClass.FIRST_TOKEN_TIMEOUT),  # not retried on the same candidate
        ({}, FailureClass.MALFORMED),
        ({"retries_on_candidate": 1}, FailureClass.SERVER_ERROR),  # its retry is spent
        ({"retry_after": 60.0}, FailureClass.RATE_LIMITED),  # too long to hold the request
        ({"retry_after": float("inf")}, FailureClass.RATE_LIMITED),
        ({"retry_after": float("nan")}, FailureClass.RATE_LIMITED),
        ({"retry_after": 10.0, "remaining": 10.5}, FailureClass.RATE_LIMITED),  # no time left
    ],
)
def test_give_up(kw: dict[str, object], failure: FailureClass) -> None:
    assert _decide(failure, **kw) == (Action.GIVE_UP, 0.0)

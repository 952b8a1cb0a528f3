"""Retry budget arithmetic and the sliding window under it, on a fake clock."""

from __future__ import annotations

import pytest

from edgeproxy.clock import FakeClock
from edgeproxy.resilience.budget import RetryBudget, WindowCounter
from edgeproxy.snapshot import RetryBudgetSettings


def test_window_counter_forgets_events_after_the_window() -> None:
    clock = FakeClock(start=0.0)
    counter = WindowCounter(10.0, clock, buckets=10)
    counter.add(3)
    clock.advance(5)
    counter.add()
    assert counter.total() == 4
    clock.advance(5.5)  # the first events are 10.5 s old
    assert counter.total() == 1
    clock.advance(10)
    assert counter.total() == 0


def test_retries_are_capped_at_the_ratio_of_requests() -> None:
    budget = RetryBudget(RetryBudgetSettings(ratio=0.2, min_retries_per_second=0), FakeClock())
    for _ in range(10):
        budget.request_started()
    assert budget.try_retry() and budget.try_retry()  # 0.2 x 10 = 2
    assert not budget.can_retry() and not budget.try_retry()
    assert budget.denied_total == 1


def test_the_floor_allows_retries_without_traffic() -> None:
    budget = RetryBudget(
        RetryBudgetSettings(ratio=0.2, min_retries_per_second=1.0, window=10.0), FakeClock()
    )
    granted = sum(budget.try_retry() for _ in range(50))
    assert granted == 10  # 1/s x 10 s


def test_a_fractional_allowance_rounds_down() -> None:
    budget = RetryBudget(RetryBudgetSettings(ratio=0.25, min_retries_per_second=0), FakeClock())
    for _ in range(10):  # allowance 2.5: a third retry would make it 3 > 2.5
        budget.request_started()
    assert sum(budget.try_retry() for _ in range(5)) == 2


def test_a_storm_of_failures_is_held_to_the_ratio() -> None:
    """100 req/s for 60 s, every attempt fails, each request wants two retries."""
    clock = FakeClock(start=0.0)
    settings = RetryBudgetSettings(ratio=0.2, min_retries_per_second=1.0, window=10.0)
    budget = RetryBudget(settings, clock)
    requests = retries = 0
    for _ in range(6000):
        budget.request_started()
        requests += 1
        for _ in range(2):
            if not budget.try_retry():
                break
            retries += 1
            snap = budget.snapshot()
            # The invariant, at every instant: retries <= ratio x requests + floor x window.
            assert snap["retries_in_window"] <= snap["allowance"]
        clock.advance(0.01)
    # Without the budget this would be 2 retries per request; with it, about ratio + floor/rate.
    assert 0.18 <= retries / requests <= 0.22, retries / requests


def test_the_budget_recovers_after_the_window() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetSettings(ratio=0.0, min_retries_per_second=0.1), clock)
    assert budget.try_retry() and not budget.try_retry()  # 0.1/s x 10 s = 1
    clock.advance(10)
    assert budget.try_retry()


def test_a_failover_onto_a_healthy_candidate_is_free_and_onto_a_failing_one_spends() -> None:
    settings = RetryBudgetSettings(ratio=0.0, min_retries_per_second=0.1, failing_ratio=0.2)
    budget = RetryBudget(settings, FakeClock())  # one retry in the window
    for _ in range(100):  # healthy fallback: never refused, never spends
        assert budget.try_attempt(failover=True, failure_ratio=0.19)
    assert budget.snapshot()["retries_in_window"] == 0
    assert budget.free_failovers_total == 100
    assert budget.try_attempt(failover=True, failure_ratio=0.2)  # failing: spends the one retry
    assert not budget.try_attempt(failover=True, failure_ratio=1.0)
    assert not budget.try_attempt(failover=False, failure_ratio=0.0)  # a retry always spends
    assert budget.denied_total == 2


def test_failing_ratio_zero_budgets_every_failover() -> None:
    # Envoy's and Linkerd's accounting: every attempt after the first is a retry.
    budget = RetryBudget(
        RetryBudgetSettings(ratio=0.0, min_retries_per_second=0.0, failing_ratio=0.0), FakeClock()
    )
    assert not budget.try_attempt(failover=True, failure_ratio=0.0)
    with pytest.raises(ValueError):
        RetryBudgetSettings(failing_ratio=1.5)

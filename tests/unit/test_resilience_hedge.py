"""Hedge delay from the TTFT percentile, and the hedge-rate cap."""

from __future__ import annotations

import random

import pytest

from edgeproxy.clock import FakeClock
from edgeproxy.resilience.hedge import Hedger, HedgeSettings


def test_the_delay_is_the_ttft_percentile_once_enough_samples_exist() -> None:
    hedger = Hedger(HedgeSettings(percentile=95, min_samples=20), FakeClock())
    values = [i / 100 for i in range(1, 101)]
    random.Random(3).shuffle(values)
    for v in values[:19]:
        hedger.observe_ttft("fast", v)
    assert hedger.delay("fast") is None  # not measured enough: no hedge
    for v in values[19:]:
        hedger.observe_ttft("fast", v)
    assert hedger.delay("fast") == pytest.approx(0.95)  # nearest rank of 1..100


def test_each_candidate_has_its_own_delay() -> None:
    hedger = Hedger(HedgeSettings(min_samples=5), FakeClock())
    for _ in range(10):
        hedger.observe_ttft("openai/east/o3", 30.0)  # a reasoning model thinks first
        hedger.observe_ttft("openai/east/gpt-4o-mini", 0.4)
    assert hedger.delay("openai/east/o3") == 30.0
    assert hedger.delay("openai/east/gpt-4o-mini") == 0.4


def test_a_fixed_delay_wins_and_min_delay_is_a_floor() -> None:
    assert Hedger(HedgeSettings(delay=1.5), FakeClock()).delay("any") == 1.5
    hedger = Hedger(HedgeSettings(min_samples=1, min_delay=0.2), FakeClock())
    hedger.observe_ttft("k", 0.01)
    assert hedger.delay("k") == 0.2


def test_old_and_evicted_samples_are_forgotten() -> None:
    clock = FakeClock()
    settings = HedgeSettings(min_samples=10, max_samples=50, max_sample_age=300)
    hedger = Hedger(settings, clock)
    for _ in range(50):
        hedger.observe_ttft("k", 10.0)
    for _ in range(50):
        hedger.observe_ttft("k", 1.0)  # pushes the slow samples out
    assert hedger.delay("k") == 1.0
    clock.advance(301)
    assert hedger.delay("k") is None


def test_hedges_are_capped_at_a_fraction_of_requests() -> None:
    clock = FakeClock()
    hedger = Hedger(HedgeSettings(max_ratio=0.1, window=60), clock)
    assert not hedger.try_hedge()  # no requests, no hedges
    for _ in range(100):
        hedger.request_started()
    assert sum(hedger.try_hedge() for _ in range(50)) == 10
    assert hedger.denied_total == 41
    clock.advance(60)
    assert not hedger.try_hedge()  # the requests left the window too
    for _ in range(10):
        hedger.request_started()
    assert hedger.try_hedge() and not hedger.try_hedge()

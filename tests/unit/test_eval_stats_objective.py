"""The statistics of a scorecard and the objective functions the `auto` route ranks by."""

from __future__ import annotations

import math
import random

import pytest

from edgeproxy.evals.objective import (
    Limits,
    Measured,
    beats,
    capability_per_dollar_second,
    cost_per_success,
    improvement,
    interval,
    rank,
    separated,
    value,
)
from edgeproxy.evals.scorecard import Cell, Interval, Spread
from edgeproxy.evals.stats import percentile, quality_interval, t_interval, t_quantile, wilson

# -- intervals ------------------------------------------------------------------------------


def test_wilson_matches_the_formula_and_stays_inside_0_1() -> None:
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    # 0 % and 100 %: the normal approximation would give [0, 0] and [1, 1]; Wilson does not.
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4) and high == 1.0
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    p, n, trials = 0.8, 30, 2000
    covered = 0
    for _ in range(trials):
        successes = sum(rng.random() < p for _ in range(n))
        low, high = wilson(successes, n)
        covered += low <= p <= high
    assert 0.92 <= covered / trials <= 0.98


def test_t_interval_and_method_choice() -> None:
    assert t_quantile(1) == 12.706 and t_quantile(35) == 2.042 and t_quantile(10_000) < 1.97
    scores = [0.5, 0.6, 0.7, 0.8, 0.9]
    low, high = t_interval(scores)
    half = 2.776 * math.sqrt(0.025 / 5)
    assert low == pytest.approx(0.7 - half) and high == pytest.approx(0.7 + half)
    assert quality_interval([1.0, 0.0, 1.0])[2] == "wilson"
    assert quality_interval(scores)[2] == "t"
    assert quality_interval([]) == (0.0, 1.0, "none")
    # Clipped to the bounds: a score cannot be above 1.
    assert t_interval([1.0, 0.9])[1] == 1.0
    assert t_interval([5.0, 7.0], (0.0, 7.0))[1] == 7.0


def test_percentiles_interpolate_linearly() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 50) == 25.0
    assert percentile(values, 95) == pytest.approx(38.5)
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) is None


# -- objectives -------------------------------------------------------------------------------


def cell(
    candidate: str,
    *,
    quality: float,
    cost: float,
    latency: float,
    n: int = 40,
    ttft_p95: float | None = None,
) -> Cell:
    successes = round(quality * n)
    low, high = wilson(successes, n)
    q = Interval(
        mean=successes / n,
        low=min(low, successes / n),
        high=max(high, successes / n),
        method="wilson",
    )
    return Cell(
        candidate=candidate,
        task="qa",
        requests=n,
        graded=n,
        successes=successes,
        failed=0,
        quality=q,
        success_rate=q,
        cost_usd=cost,
        cost_total_usd=cost * n,
        input_tokens=50,
        output_tokens=5,
        ttft_s=Spread(p50=latency / 2, p95=ttft_p95 if ttft_p95 is not None else latency),
        latency_s=Spread(
            p50=latency,
            p95=latency * 1.5,
            mean=latency,
            mean_low=latency * 0.9,
            mean_high=latency * 1.1,
        ),
        attempts=n,
        error_rate=0.0,
        retry_rate=0.0,
    )


def test_the_formulas_of_the_docs_worked_example() -> None:
    # docs/evals.md: A answers 90 % right at $0.002 a request in 1.2 s; B 60 % at $0.001 in 0.8 s.
    a = Measured(quality=0.9, success_rate=0.9, cost=0.002, latency=1.2)
    b = Measured(quality=0.6, success_rate=0.6, cost=0.001, latency=0.8)
    assert value(a, "cost_per_success") == pytest.approx(0.002 / 0.9)  # $0.00222
    assert value(b, "cost_per_success") == pytest.approx(0.001 / 0.6)  # $0.00167
    assert value(a, "capability_per_dollar_second") == pytest.approx(0.9 / (0.002 * 1.2))  # 375
    assert value(b, "capability_per_dollar_second") == pytest.approx(0.6 / (0.001 * 0.8))  # 750
    assert value(a, "latency") == 1.2 and value(a, "quality") == 0.9
    assert improvement(
        value(b, "cost_per_success"), value(a, "cost_per_success"), "cost_per_success"
    ) == pytest.approx(0.25)
    assert improvement(0.6, 0.9, "quality") == pytest.approx(-1 / 3)


def test_a_verbose_model_costs_more_per_success_at_the_same_price() -> None:
    # Same rate card, same quality, 3x the output tokens: 3x the output cost per success.
    price_in, price_out, prompt, answer = 0.3e-6, 1.2e-6, 100, 50
    terse = prompt * price_in + answer * price_out
    verbose = prompt * price_in + 3 * answer * price_out
    assert cost_per_success(verbose, 0.9) > cost_per_success(terse, 0.9)
    assert cost_per_success(verbose, 0.9) - cost_per_success(terse, 0.9) == pytest.approx(
        2 * answer * price_out / 0.9
    )


def test_degenerate_values_are_ordered_not_errors() -> None:
    assert cost_per_success(0.01, 0.0) == math.inf
    assert capability_per_dollar_second(0.9, 0.0, 1.0) == math.inf  # free
    assert capability_per_dollar_second(0.0, 0.0, 1.0) == 0.0
    assert improvement(math.inf, 1.0, "cost_per_success") == -math.inf
    assert improvement(1.0, math.inf, "cost_per_success") == math.inf


def test_rank_applies_limits_and_orders_best_first() -> None:
    cheap_bad = cell("cheap-bad", quality=0.5, cost=0.0001, latency=0.2)
    mid = cell("mid", quality=0.9, cost=0.001, latency=0.5)
    pricey = cell("pricey", quality=0.975, cost=0.01, latency=1.0)
    slow_start = cell("slow-start", quality=0.95, cost=0.0009, latency=0.5, ttft_p95=3.0)
    cells = [pricey, mid, cheap_bad, slow_start]
    assert next(r.cell.candidate for r in rank(cells, "cost_per_success")) == "cheap-bad"
    floor = Limits(min_quality=0.85)
    assert [r.cell.candidate for r in rank(cells, "cost_per_success", floor)] == [
        "slow-start",
        "mid",
        "pricey",
    ]
    fast = Limits(min_quality=0.85, max_ttft_p95=1.0)
    assert next(r.cell.candidate for r in rank(cells, "cost_per_success", fast)) == "mid"
    assert "ttft p95" in (fast.why_not(slow_start) or "")
    assert rank(cells, "quality")[0].cell.candidate == "pricey"
    assert rank(cells, "latency")[0].cell.candidate == "cheap-bad"


def test_intervals_and_the_switching_rule() -> None:
    incumbent = cell("incumbent", quality=0.9, cost=0.001, latency=0.5, n=200)
    slightly = cell("slightly", quality=0.9, cost=0.00097, latency=0.5, n=200)  # 3 % cheaper
    clearly = cell("clearly", quality=0.9, cost=0.0005, latency=0.5, n=200)  # half the price
    low, high = interval(incumbent, "cost_per_success")
    assert low < value(incumbent, "cost_per_success") < high
    # 3 % better: under a 5 % margin, and the intervals overlap: noise never flaps traffic.
    assert not beats(slightly, incumbent, "cost_per_success", margin=0.05)
    assert beats(clearly, incumbent, "cost_per_success", margin=0.05)
    assert separated(clearly, incumbent, "cost_per_success")
    assert not separated(incumbent, clearly, "cost_per_success")
    # Quality with small samples: 90 % vs 80 % on 10 items is not separated.
    a = cell("a", quality=0.9, cost=0.001, latency=0.5, n=10)
    b = cell("b", quality=0.8, cost=0.001, latency=0.5, n=10)
    assert not beats(a, b, "quality", margin=0.05)

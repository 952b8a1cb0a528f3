"""Synthetic scorecards for the ``auto`` tests: cells from (successes, graded, cost, latency)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from edgeproxy.auto.evidence import CardRef, Evidence, read
from edgeproxy.evals.scorecard import Cell, Interval, PolicyInfo, Scorecard, Spread, SuiteInfo
from edgeproxy.evals.stats import wilson
from edgeproxy.snapshot import AutoObjective

BASE_DATE = datetime(2025, 1, 1, tzinfo=UTC)


def cell(
    candidate: str,
    task: str = "qa",
    *,
    successes: int = 28,
    graded: int = 30,
    cost: float = 1e-5,
    latency: float = 0.4,
    error_rate: float = 0.0,
) -> Cell:
    rate = successes / graded if graded else 0.0
    low, high = wilson(successes, graded)
    quality = Interval(mean=rate, low=min(low, rate), high=max(high, rate), method="wilson")
    half = latency * 0.05
    spread = Spread(
        p50=latency,
        p95=latency * 1.3,
        mean=latency,
        mean_low=latency - half,
        mean_high=latency + half,
    )
    return Cell(
        candidate=candidate,
        task=task,
        requests=graded,
        graded=graded,
        successes=successes,
        failed=0,
        quality=quality,
        success_rate=quality,
        cost_usd=cost,
        cost_total_usd=cost * graded,
        input_tokens=40.0,
        output_tokens=5.0,
        ttft_s=Spread(p50=latency / 2, p95=latency * 0.7, mean=latency / 2),
        latency_s=spread,
        attempts=graded,
        error_rate=error_rate,
        retry_rate=0.0,
    )


def card(cells: Iterable[Cell], day: int = 0, *, complete: bool = True) -> Scorecard:
    made = tuple(cells)
    return Scorecard(
        created=BASE_DATE + timedelta(days=day),
        suite=SuiteInfo(name="s", hash="h" * 12, items=10, tasks=tuple({c.task for c in made})),
        policy=PolicyInfo(source="p.yaml", version="v1"),
        repeats=3,
        complete=complete,
        stopped=None if complete else "max_cost",
        spent_usd=0.1,
        cells=made,
    )


def ref(scorecard: Scorecard, name: str = "c") -> CardRef:
    digest = hashlib.blake2b(scorecard.model_dump_json().encode(), digest_size=8).hexdigest()
    created = scorecard.created.isoformat()
    return CardRef(digest, f"/x/{name}.json", created, f"{name}.json", scorecard.suite.hash)


def evidence(
    scorecard: Scorecard,
    task: str = "qa",
    *,
    objective: AutoObjective | None = None,
    pool: Iterable[str] | None = None,
    min_samples: int = 30,
) -> Evidence:
    keys = list(pool) if pool is not None else [c.candidate for c in scorecard.cells]
    found = read(scorecard, ref(scorecard), task, keys, objective or AutoObjective(), min_samples)
    assert found is not None
    return found


def noisy_card(
    truth: dict[str, tuple[float, float]], rng: random.Random, day: int, n: int = 30
) -> Scorecard:
    """An eval of candidates whose true (quality, cost) are ``truth``: binomial successes."""
    cells = []
    for candidate, (quality, cost) in truth.items():
        successes = sum(rng.random() < quality for _ in range(n))
        cells.append(cell(candidate, successes=successes, graded=n, cost=cost))
    return card(cells, day)

"""What one scorecard says about one route x task: who may be chosen, and in what order.

A candidate of the pool may be chosen for a task when the scorecard measured it on that task with
at least ``min_samples`` graded requests and it meets the task's objective: the quality floor
(on the mean, or on the lower end of the 95 % interval: ``floor_on``) and the latency limits.
Those candidates are ranked best first by the objective (``evals.objective.rank``: ties go to
higher quality, then the cheaper, then the name). A candidate the scorecard did not measure has
no eval data for the task and is never chosen (a pin is the only way in).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edgeproxy.evals.objective import Limits, interval, rank, value
from edgeproxy.evals.scorecard import Cell, Scorecard
from edgeproxy.snapshot import AutoObjective


@dataclass(frozen=True, slots=True)
class CardRef:
    """A scorecard as ``auto`` names it in its records."""

    id: str  # a digest of the file's content
    path: str
    created: str  # ISO date of the run
    label: str  # the file name and its date, for humans
    suite: str = ""  # the suite's hash: scorecards of one suite measured the same items


@dataclass(frozen=True, slots=True)
class Standing:
    """One candidate on the task in one scorecard: its objective value and 95 % interval, and
    why it may not be chosen (None: it may)."""

    candidate: str
    cell: Cell
    value: float
    low: float
    high: float
    why_not: str | None = None

    @property
    def eligible(self) -> bool:
        return self.why_not is None


@dataclass(frozen=True, slots=True)
class Evidence:
    """A scorecard's word on one task: the eligible candidates best first, and the others."""

    card: CardRef
    task: str
    objective: AutoObjective
    ranked: tuple[Standing, ...]
    others: tuple[Standing, ...]

    @property
    def leader(self) -> Standing | None:
        return self.ranked[0] if self.ranked else None

    def standing(self, candidate: str) -> Standing | None:
        for s in (*self.ranked, *self.others):
            if s.candidate == candidate:
                return s
        return None

    def eligible(self, candidate: str) -> bool:
        s = self.standing(candidate)
        return s is not None and s.eligible


def why_not(cell: Cell, objective: AutoObjective, min_samples: int) -> str | None:
    """Why ``cell``'s candidate may not be chosen under ``objective``, or None."""
    if cell.graded < min_samples:
        return f"{cell.graded} graded requests < min_samples {min_samples}"
    floor = objective.min_quality
    if floor is not None:
        measured = cell.quality.low if objective.floor_on == "lower_bound" else cell.quality.mean
        if measured < floor:
            what = "quality lower bound" if objective.floor_on == "lower_bound" else "quality"
            return f"{what} {measured:.3f} < min_quality {floor:g}"
    limits = Limits(
        max_ttft_p50=objective.max_ttft_p50,
        max_ttft_p95=objective.max_ttft_p95,
        max_latency_p50=objective.max_latency_p50,
        max_latency_p95=objective.max_latency_p95,
    )
    missed = limits.why_not(cell)
    if missed is not None:
        return missed
    v = value(cell, objective.optimize)
    if math.isnan(v) or (objective.optimize == "cost_per_success" and math.isinf(v)):
        return "no successful answer"
    return None


def read(
    card: Scorecard,
    ref: CardRef,
    task: str,
    pool: Iterable[str],
    objective: AutoObjective,
    min_samples: int,
) -> Evidence | None:
    """``card``'s evidence on ``task`` for the candidates of ``pool``; None when it measured
    none of them on that task."""
    keys = set(pool)
    cells = [c for c in card.for_task(task) if c.candidate in keys]
    if not cells:
        return None
    goal = objective.optimize
    eligible = [c for c in cells if why_not(c, objective, min_samples) is None]
    ranked = tuple(
        Standing(r.cell.candidate, r.cell, r.value, r.low, r.high) for r in rank(eligible, goal)
    )
    chosen = {s.candidate for s in ranked}
    others = []
    for c in cells:
        if c.candidate in chosen:
            continue
        low, high = interval(c, goal)
        reason = why_not(c, objective, min_samples) or "not ranked"
        others.append(Standing(c.candidate, c, value(c, goal), low, high, reason))
    return Evidence(ref, task, objective, ranked, tuple(others))


def fallback_order(
    leaders: Sequence[str], ranked: Sequence[str], provider: Callable[[str], str], count: int
) -> list[str]:
    """Up to ``count`` candidates of ``ranked`` (best first) to follow ``leaders``: those on a
    provider the chain does not have yet first (a provider-wide outage then has a way out),
    then the rest, each group in rank order."""
    used = {provider(k) for k in leaders}
    rest = [k for k in ranked if k not in leaders]
    first: list[str] = []
    for key in rest:
        if provider(key) not in used:
            first.append(key)
            used.add(provider(key))
    second = [k for k in rest if k not in first]
    return (first + second)[:count]

"""What "best" means for a task: the objective functions ``auto`` and ``eval compare`` rank by.

Every objective reads four measurements of a candidate on a task (a scorecard cell, or the
market's true profiles for the oracle): ``quality`` (mean score, 0..1), ``success_rate`` (share
of requests whose answer passed), ``cost`` (mean USD per request, every attempt included) and
``latency`` (mean seconds per request, retries included).

=============================  =======================================  ==========
objective                      value                                    better
=============================  =======================================  ==========
``cost_per_success``           cost / success_rate (USD)                lower
``latency``                    latency (seconds)                        lower
``quality``                    quality                                  higher
``capability_per_dollar_second``  quality / (cost x latency)            higher
=============================  =======================================  ==========

``cost_per_success`` is what one *good* answer costs: a model that is wrong half the time costs
twice its price per success; one that writes 3x the tokens at the same rate card costs 3x; one
that errors and is retried pays for the broken attempts too. A success rate of 0 makes it
infinite. ``capability_per_dollar_second`` is infinite for a free or instant candidate with any
quality.

Intervals: each value also has a 95 % interval from the cell's intervals (quality and success
rate: Wilson or t; latency: t on the mean); the mean cost is taken as exact (it varies far less
than a pass rate over the same requests). ``rank`` sorts the candidates that meet the limits
(``min_quality`` on the mean, latency percentiles) best first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, get_args

if TYPE_CHECKING:  # at run time cells are told apart from ``Measured`` (keeps imports light)
    from edgeproxy.evals.scorecard import Cell

Objective = Literal["cost_per_success", "latency", "quality", "capability_per_dollar_second"]
OBJECTIVES: Final[tuple[Objective, ...]] = get_args(Objective)
HIGHER_IS_BETTER: Final[dict[Objective, bool]] = {
    "cost_per_success": False,
    "latency": False,
    "quality": True,
    "capability_per_dollar_second": True,
}
UNITS: Final[dict[Objective, str]] = {
    "cost_per_success": "USD",
    "latency": "s",
    "quality": "",
    "capability_per_dollar_second": "1/(USD*s)",
}


@dataclass(frozen=True, slots=True)
class Measured:
    """What the objectives read; ``*_low``/``*_high`` are 95 % bounds (equal to the value when
    unknown)."""

    quality: float
    success_rate: float
    cost: float
    latency: float
    quality_low: float | None = None
    quality_high: float | None = None
    success_low: float | None = None
    success_high: float | None = None
    latency_low: float | None = None
    latency_high: float | None = None

    @classmethod
    def of(cls, cell: Cell) -> Measured:
        latency = cell.latency_s.mean or 0.0
        return cls(
            quality=cell.quality.mean,
            success_rate=cell.success_rate.mean,
            cost=cell.cost_usd,
            latency=latency,
            quality_low=cell.quality.low,
            quality_high=cell.quality.high,
            success_low=cell.success_rate.low,
            success_high=cell.success_rate.high,
            latency_low=cell.latency_s.mean_low,
            latency_high=cell.latency_s.mean_high,
        )


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0:
        return numerator / denominator
    return math.inf if numerator > 0 else (0.0 if numerator == 0 else -math.inf)


def cost_per_success(cost: float, success_rate: float) -> float:
    """Mean USD per request / success rate: what one good answer costs."""
    if success_rate <= 0:
        return math.inf
    return cost / success_rate


def capability_per_dollar_second(quality: float, cost: float, latency: float) -> float:
    """Quality / (mean USD per request x mean seconds per request)."""
    return _ratio(quality, cost * latency)


def value(m: Measured | Cell, objective: Objective) -> float:
    """The objective's value (see the module docstring for the formulas)."""
    if not isinstance(m, Measured):
        m = Measured.of(m)
    if objective == "cost_per_success":
        return cost_per_success(m.cost, m.success_rate)
    if objective == "latency":
        return m.latency
    if objective == "quality":
        return m.quality
    if objective == "capability_per_dollar_second":
        return capability_per_dollar_second(m.quality, m.cost, m.latency)
    raise ValueError(f"unknown objective {objective!r} (known: {', '.join(OBJECTIVES)})")


def interval(m: Measured | Cell, objective: Objective) -> tuple[float, float]:
    """The 95 % interval of the objective's value, low <= high."""
    if not isinstance(m, Measured):
        m = Measured.of(m)

    def pick(v: float | None, fallback: float) -> float:
        return fallback if v is None else v

    q_lo, q_hi = pick(m.quality_low, m.quality), pick(m.quality_high, m.quality)
    s_lo, s_hi = pick(m.success_low, m.success_rate), pick(m.success_high, m.success_rate)
    l_lo, l_hi = pick(m.latency_low, m.latency), pick(m.latency_high, m.latency)
    if objective == "cost_per_success":
        return (cost_per_success(m.cost, s_hi), cost_per_success(m.cost, s_lo))
    if objective == "latency":
        return (l_lo, l_hi)
    if objective == "quality":
        return (q_lo, q_hi)
    if objective == "capability_per_dollar_second":
        return (
            capability_per_dollar_second(q_lo, m.cost, l_hi),
            capability_per_dollar_second(q_hi, m.cost, l_lo),
        )
    raise ValueError(f"unknown objective {objective!r} (known: {', '.join(OBJECTIVES)})")


def better(a: float, b: float, objective: Objective) -> bool:
    """``a`` is strictly better than ``b`` under ``objective``."""
    return a > b if HIGHER_IS_BETTER[objective] else a < b


def improvement(new: float, old: float, objective: Objective) -> float:
    """How much better ``new`` is than ``old``, as a share of ``old`` (negative: worse).
    ``0.05`` is 5 % better whichever way the objective points."""
    if old == new:
        return 0.0
    if old == 0 or math.isinf(old) or math.isinf(new):
        return math.inf if better(new, old, objective) else -math.inf
    change = (new - old) / abs(old)
    return change if HIGHER_IS_BETTER[objective] else -change


def separated(a: Measured | Cell, b: Measured | Cell, objective: Objective) -> bool:
    """``a``'s 95 % interval lies wholly on the better side of ``b``'s (they do not overlap)."""
    a_low, a_high = interval(a, objective)
    b_low, b_high = interval(b, objective)
    return a_low > b_high if HIGHER_IS_BETTER[objective] else a_high < b_low


def beats(
    challenger: Measured | Cell, incumbent: Measured | Cell, objective: Objective, margin: float
) -> bool:
    """The switching rule with hysteresis: ``challenger`` is better than ``incumbent`` by at
    least ``margin`` (0.05 = 5 %) and their intervals do not overlap."""
    gain = improvement(value(challenger, objective), value(incumbent, objective), objective)
    return gain >= margin and separated(challenger, incumbent, objective)


def sort_key(v: float, objective: Objective) -> float:
    """A key that sorts best first under ``objective``."""
    return -v if HIGHER_IS_BETTER[objective] else v


@dataclass(frozen=True, slots=True)
class Limits:
    """What a candidate must meet to be ranked at all (None: no limit)."""

    min_quality: float | None = None
    max_ttft_p50: float | None = None
    max_ttft_p95: float | None = None
    max_latency_p50: float | None = None
    max_latency_p95: float | None = None

    def why_not(self, cell: Cell) -> str | None:
        """Why ``cell`` misses the limits, or None when it meets them."""
        if self.min_quality is not None and cell.quality.mean < self.min_quality:
            return f"quality {cell.quality.mean:.3f} < min_quality {self.min_quality:g}"
        checks = (
            ("ttft p50", cell.ttft_s.p50, self.max_ttft_p50),
            ("ttft p95", cell.ttft_s.p95, self.max_ttft_p95),
            ("latency p50", cell.latency_s.p50, self.max_latency_p50),
            ("latency p95", cell.latency_s.p95, self.max_latency_p95),
        )
        for name, measured, limit in checks:
            if limit is None:
                continue
            if measured is None:
                return f"{name} not measured (limit {limit:g}s)"
            if measured > limit:
                return f"{name} {measured:.3f}s > {limit:g}s"
        return None


@dataclass(frozen=True, slots=True)
class Ranked:
    cell: Cell
    value: float
    low: float
    high: float


def rank(cells: Iterable[Cell], objective: Objective, limits: Limits | None = None) -> list[Ranked]:
    """The cells that meet ``limits``, best first (ties: higher quality, then cheaper, then
    the candidate's name, so the order is stable)."""
    limits = limits or Limits()
    out = []
    for c in cells:
        if limits.why_not(c) is not None or c.graded == 0:
            continue
        low, high = interval(c, objective)
        out.append(Ranked(c, value(c, objective), low, high))
    out.sort(
        key=lambda r: (
            sort_key(r.value, objective),
            -r.cell.quality.mean,
            r.cell.cost_usd,
            r.cell.candidate,
        )
    )
    return out


def best(
    cells: Sequence[Cell], objective: Objective, limits: Limits | None = None
) -> Ranked | None:
    ranked = rank(cells, objective, limits)
    return ranked[0] if ranked else None

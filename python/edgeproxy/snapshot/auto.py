"""The compiled settings of an ``auto`` route (docs/auto.md) and of the eval schedule.

A leaf module like the rest of ``snapshot``: the policy compiler builds these, the ``auto``
package (``edgeproxy.auto``) reads them. ``AutoSettings`` itself, which holds compiled
candidates, lives in ``snapshot/policy.py`` beside ``Candidate``.

Shares and ratios are held as ratios (0..1); the policy writes them as percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, get_args

# What ``auto`` optimises for a task: the objectives of ``edgeproxy.evals.objective`` (a test
# keeps the two lists equal; the snapshot cannot import the evals package).
Optimize = Literal["cost_per_success", "latency", "quality", "capability_per_dollar_second"]
OPTIMIZE: Final[tuple[Optimize, ...]] = get_args(Optimize)
# Where the quality floor is applied: the measured mean, or the lower end of its 95 % interval.
FloorOn = Literal["mean", "lower_bound"]

DEFAULT_MARGIN: Final = 0.05
DEFAULT_CONFIRMATIONS: Final = 3
DEFAULT_FALLBACKS: Final = 2
DEFAULT_MIN_SAMPLES: Final = 30
DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class AutoObjective:
    """What "best" means for one task, and what a candidate must meet to be chosen at all.

    ``optimize`` is one of the eval objectives (docs/evals.md, "Objectives"). ``min_quality`` is
    the quality floor, applied to the scorecard's mean (``floor_on: mean``) or to the lower end
    of its 95 % interval (``lower_bound``). Latency limits are seconds, against the scorecard's
    percentiles. None: no limit.
    """

    optimize: Optimize = "cost_per_success"
    min_quality: float | None = None
    floor_on: FloorOn = "mean"
    max_ttft_p50: float | None = None
    max_ttft_p95: float | None = None
    max_latency_p50: float | None = None
    max_latency_p95: float | None = None

    def __post_init__(self) -> None:
        if self.optimize not in OPTIMIZE:
            raise ValueError(f"optimize must be one of {', '.join(OPTIMIZE)}")
        if self.min_quality is not None and not 0 <= self.min_quality <= 1:
            raise ValueError("min_quality must be in [0, 1]")
        for name in ("max_ttft_p50", "max_ttft_p95", "max_latency_p50", "max_latency_p95"):
            limit = getattr(self, name)
            if limit is not None and not (limit > 0 and math.isfinite(limit)):
                raise ValueError(f"{name} must be a duration > 0")

    def describe(self) -> str:
        """The objective in words: ``cost_per_success, min_quality 0.85 (mean)``."""
        parts: list[str] = [self.optimize]
        if self.min_quality is not None:
            parts.append(f"min_quality {self.min_quality:g} ({self.floor_on})")
        for name in ("max_ttft_p50", "max_ttft_p95", "max_latency_p50", "max_latency_p95"):
            limit = getattr(self, name)
            if limit is not None:
                parts.append(f"{name} {limit:g}s")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class RampSettings:
    """A challenger's canary: it serves ``steps[0]`` of the task's requests, then ``steps[1]``,
    ..., each for at least ``step_time`` seconds (and until the challenger has served
    ``RollbackSettings.min_requests`` live requests), then all of them. No steps: at once."""

    steps: tuple[float, ...] = (0.05, 0.25)
    step_time: float = 600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if any(not 0 < s < 1 for s in self.steps):
            raise ValueError("ramp steps must be percentages between 0 and 100 (exclusive)")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("ramp steps must increase")
        if not (self.step_time > 0 and math.isfinite(self.step_time)):
            raise ValueError("ramp step_time must be a duration > 0")


@dataclass(frozen=True, slots=True)
class RollbackSettings:
    """When a ramping challenger goes back out (docs/auto.md, "Rollback"): judged once it has
    ``min_requests`` live requests; its live error rate may exceed the incumbent's by at most
    ``max_error_rate_increase`` (a ratio: 0.05 = 5 points); its live median latency, relative to
    the incumbent's, may exceed what the scorecard measured by at most ``max_latency_increase``
    (0.5 = 50 %)."""

    min_requests: int = 20
    max_error_rate_increase: float = 0.05
    max_latency_increase: float = 0.5

    def __post_init__(self) -> None:
        if self.min_requests < 1:
            raise ValueError("rollback min_requests must be >= 1")
        if not 0 <= self.max_error_rate_increase <= 1:
            raise ValueError("rollback max_error_rate_increase must be a percentage 0-100")
        if not (self.max_latency_increase >= 0 and math.isfinite(self.max_latency_increase)):
            raise ValueError("rollback max_latency_increase must be a percentage >= 0")


@dataclass(frozen=True, slots=True)
class ShadowSettings:
    """Opt-in shadow traffic: ``share`` of a task's live requests is mirrored to the task's
    challenger (the ramping one, else the best-ranked other candidate), its answer discarded and
    graded by the policy's judge; at most ``max_cost`` USD (mirrored calls and their judging)
    per ``window`` seconds; each mirrored call times out after ``timeout`` seconds."""

    share: float = 0.05
    max_cost: float = 1.0
    window: float = DAY
    timeout: float = 60.0
    judge: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError("shadow percent must be in (0, 100]")
        if not (self.max_cost >= 0 and math.isfinite(self.max_cost)):
            raise ValueError("shadow max_cost must be >= 0 (USD)")
        if not (self.window > 0 and self.timeout > 0):
            raise ValueError("shadow window and timeout must be durations > 0")


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """``edgeproxy eval schedule``: re-run the suite every ``every`` seconds, writing each
    scorecard to ``out`` (``{suite}`` and ``{date}`` filled in; relative to the policy file),
    ``repeats`` times per item, under ``evals.max_cost`` per run."""

    every: float = 14 * DAY
    out: str = "scorecards/{suite}-{date}.json"
    repeats: int = 3

    def __post_init__(self) -> None:
        if not (self.every > 0 and math.isfinite(self.every)):
            raise ValueError("evals.schedule.every must be a duration > 0")
        if self.repeats < 1:
            raise ValueError("evals.schedule.repeats must be >= 1")
        if "{date}" not in self.out:
            raise ValueError("evals.schedule.out must contain {date} (each run writes a new file)")

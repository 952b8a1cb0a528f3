"""A challenger's canary ramp, and when it goes back out (docs/auto.md, "Ramp" and "Rollback").

A ramp gives the challenger ``steps[0]`` of the task's requests, then ``steps[1]``, ...; a step
ends when it has lasted ``step_time`` on the clock *and* the challenger has served
``rollback.min_requests`` live requests in it; after the last step the challenger serves
everything (it is promoted). Steps are advanced lazily, when a request or a status asks: no
timer runs.

Rollback is judged on the live requests of the ramp, once the challenger has served
``min_requests`` of them:

- **errors**: ``challenger error rate - baseline > max_error_rate_increase``, the baseline being
  the incumbent's live error rate over the same ramp (or, before it has ``min_requests``
  attempts, the error rate its scorecard measured);
- **latency**: ``(challenger median / incumbent median) > expected x (1 + max_latency_increase)``,
  ``expected`` being the same ratio of their scorecard medians (a challenger chosen for its price
  may be slower by design; what it may not be is slower than the evidence said). Judged once
  both have ``min_requests`` answered attempts;
- **quality** (with shadow grading and a floor): the 95 % interval of the challenger's
  shadow-graded pass rate lies wholly below ``min_quality``.

An attempt counts as an error when it failed for a reason that says something about the
upstream (not the client's request, not its deadline), or when its breaker kept it from being
tried at all.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

from edgeproxy.evals.stats import wilson
from edgeproxy.snapshot import RollbackSettings

LATENCY_SAMPLES = 256  # the most recent answered attempts kept per candidate for medians


@dataclass
class Outcomes:
    """Live attempts of one candidate (the ramp's, or a task's recent ones)."""

    attempts: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def record(self, ok: bool, seconds: float | None) -> None:
        self.attempts += 1
        if not ok:
            self.errors += 1
        elif seconds is not None:
            self.latencies.append(seconds)

    @property
    def error_rate(self) -> float:
        return self.errors / self.attempts if self.attempts else 0.0

    @property
    def median(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    def as_dict(self) -> dict[str, object]:
        return {
            "attempts": self.attempts,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "latency_p50_s": None if self.median is None else round(self.median, 4),
        }


@dataclass
class Graded:
    """Shadow-graded answers of one candidate (docs/auto.md, "Shadow traffic")."""

    calls: int = 0
    failed: int = 0
    graded: int = 0
    passed: int = 0
    score_sum: float = 0.0
    cost_usd: float = 0.0

    def interval(self) -> tuple[float, float]:
        return wilson(self.passed, self.graded)

    def as_dict(self) -> dict[str, object]:
        low, high = self.interval()
        return {
            "calls": self.calls,
            "failed": self.failed,
            "graded": self.graded,
            "pass_rate": round(self.passed / self.graded, 4) if self.graded else None,
            "pass_rate_95": [round(low, 4), round(high, 4)] if self.graded else None,
            "mean_score": round(self.score_sum / self.graded, 4) if self.graded else None,
            "cost_usd": round(self.cost_usd, 8),
        }


@dataclass
class Ramp:
    """One challenger's way in."""

    id: int
    challenger: str
    incumbent: str
    steps: tuple[float, ...]
    started: float  # clock seconds
    card: str  # the scorecard that decided the switch
    expected_latency_ratio: float | None  # challenger / incumbent median latency, measured
    baseline_error_rate: float  # the incumbent's, measured (until it has live attempts)
    step: int = 0
    step_started: float = 0.0
    step_served: int = 0  # the challenger's live attempts in this step
    live: dict[str, Outcomes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.step_started = self.started

    @property
    def share(self) -> float:
        return self.steps[self.step] if self.step < len(self.steps) else 1.0

    def record(self, candidate: str, ok: bool, seconds: float | None) -> None:
        self.live.setdefault(candidate, Outcomes()).record(ok, seconds)
        if candidate == self.challenger:
            self.step_served += 1

    def outcomes(self, candidate: str) -> Outcomes:
        return self.live.get(candidate) or Outcomes()

    def step_due(self, now: float, step_time: float, min_requests: int) -> bool:
        """The current step has lasted ``step_time`` and seen ``min_requests`` challenger
        attempts."""
        return now - self.step_started >= step_time and self.step_served >= min_requests

    def next_step(self, now: float) -> bool:
        """Move to the next step; True when that was the last (the challenger is promoted)."""
        self.step += 1
        self.step_started = now
        self.step_served = 0
        return self.step >= len(self.steps)

    def rollback_reason(
        self, rules: RollbackSettings, min_quality: float | None, shadow: Graded | None
    ) -> str | None:
        """Why the challenger must go back out now, or None (see the module docstring)."""
        mine = self.outcomes(self.challenger)
        theirs = self.outcomes(self.incumbent)
        enough = rules.min_requests
        if shadow is not None and min_quality is not None and shadow.graded >= enough:
            _, high = shadow.interval()
            if high < min_quality:
                return (
                    f"shadow-graded pass rate {shadow.passed}/{shadow.graded} "
                    f"(95 % up to {high:.1%}) is below min_quality {min_quality:g}"
                )
        if mine.attempts < enough:
            return None
        baseline = theirs.error_rate if theirs.attempts >= enough else self.baseline_error_rate
        where = "live" if theirs.attempts >= enough else "measured"
        if mine.error_rate - baseline > rules.max_error_rate_increase:
            return (
                f"live error rate {mine.error_rate:.1%} ({mine.errors}/{mine.attempts}) vs the "
                f"incumbent's {baseline:.1%} ({where}): more than "
                f"+{rules.max_error_rate_increase * 100:g} points"
            )
        expected = self.expected_latency_ratio
        if expected is None or len(mine.latencies) < enough or len(theirs.latencies) < enough:
            return None
        mine_p50, theirs_p50 = mine.median, theirs.median
        if mine_p50 is None or not theirs_p50:
            return None
        ratio = mine_p50 / theirs_p50
        bound = expected * (1 + rules.max_latency_increase)
        if ratio > bound:
            return (
                f"live median latency {mine_p50 * 1000:.0f} ms is {ratio:.2f}x the incumbent's "
                f"{theirs_p50 * 1000:.0f} ms; the scorecard measured {expected:.2f}x (bound "
                f"{bound:.2f}x)"
            )
        return None

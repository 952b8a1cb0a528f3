"""When to hedge: the delay before a second candidate races the first, and a cap on how often.

A hedge trades money for tail latency: both candidates may bill the prompt. So the delay comes
from what the primary candidate usually does (its recent time to first token, at a high
percentile), a candidate without enough observations is not hedged at all, and hedges are capped
at a fraction of requests, so a slow period cannot double the bill. Reasoning models think for a
long time before their first token; a percentile of their *own* history keeps them from being
hedged every time. Pure logic: the attempt loop races the candidates.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from edgeproxy.clock import Clock
from edgeproxy.resilience.budget import WindowCounter


@dataclass(frozen=True, slots=True)
class HedgeSettings:
    """Seconds for times. See docs/failover.md."""

    # A fixed delay; None derives it from the primary candidate's TTFT percentile.
    delay: float | None = None
    percentile: float = 95.0
    # Fewer observations than this give no percentile, and so no hedge.
    min_samples: int = 20
    max_samples: int = 200  # the most recent observations kept per candidate
    max_sample_age: float = 300.0  # older observations describe another load
    # Never hedge sooner than this, whatever the percentile says.
    min_delay: float = 0.05
    # Hedges <= this fraction of requests over ``window``.
    max_ratio: float = 0.1
    window: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.percentile <= 100:
            raise ValueError("hedge: percentile must be in (0, 100]")
        if self.min_samples < 1 or self.max_samples < self.min_samples:
            raise ValueError("hedge: need 1 <= min_samples <= max_samples")
        if not 0 <= self.max_ratio <= 1 or self.window <= 0 or self.max_sample_age <= 0:
            raise ValueError("hedge: max_ratio in [0, 1], window and max_sample_age > 0")
        if self.delay is not None and self.delay < 0:
            raise ValueError("hedge: delay must be >= 0")


class TtftTracker:
    """Recent time-to-first-token observations of one candidate."""

    def __init__(self, settings: HedgeSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=settings.max_samples)

    def observe(self, seconds: float) -> None:
        self._samples.append((self._clock.monotonic(), seconds))

    def _fresh(self) -> list[float]:
        oldest = self._clock.monotonic() - self._settings.max_sample_age
        while self._samples and self._samples[0][0] < oldest:
            self._samples.popleft()
        return [seconds for _, seconds in self._samples]

    def __len__(self) -> int:
        return len(self._fresh())

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile; None below ``min_samples`` observations."""
        values = sorted(self._fresh())
        if len(values) < self._settings.min_samples:
            return None
        rank = max(1, math.ceil(p / 100 * len(values)))
        return values[rank - 1]


class Hedger:
    """Per-candidate TTFT trackers and the request-wide hedge cap."""

    def __init__(self, settings: HedgeSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._trackers: dict[str, TtftTracker] = {}
        self._requests = WindowCounter(settings.window, clock)
        self._hedges = WindowCounter(settings.window, clock)
        self.denied_total = 0

    def tracker(self, key: str) -> TtftTracker:
        tracker = self._trackers.get(key)
        if tracker is None:
            tracker = self._trackers[key] = TtftTracker(self.settings, self._clock)
        return tracker

    def observe_ttft(self, key: str, seconds: float) -> None:
        self.tracker(key).observe(seconds)

    def delay(self, key: str) -> float | None:
        """Seconds to wait on candidate ``key`` before hedging; None: do not hedge it."""
        if self.settings.delay is not None:
            return max(self.settings.delay, self.settings.min_delay)
        observed = self.tracker(key).percentile(self.settings.percentile)
        return None if observed is None else max(observed, self.settings.min_delay)

    def request_started(self) -> None:
        self._requests.add()

    def try_hedge(self) -> bool:
        """Take a hedge from the cap if one fits; the loop calls it when the delay has passed."""
        if self._hedges.total() + 1 <= self.settings.max_ratio * self._requests.total():
            self._hedges.add()
            return True
        self.denied_total += 1
        return False

    def snapshot(self) -> dict[str, object]:
        return {
            "requests_in_window": self._requests.total(),
            "hedges_in_window": self._hedges.total(),
            "denied_total": self.denied_total,
            "delays": {key: self.delay(key) for key in self._trackers},
        }

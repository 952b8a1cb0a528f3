"""A retry budget (Envoy's ``retry_budget``, Linkerd's ``retryBudget``), plus the sliding-window
counter the other resilience pieces share.

Per-request attempt caps alone do not stop a retry storm: when every upstream fails, each request
still multiplies into ``max_attempts`` attempts, exactly when upstreams can least afford it. The
budget bounds retries *across* requests instead: within the window,

    retries <= ratio * requests + min_retries_per_second * window

A retry is any attempt after the first of a request: a retry on the same candidate and a failover
to the next one both spend from it. The floor (``min_retries_per_second``) keeps a quiet sidecar,
whose few requests would give a ratio of almost nothing, able to fail over at all.
"""

from __future__ import annotations

import math
from collections import deque

from edgeproxy.clock import Clock
from edgeproxy.snapshot.settings import RetryBudgetSettings


class WindowCounter:
    """Events counted over the last ``window`` seconds of the clock.

    Counts live in ``buckets`` time slices instead of one timestamp per event, so memory stays
    constant at any request rate. The price is granularity: an event leaves the count between
    ``window - window/buckets`` and ``window`` seconds after it happened. Two counters with the same
    window and bucket count see exactly the same span, which is what the budget's comparison needs.
    """

    def __init__(self, window: float, clock: Clock, buckets: int = 10) -> None:
        if window <= 0 or buckets < 1:
            raise ValueError("a window needs a positive length and at least one bucket")
        self._clock = clock
        self._width = window / buckets
        self._buckets = buckets
        self._slices: deque[list[int]] = deque()  # [slice index, count], oldest first
        self._total = 0

    def _index(self) -> int:
        return math.floor(self._clock.monotonic() / self._width)

    def _expire(self, now_index: int) -> None:
        oldest_kept = now_index - self._buckets + 1
        while self._slices and self._slices[0][0] < oldest_kept:
            self._total -= self._slices.popleft()[1]

    def add(self, n: int = 1) -> None:
        index = self._index()
        self._expire(index)
        if self._slices and self._slices[-1][0] == index:
            self._slices[-1][1] += n
        else:
            self._slices.append([index, n])
        self._total += n

    def total(self) -> int:
        self._expire(self._index())
        return self._total

    def clear(self) -> None:
        self._slices.clear()
        self._total = 0


class RetryBudget:
    """Call ``request_started()`` once per request and ``retry_started()`` for each later attempt
    (or ``try_retry()``, which checks and records in one step)."""

    def __init__(self, settings: RetryBudgetSettings, clock: Clock) -> None:
        self.settings = settings
        self._requests = WindowCounter(settings.window, clock)
        self._retries = WindowCounter(settings.window, clock)
        self.denied_total = 0

    def allowance(self) -> float:
        s = self.settings
        return s.ratio * self._requests.total() + s.min_retries_per_second * s.window

    def request_started(self) -> None:
        self._requests.add()

    def can_retry(self) -> bool:
        # "+ 1": the retry about to start must itself fit, so the bound holds after it.
        return self._retries.total() + 1 <= self.allowance()

    def retry_started(self) -> None:
        self._retries.add()

    def try_retry(self) -> bool:
        if self.can_retry():
            self.retry_started()
            return True
        self.denied_total += 1
        return False

    def snapshot(self) -> dict[str, float | int]:
        return {
            "requests_in_window": self._requests.total(),
            "retries_in_window": self._retries.total(),
            "allowance": self.allowance(),
            "denied_total": self.denied_total,
        }

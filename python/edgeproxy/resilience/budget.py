"""A retry budget (Envoy's ``retry_budget``, Linkerd's ``retryBudget``), plus the sliding-window
counter the other resilience pieces share.

Per-request attempt caps alone do not stop a retry storm: when every upstream fails, each request
still multiplies into ``max_attempts`` attempts, exactly when upstreams can least afford it. The
budget bounds retries *across* requests instead: within the window,

    retries <= ratio * requests + min_retries_per_second * window

What a retry is. A storm is extra load on upstreams that are failing; moving a request that failed
onto an upstream that is up is not one. So the budget gates:

- a retry of the **same** candidate (after a backoff);
- a failover (or a resume) onto a candidate that is **itself failing**: its recent failure ratio
  (failures over outcomes in its breaker's window) is at or above ``failing_ratio``, or its breaker
  is half-open (its trial is the candidate's first chance to prove it healed);
- a hedge (an extra attempt while the first still runs), which has its own cap as well.

A failover onto a candidate whose breaker is closed and whose failure ratio is below
``failing_ratio`` is **free**: a request that a healthy fallback can serve is never refused for
budget. This keeps the storm bounded: the healthy fallback receives at most one attempt per request
(as if the primary did not exist), the failing primary only first attempts, so attempts per request
stay <= 1 + the primary's failure rate. When the fallbacks fail too, their ratio crosses
``failing_ratio`` after their first failures (and their breakers open after
``consecutive_failures``), and from then on every further attempt spends from the budget again.

(Envoy and Linkerd count every retry, wherever it goes; both sit in meshes where "another host" is
another replica of the same service, failing for the same reasons. A sidecar's fallback is another
provider or region, failing independently, so the fallback's own health is the better gate.)

The floor (``min_retries_per_second``) keeps a quiet sidecar, whose few requests would give a ratio
of almost nothing, able to retry at all.
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
    """Call ``request_started()`` once per request, and ``try_attempt()`` before each later
    attempt (``try_retry()`` for one that always spends: a hedge)."""

    def __init__(self, settings: RetryBudgetSettings, clock: Clock) -> None:
        self.settings = settings
        self._requests = WindowCounter(settings.window, clock)
        self._retries = WindowCounter(settings.window, clock)
        self.denied_total = 0
        self.free_failovers_total = 0  # failovers onto a healthy candidate (never denied)

    def is_failing(self, failure_ratio: float) -> bool:
        """Does a candidate failing this share of its recent outcomes count as failing?"""
        return failure_ratio >= self.settings.failing_ratio

    def try_attempt(self, *, failover: bool, failure_ratio: float) -> bool:
        """May an attempt after a request's first start? A failover onto a candidate that is not
        failing always may (and spends nothing); anything else spends from the budget."""
        if failover and not self.is_failing(failure_ratio):
            self.free_failovers_total += 1
            return True
        return self.try_retry()

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
            "free_failovers_total": self.free_failovers_total,
        }

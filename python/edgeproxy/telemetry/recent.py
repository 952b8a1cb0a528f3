"""A small rolling window of recent attempts per candidate, for ``/admin/status``.

The request listener records every finished upstream attempt here (O(1), a bounded deque per
candidate); percentiles are only computed when someone asks for a snapshot.
"""

from __future__ import annotations

from collections import deque
from typing import TypedDict

from edgeproxy.clock import Clock, SystemClock


class CandidateStats(TypedDict):
    requests: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    last_error: str | None


class RecentStats:
    """The last ``max_samples`` attempts per candidate within the last ``window`` seconds."""

    def __init__(
        self, *, window: float = 300.0, max_samples: int = 512, clock: Clock | None = None
    ) -> None:
        self.window = window
        self.max_samples = max_samples
        self._clock: Clock = clock or SystemClock()
        # candidate key -> (monotonic time, ok, seconds, failure class or "")
        self._samples: dict[str, deque[tuple[float, bool, float, str]]] = {}

    def record(self, key: str, ok: bool, seconds: float, failure: str = "") -> None:
        samples = self._samples.get(key)
        if samples is None:
            samples = self._samples[key] = deque(maxlen=self.max_samples)
        samples.append((self._clock.monotonic(), ok, seconds, failure))

    def snapshot(self) -> dict[str, CandidateStats]:
        cutoff = self._clock.monotonic() - self.window
        out: dict[str, CandidateStats] = {}
        for key, samples in list(self._samples.items()):
            while samples and samples[0][0] < cutoff:
                samples.popleft()
            recent = list(samples)
            errors = [s for s in recent if not s[1]]
            latencies = sorted(s[2] for s in recent)
            out[key] = {
                "requests": len(recent),
                "errors": len(errors),
                "error_rate": round(len(errors) / len(recent), 4) if recent else 0.0,
                "p50_ms": _percentile_ms(latencies, 0.50),
                "p95_ms": _percentile_ms(latencies, 0.95),
                "last_error": errors[-1][3] if errors else None,
            }
        return out


def _percentile_ms(sorted_seconds: list[float], q: float) -> float | None:
    if not sorted_seconds:
        return None
    index = min(len(sorted_seconds) - 1, round(q * (len(sorted_seconds) - 1)))
    return round(sorted_seconds[index] * 1000, 1)

"""What the attempt loop reports while it works through a route's chain: a log line per failed
attempt, time-to-first-token samples for hedging, skips and backoffs on the request's trace."""

from __future__ import annotations

import logging

from edgeproxy.failure import AttemptFailure
from edgeproxy.resilience.engine import ResilienceEngine
from edgeproxy.server.relay import UpstreamStream, UsageCounter
from edgeproxy.snapshot import Candidate
from edgeproxy.telemetry.redact import redact
from edgeproxy.telemetry.request import AttemptTelemetry, RequestTelemetry

log = logging.getLogger("edgeproxy.access")


class AttemptLog:
    """The attempt loop's observer: a log line per failed attempt, TTFT samples for hedging,
    backoff events on the request's trace."""

    def __init__(
        self, rid: str, engine: ResilienceEngine, stream: bool, tel: RequestTelemetry
    ) -> None:
        self._rid = rid
        self._engine = engine
        self._stream = stream
        self._tel = tel

    def attempt_started(self, candidate: Candidate, number: int, hedge: bool) -> None:
        pass

    def attempt_finished(
        self, candidate: Candidate, number: int, failure: AttemptFailure | None, seconds: float
    ) -> None:
        if failure is None:
            if self._stream:
                self._engine.hedger.observe_ttft(candidate.key, seconds)
            return
        log.info(
            "attempt failed",
            extra={
                "request_id": self._rid,
                "candidate": candidate.key,
                "attempt": number,
                # Scrubbed here, not only by the formatter: any handler may see the record.
                "failure": redact(str(failure)),
            },
        )

    def skipped(self, candidate: Candidate, reason: str) -> None:
        self._tel.event(
            "edgeproxy.candidate_skipped", {"edgeproxy.candidate": candidate.key, "reason": reason}
        )

    def backing_off(self, candidate: Candidate, seconds: float) -> None:
        self._tel.backoff(seconds, f"retrying {candidate.key}")


def discard_stream(value: tuple[UpstreamStream, bytes, AttemptTelemetry, UsageCounter]) -> None:
    """A hedged stream attempt that lost the race: drop its connection, end its span."""
    value[0].close()
    value[2].abandon("lost the hedge race")
    value[2].end()

"""What the attempt loop reports while it works through a route's chain: a log line per failed
attempt, time-to-first-token samples for hedging, skips and backoffs on the request's trace."""

from __future__ import annotations

import logging

from edgeproxy.events import (
    AttemptEnded,
    AttemptStarted,
    BackingOff,
    CandidateSkipped,
    FirstToken,
    RequestEvent,
)
from edgeproxy.resilience.engine import ResilienceEngine
from edgeproxy.server.relay import UpstreamStream, UsageCounter
from edgeproxy.telemetry.redact import redact
from edgeproxy.telemetry.request import AttemptTelemetry, RequestTelemetry

log = logging.getLogger("edgeproxy.access")


class AttemptLog:
    """The attempt loop's listener: a log line per failed attempt, TTFT samples for hedging,
    skips and backoffs on the request's trace."""

    def __init__(
        self, rid: str, engine: ResilienceEngine, stream: bool, tel: RequestTelemetry
    ) -> None:
        self._rid = rid
        self._engine = engine
        self._stream = stream
        self._tel = tel
        self._keys: dict[int, str] = {}  # attempt number -> candidate key

    def on_event(self, event: RequestEvent) -> None:
        if isinstance(event, AttemptStarted):
            self._keys[event.number] = event.candidate.key
        elif isinstance(event, FirstToken):
            if self._stream and event.number in self._keys:
                self._engine.hedger.observe_ttft(self._keys[event.number], event.seconds)
        elif isinstance(event, AttemptEnded) and event.failure is not None:
            log.info(
                "attempt failed",
                extra={
                    "request_id": self._rid,
                    "candidate": event.candidate.key,
                    "attempt": event.number,
                    # Scrubbed here, not only by the formatter: any handler may see the record.
                    "failure": redact(str(event.failure)),
                },
            )
        elif isinstance(event, CandidateSkipped):
            self._tel.event(
                "edgeproxy.candidate_skipped",
                {"edgeproxy.candidate": event.candidate.key, "reason": event.detail},
            )
        elif isinstance(event, BackingOff):
            self._tel.backoff(event.seconds, f"retrying {event.candidate.key}")


def discard_stream(value: tuple[UpstreamStream, bytes, AttemptTelemetry, UsageCounter]) -> None:
    """A hedged stream attempt that lost the race: drop its connection, end its span."""
    value[0].close()
    value[2].abandon("lost the hedge race")
    value[2].end()

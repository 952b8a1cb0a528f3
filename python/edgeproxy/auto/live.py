"""What ``auto`` learns from the requests it routed: a per-request observer of their events.

The exchange's ledger passes every event of a request through its observers (after telemetry,
which stays a listener). For a request an ``auto`` route routed, ``AutoObserver`` turns the
events into live outcomes of the task's candidates (``TaskState.record``):

- an ``AttemptEnded``: ``ok`` with its seconds (a stream's attempt ends when its relay ends: its
  whole latency), or an error when it failed for a reason about the upstream (not the client's
  request, its context window or its deadline: the breakers' ``NOT_COUNTED``); an abandoned
  attempt (a hedge that lost, a client that left) says nothing;
- a ``CandidateSkipped`` for an open breaker: an error of that candidate (it could not serve);
- the first answered attempt hands the request to shadow traffic, when it was sampled.

An observer must not raise and must not block: it runs inline, on the request's path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edgeproxy.clock import Clock
from edgeproxy.events import AttemptEnded, CandidateSkipped, RequestEvent, SkipReason
from edgeproxy.snapshot import NOT_COUNTED

log = logging.getLogger("edgeproxy.auto")

Record = Callable[[str, bool, "float | None", "int | None", float, float], None]


class AutoObserver:
    """One request's events, for its route x task's live outcomes (see the module docstring)."""

    __slots__ = ("_answered", "_clock", "_on_answered", "_ramp_id", "_record")

    def __init__(
        self,
        record: Record,
        ramp_id: int | None,
        clock: Clock,
        on_answered: Callable[[], None] | None = None,
    ) -> None:
        self._record = record
        self._ramp_id = ramp_id
        self._clock = clock
        self._on_answered = on_answered
        self._answered = False

    def __call__(self, event: RequestEvent) -> None:
        try:
            if isinstance(event, AttemptEnded):
                self._attempt_ended(event)
            elif isinstance(event, CandidateSkipped) and event.reason is SkipReason.BREAKER_OPEN:
                self._outcome(event.candidate.key, False, None)
        except Exception:  # a defect here must never fail the request
            log.exception("auto could not record a request event")

    def _attempt_ended(self, event: AttemptEnded) -> None:
        if event.outcome == "ok":
            self._outcome(event.candidate.key, True, event.seconds)
            if not self._answered and self._on_answered is not None:
                self._answered = True
                self._on_answered()
            return
        failure = event.failure
        if failure is None or failure.failure in NOT_COUNTED:
            return  # abandoned, or not the upstream's fault
        self._outcome(event.candidate.key, False, None)

    def _outcome(self, key: str, ok: bool, seconds: float | None) -> None:
        self._record(key, ok, seconds, self._ramp_id, self._clock.monotonic(), time.time())

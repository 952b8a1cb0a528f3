"""LEGACY: the hop-by-hop facade, kept until the request path emits events itself.

The request path (``server/*``) still calls ``tel.route_decided(...)``, ``tel.attempt(candidate)``
→ ``AttemptTelemetry``, ``att.relay()`` → ``RelayTelemetry``, ``tel.cache(...)``... Each call is
turned into the ``events.RequestEvent`` the request path will emit instead, fed to the same
listener (``listener.RequestTelemetry``); what only this facade does (derive an attempt's kind
from the order, price usage) is here and nowhere else.

To delete it once the request path emits events: remove this file (``HopByHopTelemetry``,
``AttemptTelemetry``, ``RelayTelemetry``, ``RequestSummary``) and ``telemetry/request.py`` (its
re-exports), make ``Telemetry.start_request`` (telemetry/process.py) build and return
``listener.RequestTelemetry``, import ``Telemetry`` from ``telemetry.process`` where
``telemetry.request`` was imported (server/*, tests/harness.py), and drop
tests/unit/test_telemetry_legacy.py. Nothing else refers to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from opentelemetry.util.types import AttributeValue

from edgeproxy.cost import Usage, cost_usd
from edgeproxy.events import (
    AttemptEnded,
    AttemptKind,
    AttemptStarted,
    BackingOff,
    CacheLooked,
    CandidateSkipped,
    Committed,
    FirstToken,
    RelayEnded,
    RouteDecided,
    SkipReason,
    UsageRecorded,
)
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Candidate, Price
from edgeproxy.telemetry.listener import RequestTelemetry
from edgeproxy.telemetry.redact import redact
from edgeproxy.telemetry.spans import MAX_DETAIL


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """What ``finish`` recorded (tests read it; the request path does not)."""

    request_id: str
    trace_id: str | None
    route: str | None
    candidate: str | None  # the one that served, if any
    attempts: int
    status: int
    outcome: str
    latency_s: float
    ttft_s: float | None
    usage: Usage
    cost_usd: float
    cache: str | None


def _skip_reason(text: str) -> SkipReason:
    if "breaker" in text:
        return SkipReason.BREAKER_OPEN
    if "context window" in text:
        return SkipReason.CONTEXT_WINDOW
    return SkipReason.WIRE


def _failure_parts(
    failure: AttemptFailure | str, detail: str, status: int | None
) -> tuple[str, str, int | None]:
    if isinstance(failure, AttemptFailure):
        return str(failure.failure), detail or failure.detail, status or failure.status
    return str(failure), detail, status


class HopByHopTelemetry(RequestTelemetry):
    """The listener with the old one-call-per-hop methods on top."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.attempts: list[AttemptTelemetry] = []
        self.last_ended: AttemptTelemetry | None = None

    def route_decided(
        self,
        route: str,
        chain: Sequence[Candidate],
        *,
        skipped: Sequence[tuple[str, str]] = (),
        policy_version: str | None = None,
    ) -> None:
        by_key = {c.key: c for c in chain}
        self.on_event(
            RouteDecided(
                route,
                tuple(chain),
                tuple(
                    CandidateSkipped(by_key[key], _skip_reason(reason), reason)
                    for key, reason in skipped
                    if key in by_key
                ),
                policy_version or "",
            )
        )

    def cache(self, result: str) -> None:
        self.on_event(CacheLooked(result))

    def attempt(
        self, candidate: Candidate, n: int | None = None, *, price: Price | None = None
    ) -> AttemptTelemetry:
        """Before each upstream attempt (use it as a context manager)."""
        number = len(self.attempts) + 1 if n is None else n
        att = AttemptTelemetry(self, candidate, number, price, self._kind_of(candidate))
        self.attempts.append(att)
        return att

    def _kind_of(self, candidate: Candidate) -> AttemptKind:
        """The kind the request path will say itself: guessed from the previous attempt."""
        if not self.attempts:
            return AttemptKind.FIRST
        if any(a.outcome is None and not a.ended for a in self.attempts):
            return AttemptKind.HEDGE  # another one is still running
        if any(a.committed for a in self.attempts):
            return AttemptKind.RESUME
        last = self.last_ended
        return AttemptKind.RETRY if last and last.key == candidate.key else AttemptKind.FAILOVER

    def backoff(self, seconds: float, reason: str = "") -> None:
        if self.attempts:
            self.on_event(BackingOff(self.attempts[-1].candidate, seconds))

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """A span event on the SERVER span (no-op with tracing off)."""
        if self.spans is not None:
            self.spans.event(name, dict(attributes or {}))

    def first_token(self) -> None:
        self.first_token_sent()

    def finish(  # type: ignore[override]
        self,
        status: int,
        *,
        outcome: str | None = None,
        error_type: str | None = None,
        usage: Mapping[str, Any] | Usage | None = None,
    ) -> RequestSummary:
        for att in self.attempts:
            att.end()
        super().finish(status, outcome=outcome, error_type=error_type, usage=usage)
        end = self.finished
        assert end is not None
        return RequestSummary(
            request_id=self.request_id,
            trace_id=self.trace_id,
            route=self.route,
            candidate=end.candidate,
            attempts=len(self.attempts),
            status=end.status,
            outcome=end.outcome,
            latency_s=end.latency_s,
            ttft_s=self.ttft,
            usage=end.usage,
            cost_usd=end.cost_usd,
            cache=self.cache_status,
        )

    def __enter__(self) -> HopByHopTelemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.finished is not None:
            return
        if exc is None:
            self.finish(200)
        elif isinstance(exc, asyncio.CancelledError | ConnectionError):
            self.finish(499, outcome="client_gone", error_type="client_gone")
        else:
            self.finish(500, error_type=type(exc).__name__)


class AttemptTelemetry:
    """One upstream attempt, reported hop by hop."""

    def __init__(
        self,
        request: HopByHopTelemetry,
        candidate: Candidate,
        n: int,
        price: Price | None,
        kind: AttemptKind,
    ) -> None:
        self._req = request
        self.candidate = candidate
        self.key = candidate.key
        self.n = n
        self.price = price
        self.kind = kind
        self.started = request._t.clock.monotonic()
        self.outcome: str | None = None
        self.status: int | None = None
        self.detail = ""
        self.response_model: str | None = None
        self.committed = False
        self.cost = 0.0
        self.ended = False
        self._first = False
        self.relays: list[RelayTelemetry] = []
        request.on_event(AttemptStarted(n, candidate, kind))

    def headers(self) -> dict[str, str]:
        return dict(self._req.trace_headers(self.n))

    def first_token(self) -> None:
        if not self._first:
            self._first = True
            seconds = self._req._t.clock.monotonic() - self.started
            self._req.on_event(FirstToken(self.n, seconds))

    def succeed(self, status: int = 200, *, response_model: str | None = None) -> None:
        self.outcome = "ok"
        self.status = status
        if response_model:
            self.response_model = response_model

    def fail(
        self, failure: AttemptFailure | str, detail: str = "", *, status: int | None = None
    ) -> None:
        self.outcome, self.detail, self.status = _failure_parts(failure, detail, status)

    def abandon(self, reason: str = "cancelled") -> None:
        self.outcome = "abandoned"
        self.detail = reason

    def record_usage(self, usage: Mapping[str, Any] | Usage, *, estimated: bool = False) -> None:
        u = Usage.parse(usage)
        if estimated and not u.estimated:
            u = Usage(u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens, True)  # fmt: skip
        cost = cost_usd(self.price, u)
        self.cost += cost
        self._req.on_event(UsageRecorded(self.n, self.candidate, u, cost))

    def relay(self) -> RelayTelemetry:
        self.committed = True
        if self.outcome is None:
            self.outcome = "ok"
        self._req.on_event(Committed(self.n, self.candidate))
        relay = RelayTelemetry(self)
        self.relays.append(relay)
        return relay

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self._req.last_ended = self
        for relay in self.relays:
            relay.end()
        outcome = self.outcome or "abandoned"
        self.outcome = outcome
        failure = None
        if outcome not in ("ok", "abandoned"):
            failure = _as_failure(outcome, redact(self.detail)[:MAX_DETAIL], self.status)
        self._req.on_event(
            AttemptEnded(
                self.n,
                self.candidate,
                self.kind,
                outcome,
                self._req._t.clock.monotonic() - self.started,
                failure,
                self.status,
                self.response_model,
            )
        )

    def __enter__(self) -> AttemptTelemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and (
            self.outcome is None or (self.outcome == "ok" and not self.committed)
        ):
            if isinstance(exc, AttemptFailure):
                self.fail(exc)
            elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
                self.abandon("cancelled")
            elif isinstance(exc, Exception):
                self.fail("internal", type(exc).__name__)
        self.end()


class RelayTelemetry:
    """The stream relay from one attempt to the client (after the commit point)."""

    def __init__(self, attempt: AttemptTelemetry) -> None:
        self._att = attempt
        self.chunks = 0
        self.bytes = 0
        self.skipped_events = 0
        self.outcome: str | None = None
        self.detail = ""
        self.ended = False

    def chunk(self, n_bytes: int = 0) -> None:
        self.chunks += 1
        self.bytes += n_bytes

    def complete(self) -> None:
        self.outcome = "complete"

    def fail(self, failure: AttemptFailure | str, detail: str = "") -> None:
        self.outcome, self.detail, _ = _failure_parts(failure, detail, None)
        att = self._att
        if not att.ended:
            att.outcome, att.detail = self.outcome, self.detail

    def client_gone(self) -> None:
        self.outcome = "client_gone"

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        outcome = self.outcome or "complete"
        self._att._req.on_event(
            RelayEnded(
                self._att.n,
                outcome,
                self.chunks,
                self.bytes,
                redact(self.detail),
                self.skipped_events,
            )
        )

    def __enter__(self) -> RelayTelemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self.outcome in (None, "complete"):
            if isinstance(exc, AttemptFailure):
                self.fail(exc)
            elif isinstance(exc, asyncio.CancelledError | ConnectionError):
                self.client_gone()
            elif isinstance(exc, Exception):
                self.fail("internal", type(exc).__name__)
        self.end()


def _as_failure(outcome: str, detail: str, status: int | None) -> AttemptFailure:
    """The failure behind an outcome (its class is only a carrier: the outcome says what
    happened, "internal" included)."""
    try:
        return AttemptFailure(FailureClass(outcome), detail, status)
    except ValueError:  # "internal" is not a failure class
        return AttemptFailure(FailureClass.MALFORMED, detail, status)

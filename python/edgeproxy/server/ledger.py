"""The exchange's own record of its attempts: what each was, how it ended, what it cost.

Every event of the request passes through the ledger on its way to the request's telemetry (the
listener): the ledger keeps what the exchange itself needs (the attempt count and cost for the
response headers, the attempt numbers a resume continues from), so the request path never reads
telemetry state back. It also feeds the one piece of resilience state that learns from answers:
the hedger's time-to-first-token samples.

A stream's attempt outlives the attempt loop: it is settled when its relay ends. ``LegReport``
is what the relay tells about that leg (commit, chunks, how it ended, its usage); it emits the
leg's ``Committed``, ``UsageRecorded``, ``RelayEnded`` and ``AttemptEnded`` in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeproxy.clock import Clock
from edgeproxy.cost import ZERO_USAGE, Usage, cost_usd
from edgeproxy.events import (
    AttemptEnded,
    AttemptKind,
    AttemptStarted,
    Committed,
    FirstToken,
    RelayEnded,
    RequestEvent,
    RequestListener,
    SummaryMade,
    UsageRecorded,
)
from edgeproxy.failure import AttemptFailure
from edgeproxy.resilience.hedge import Hedger
from edgeproxy.snapshot import Candidate
from edgeproxy.telemetry.redact import redact


@dataclass
class Entry:
    """One attempt, as the exchange knows it."""

    candidate: Candidate
    kind: AttemptKind
    started: float
    outcome: str | None = None  # "ok", a failure class or "abandoned", once it ended
    cost: float = 0.0
    input_tokens: int = 0  # prompt tokens (cached and written included), for limits' settling
    output_tokens: int = 0


@dataclass
class Ledger:
    """The request's attempts by number, and the listener every event is passed on to."""

    listener: RequestListener
    clock: Clock
    hedger: Hedger | None = None  # learns streams' times to first token (hedge delays)
    entries: dict[int, Entry] = field(default_factory=dict)
    # Also told every event, after telemetry (an ``auto`` route's live outcomes: auto/live.py).
    observers: list[Callable[[RequestEvent], None]] = field(default_factory=list)
    side_cost: float = 0.0  # calls made for the request that are not attempts (summaries)

    # -- RequestListener ---------------------------------------------------------------------

    def on_event(self, event: RequestEvent) -> None:
        if isinstance(event, AttemptStarted):
            self.entries[event.number] = Entry(event.candidate, event.kind, self.clock.monotonic())
        elif isinstance(event, AttemptEnded):
            entry = self.entries.get(event.number)
            if entry is not None:
                entry.outcome = event.outcome
        elif isinstance(event, UsageRecorded):
            entry = self.entries.get(event.number)
            if entry is not None:
                entry.cost += event.cost_usd
                entry.input_tokens += event.usage.total_input_tokens
                entry.output_tokens += event.usage.output_tokens
        elif isinstance(event, FirstToken) and self.hedger is not None:
            entry = self.entries.get(event.number)
            if entry is not None:
                self.hedger.observe_ttft(entry.candidate.key, event.seconds)
        self.listener.on_event(event)
        for observe in self.observers:
            observe(event)

    def trace_headers(self, number: int) -> Mapping[str, str]:
        return self.listener.trace_headers(number)

    # -- what the exchange reads ---------------------------------------------------------------

    @property
    def attempts(self) -> int:
        """Attempts started so far (resumed legs included)."""
        return len(self.entries)

    @property
    def cost(self) -> float:
        """USD of every attempt so far, failed ones included (a failover's real price), and of
        the calls made for them (a compaction's summary)."""
        return sum(entry.cost for entry in self.entries.values()) + self.side_cost

    def usage(
        self, number: int, usage: Mapping[str, Any] | Usage, *, estimated: bool = False
    ) -> None:
        """An attempt's usage (the upstream's, or with ``estimated`` the proxy's own count),
        priced with its candidate's price."""
        entry = self.entries[number]
        parsed = Usage.parse(usage)
        if estimated and not parsed.estimated:
            parsed = Usage(
                parsed.input_tokens,
                parsed.output_tokens,
                parsed.cached_input_tokens,
                parsed.cache_write_tokens,
                True,
            )
        cost = cost_usd(entry.candidate.price, parsed)
        self.on_event(UsageRecorded(number, entry.candidate, parsed, cost))

    def summary(
        self, candidate: Candidate, outcome: str, usage: Usage | None, seconds: float
    ) -> None:
        """A summariser call made for this request's compaction (``outcome`` "cached": none was
        made), priced with the summariser's price."""
        parsed = usage or ZERO_USAGE
        cost = cost_usd(candidate.price, parsed) if usage is not None else 0.0
        self.side_cost += cost
        self.on_event(SummaryMade(candidate, outcome, parsed, cost, seconds))

    def leg(self, number: int) -> LegReport:
        return LegReport(self, number)


class LegReport:
    """What the relay tells about one leg of a stream (the attempt that serves it)."""

    __slots__ = ("_ledger", "bytes", "chunks", "detail", "failure", "number", "outcome", "skipped")

    def __init__(self, ledger: Ledger, number: int) -> None:
        self._ledger = ledger
        self.number = number
        self.chunks = 0
        self.bytes = 0
        self.skipped = 0  # malformed upstream events skipped
        self.outcome = "complete"  # or a failure class, "client_gone", "client_timeout"
        self.detail = ""
        self.failure: AttemptFailure | None = None  # the upstream broke the stream

    @property
    def candidate(self) -> Candidate:
        return self._ledger.entries[self.number].candidate

    def committed(self) -> None:
        """The leg's first bytes go to the client (the commit point, or a resume's first)."""
        self._ledger.on_event(Committed(self.number, self.candidate))

    def chunk(self, n_bytes: int) -> None:
        self.chunks += 1
        self.bytes += n_bytes

    def failed(self, failure: AttemptFailure) -> None:
        """The upstream broke the stream (cut, stall, in-band error, ...)."""
        self.failure = failure
        self.outcome = str(failure.failure)
        self.detail = redact(failure.detail)

    def client_left(self, outcome: str, detail: str = "") -> None:
        """The client went away (``client_gone``) or did not read in time
        (``client_timeout``): not the upstream's fault."""
        self.outcome = outcome
        self.detail = detail

    def end(
        self,
        usage: Mapping[str, Any] | None,
        *,
        estimated: bool = False,
        response_model: str | None = None,
    ) -> None:
        """The leg is over: its usage, the relay's summary, and the attempt's end."""
        ledger = self._ledger
        entry = ledger.entries[self.number]
        if usage is not None:
            ledger.usage(self.number, usage, estimated=estimated)
        ledger.on_event(
            RelayEnded(
                self.number, self.outcome, self.chunks, self.bytes, self.detail, self.skipped
            )
        )
        failure = self.failure
        ledger.on_event(
            AttemptEnded(
                self.number,
                entry.candidate,
                entry.kind,
                "ok" if failure is None else str(failure.failure),
                ledger.clock.monotonic() - entry.started,
                failure=failure,
                status=200,
                response_model=response_model,
            )
        )

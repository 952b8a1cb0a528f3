"""One request's telemetry: the listener its request path emits ``events.RequestEvent`` values to.

The request path never touches OpenTelemetry, metrics or the access log. It makes one listener
per request and tells it what happened; the only thing it reads back is the trace context to
send upstream::

    tel = telemetry.start_request(request_id=rid, headers=request.headers, path=path,
                                  capture_content=policy.capture_content)   # ingress
    tel.request_parsed(body["model"], stream=stream)                          # body parsed
    tel.on_event(RouteDecided(...)); tel.on_event(CacheLooked("miss"))
    tel.on_event(AttemptStarted(1, candidate, AttemptKind.FIRST))
    upstream_headers |= tel.trace_headers(1)     # W3C traceparent/tracestate for attempt 1
    tel.on_event(FirstToken(1, s)); tel.on_event(Committed(1, candidate))
    tel.on_event(UsageRecorded(1, candidate, usage, cost)); tel.on_event(RelayEnded(1, ...))
    tel.on_event(AttemptEnded(1, candidate, kind, "ok", seconds))
    tel.finish(200)                              # once: SERVER span, metrics, access log line

Besides the events: ``shed(reason)`` when a limit refused the request before routing,
``first_token_sent()`` when a stream's first token reached the client without an attempt (a
cached stream replayed, a coalesced follower), ``content(...)`` (below) and ``finish``.

What the events become (docs/observability.md has the names):

- ``AutoDecided``: an ``auto`` route's choice: ``edgeproxy.auto.*`` on the SERVER span and
  the access log's ``auto`` field (``role:candidate``).
- ``RouteDecided``/``CacheLooked``: attributes of the SERVER span; each skipped candidate (and
  each ``CandidateSkipped``) an ``edgeproxy.candidate_skipped`` event on it; the cache lookup
  is counted at ``finish``, under the route.
- ``AttemptStarted``: the attempt's CLIENT span starts (its kind from the event, never from the
  order); ``edgeproxy.hedges`` counts a HEDGE, ``edgeproxy.failovers`` a FAILOVER or RESUME
  (labelled with the failure class of the attempt that failed before it).
- ``FirstToken``: the attempt's time to first chunk; the first one is the request's TTFT.
- ``UsageRecorded``: tokens and cost (the request path's ledger prices the usage; telemetry
  only adds up what it is told).
- ``Committed``/``RelayEnded``: the attempt served the client; the relay's chunks, bytes and
  outcome become attributes of its span; a relay that failed is the request's outcome (unless
  a later leg, a resume, completes the stream).
- ``AttemptEnded``: the CLIENT span ends; the attempt's metrics; ``/admin/status``' window.
- ``BackingOff``: an ``edgeproxy.backoff`` event on the SERVER span.
- ``ContextCompacted``: the attempt's compaction (tokens before and after, the strategies) on its
  span; the served attempt's on the SERVER span and the access log; ``edgeproxy.context
  .compactions`` counts it.
- ``SummaryMade``: an ``edgeproxy.summary`` event on the SERVER span; its cost is the request's
  (and ``edgeproxy.cost_usd``'s, under the summariser), ``edgeproxy.context.summaries`` counts it.
- ``AffinityRouted``: the decision on the SERVER span and in the access log;
  ``edgeproxy.affinity.routed`` counts it.

Attempt numbers key the per-attempt state; an attempt still open at ``finish`` is ended there
as ``abandoned``.

**Prompt and completion text** (``capture_content: true`` in the policy, and tracing records
this request): the request path hands the text over with ``content()``, checking
``tel.capture_content`` first so that nothing is built when it is off::

    if tel.capture_content:
        tel.content(input_messages=body["messages"])            # after parsing (OpenAI shape)
    ...
    if tel.capture_content:                                     # when the answer is whole
        tel.content(output_messages=[{"role": "assistant", "content": text}])

They become ``gen_ai.input.messages``/``gen_ai.output.messages`` on the SERVER span (JSON,
redacted, at most ``MAX_CONTENT`` characters each). Nothing else ever puts text on a span.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.trace import Status, StatusCode

from edgeproxy.cost import ZERO_USAGE, Usage
from edgeproxy.events import (
    AffinityRouted,
    AttemptEnded,
    AttemptKind,
    AttemptStarted,
    AutoDecided,
    BackingOff,
    CacheLooked,
    CandidateSkipped,
    Committed,
    ContextCompacted,
    FirstToken,
    KeyAuthenticated,
    LimitRefused,
    RelayEnded,
    RequestEvent,
    RouteDecided,
    SummaryMade,
    TaskDecided,
    UsageRecorded,
)
from edgeproxy.telemetry.attempt import AttemptRecord
from edgeproxy.telemetry.redact import redact, redact_name
from edgeproxy.telemetry.spans import (
    MAX_DETAIL,
    UNSET,
    Attributes,
    RequestSpans,
    traceparent_headers,
)
from edgeproxy.telemetry.tracing import incoming_context, parse_traceparent

if TYPE_CHECKING:
    from edgeproxy.telemetry.process import Telemetry

log = logging.getLogger("edgeproxy.telemetry")
# One line per failed attempt, beside the request's access-log line (which lists every attempt's
# outcome): which candidate failed, how, in the upstream's (scrubbed) words.
attempts_log = logging.getLogger("edgeproxy.access")

NO_ROUTE = "none"  # metric label when no route matched (never the client's model string)
MAX_CONTENT = 32_768  # characters of captured prompt or completion text per attribute
_OK_OUTCOMES = ("ok", "cache_hit", "client_error", "shed", "limited")


class RequestTelemetry:
    """Everything one request records. Not thread-safe: one per request, on the event loop."""

    def __init__(
        self,
        telemetry: Telemetry,
        request_id: str,
        headers: Mapping[str, str],
        method: str,
        path: str,
        operation: str,
        capture_content: bool,
    ) -> None:
        self._t = telemetry
        self._metrics = telemetry.metrics
        self.request_id = redact(request_id)  # may be the client's own (a sane x-request-id)
        self.operation = operation
        self.started = telemetry.clock.monotonic()
        self.route: str | None = None
        self.request_model: str | None = None
        self.stream = False
        self.policy_version: str | None = None
        self.cache_status: str | None = None
        self.task: TaskDecided | None = None
        self.auto: AutoDecided | None = None
        self._attempts: dict[int, AttemptRecord] = {}
        self.ttft: float | None = None
        self.outcome: str | None = None  # set by shed() or a failed relay, else by finish()
        self.error_type: str | None = None
        self._last_failure: str | None = None
        self._relay_failed = False  # the request's outcome is a relay's failure
        self._chain: tuple[str, ...] = ()
        self.finished: Finished | None = None  # what finish() recorded (tests read it)
        self.affinity: AffinityRouted | None = None
        self._side_cost = 0.0  # summaries made for this request's compaction
        self.key: KeyAuthenticated | None = None  # the virtual key it carried (docs/keys.md)
        self._content: dict[str, str] = {}
        builder = telemetry.spans
        if builder is None:
            self.spans: RequestSpans | None = None
            self._passthrough = incoming_context(headers)
            parsed = parse_traceparent(self._passthrough.get("traceparent", ""))
            self.trace_id = parsed[0] if parsed else None
        else:
            self.spans = builder.request(
                headers,
                f"{method} {path}",
                {
                    "http.request.method": method,
                    "http.route": path,
                    "gen_ai.operation.name": operation,
                    "edgeproxy.request_id": self.request_id,
                },
            )
            self._passthrough = {}
            self.trace_id = self.spans.trace_id
        # Text goes on spans only when the policy opts in and this request's spans record.
        self.capture_content = capture_content and self.spans is not None and self.spans.recording
        telemetry.inflight += 1

    # -- what ingress tells it -------------------------------------------------------------------

    def request_parsed(self, model: str, *, stream: bool = False) -> None:
        """After the body is parsed: the model the app asked for, and whether it streams."""
        self.request_model = redact_name(model[:256])  # the client's own text: on spans and logs
        self.stream = stream

    def content(self, *, input_messages: Any = None, output_messages: Any = None) -> None:
        """Prompt/completion text for the SERVER span; ignored unless ``capture_content``."""
        if not self.capture_content:
            return
        if input_messages is not None:
            self._content["gen_ai.input.messages"] = _text(input_messages)
        if output_messages is not None:
            self._content["gen_ai.output.messages"] = _text(output_messages)

    def shed(self, reason: str) -> None:
        """A limit refused the request before routing; ``finish`` still has to be called."""
        self.outcome = "shed"
        self.error_type = reason
        if self._metrics is not None:
            self._metrics.shed.add(1, (reason,))

    def first_token_sent(self) -> None:
        """A stream's first token reached the client without an attempt of this request (a
        cached stream replayed, a coalesced follower)."""
        if self.ttft is None:
            self.ttft = self._t.clock.monotonic() - self.started

    # -- RequestListener -------------------------------------------------------------------------

    def on_event(self, event: RequestEvent) -> None:
        """One event of this request (an event type this listener does not know is ignored).
        Never raises: a telemetry defect is logged, the request goes on."""
        handler = _DISPATCH.get(type(event))
        if handler is None:
            return
        try:
            handler(self, event)
        except Exception:
            log.exception("telemetry could not record %s", type(event).__name__)

    def trace_headers(self, number: int) -> Mapping[str, str]:
        """``traceparent``/``tracestate`` for attempt ``number``'s upstream request (emit its
        ``AttemptStarted`` first): its CLIENT span as the parent; with tracing off, the app's own
        valid context unchanged."""
        spans = self.spans
        if spans is None:
            return self._passthrough
        att = self._attempts.get(number)
        span = att.span if att is not None else None
        return traceparent_headers(span.context if span is not None else spans.context)

    def _route_decided(self, event: RouteDecided) -> None:
        self.route = event.route
        self.policy_version = event.policy_version or None
        self._chain = tuple(c.key for c in event.chain)
        for skipped in event.skipped:
            self._candidate_skipped(skipped)

    def _task_decided(self, event: TaskDecided) -> None:
        self.task = event

    def _auto_decided(self, event: AutoDecided) -> None:
        self.auto = event

    def _cache_looked(self, event: CacheLooked) -> None:
        self.cache_status = event.result

    def _candidate_skipped(self, event: CandidateSkipped) -> None:
        if self.spans is not None:
            self.spans.event(
                "edgeproxy.candidate_skipped",
                {
                    "edgeproxy.candidate": event.candidate.key,
                    "edgeproxy.reason": str(event.reason),
                    "edgeproxy.detail": redact(event.detail)[:MAX_DETAIL],
                },
            )

    def _attempt_started(self, event: AttemptStarted) -> None:
        candidate, kind = event.candidate, event.kind
        att = AttemptRecord(event.number, candidate, kind, self._t.clock.monotonic())
        att.labels = (self.operation, candidate.provider, candidate.upstream_model, att.key)
        self._attempts[event.number] = att
        if self.spans is not None:
            att.span = self.spans.attempt()
        metrics = self._metrics
        if metrics is not None:
            route = self.route or NO_ROUTE
            if kind is AttemptKind.HEDGE:
                metrics.hedges.add(1, (route,))
            elif kind is AttemptKind.FAILOVER or kind is AttemptKind.RESUME:
                metrics.failovers.add(1, (route, self._last_failure or "unknown"))

    def _first_token(self, event: FirstToken) -> None:
        att = self._attempts.get(event.number)
        if att is None or att.ttfc is not None:
            return
        att.ttfc = event.seconds
        if self.ttft is None:
            self.ttft = self._t.clock.monotonic() - self.started
        if self._metrics is not None:
            self._metrics.time_to_first_chunk.record(event.seconds, att.labels)

    def _usage_recorded(self, event: UsageRecorded) -> None:
        att = self._attempts.get(event.number)
        if att is None:
            return
        usage = event.usage
        att.usage = usage if att.usage is None else att.usage + usage
        att.cost += event.cost_usd
        metrics = self._metrics
        if metrics is not None:
            labels = att.labels
            if usage.total_input_tokens:
                metrics.token_usage.record(usage.total_input_tokens, (*labels, "input"))
                cache = (self.route or NO_ROUTE, att.key)
                for kind, tokens in (
                    ("read", usage.cached_input_tokens),
                    ("write", usage.cache_write_tokens),
                    ("uncached", usage.input_tokens),
                ):
                    if tokens:
                        metrics.prompt_cache_tokens.add(tokens, (*cache, kind))
            if usage.output_tokens:
                metrics.token_usage.record(usage.output_tokens, (*labels, "output"))
            if event.cost_usd:
                metrics.cost.add(event.cost_usd, (self.route or NO_ROUTE, att.key))

    def _committed(self, event: Committed) -> None:
        att = self._attempts.get(event.number)
        if att is None:
            return
        att.committed = True
        if self.ttft is None:
            self.ttft = self._t.clock.monotonic() - self.started

    def _relay_ended(self, event: RelayEnded) -> None:
        att = self._attempts.get(event.number)
        if att is None:
            return
        att.relay = event.outcome
        att.chunks += event.chunks
        att.bytes += event.bytes
        att.skipped_events += event.skipped_events
        if event.outcome == "complete":
            if self._relay_failed:  # an earlier leg broke, this one (a resume) finished it
                self.outcome = self.error_type = None
                self._relay_failed = False
        elif event.outcome == "client_gone":
            if self.outcome is None:
                self.outcome = "client_gone"
        else:
            self.outcome = self.error_type = self._last_failure = event.outcome
            self._relay_failed = True
            if not att.ended:
                att.outcome, att.detail = event.outcome, event.detail

    def _attempt_ended(self, event: AttemptEnded) -> None:
        att = self._attempts.get(event.number)
        if att is None or att.ended:
            return
        if att.relay is None or att.relay in ("complete", "client_gone"):
            att.outcome = event.outcome
            if event.failure is not None:
                att.detail = event.failure.detail
        if event.status is not None:
            att.status = event.status
        elif event.failure is not None:
            att.status = event.failure.status
        if event.response_model:
            att.response_model = event.response_model[:256]
        if event.failure is not None and attempts_log.isEnabledFor(logging.INFO):
            attempts_log.info(
                "attempt failed",
                extra={
                    "request_id": self.request_id,
                    "candidate": att.key,
                    "attempt": event.number,
                    # Scrubbed here, not only by the formatter: any handler may see the record.
                    "failure": redact(str(event.failure)),
                },
            )
        self._end_attempt(att, event.seconds)

    def _context_compacted(self, event: ContextCompacted) -> None:
        att = self._attempts.get(event.number)
        if att is None:
            return
        att.compaction = event
        if self._metrics is not None:
            strategies = "+".join(event.strategies) or "none"
            self._metrics.compactions.add(1, (self.route or NO_ROUTE, att.key, strategies))

    def _summary_made(self, event: SummaryMade) -> None:
        self._side_cost += event.cost_usd
        key = event.candidate.key
        usage = event.usage
        if self.spans is not None:
            self.spans.event(
                "edgeproxy.summary",
                {
                    "edgeproxy.candidate": key,
                    "edgeproxy.outcome": event.outcome,
                    "gen_ai.usage.input_tokens": usage.total_input_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                    "edgeproxy.cost_usd": event.cost_usd,
                },
            )
        metrics = self._metrics
        if metrics is not None:
            route = self.route or NO_ROUTE
            metrics.summaries.add(1, (route, key, event.outcome))
            if event.cost_usd:
                metrics.cost.add(event.cost_usd, (route, key))

    def _affinity_routed(self, event: AffinityRouted) -> None:
        self.affinity = event
        if self._metrics is not None:
            self._metrics.affinity_routed.add(1, (self.route or NO_ROUTE, event.outcome))

    def _key_authenticated(self, event: KeyAuthenticated) -> None:
        self.key = event

    def _limit_refused(self, event: LimitRefused) -> None:
        self.outcome = "limited"
        self.error_type = event.limit
        if self._metrics is not None:
            self._metrics.limits_refused.add(1, (self.route or NO_ROUTE, event.limit))

    def _backing_off(self, event: BackingOff) -> None:
        if self.spans is not None:
            self.spans.event(
                "edgeproxy.backoff",
                {"edgeproxy.candidate": event.candidate.key, "edgeproxy.delay_s": event.seconds},
            )

    def _end_attempt(self, att: AttemptRecord, seconds: float) -> None:
        att.ended = True
        outcome = att.outcome or "abandoned"
        att.outcome = outcome
        ok = outcome == "ok"
        if not ok and outcome != "abandoned":
            self._last_failure = outcome
        key = att.key
        self._t.recent.record(key, ok, seconds, "" if ok else outcome)
        metrics = self._metrics
        if metrics is not None:
            metrics.attempts.add(1, (self.route or NO_ROUTE, key, outcome))
            metrics.operation_duration.record(seconds, (*att.labels, None if ok else outcome))
        if self.spans is not None:
            self.spans.end_attempt(att, self.operation)

    # -- the end ---------------------------------------------------------------------------------

    def finish(
        self,
        status: int,
        *,
        outcome: str | None = None,
        error_type: str | None = None,
        usage: Mapping[str, Any] | Usage | None = None,
    ) -> None:
        """Once, when the response has ended (or failed): ends what is still open, records the
        request's metrics and writes the access log line. ``usage`` is a cache hit's (it costs
        nothing). Idempotent."""
        if self.finished is not None:
            return
        t = self._t
        clock = t.clock
        latency = clock.monotonic() - self.started
        for att in self._attempts.values():
            if not att.ended:
                att.detail = att.detail or "ended without an outcome"
                self._end_attempt(att, clock.monotonic() - att.started)
        served = self._served()
        outcome = outcome or self.outcome or _outcome(status, self.cache_status)
        if error_type is None:
            error_type = self.error_type
        if error_type is None and (status >= 500 or outcome not in ("ok", "cache_hit")):
            error_type = self._last_failure or (str(status) if status >= 400 else outcome)
        total = ZERO_USAGE if usage is None else Usage.parse(usage)
        cost = self._side_cost
        for att in self._attempts.values():
            if att.usage is not None:
                total = total + att.usage
            cost += att.cost
        route = self.route or NO_ROUTE
        candidate = served.key if served is not None else None
        self.finished = Finished(status, outcome, error_type, candidate, total, cost, latency)
        if self.spans is not None:
            self._server_span(self.spans, status, outcome, error_type, served, total, cost)
        t.inflight -= 1
        metrics = self._metrics
        if metrics is not None:
            # Label tuples in the order of each instrument's keys (see telemetry/metrics.py).
            metrics.requests.add(1, (route, candidate or NO_ROUTE, outcome))
            metrics.request_duration.record(latency, (route, self.operation, error_type))
            if self.ttft is not None:
                metrics.time_to_first_token.record(self.ttft, (route, self.operation))
            if self.cache_status is not None:
                metrics.cache_lookups.add(1, (route, self.cache_status))
        log = t.access_log
        if log.enabled():
            ttft = self.ttft
            log.write(
                time.time(),
                (
                    self.request_id,
                    self.trace_id,
                    self.route,
                    self.request_model,
                    self.stream,
                    candidate,
                    len(self._attempts),
                    [f"{a.key}={a.outcome}" for a in self._attempts.values()],
                    status,
                    outcome,
                    error_type,
                    round(latency * 1000, 1),
                    round(ttft * 1000, 1) if ttft is not None else None,
                    total.total_input_tokens,
                    total.cached_input_tokens,
                    total.output_tokens,
                    round(cost, 8),
                    self.cache_status,
                    self.policy_version,
                    self.task.task if self.task is not None else None,
                    self.task.source if self.task is not None else None,
                    _auto_field(self.auto),
                    total.cache_write_tokens,
                    _compacted(served),
                    "+".join(served.compaction.strategies)
                    if served is not None and served.compaction is not None
                    else None,
                    self.affinity.outcome if self.affinity is not None else None,
                    self.key.name if self.key is not None else None,
                    self.key.team if self.key is not None else None,
                ),
            )

    def _server_span(
        self,
        spans: RequestSpans,
        status: int,
        outcome: str,
        error_type: str | None,
        served: AttemptRecord | None,
        total: Usage,
        cost: float,
    ) -> None:
        attrs: Attributes = {
            "http.response.status_code": status,
            "edgeproxy.outcome": outcome,
            "edgeproxy.attempts": len(self._attempts),
            "edgeproxy.cost_usd": cost,
            "gen_ai.usage.input_tokens": total.total_input_tokens,
            "gen_ai.usage.output_tokens": total.output_tokens,
            "edgeproxy.stream": self.stream,
        }
        if self.request_model is not None:
            attrs["gen_ai.request.model"] = self.request_model
        if self.route is not None:
            attrs["edgeproxy.route"] = self.route
            attrs["edgeproxy.chain"] = self._chain
        if self.policy_version is not None:
            attrs["edgeproxy.policy_version"] = self.policy_version
        if self.cache_status is not None:
            attrs["edgeproxy.cache.result"] = self.cache_status
        if self.task is not None:
            attrs["edgeproxy.task"] = self.task.task
            attrs["edgeproxy.task.source"] = self.task.source
            for name, value in self.task.detail.items():  # task_rule, task_label, task_score, ...
                attrs[f"edgeproxy.{name.replace('task_', 'task.', 1)}"] = value
        auto = self.auto
        if auto is not None:
            attrs["edgeproxy.auto.role"] = auto.role
            if auto.choice is not None:
                attrs["edgeproxy.auto.choice"] = auto.choice
            if auto.share is not None:
                attrs["edgeproxy.auto.share"] = auto.share
        if served is not None:
            attrs["edgeproxy.candidate"] = served.key
            attrs["gen_ai.provider.name"] = served.candidate.provider
            attrs["gen_ai.response.model"] = (
                served.response_model or served.candidate.upstream_model
            )
        if self.ttft is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = self.ttft
        if total.cached_input_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = total.cached_input_tokens
        if total.cache_write_tokens:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = total.cache_write_tokens
        compaction = served.compaction if served is not None else None
        if compaction is not None:
            attrs["edgeproxy.context.compacted"] = _compacted(served) or ""
            attrs["edgeproxy.context.strategies"] = compaction.strategies
        if self.affinity is not None:
            attrs["edgeproxy.affinity.outcome"] = self.affinity.outcome
            attrs["edgeproxy.affinity.home"] = self.affinity.home
        if self.key is not None:
            attrs["edgeproxy.key.id"] = self.key.key_id
            attrs["edgeproxy.key.name"] = self.key.name
            if self.key.team is not None:
                attrs["edgeproxy.key.team"] = self.key.team
        if error_type is not None:
            attrs["error.type"] = error_type
        if self._content:
            attrs.update(self._content)
        error = status >= 500 or outcome not in _OK_OUTCOMES
        spans.end(attrs, Status(StatusCode.ERROR, error_type) if error else UNSET)

    def _served(self) -> AttemptRecord | None:
        """The attempt that answered the client: the last one that succeeded or committed."""
        for att in reversed(self._attempts.values()):
            if att.outcome == "ok" or att.committed:
                return att
        return None


@dataclass(frozen=True, slots=True)
class Finished:
    """What ``finish`` recorded."""

    status: int
    outcome: str
    error_type: str | None
    candidate: str | None  # the key of the one that served, if any
    usage: Usage
    cost_usd: float
    latency_s: float


def _auto_field(auto: AutoDecided | None) -> str | None:
    """The access log's ``auto``: ``role:candidate`` (``challenger:p/r/m``), or None."""
    if auto is None:
        return None
    return auto.role if auto.choice is None else f"{auto.role}:{auto.choice}"


def _compacted(att: AttemptRecord | None) -> str | None:
    """``<tokens before>-><tokens after>`` of an attempt's compacted conversation."""
    if att is None or att.compaction is None:
        return None
    return f"{att.compaction.tokens_before}->{att.compaction.tokens_after}"


def _outcome(status: int, cache: str | None) -> str:
    if status < 400:
        return "cache_hit" if cache == "hit" else "ok"
    if status == 499:
        return "client_gone"
    return "client_error" if status < 500 else "error"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    # Redacted before the final cut, so that the cut cannot leave half a key unrecognised; the
    # first cut only bounds the redactor's work.
    return redact(text[: 2 * MAX_CONTENT])[:MAX_CONTENT]


_DISPATCH: dict[type, Callable[[RequestTelemetry, Any], None]] = {
    RouteDecided: RequestTelemetry._route_decided,
    TaskDecided: RequestTelemetry._task_decided,
    AutoDecided: RequestTelemetry._auto_decided,
    CacheLooked: RequestTelemetry._cache_looked,
    CandidateSkipped: RequestTelemetry._candidate_skipped,
    AttemptStarted: RequestTelemetry._attempt_started,
    FirstToken: RequestTelemetry._first_token,
    UsageRecorded: RequestTelemetry._usage_recorded,
    Committed: RequestTelemetry._committed,
    RelayEnded: RequestTelemetry._relay_ended,
    AttemptEnded: RequestTelemetry._attempt_ended,
    BackingOff: RequestTelemetry._backing_off,
    ContextCompacted: RequestTelemetry._context_compacted,
    SummaryMade: RequestTelemetry._summary_made,
    AffinityRouted: RequestTelemetry._affinity_routed,
    KeyAuthenticated: RequestTelemetry._key_authenticated,
    LimitRefused: RequestTelemetry._limit_refused,
}

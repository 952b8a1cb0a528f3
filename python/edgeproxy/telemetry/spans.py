"""Spans: one SERVER span per request and one CLIENT span per upstream attempt, built at their end.

The request's listener keeps plain values while the request runs; each span is built once, when
it ends, as the SDK's ``ReadableSpan`` (the type span processors and exporters consume) and
handed to the tracer provider's span processors (the batch processor and OTLP exporter in
production, an in-memory exporter in tests). The provider's sampler, id generator and resource
are used as configured.

Why not the SDK's ``Tracer.start_span``: its ``Span`` validates and copies every attribute under a
lock (~3 µs each, ~90 µs for a request's two spans on the bench machine) and builds a context
object per span; the values here are typed by construction. With every span sampled that cost,
plus the exporter's encoding (~2.7 µs per attribute, ~11 µs per span), was what made tracing
3x the CPU of the proxy without it. Fewer spans (no route, cache or relay spans: their facts
are attributes and events of the SERVER and attempt spans) and spans built once bring it under
2x (docs/benchmarks.md).

What differs from spans made through the SDK's tracer, on purpose:

- the sampler is asked once per request, for the SERVER span; its attempts share the decision
  (what ``ParentBased`` does, and what every sampler ``OTEL_TRACES_SAMPLER`` can name decides for
  spans of one trace id);
- span processors' ``on_start`` is not called (the batch and simple processors do nothing there);
- span limits are not applied: the attributes are a fixed set, free text is cut to
  ``MAX_DETAIL`` characters and the events are bounded by the route's chain and attempts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from edgeproxy import __version__
from edgeproxy.telemetry.redact import redact
from edgeproxy.telemetry.tracing import INSTRUMENTATION_SCOPE, incoming_context, parse_traceparent

if TYPE_CHECKING:
    from edgeproxy.telemetry.attempt import AttemptRecord

MAX_DETAIL = 512  # characters of a failure detail kept on a span
UNSET = Status(StatusCode.UNSET)
Attributes = dict[str, AttributeValue]
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class SpanBuilder:
    """The process's tracing: what each request's spans are made with."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider  # its sampler and id generator are read per request
        self._resource = _HashedResource(provider.resource)
        self._scope = InstrumentationScope(INSTRUMENTATION_SCOPE, __version__)
        # The provider's composite processor (every processor added to it, now or later). The
        # SDK keeps it private; spans built outside its Tracer reach processors only this way.
        self._processor = cast("SpanProcessor", provider._active_span_processor)

    def request(
        self, headers: Mapping[str, str], name: str, attributes: Attributes
    ) -> RequestSpans:
        """A request's SERVER span starts: a child of the caller's valid ``traceparent``."""
        incoming = incoming_context(headers)
        parent: SpanContext | None = None
        parsed = parse_traceparent(incoming["traceparent"]) if incoming else None
        if parsed is not None:
            state = incoming.get("tracestate")
            parent = SpanContext(
                int(parsed[0], 16),
                int(parsed[1], 16),
                is_remote=True,
                trace_flags=TraceFlags(int(incoming["traceparent"][-2:], 16)),
                trace_state=TraceState.from_header([state]) if state else None,
            )
        trace_id = (
            parent.trace_id
            if parent is not None
            else self.provider.id_generator.generate_trace_id()
        )
        context: Context | None = (
            set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
        )
        decision = self.provider.sampler.should_sample(
            context, trace_id, name, SpanKind.SERVER, attributes
        )
        if decision.attributes:
            attributes = {**attributes, **decision.attributes}
        span_context = SpanContext(
            trace_id,
            self.provider.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=_SAMPLED
            if decision.decision is Decision.RECORD_AND_SAMPLE
            else _NOT_SAMPLED,
            trace_state=decision.trace_state,
        )
        return RequestSpans(
            self, name, span_context, parent, attributes, decision.decision is not Decision.DROP
        )

    def new_span_id(self) -> int:
        return self.provider.id_generator.generate_span_id()

    def emit(
        self,
        name: str,
        kind: SpanKind,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: Attributes,
        events: list[Event],
        status: Status,
        start_ns: int,
    ) -> None:
        self._processor.on_end(
            ReadableSpan(
                name=name,
                context=context,
                parent=parent,
                resource=self._resource,
                attributes=attributes,
                events=events,
                kind=kind,
                status=status,
                start_time=start_ns,
                end_time=time.time_ns(),
                instrumentation_scope=self._scope,
            )
        )


class _HashedResource(Resource):
    """The provider's resource with its hash computed once. The OTLP encoder groups a batch's
    spans by resource and hashes it per span, and ``Resource`` hashes a sorted JSON dump of its
    attributes each time (~4 µs, ~5% of a span's encoding)."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class AttemptSpan:
    """An attempt's CLIENT span while it runs: its context (for ``traceparent``) and start."""

    __slots__ = ("context", "start_ns")

    def __init__(self, context: SpanContext) -> None:
        self.context = context
        self.start_ns = time.time_ns()


class RequestSpans:
    """One request's spans: the SERVER span, its events, and its attempts' CLIENT spans."""

    __slots__ = ("_attributes", "_builder", "_events", "_name", "context", "parent", "recording", "start_ns")  # fmt: skip

    def __init__(
        self,
        builder: SpanBuilder,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: Attributes,
        recording: bool,
    ) -> None:
        self._builder = builder
        self._name = name
        self.context = context
        self.parent = parent
        self._attributes = attributes
        self.recording = recording
        self._events: list[Event] = []
        self.start_ns = time.time_ns()

    @property
    def trace_id(self) -> str:
        return format(self.context.trace_id, "032x")

    def attempt(self) -> AttemptSpan:
        ctx = self.context
        return AttemptSpan(
            SpanContext(
                ctx.trace_id,
                self._builder.new_span_id(),
                is_remote=False,
                trace_flags=ctx.trace_flags,
                trace_state=ctx.trace_state,
            )
        )

    def event(self, name: str, attributes: Attributes) -> None:
        """An event on the SERVER span (skipped candidates, backoffs)."""
        if self.recording:
            self._events.append(Event(name, attributes, time.time_ns()))

    def end_attempt(self, att: AttemptRecord, operation: str) -> None:
        """An attempt's CLIENT span, named ``{operation} {upstream model}``, from its record."""
        span = att.span
        if not self.recording or span is None:
            return
        candidate = att.candidate
        outcome = att.outcome or "abandoned"
        ok = outcome == "ok"
        host, port = server_address(candidate.base_url)
        attrs: Attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": candidate.provider,
            "gen_ai.request.model": candidate.upstream_model,
            "server.address": host,
            "edgeproxy.candidate": att.key,
            "edgeproxy.region": candidate.region,
            "edgeproxy.attempt": att.number,
            "edgeproxy.attempt.kind": str(att.kind),
            "edgeproxy.outcome": outcome,
        }
        if port is not None:
            attrs["server.port"] = port
        if att.status is not None:
            attrs["http.response.status_code"] = att.status
        if att.response_model or ok:
            attrs["gen_ai.response.model"] = att.response_model or candidate.upstream_model
        if att.ttfc is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = att.ttfc
        usage = att.usage
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.total_input_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cached_input_tokens:
                attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
            if usage.cache_write_tokens:
                attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
            if usage.estimated:
                attrs["edgeproxy.usage.estimated"] = True
            attrs["edgeproxy.cost_usd"] = att.cost
        compaction = att.compaction
        if compaction is not None:
            attrs["edgeproxy.context.compacted"] = (
                f"{compaction.tokens_before}->{compaction.tokens_after}"
            )
            attrs["edgeproxy.context.strategies"] = compaction.strategies
        if att.relay is not None:
            attrs["edgeproxy.relay.outcome"] = att.relay
            attrs["edgeproxy.relay.chunks"] = att.chunks
            attrs["edgeproxy.relay.bytes"] = att.bytes
            if att.skipped_events:
                attrs["edgeproxy.relay.skipped_events"] = att.skipped_events
        status = UNSET
        if not ok:
            attrs["error.type"] = outcome
            if outcome != "abandoned":  # a lost hedge, a client that left: not an error
                status = Status(StatusCode.ERROR, redact(att.detail)[:MAX_DETAIL])
        name = f"{operation} {candidate.upstream_model}"
        self._builder.emit(
            name, SpanKind.CLIENT, span.context, self.context, attrs, [], status, span.start_ns
        )

    def end(self, attributes: Attributes, status: Status) -> None:
        if self.recording:
            self._builder.emit(
                self._name,
                SpanKind.SERVER,
                self.context,
                self.parent,
                {**self._attributes, **attributes},
                self._events,
                status,
                self.start_ns,
            )


@lru_cache(maxsize=256)
def server_address(base_url: str) -> tuple[str, int | None]:
    """``server.address``/``server.port`` of a candidate's base URL."""
    parts = urlsplit(base_url)
    return parts.hostname or "", parts.port


def traceparent_headers(context: SpanContext) -> dict[str, str]:
    """W3C ``traceparent`` (and ``tracestate``) naming ``context`` as the parent."""
    headers = {
        "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    }
    if context.trace_state:
        headers["tracestate"] = context.trace_state.to_header()
    return headers

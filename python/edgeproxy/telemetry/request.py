"""The request-scoped telemetry facade: one object per request, one call per hop.

The request path never touches OpenTelemetry directly. It calls::

    tel = telemetry.start_request(request_id=rid, headers=request.headers)   # ingress
    tel.request_parsed(body["model"], stream=stream)                         # body parsed
    tel.route_decided(route.name, route.chain, skipped=..., policy_version=policy.version)
    tel.cache("miss")                                                         # cache lookup
    with tel.attempt(candidate, price=...) as att:                            # each attempt
        headers = att.headers()          # traceparent/tracestate for the upstream request
        att.first_token()                # a stream's first content event arrived
        att.fail(failure) / att.succeed(200, response_model=...)
        att.record_usage(usage)          # the upstream's usage object, when known
        with att.relay() as relay:       # the stream relay (after the commit point)
            relay.chunk(len(out))
            relay.fail(FailureClass.CUT, "...") / relay.complete() / relay.client_gone()
    tel.finish(status)                   # ends the SERVER span, metrics, one access log line

With tracing off (the default) no span is created: each call is a few attribute writes, plus the
metric updates when metrics are on (see docs/observability.md for the measured cost).
Prompt and completion text reach a span only through ``content()`` and only when the policy opts
in (``capture_content``); provider keys are never read (the facade ignores candidate headers) and
every free-text detail is passed through ``redact``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.util.types import AttributeValue

from edgeproxy import __version__
from edgeproxy.clock import Clock, SystemClock
from edgeproxy.cost import ZERO_USAGE, Usage, cost_usd
from edgeproxy.failure import AttemptFailure
from edgeproxy.snapshot import Price
from edgeproxy.telemetry.metrics import BreakerSource, ProxyMetrics, metrics_from_env
from edgeproxy.telemetry.recent import RecentStats
from edgeproxy.telemetry.redact import redact
from edgeproxy.telemetry.tracing import (
    INSTRUMENTATION_SCOPE,
    extract_context,
    inject_headers,
    parse_traceparent,
    passthrough_headers,
    tracer_provider_from_env,
)

access_log = logging.getLogger("edgeproxy.access")

MAX_DETAIL = 512  # characters of a failure detail kept on a span
NO_ROUTE = "none"  # metric label when no route matched (never the client's model string)


class CandidateLike(Protocol):
    """What the facade reads of a candidate (``snapshot.Candidate`` fits). Never headers."""

    @property
    def key(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def upstream_model(self) -> str: ...
    @property
    def base_url(self) -> str: ...


@lru_cache(maxsize=256)
def _server_address(base_url: str) -> tuple[str, int | None]:
    parts = urlsplit(base_url)
    return parts.hostname or "", parts.port


def _failure_parts(
    failure: AttemptFailure | str, detail: str, status: int | None
) -> tuple[str, str, int | None]:
    if isinstance(failure, AttemptFailure):
        return str(failure.failure), detail or failure.detail, status or failure.status
    return str(failure), detail, status


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """What ``finish`` recorded; the request path may use it (e.g. a cost header)."""

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


class Telemetry:
    """Process-wide telemetry: the tracer (None = tracing off), metrics (None = off), the
    rolling per-candidate stats behind ``/admin/status``, and the in-flight count."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        metrics: ProxyMetrics | None = None,
        recent: RecentStats | None = None,
        clock: Clock | None = None,
        access_log_enabled: bool = True,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.tracer: Tracer | None = (
            tracer_provider.get_tracer(INSTRUMENTATION_SCOPE, __version__)
            if tracer_provider is not None
            else None
        )
        self.metrics = metrics
        self.clock: Clock = clock or SystemClock()
        self.recent = recent or RecentStats(clock=self.clock)
        self.access_log_enabled = access_log_enabled
        self.inflight = 0
        if metrics is not None:
            metrics.inflight_source = lambda: self.inflight

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> Telemetry:
        env = os.environ if env is None else env
        return cls(
            tracer_provider=tracer_provider_from_env(env), metrics=metrics_from_env(env), **kwargs
        )

    @property
    def tracing(self) -> bool:
        return self.tracer is not None

    def start_request(
        self,
        *,
        request_id: str,
        headers: Mapping[str, str],
        method: str = "POST",
        path: str = "/v1/chat/completions",
        operation: str = "chat",
        capture_content: bool = False,
    ) -> RequestTelemetry:
        """At ingress, before the body is read: starts the SERVER span (child of an incoming
        ``traceparent``) and counts the request in flight."""
        return RequestTelemetry(self, request_id, headers, method, path, operation, capture_content)

    def observe_breakers(self, source: BreakerSource | None) -> None:
        """Feed the ``edgeproxy.breaker.state`` gauge, e.g. with ``BreakerRegistry.snapshot``."""
        if self.metrics is not None:
            self.metrics.observe_breakers(source)

    def render_prometheus(self) -> bytes:
        if self.metrics is None:
            return b"# metrics are off (OTEL_METRICS_EXPORTER=none)\n"
        return self.metrics.render_prometheus()

    def shutdown(self) -> None:
        """Flush and stop exporters (at process stop)."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.metrics is not None:
            self.metrics.shutdown()


_default: Telemetry | None = None


def get_telemetry() -> Telemetry:
    """The process's telemetry, configured from the environment on first use."""
    global _default
    if _default is None:
        _default = Telemetry.from_env()
    return _default


def set_telemetry(telemetry: Telemetry | None) -> None:
    global _default
    _default = telemetry


class RequestTelemetry:
    """Everything one request records. Not thread-safe; one per request, on the event loop."""

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
        self.request_id = request_id
        self.operation = operation
        self.capture_content = capture_content
        self.started = telemetry.clock.monotonic()
        self.route: str | None = None
        self.request_model: str | None = None
        self.stream = False
        self.policy_version: str | None = None
        self.cache_status: str | None = None
        self.attempts: list[AttemptTelemetry] = []
        self.ttft: float | None = None
        self.outcome: str | None = None  # set by shed() or a failed relay, else by finish()
        self.error_type: str | None = None
        self.summary: RequestSummary | None = None
        self._unattributed_usage = ZERO_USAGE  # usage with no attempt behind it (a cache hit)
        tracer = telemetry.tracer
        if tracer is None:
            self.span: Span | None = None
            self.context: Context | None = None
            self._passthrough = passthrough_headers(headers)
            parsed = parse_traceparent(self._passthrough.get("traceparent", ""))
            self.trace_id = parsed[0] if parsed else None
        else:
            self.span = tracer.start_span(
                f"{method} {path}",
                context=extract_context(headers),
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": method,
                    "http.route": path,
                    "gen_ai.operation.name": operation,
                    "edgeproxy.request_id": request_id,
                },
            )
            self.context = set_span_in_context(self.span)
            self._passthrough = {}
            self.trace_id = format(self.span.get_span_context().trace_id, "032x")
        telemetry.inflight += 1

    # -- ingress ---------------------------------------------------------------------------

    def request_parsed(self, model: str, *, stream: bool = False) -> None:
        """After the body is parsed: the model the app asked for, and whether it streams."""
        self.request_model = model[:256]
        self.stream = stream
        if self.span is not None:
            self.span.set_attribute("gen_ai.request.model", self.request_model)
            self.span.set_attribute("edgeproxy.stream", stream)

    def content(self, *, input_messages: Any = None, output_messages: Any = None) -> None:
        """Prompt/completion text, recorded on the SERVER span only if the policy opted in."""
        if not self.capture_content or self.span is None or not self.span.is_recording():
            return
        if input_messages is not None:
            self.span.set_attribute("gen_ai.input.messages", _json(input_messages))
        if output_messages is not None:
            self.span.set_attribute("gen_ai.output.messages", _json(output_messages))

    # -- routing and cache -----------------------------------------------------------------

    def route_decided(
        self,
        route: str,
        chain: Sequence[CandidateLike],
        *,
        skipped: Sequence[tuple[str, str]] = (),
        policy_version: str | None = None,
    ) -> None:
        """After the router picked the route and its ordered chain. ``skipped`` holds the
        (candidate key, reason) pairs it left out: open breaker, failed probe, residency, …"""
        self.route = route
        self.policy_version = policy_version
        span = self.span
        if span is None or self._t.tracer is None:
            return
        span.set_attribute("edgeproxy.route", route)
        if policy_version is not None:
            span.set_attribute("edgeproxy.policy_version", policy_version)
        if not span.is_recording():
            return
        reasons = [(key, redact(reason)) for key, reason in skipped]
        attrs: dict[str, AttributeValue] = {
            "edgeproxy.route": route,
            "edgeproxy.chain": [c.key for c in chain],
            "edgeproxy.skipped": [f"{key}: {reason}" for key, reason in reasons],
        }
        if policy_version is not None:
            attrs["edgeproxy.policy_version"] = policy_version
        child = self._t.tracer.start_span("edgeproxy.route", context=self.context, attributes=attrs)
        for key, reason in reasons:
            child.add_event(
                "edgeproxy.candidate_skipped",
                {"edgeproxy.candidate": key, "edgeproxy.reason": reason},
            )
        child.end()

    def cache(self, result: str) -> None:
        """The prompt-cache lookup's result: ``hit``, ``miss`` or ``bypass``."""
        self.cache_status = result
        metrics = self._t.metrics
        if metrics is not None:
            metrics.cache_lookups.add(1, (self.route or NO_ROUTE, result))
        span = self.span
        if span is not None and self._t.tracer is not None and span.is_recording():
            span.set_attribute("edgeproxy.cache.result", result)
            self._t.tracer.start_span(
                "edgeproxy.cache",
                context=self.context,
                attributes={"edgeproxy.cache.result": result},
            ).end()

    # -- attempts --------------------------------------------------------------------------

    def attempt(
        self,
        candidate: CandidateLike,
        n: int | None = None,
        *,
        price: Price | None = None,
        hedge: bool = False,
    ) -> AttemptTelemetry:
        """Before each upstream attempt (n counts from 1; default: the next). Use it as a
        context manager: leaving it ends the CLIENT span, and an exception that escapes it is
        recorded (AttemptFailure → its class; cancellation → abandoned)."""
        n = len(self.attempts) + 1 if n is None else n
        previous = self.attempts[-1] if self.attempts else None
        if previous is not None and not hedge and previous.outcome not in (None, "ok"):
            self._failover(previous, candidate)
        if hedge:
            self.event("edgeproxy.hedge", {"edgeproxy.candidate": candidate.key})
            if self._t.metrics is not None:
                self._t.metrics.hedges.add(1, (self.route or NO_ROUTE,))
        att = AttemptTelemetry(self, candidate, n, price, hedge)
        self.attempts.append(att)
        return att

    def _failover(self, previous: AttemptTelemetry, candidate: CandidateLike) -> None:
        error_type = previous.outcome or "unknown"
        same = previous.key == candidate.key
        self.event(
            "edgeproxy.retry" if same else "edgeproxy.failover",
            {
                "edgeproxy.from": previous.key,
                "edgeproxy.to": candidate.key,
                "error.type": error_type,
                "edgeproxy.attempt": len(self.attempts) + 1,
            },
        )
        if self._t.metrics is not None and not same:
            self._t.metrics.failovers.add(1, (self.route or NO_ROUTE, error_type))

    def backoff(self, seconds: float, reason: str = "") -> None:
        """A retry waits ``seconds`` (jittered backoff, Retry-After)."""
        self.event(
            "edgeproxy.backoff", {"edgeproxy.delay_s": seconds, "edgeproxy.reason": redact(reason)}
        )

    def breaker_transition(self, key: str, old: str, new: str, reason: str = "") -> None:
        """A breaker this request's outcome moved (closed → open, half_open → closed, …)."""
        self.event(
            "edgeproxy.breaker",
            {
                "edgeproxy.candidate": key,
                "edgeproxy.breaker.from": old,
                "edgeproxy.breaker.to": new,
                "edgeproxy.reason": redact(reason),
            },
        )
        if self._t.metrics is not None:
            self._t.metrics.breaker_transitions.add(1, (key, new))

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """A span event on the SERVER span (no-op with tracing off)."""
        if self.span is not None:
            self.span.add_event(name, attributes)

    def first_token(self) -> None:
        """The first token left for the app (``AttemptTelemetry.first_token`` calls this;
        call it directly for a stream replayed from the cache)."""
        if self.ttft is None:
            self.ttft = self._t.clock.monotonic() - self.started

    def shed(self, reason: str) -> None:
        """A limit refused the request before routing; ``finish`` still has to be called."""
        self.outcome = "shed"
        self.error_type = reason
        if self._t.metrics is not None:
            self._t.metrics.shed.add(1, (reason,))

    # -- the end ---------------------------------------------------------------------------

    @property
    def served(self) -> AttemptTelemetry | None:
        for att in reversed(self.attempts):
            if att.outcome == "ok" or att.committed:
                return att
        return None

    def finish(
        self,
        status: int,
        *,
        outcome: str | None = None,
        error_type: str | None = None,
        usage: Mapping[str, Any] | Usage | None = None,
    ) -> RequestSummary:
        """Once, when the response has ended (or failed): closes every open span, records the
        request's metrics and writes the access log line. Idempotent."""
        if self.summary is not None:
            return self.summary
        t = self._t
        now = t.clock.monotonic()
        latency = now - self.started
        served = self.served
        if usage is not None:
            if served is not None and served.usage is None:
                served.record_usage(usage)
            elif served is None:
                self._unattributed_usage = Usage.parse(usage)
        for att in self.attempts:
            att.end()
        outcome = outcome or self.outcome or _outcome(status, self.cache_status)
        if error_type is None:
            error_type = self.error_type
        if error_type is None and (status >= 500 or outcome not in ("ok", "cache_hit")):
            failed = [a.outcome for a in self.attempts if a.outcome not in (None, "ok")]
            error_type = failed[-1] if failed else (str(status) if status >= 400 else outcome)
        total = ZERO_USAGE
        cost = 0.0
        for att in self.attempts:
            if att.usage is not None:
                total = total + att.usage
            cost += att.cost
        total = total + self._unattributed_usage
        route = self.route or NO_ROUTE
        candidate = served.key if served is not None else None
        summary = RequestSummary(
            request_id=self.request_id,
            trace_id=self.trace_id,
            route=self.route,
            candidate=candidate,
            attempts=len(self.attempts),
            status=status,
            outcome=outcome,
            latency_s=latency,
            ttft_s=self.ttft,
            usage=total,
            cost_usd=cost,
            cache=self.cache_status,
        )
        self.summary = summary
        span = self.span
        if span is not None:
            if span.is_recording():
                attrs: dict[str, AttributeValue] = {
                    "http.response.status_code": status,
                    "edgeproxy.outcome": outcome,
                    "edgeproxy.attempts": len(self.attempts),
                    "edgeproxy.cost_usd": cost,
                    "gen_ai.usage.input_tokens": total.total_input_tokens,
                    "gen_ai.usage.output_tokens": total.output_tokens,
                }
                if candidate is not None and served is not None:
                    attrs["edgeproxy.candidate"] = candidate
                    attrs["gen_ai.provider.name"] = served.provider
                    attrs["gen_ai.response.model"] = served.response_model or served.upstream_model
                if self.ttft is not None:
                    attrs["gen_ai.response.time_to_first_chunk"] = self.ttft
                if error_type is not None:
                    attrs["error.type"] = error_type
                span.set_attributes(attrs)
                if status >= 500 or outcome not in ("ok", "cache_hit", "client_error", "shed"):
                    span.set_status(Status(StatusCode.ERROR, error_type))
            span.end()
        t.inflight -= 1
        metrics = t.metrics
        if metrics is not None:
            # Label tuples in the order of each instrument's keys (see telemetry/metrics.py).
            metrics.requests.add(1, (route, candidate or "none", outcome))
            metrics.request_duration.record(latency, (route, self.operation, error_type))
            if self.ttft is not None:
                metrics.time_to_first_token.record(self.ttft, (route, self.operation))
        if t.access_log_enabled and access_log.isEnabledFor(logging.INFO):
            self._log(summary, error_type)
        return summary

    def _log(self, s: RequestSummary, error_type: str | None) -> None:
        access_log.info(
            "request",
            extra={
                "request_id": s.request_id,
                "trace_id": s.trace_id,
                "route": s.route,
                "model": self.request_model,
                "stream": self.stream,
                "candidate": s.candidate,
                "attempts": s.attempts,
                "attempt_outcomes": [f"{a.key}={a.outcome}" for a in self.attempts],
                "status": s.status,
                "outcome": s.outcome,
                "error_type": error_type,
                "latency_ms": round(s.latency_s * 1000, 1),
                "ttft_ms": round(s.ttft_s * 1000, 1) if s.ttft_s is not None else None,
                "input_tokens": s.usage.total_input_tokens,
                "cached_tokens": s.usage.cached_input_tokens,
                "output_tokens": s.usage.output_tokens,
                "cost_usd": round(s.cost_usd, 8),
                "cache": s.cache,
                "policy_version": self.policy_version,
            },
        )

    def __enter__(self) -> RequestTelemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Safety net: a request that leaves without ``finish`` is finished here (499 when the
        client went away, 500 on an escaping exception, else 200)."""
        if self.summary is not None:
            return
        if exc is None:
            self.finish(200)
        elif isinstance(exc, asyncio.CancelledError | ConnectionError):
            self.finish(499, outcome="client_gone", error_type="client_gone")
        else:
            self.finish(500, error_type=type(exc).__name__)


def _outcome(status: int, cache: str | None) -> str:
    if status < 400:
        return "cache_hit" if cache == "hit" else "ok"
    if status == 499:
        return "client_gone"
    return "client_error" if status < 500 else "error"


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


class AttemptTelemetry:
    """One upstream attempt: a CLIENT span named ``chat {upstream model}``."""

    def __init__(
        self,
        request: RequestTelemetry,
        candidate: CandidateLike,
        n: int,
        price: Price | None,
        hedge: bool,
    ) -> None:
        self._req = request
        self._t = request._t
        self.key = candidate.key
        self.provider = candidate.provider
        self.upstream_model = candidate.upstream_model
        self.n = n
        self.price = price
        self.hedge = hedge
        # The metric label values of ATTEMPT_KEYS (operation, provider, upstream model, key).
        self._labels = (request.operation, self.provider, self.upstream_model, self.key)
        self.started = self._t.clock.monotonic()
        self.outcome: str | None = None  # "ok", a failure class, or "abandoned"
        self.status: int | None = None
        self.detail = ""
        self.committed = False  # a relay started: this attempt is serving the client
        self.response_model: str | None = None
        self.usage: Usage | None = None
        self.cost = 0.0
        self.ttfc: float | None = None
        self.ended = False
        self.relays: list[RelayTelemetry] = []
        tracer = self._t.tracer
        if tracer is None:
            self.span: Span | None = None
        else:
            host, port = _server_address(candidate.base_url)
            attrs: dict[str, AttributeValue] = {
                "gen_ai.operation.name": request.operation,
                "gen_ai.provider.name": candidate.provider,
                "gen_ai.request.model": candidate.upstream_model,
                "server.address": host,
                "edgeproxy.candidate": candidate.key,
                "edgeproxy.region": candidate.region,
                "edgeproxy.attempt": n,
                "edgeproxy.hedge": hedge,
            }
            if port is not None:
                attrs["server.port"] = port
            if request.route is not None:
                attrs["edgeproxy.route"] = request.route
            self.span = tracer.start_span(
                f"{request.operation} {candidate.upstream_model}",
                context=request.context,
                kind=SpanKind.CLIENT,
                attributes=attrs,
            )

    def headers(self) -> dict[str, str]:
        """Headers to add to the upstream request: W3C ``traceparent`` (+ ``tracestate``) with
        this attempt's span as parent; with tracing off, the app's own context unchanged."""
        if self.span is None:
            return dict(self._req._passthrough)
        return inject_headers(self.span)

    def first_token(self) -> None:
        """The upstream's first content event arrived (a stream's time to first chunk)."""
        if self.ttfc is not None:
            return
        self.ttfc = self._t.clock.monotonic() - self.started
        self._req.first_token()
        if self.span is not None:
            self.span.set_attribute("gen_ai.response.time_to_first_chunk", self.ttfc)
        if self._t.metrics is not None:
            self._t.metrics.time_to_first_chunk.record(self.ttfc, self._labels)

    def succeed(self, status: int = 200, *, response_model: str | None = None) -> None:
        """The upstream answered: a whole JSON answer, or a stream up to its first token."""
        self.outcome = "ok"
        self.status = status
        if response_model:
            self.response_model = response_model[:256]

    def fail(
        self, failure: AttemptFailure | str, detail: str = "", *, status: int | None = None
    ) -> None:
        """The attempt failed: an ``AttemptFailure``, or a failure class and a detail."""
        self.outcome, self.detail, self.status = _failure_parts(failure, detail, status)

    def abandon(self, reason: str = "cancelled") -> None:
        """Given up without an answer: a hedge that lost, a client that left."""
        self.outcome = "abandoned"
        self.detail = reason

    def record_usage(self, usage: Mapping[str, Any] | Usage, *, estimated: bool = False) -> None:
        """What this attempt consumed (its ``usage`` object, or the proxy's own count for a
        cut or abandoned stream with ``estimated=True``): tokens and cost, failed or not."""
        u = Usage.parse(usage)
        if estimated and not u.estimated:
            u = Usage(u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens, True)  # fmt: skip
        self.usage = u if self.usage is None else self.usage + u
        cost = cost_usd(self.price, u)
        self.cost += cost
        metrics = self._t.metrics
        if metrics is not None:
            labels = self._labels
            if u.total_input_tokens:
                metrics.token_usage.record(u.total_input_tokens, (*labels, "input"))
            if u.output_tokens:
                metrics.token_usage.record(u.output_tokens, (*labels, "output"))
            if cost:
                metrics.cost.add(cost, (self._req.route or NO_ROUTE, self.key))

    def relay(self) -> RelayTelemetry:
        """At the commit point: the stream relay from this attempt to the client."""
        self.committed = True
        if self.outcome is None:
            self.outcome = "ok"
        relay = RelayTelemetry(self)
        self.relays.append(relay)
        return relay

    def end(self) -> None:
        """Ends the span and records the attempt (idempotent; leaving ``with`` calls it)."""
        if self.ended:
            return
        self.ended = True
        for relay in self.relays:
            relay.end()
        if self.outcome is None:
            self.outcome = "abandoned"
            self.detail = self.detail or "ended without an outcome"
        ok = self.outcome == "ok"
        seconds = self._t.clock.monotonic() - self.started
        self._t.recent.record(self.key, ok, seconds, "" if ok else self.outcome)
        metrics = self._t.metrics
        if metrics is not None:
            metrics.attempts.add(1, (self._req.route or NO_ROUTE, self.key, self.outcome))
            metrics.operation_duration.record(
                seconds, (*self._labels, None if ok else self.outcome)
            )
        span = self.span
        if span is None:
            return
        if span.is_recording():
            attrs: dict[str, AttributeValue] = {"edgeproxy.outcome": self.outcome}
            if self.status is not None:
                attrs["http.response.status_code"] = self.status
            if self.response_model or ok:
                attrs["gen_ai.response.model"] = self.response_model or self.upstream_model
            if self.usage is not None:
                attrs["gen_ai.usage.input_tokens"] = self.usage.total_input_tokens
                attrs["gen_ai.usage.output_tokens"] = self.usage.output_tokens
                if self.usage.cached_input_tokens:
                    attrs["gen_ai.usage.cache_read.input_tokens"] = self.usage.cached_input_tokens
                if self.usage.estimated:
                    attrs["edgeproxy.usage.estimated"] = True
                attrs["edgeproxy.cost_usd"] = self.cost
            if not ok:
                attrs["error.type"] = self.outcome
            span.set_attributes(attrs)
            if not ok and self.outcome != "abandoned":
                span.set_status(Status(StatusCode.ERROR, redact(self.detail)[:MAX_DETAIL]))
        span.end()

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
        self._t = attempt._t
        self.chunks = 0
        self.bytes = 0
        self.outcome: str | None = None  # "complete", a failure class, or "client_gone"
        self.detail = ""
        self.ended = False
        tracer = self._t.tracer
        if tracer is None or attempt.span is None:
            self.span: Span | None = None
        else:
            self.span = tracer.start_span(
                "edgeproxy.relay",
                context=set_span_in_context(attempt.span),
                attributes={"edgeproxy.candidate": attempt.key},
            )

    def chunk(self, n_bytes: int = 0) -> None:
        """One write to the client."""
        self.chunks += 1
        self.bytes += n_bytes

    def complete(self) -> None:
        self.outcome = "complete"

    def fail(self, failure: AttemptFailure | str, detail: str = "") -> None:
        """The stream broke after the commit point (cut, idle timeout, in-band error, …)."""
        self.outcome, self.detail, _ = _failure_parts(failure, detail, None)
        att = self._att
        if not att.ended:
            att.outcome, att.detail = self.outcome, self.detail
        req = att._req
        req.outcome = self.outcome
        req.error_type = self.outcome

    def client_gone(self) -> None:
        self.outcome = "client_gone"
        req = self._att._req
        if req.outcome is None:
            req.outcome = "client_gone"

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.outcome is None:
            self.outcome = "complete"
        span = self.span
        if span is None:
            return
        if span.is_recording():
            attrs: dict[str, AttributeValue] = {
                "edgeproxy.relay.chunks": self.chunks,
                "edgeproxy.relay.bytes": self.bytes,
                "edgeproxy.outcome": self.outcome,
            }
            if self.outcome not in ("complete", "client_gone"):
                attrs["error.type"] = self.outcome
                span.set_status(Status(StatusCode.ERROR, redact(self.detail)[:MAX_DETAIL]))
            span.set_attributes(attrs)
        span.end()

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

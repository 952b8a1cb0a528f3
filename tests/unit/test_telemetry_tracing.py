"""The request facade's span tree, driven exactly as the request path drives it."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from test_telemetry_support import BETA, CANARY_KEY, EU, US, Rig, rig

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Price
from edgeproxy.telemetry import tracing
from edgeproxy.telemetry.logs import JsonFormatter
from edgeproxy.telemetry.redact import clear_secrets, redact, register_secrets
from edgeproxy.telemetry.request import Telemetry

PRICE = Price(input=0.15, output=0.60, cached_input=0.075)
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "prompt_tokens_details": {"cached_tokens": 400},
}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"


class Lines(list[str]):
    def __init__(self, stream: io.StringIO) -> None:
        super().__init__()
        self._stream = stream

    def refresh(self) -> Lines:
        self[:] = self._stream.getvalue().splitlines()
        return self


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("edgeproxy.access")
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield Lines(stream)
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    logger.propagate = old_propagate


def children(r: Rig, parent: ReadableSpan) -> list[str]:
    pid = parent.context.span_id
    return [s.name for s in r.spans() if s.parent is not None and s.parent.span_id == pid]


def test_plain_request_span_tree() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_1", headers={})
    tel.request_parsed("gpt-4o-mini", stream=False)
    tel.route_decided(
        "gpt-4o-mini", (US, EU, BETA), skipped=[(EU.key, "breaker open")], policy_version="v1"
    )
    tel.cache("miss")
    with tel.attempt(US, price=PRICE) as att:
        r.clock._now += 0.25
        att.succeed(200, response_model="gpt-4o-mini-2024-07-18")
        att.record_usage(USAGE)
    summary = tel.finish(200)

    server = r.one("POST /v1/chat/completions")
    assert server.kind is SpanKind.SERVER and server.parent is None
    assert children(r, server) == ["edgeproxy.route", "edgeproxy.cache", "chat gpt-4o-mini"]
    a = server.attributes or {}
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert a["gen_ai.provider.name"] == "alpha"
    assert a["edgeproxy.route"] == "gpt-4o-mini"
    assert a["edgeproxy.policy_version"] == "v1"
    assert a["edgeproxy.attempts"] == 1
    assert a["http.response.status_code"] == 200
    assert a["gen_ai.usage.input_tokens"] == 1000
    assert a["gen_ai.usage.output_tokens"] == 200
    assert a["edgeproxy.cost_usd"] == pytest.approx(summary.cost_usd)
    assert "error.type" not in a
    assert server.status.status_code is StatusCode.UNSET

    route = r.one("edgeproxy.route").attributes or {}
    assert route["edgeproxy.chain"] == (US.key, EU.key, BETA.key)
    assert route["edgeproxy.skipped"] == (f"{EU.key}: breaker open",)
    assert r.one("edgeproxy.route").events[0].name == "edgeproxy.candidate_skipped"
    assert (r.one("edgeproxy.cache").attributes or {})["edgeproxy.cache.result"] == "miss"

    attempt = r.one("chat gpt-4o-mini")
    assert attempt.kind is SpanKind.CLIENT
    at = attempt.attributes or {}
    assert at["gen_ai.provider.name"] == "alpha"
    assert at["gen_ai.request.model"] == "gpt-4o-mini"
    assert at["server.address"] == "127.0.0.1" and at["server.port"] == 18101
    assert at["edgeproxy.attempt"] == 1 and at["edgeproxy.candidate"] == US.key
    assert at["gen_ai.usage.cache_read.input_tokens"] == 400
    assert at["edgeproxy.cost_usd"] == pytest.approx((600 * 0.15 + 400 * 0.075 + 200 * 0.6) / 1e6)
    assert summary.candidate == US.key and summary.outcome == "ok" and summary.attempts == 1
    assert summary.latency_s == pytest.approx(0.25)


def test_failover_two_attempts_first_with_error_type() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_2", headers={})
    tel.request_parsed("gpt-4o-mini", stream=True)
    tel.route_decided("gpt-4o-mini", (US, EU), policy_version="v1")
    tel.cache("bypass")
    with tel.attempt(US) as att:
        att.fail(AttemptFailure(FailureClass.SERVER_ERROR, "upstream answered 503", status=503))
    with tel.attempt(EU) as att:
        r.clock._now += 0.1
        att.first_token()
        att.succeed(200)
        with att.relay() as relay:
            relay.chunk(100)
            relay.chunk(50)
            relay.complete()
        att.record_usage({"prompt_tokens": 10, "completion_tokens": 5})
    summary = tel.finish(200)

    server = r.one("POST /v1/chat/completions")
    first, second = sorted(r.by_name("chat gpt-4o-mini"), key=lambda s: s.start_time or 0)
    f, s = first.attributes or {}, second.attributes or {}
    assert f["error.type"] == "server_error" and f["http.response.status_code"] == 503
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "upstream answered 503"
    assert "error.type" not in s and s["edgeproxy.attempt"] == 2
    assert s["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.1)
    assert [e.name for e in server.events] == ["edgeproxy.failover"]
    ev = server.events[0].attributes or {}
    assert ev["edgeproxy.from"] == US.key and ev["edgeproxy.to"] == EU.key
    assert ev["error.type"] == "server_error"
    relay = r.one("edgeproxy.relay")
    assert relay.parent is not None and relay.parent.span_id == second.context.span_id
    ra = relay.attributes or {}
    assert ra["edgeproxy.relay.chunks"] == 2 and ra["edgeproxy.relay.bytes"] == 150
    a = server.attributes or {}
    assert a["edgeproxy.attempts"] == 2 and a["edgeproxy.candidate"] == EU.key
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.1)
    assert server.status.status_code is StatusCode.UNSET
    assert summary.ttft_s == pytest.approx(0.1) and summary.outcome == "ok"


def test_exception_escaping_attempt_is_recorded() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_x", headers={})
    with pytest.raises(AttemptFailure), tel.attempt(US):
        raise AttemptFailure(FailureClass.CONNECT_TIMEOUT, "connect took over 2s")
    with pytest.raises(asyncio.CancelledError), tel.attempt(EU):
        raise asyncio.CancelledError
    tel.finish(502)
    first, second = sorted(r.by_name("chat gpt-4o-mini"), key=lambda s: s.start_time or 0)
    assert (first.attributes or {})["error.type"] == "connect_timeout"
    assert (second.attributes or {})["edgeproxy.outcome"] == "abandoned"
    server = r.one("POST /v1/chat/completions")
    assert (server.attributes or {})["error.type"] == "abandoned"
    assert server.status.status_code is StatusCode.ERROR


def test_all_failed_gives_error_on_server_span() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_3", headers={})
    tel.route_decided("gpt-4o-mini", (US, EU))
    for c in (US, EU):
        with tel.attempt(c) as att:
            att.fail(FailureClass.RATE_LIMITED, "429", status=429)
    summary = tel.finish(429)
    server = r.one("POST /v1/chat/completions")
    assert (server.attributes or {})["error.type"] == "rate_limited"
    assert summary.outcome == "client_error" and summary.candidate is None


def test_cache_hit() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_4", headers={})
    tel.request_parsed("gpt-4o-mini")
    tel.route_decided("gpt-4o-mini", (US,))
    tel.cache("hit")
    summary = tel.finish(200, usage={"prompt_tokens": 7, "completion_tokens": 3})
    server = r.one("POST /v1/chat/completions")
    assert children(r, server) == ["edgeproxy.route", "edgeproxy.cache"]
    a = server.attributes or {}
    assert a["edgeproxy.cache.result"] == "hit"
    assert a["edgeproxy.outcome"] == "cache_hit"
    assert a["edgeproxy.attempts"] == 0
    assert a["edgeproxy.cost_usd"] == 0.0
    assert a["gen_ai.usage.output_tokens"] == 3
    assert summary.outcome == "cache_hit" and summary.cost_usd == 0.0


def test_cut_stream() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_5", headers={})
    tel.request_parsed("gpt-4o-mini", stream=True)
    tel.route_decided("gpt-4o-mini", (US, EU))
    with tel.attempt(US, price=PRICE) as att:
        att.first_token()
        att.succeed(200)
        with att.relay() as relay:
            relay.chunk(10)
            relay.fail(FailureClass.CUT, "upstream closed the stream before it was complete")
        att.record_usage({"prompt_tokens": 100, "completion_tokens": 40}, estimated=True)
    summary = tel.finish(200)

    relay_span = r.one("edgeproxy.relay")
    assert (relay_span.attributes or {})["error.type"] == "cut"
    assert relay_span.status.status_code is StatusCode.ERROR
    attempt = r.one("chat gpt-4o-mini")
    assert (attempt.attributes or {})["error.type"] == "cut"
    assert (attempt.attributes or {})["edgeproxy.usage.estimated"] is True
    server = r.one("POST /v1/chat/completions")
    a = server.attributes or {}
    assert a["error.type"] == "cut" and a["edgeproxy.outcome"] == "cut"
    assert a["edgeproxy.candidate"] == US.key  # it did serve, partially
    assert server.status.status_code is StatusCode.ERROR
    assert summary.outcome == "cut"
    assert summary.cost_usd == pytest.approx((100 * 0.15 + 40 * 0.6) / 1e6)


def test_client_gone_mid_stream_and_hedge_loser() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_6", headers={})
    tel.route_decided("gpt-4o-mini", (US, EU))
    loser = tel.attempt(EU, hedge=True)
    with tel.attempt(US) as att:
        att.first_token()
        loser.abandon("hedge lost")
        loser.end()
        with pytest.raises(ConnectionResetError), att.relay():
            raise ConnectionResetError
    summary = tel.finish(200)
    assert summary.outcome == "client_gone"
    server = r.one("POST /v1/chat/completions")
    assert [e.name for e in server.events] == ["edgeproxy.hedge"]
    spans = {(s.attributes or {})["edgeproxy.candidate"]: s for s in r.by_name("chat gpt-4o-mini")}
    assert (spans[EU.key].attributes or {})["edgeproxy.outcome"] == "abandoned"
    assert spans[EU.key].status.status_code is StatusCode.UNSET
    assert (r.one("edgeproxy.relay").attributes or {})["edgeproxy.outcome"] == "client_gone"


def test_events_backoff_breaker() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_7", headers={})
    tel.backoff(0.2, "retry after jitter")
    tel.breaker_transition(US.key, "closed", "open", "5 consecutive failures")
    tel.finish(502)
    names = [e.name for e in r.one("POST /v1/chat/completions").events]
    assert names == ["edgeproxy.backoff", "edgeproxy.breaker"]


def test_request_context_manager_finishes() -> None:
    r = rig()
    with pytest.raises(RuntimeError), r.telemetry.start_request(request_id="q", headers={}):
        raise RuntimeError("boom")
    server = r.one("POST /v1/chat/completions")
    assert (server.attributes or {})["http.response.status_code"] == 500
    assert (server.attributes or {})["error.type"] == "RuntimeError"
    assert r.telemetry.inflight == 0


# -- W3C trace context -------------------------------------------------------------------------


def test_traceparent_honoured_and_propagated() -> None:
    r = rig()
    tel = r.telemetry.start_request(
        request_id="req_8", headers={"traceparent": TRACEPARENT, "tracestate": "vendor=x"}
    )
    with tel.attempt(US) as att:
        upstream = att.headers()
        att.succeed()
    summary = tel.finish(200)
    server = r.one("POST /v1/chat/completions")
    attempt = r.one("chat gpt-4o-mini")
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT
    assert summary.trace_id == TRACE_ID
    version, trace_id, parent_id, flags = upstream["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent_id == format(attempt.context.span_id, "016x")  # the CLIENT span is the parent
    assert upstream["tracestate"] == "vendor=x"


def test_new_trace_when_no_or_bad_traceparent() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="r", headers={"traceparent": "00-zz-bad-01"})
    with tel.attempt(US) as att:
        upstream = att.headers()
        att.succeed()
    tel.finish(200)
    server = r.one("POST /v1/chat/completions")
    assert server.parent is None
    assert upstream["traceparent"].split("-")[1] == format(server.context.trace_id, "032x")


def test_tracing_off_passes_traceparent_through_and_records_nothing() -> None:
    r = rig(tracing=False)
    assert not r.telemetry.tracing
    tel = r.telemetry.start_request(request_id="r", headers={"traceparent": TRACEPARENT})
    tel.route_decided("gpt-4o-mini", (US,))
    tel.cache("miss")
    with tel.attempt(US) as att:
        assert att.headers() == {"traceparent": TRACEPARENT}
        att.succeed()
        with att.relay() as relay:
            relay.chunk(3)
    summary = tel.finish(200)
    assert r.spans() == []
    assert summary.trace_id == TRACE_ID and summary.candidate == US.key
    assert r.telemetry.recent.snapshot()[US.key]["requests"] == 1
    off = Telemetry(clock=r.clock).start_request(request_id="r", headers={})
    with off.attempt(US) as att:
        assert att.headers() == {}


def test_sampled_out_parent_is_respected() -> None:
    r = rig()
    assert r.provider is not None
    r.provider.sampler = ParentBased(TraceIdRatioBased(1.0))
    tel = r.telemetry.start_request(
        request_id="r", headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-00"}
    )
    with tel.attempt(US) as att:
        headers = att.headers()
        att.succeed()
    tel.finish(200)
    assert r.spans() == []
    assert headers["traceparent"].startswith(f"00-{TRACE_ID}-") and headers["traceparent"].endswith(
        "-00"
    )


# -- secrets and content -----------------------------------------------------------------------


def _everything(r: Rig) -> str:
    parts = []
    for s in r.spans():
        parts.append(s.to_json())
    return "\n".join(parts)


def test_canary_key_never_in_spans_events_or_logs(access_lines: Lines) -> None:
    r = rig()
    tel = r.telemetry.start_request(
        request_id="req_9",
        headers={"traceparent": TRACEPARENT, "authorization": f"Bearer {CANARY_KEY}"},
    )
    tel.request_parsed("gpt-4o-mini", stream=True)
    tel.route_decided(
        "gpt-4o-mini", (US, EU), skipped=[(BETA.key, f"probe failed: key={CANARY_KEY}")]
    )
    with tel.attempt(US) as att:
        assert CANARY_KEY not in str(att.headers())
        att.fail(
            FailureClass.CLIENT_ERROR,
            f"401 Incorrect API key provided: {CANARY_KEY}; Authorization: Bearer {CANARY_KEY}",
            status=401,
        )
    with tel.attempt(EU) as att:
        att.succeed()
        with att.relay() as relay:
            relay.fail(FailureClass.MALFORMED, f"bad event echoing {CANARY_KEY}")
    tel.event("edgeproxy.note", {"edgeproxy.reason": redact(f"x {CANARY_KEY}")})
    tel.breaker_transition(US.key, "closed", "open", f"api_key={CANARY_KEY}")
    tel.content(input_messages=[{"role": "user", "content": CANARY_KEY}])  # not opted in
    tel.finish(200)
    dump = _everything(r)
    assert "POST /v1/chat/completions" in dump and "[REDACTED]" in dump
    assert CANARY_KEY not in dump
    assert "canary" not in dump
    assert access_lines.refresh() and all(CANARY_KEY not in line for line in access_lines)
    assert "gen_ai.input.messages" not in dump


def test_registered_secret_is_redacted_even_without_a_pattern() -> None:
    register_secrets(["plainsecretvalue123"])
    try:
        assert redact("upstream said plainsecretvalue123 is wrong") == (
            "upstream said [REDACTED] is wrong"
        )
    finally:
        clear_secrets()
    assert redact("nothing here") == "nothing here"


def test_content_only_when_opted_in() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="r", headers={}, capture_content=True)
    tel.content(input_messages=[{"role": "user", "content": "hi"}], output_messages="hello")
    tel.finish(200)
    a = r.one("POST /v1/chat/completions").attributes or {}
    assert orjson.loads(str(a["gen_ai.input.messages"])) == [{"role": "user", "content": "hi"}]
    assert a["gen_ai.output.messages"] == "hello"


# -- the access log line -----------------------------------------------------------------------


def test_one_access_log_line_per_request(access_lines: Lines) -> None:
    r = rig(tracing=False)
    tel = r.telemetry.start_request(request_id="req_10", headers={"traceparent": TRACEPARENT})
    tel.request_parsed("gpt-4o-mini", stream=True)
    tel.route_decided("gpt-4o-mini", (US, EU), policy_version="v1")
    tel.cache("miss")
    with tel.attempt(US) as att:
        att.fail(FailureClass.RESET, "reset")
    with tel.attempt(EU, price=PRICE) as att:
        r.clock._now += 0.05
        att.first_token()
        att.succeed()
        with att.relay() as relay:
            relay.complete()
        att.record_usage(USAGE)
    tel.finish(200)
    tel.finish(200)  # idempotent
    assert len(access_lines.refresh()) == 1
    line = orjson.loads(access_lines[0])
    assert line["msg"] == "request" and line["logger"] == "edgeproxy.access"
    assert line["request_id"] == "req_10" and line["trace_id"] == TRACE_ID
    assert line["route"] == "gpt-4o-mini" and line["candidate"] == EU.key
    assert line["attempts"] == 2 and line["status"] == 200 and line["outcome"] == "ok"
    assert line["attempt_outcomes"] == [f"{US.key}=reset", f"{EU.key}=ok"]
    assert line["ttft_ms"] == 50.0 and line["cache"] == "miss" and line["policy_version"] == "v1"
    assert line["input_tokens"] == 1000 and line["output_tokens"] == 200
    assert line["cached_tokens"] == 400
    assert line["cost_usd"] == pytest.approx(0.00024)


# -- configuration from the environment ---------------------------------------------------------


def test_env_defaults_to_off() -> None:
    assert tracing.traces_exporter_name({}) == "none"
    assert tracing.tracer_provider_from_env({}) is None
    assert tracing.traces_exporter_name(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    ) == ("otlp")
    assert tracing.traces_exporter_name({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    assert (
        tracing.traces_exporter_name({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
        == "none"
    )
    with pytest.raises(tracing.TracingConfigError):
        tracing.traces_exporter_name({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_env_sampler_and_resource() -> None:
    sampler = tracing.sampler_from_env(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    )
    assert "0.25" in sampler.get_description()
    assert tracing.sampler_from_env({"OTEL_TRACES_SAMPLER": "always_off"}) is ALWAYS_OFF
    with pytest.raises(tracing.TracingConfigError):
        tracing.sampler_from_env(
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}
        )
    res = tracing.resource_from_env(
        {
            "OTEL_SERVICE_NAME": "sidecar-a",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
        }
    )
    assert res.attributes["service.name"] == "sidecar-a"
    assert res.attributes["deployment.environment"] == "prod"


def test_env_otlp_provider_builds_without_network() -> None:
    provider = tracing.tracer_provider_from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}  # nothing is sent until a batch
    )
    assert provider is not None
    provider.shutdown()


def test_from_env_default_is_tracing_off_metrics_on() -> None:
    t = Telemetry.from_env({})
    assert not t.tracing and t.metrics is not None
    t2 = Telemetry.from_env({"OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "console"})
    assert t2.tracing and t2.metrics is None
    t.shutdown()
    t2.shutdown()

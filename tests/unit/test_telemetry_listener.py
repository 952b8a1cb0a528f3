"""The request listener fed event sequences as the request path emits them: the spans it builds
(in-memory exporter), the metrics (the Prometheus text, parsed) and the access log fields."""

from __future__ import annotations

import logging

import orjson
import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from test_telemetry_support import (
    BETA,
    CANARY_KEY,
    EU,
    US,
    Rig,
    absent,
    rig,
    value,
)

from edgeproxy.cost import Usage
from edgeproxy.events import (
    AttemptEnded,
    AttemptKind,
    AttemptStarted,
    BackingOff,
    BreakerTransition,
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
from edgeproxy.snapshot import Candidate
from edgeproxy.telemetry.access_log import FIELDS
from edgeproxy.telemetry.listener import RequestTelemetry

FIRST, RETRY, FAILOVER = AttemptKind.FIRST, AttemptKind.RETRY, AttemptKind.FAILOVER
HEDGE, RESUME = AttemptKind.HEDGE, AttemptKind.RESUME
ROUTE = "gpt-4o-mini"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"
USAGE = Usage(input_tokens=600, output_tokens=200, cached_input_tokens=400)


def start(
    r: Rig, headers: dict[str, str] | None = None, *, capture_content: bool = False
) -> RequestTelemetry:
    """The listener ``Telemetry.start_request`` returns once the hop-by-hop facade is gone."""
    path = "/v1/chat/completions"
    return RequestTelemetry(r.telemetry, "req_1", headers or {}, "POST", path, "chat", capture_content)  # fmt: skip


def routed(tel: RequestTelemetry, *chain: Candidate, stream: bool = False) -> None:
    tel.request_parsed("gpt-4o-mini", stream=stream)
    tel.on_event(RouteDecided(ROUTE, chain or (US, EU, BETA), (), "v1"))
    tel.on_event(CacheLooked("miss"))


def failed(n: int, c: Candidate, kind: AttemptKind, cls: FailureClass, status: int) -> AttemptEnded:
    failure = AttemptFailure(cls, f"upstream answered {status}", status)
    return AttemptEnded(n, c, kind, str(cls), 0.02, failure, status)


def served(
    tel: RequestTelemetry,
    r: Rig,
    n: int,
    c: Candidate,
    kind: AttemptKind,
    *,
    cost: float = 0.00025,
) -> None:
    """A non-stream attempt that answered."""
    tel.on_event(AttemptStarted(n, c, kind))
    r.clock._now += 0.25
    tel.on_event(UsageRecorded(n, c, USAGE, cost))
    tel.on_event(AttemptEnded(n, c, kind, "ok", 0.25, None, 200, "gpt-4o-mini-2024-07-18"))


# -- sequences -----------------------------------------------------------------------------------


def test_a_plain_answer() -> None:
    r = rig()
    tel = start(r)
    routed(tel)
    served(tel, r, 1, US, FIRST)
    assert tel.finish(200) is None  # the request path reads nothing back

    server = r.server()
    assert server.kind is SpanKind.SERVER and server.parent is None
    (attempt,) = r.attempts()
    assert [s.name for s in r.spans()] == ["chat gpt-4o-mini", "POST /v1/chat/completions"]
    assert attempt.kind is SpanKind.CLIENT
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    a = server.attributes or {}
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert a["gen_ai.provider.name"] == "alpha"
    assert a["gen_ai.usage.input_tokens"] == 1000 and a["gen_ai.usage.output_tokens"] == 200
    assert a["edgeproxy.route"] == ROUTE and a["edgeproxy.policy_version"] == "v1"
    assert a["edgeproxy.chain"] == (US.key, EU.key, BETA.key)
    assert a["edgeproxy.cache.result"] == "miss"
    assert a["edgeproxy.candidate"] == US.key and a["edgeproxy.attempts"] == 1
    assert a["edgeproxy.cost_usd"] == pytest.approx(0.00025)
    assert a["http.response.status_code"] == 200 and "error.type" not in a
    assert server.status.status_code is StatusCode.UNSET
    at = attempt.attributes or {}
    assert at["gen_ai.provider.name"] == "alpha" and at["gen_ai.request.model"] == "gpt-4o-mini"
    assert at["server.address"] == "127.0.0.1" and at["server.port"] == 9101
    assert at["edgeproxy.attempt"] == 1 and at["edgeproxy.attempt.kind"] == "first"
    assert at["gen_ai.usage.cache_read.input_tokens"] == 400
    assert at["edgeproxy.cost_usd"] == pytest.approx(0.00025)
    assert at["http.response.status_code"] == 200 and at["edgeproxy.outcome"] == "ok"

    s = r.samples()
    route = {"edgeproxy_route": ROUTE}
    assert value(s, "edgeproxy_requests_total", edgeproxy_outcome="ok", **route) == 1
    assert value(s, "edgeproxy_attempts_total", edgeproxy_outcome="ok", **route) == 1
    assert value(s, "edgeproxy_cache_lookups_total", edgeproxy_cache_result="miss", **route) == 1
    assert value(s, "edgeproxy_cost_usd_total", edgeproxy_candidate=US.key) == pytest.approx(
        0.00025
    )
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 1000
    assert value(s, "gen_ai_client_operation_duration_seconds_count") == 1
    assert value(s, "gen_ai_server_request_duration_seconds_sum") == pytest.approx(0.25)
    assert value(s, "edgeproxy_requests_inflight") == 0

    line = r.log.one()
    assert list(line) == list(FIELDS)
    assert line["request_id"] == "req_1" and line["route"] == ROUTE and line["stream"] is False
    assert line["trace_id"] == format(server.context.trace_id, "032x")
    assert line["candidate"] == US.key and line["attempts"] == 1 and line["status"] == 200
    assert line["attempt_outcomes"] == [f"{US.key}=ok"] and line["outcome"] == "ok"
    assert line["error_type"] is None and line["ttft_ms"] is None
    assert line["latency_ms"] == 250.0
    assert (line["input_tokens"], line["cached_tokens"], line["output_tokens"]) == (1000, 400, 200)
    assert line["cost_usd"] == 0.00025 and line["cache"] == "miss"
    assert line["policy_version"] == "v1" and line["model"] == "gpt-4o-mini"


def test_a_failover_after_a_503() -> None:
    r = rig()
    tel = start(r)
    routed(tel)
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.on_event(failed(1, US, FIRST, FailureClass.SERVER_ERROR, 503))
    served(tel, r, 2, EU, FAILOVER)
    tel.finish(200)

    first, second = r.attempts()
    f, s = first.attributes or {}, second.attributes or {}
    assert f["error.type"] == "server_error" and f["http.response.status_code"] == 503
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "upstream answered 503"
    assert s["edgeproxy.attempt.kind"] == "failover" and "error.type" not in s
    assert (r.server().attributes or {})["edgeproxy.candidate"] == EU.key
    samples = r.samples()
    assert value(samples, "edgeproxy_failovers_total", error_type="server_error") == 1
    assert value(samples, "edgeproxy_attempts_total", edgeproxy_outcome="server_error") == 1
    assert absent(samples, "edgeproxy_hedges_total")
    line = r.log.one()
    assert line["attempt_outcomes"] == [f"{US.key}=server_error", f"{EU.key}=ok"]
    assert line["candidate"] == EU.key and line["attempts"] == 2 and line["outcome"] == "ok"


def test_a_retry_after_a_backoff_is_not_a_failover() -> None:
    r = rig()
    tel = start(r)
    routed(tel)
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.on_event(failed(1, US, FIRST, FailureClass.RATE_LIMITED, 429))
    tel.on_event(BackingOff(US, 0.2))
    served(tel, r, 2, US, RETRY)
    tel.finish(200)

    events = r.server().events
    assert [e.name for e in events] == ["edgeproxy.backoff"]
    assert (events[0].attributes or {})["edgeproxy.delay_s"] == 0.2
    assert (r.attempts()[1].attributes or {})["edgeproxy.attempt.kind"] == "retry"
    samples = r.samples()
    assert absent(samples, "edgeproxy_failovers_total")
    assert value(samples, "edgeproxy_attempts_total", edgeproxy_candidate=US.key) == 2


def _stream_win(tel: RequestTelemetry, r: Rig, n: int, c: Candidate, kind: AttemptKind) -> None:
    r.clock._now += 0.05
    tel.on_event(FirstToken(n, 0.05))
    tel.on_event(Committed(n, c))
    tel.on_event(UsageRecorded(n, c, Usage(10, 5), 0.0))
    tel.on_event(RelayEnded(n, "complete", 20, 1280))
    tel.on_event(AttemptEnded(n, c, kind, "ok", 0.3, None, 200))


def test_a_hedge_that_wins() -> None:
    r = rig()
    tel = start(r)
    routed(tel, stream=True)
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.on_event(AttemptStarted(2, EU, HEDGE))
    _stream_win(tel, r, 2, EU, HEDGE)
    tel.on_event(AttemptEnded(1, US, FIRST, "abandoned", 0.4))
    tel.finish(200)

    first, hedge = r.attempts()
    assert (hedge.attributes or {})["edgeproxy.attempt.kind"] == "hedge"
    assert (first.attributes or {})["edgeproxy.outcome"] == "abandoned"
    assert first.status.status_code is StatusCode.UNSET  # losing a race is not an error
    h = hedge.attributes or {}
    assert h["edgeproxy.relay.outcome"] == "complete" and h["edgeproxy.relay.chunks"] == 20
    assert h["gen_ai.response.time_to_first_chunk"] == 0.05
    a = r.server().attributes or {}
    assert a["edgeproxy.candidate"] == EU.key and a["gen_ai.response.time_to_first_chunk"] == (
        pytest.approx(0.05)
    )
    samples = r.samples()
    assert value(samples, "edgeproxy_hedges_total", edgeproxy_route=ROUTE) == 1
    assert value(samples, "edgeproxy_attempts_total", edgeproxy_outcome="abandoned") == 1
    assert value(samples, "gen_ai_server_time_to_first_token_seconds_count") == 1
    assert absent(samples, "edgeproxy_failovers_total")
    line = r.log.one()
    assert line["candidate"] == EU.key and line["ttft_ms"] == 50.0 and line["stream"] is True


def test_a_hedge_that_loses() -> None:
    r = rig()
    tel = start(r)
    routed(tel, stream=True)
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.on_event(AttemptStarted(2, EU, HEDGE))
    _stream_win(tel, r, 1, US, FIRST)
    tel.on_event(AttemptEnded(2, EU, HEDGE, "abandoned", 0.1))
    tel.finish(200)
    assert r.log.one()["candidate"] == US.key
    assert value(r.samples(), "edgeproxy_hedges_total") == 1
    assert (r.server().attributes or {})["edgeproxy.candidate"] == US.key


def test_a_stream_cut_after_the_commit_point() -> None:
    r = rig()
    tel = start(r)
    routed(tel, stream=True)
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.on_event(FirstToken(1, 0.05))
    tel.on_event(Committed(1, US))
    tel.on_event(UsageRecorded(1, US, Usage(100, 40, estimated=True), 0.00004))
    tel.on_event(RelayEnded(1, "cut", 3, 300, "upstream closed the stream early"))
    # The request path may still call the attempt "ok" (it answered): the relay's cut stands.
    tel.on_event(AttemptEnded(1, US, FIRST, "ok", 0.2, None, 200))
    tel.finish(200)

    (attempt,) = r.attempts()
    at = attempt.attributes or {}
    assert at["edgeproxy.relay.outcome"] == "cut" and at["error.type"] == "cut"
    assert at["edgeproxy.usage.estimated"] is True
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.status.description == "upstream closed the stream early"
    server = r.server()
    a = server.attributes or {}
    assert a["error.type"] == "cut" and a["edgeproxy.outcome"] == "cut"
    assert a["edgeproxy.candidate"] == US.key  # it did serve, partly
    assert server.status.status_code is StatusCode.ERROR
    samples = r.samples()
    assert value(samples, "edgeproxy_requests_total", edgeproxy_outcome="cut") == 1
    assert value(samples, "edgeproxy_attempts_total", edgeproxy_outcome="cut") == 1
    line = r.log.one()
    assert line["outcome"] == "cut" and line["error_type"] == "cut" and line["status"] == 200


def test_a_resumed_stream_is_served_by_the_second_leg() -> None:
    r = rig()
    tel = start(r)
    routed(tel, stream=True)
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.on_event(FirstToken(1, 0.05))
    tel.on_event(Committed(1, US))
    tel.on_event(RelayEnded(1, "cut", 3, 300, "cut"))
    tel.on_event(AttemptStarted(2, EU, RESUME))
    tel.on_event(FirstToken(2, 0.04))
    tel.on_event(Committed(2, EU))
    tel.on_event(RelayEnded(2, "complete", 10, 900))
    tel.on_event(AttemptEnded(2, EU, RESUME, "ok", 0.2))
    tel.on_event(AttemptEnded(1, US, FIRST, "cut", 0.5))  # the first leg's end comes last
    tel.finish(200)

    first, second = r.attempts()
    assert (first.attributes or {})["error.type"] == "cut"
    assert (second.attributes or {})["edgeproxy.attempt.kind"] == "resume"
    a = r.server().attributes or {}
    assert a["edgeproxy.candidate"] == EU.key and a["edgeproxy.outcome"] == "ok"
    assert value(r.samples(), "edgeproxy_failovers_total", error_type="cut") == 1
    line = r.log.one()
    assert line["outcome"] == "ok" and line["candidate"] == EU.key
    assert line["attempt_outcomes"] == [f"{US.key}=cut", f"{EU.key}=ok"]


def test_a_cache_hit_has_no_attempt_and_costs_nothing() -> None:
    r = rig()
    tel = start(r)
    tel.request_parsed("gpt-4o-mini", stream=True)
    tel.on_event(RouteDecided(ROUTE, (US,), (), "v1"))
    tel.on_event(CacheLooked("hit"))
    r.clock._now += 0.002
    tel.first_token_sent()  # the cached stream is replayed
    tel.finish(200, usage={"prompt_tokens": 7, "completion_tokens": 3})

    assert [s.kind for s in r.spans()] == [SpanKind.SERVER]
    a = r.server().attributes or {}
    assert a["edgeproxy.cache.result"] == "hit" and a["edgeproxy.outcome"] == "cache_hit"
    assert a["edgeproxy.attempts"] == 0 and a["edgeproxy.cost_usd"] == 0.0
    assert a["gen_ai.usage.output_tokens"] == 3
    samples = r.samples()
    assert value(samples, "edgeproxy_cache_lookups_total", edgeproxy_cache_result="hit") == 1
    assert value(samples, "edgeproxy_requests_total", edgeproxy_outcome="cache_hit") == 1
    line = r.log.one()
    assert line["outcome"] == "cache_hit" and line["cost_usd"] == 0.0 and line["attempts"] == 0
    assert line["ttft_ms"] == 2.0 and line["output_tokens"] == 3 and line["candidate"] is None


def test_a_shed_request() -> None:
    r = rig()
    tel = start(r)
    tel.shed("queue_full")
    tel.finish(503)
    samples = r.samples()
    assert value(samples, "edgeproxy_requests_shed_total", edgeproxy_reason="queue_full") == 1
    assert value(samples, "edgeproxy_requests_total", edgeproxy_outcome="shed") == 1
    line = r.log.one()
    assert line["outcome"] == "shed" and line["error_type"] == "queue_full"
    assert line["route"] is None and line["status"] == 503


def test_a_client_gone_mid_stream() -> None:
    r = rig()
    tel = start(r)
    routed(tel, stream=True)
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.on_event(Committed(1, US))
    tel.on_event(RelayEnded(1, "client_gone", 2, 100))
    tel.on_event(AttemptEnded(1, US, FIRST, "ok", 0.1))
    tel.finish(499, outcome="client_gone")
    (attempt,) = r.attempts()
    assert (attempt.attributes or {})["edgeproxy.relay.outcome"] == "client_gone"
    assert attempt.status.status_code is StatusCode.UNSET  # not the upstream's fault
    assert r.log.one()["outcome"] == "client_gone"
    assert value(r.samples(), "edgeproxy_requests_total", edgeproxy_outcome="client_gone") == 1


def test_every_attempt_failed() -> None:
    r = rig()
    tel = start(r)
    routed(tel)
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.on_event(failed(1, US, FIRST, FailureClass.SERVER_ERROR, 503))
    tel.on_event(AttemptStarted(2, EU, FAILOVER))
    tel.on_event(failed(2, EU, FAILOVER, FailureClass.CONNECT_ERROR, 0))
    tel.finish(502)
    server = r.server()
    assert (server.attributes or {})["error.type"] == "connect_error"
    assert "edgeproxy.candidate" not in (server.attributes or {})
    assert server.status.status_code is StatusCode.ERROR
    line = r.log.one()
    assert line["candidate"] is None and line["error_type"] == "connect_error"
    assert line["outcome"] == "error"
    assert value(r.samples(), "edgeproxy_requests_total", edgeproxy_candidate="none") == 1


def test_skipped_candidates_are_events_with_their_reason() -> None:
    r = rig()
    tel = start(r)
    skipped = CandidateSkipped(BETA, SkipReason.CONTEXT_WINDOW, "window 8192 < 9000 tokens")
    tel.on_event(RouteDecided(ROUTE, (US, EU, BETA), (skipped,), "v1"))
    tel.on_event(CandidateSkipped(EU, SkipReason.BREAKER_OPEN, "ejected"))
    served(tel, r, 1, US, FIRST)
    tel.finish(200)
    events = [(e.name, dict(e.attributes or {})) for e in r.server().events]
    assert events == [
        (
            "edgeproxy.candidate_skipped",
            {
                "edgeproxy.candidate": BETA.key,
                "edgeproxy.reason": "context_window",
                "edgeproxy.detail": "window 8192 < 9000 tokens",
            },
        ),
        (
            "edgeproxy.candidate_skipped",
            {
                "edgeproxy.candidate": EU.key,
                "edgeproxy.reason": "breaker_open",
                "edgeproxy.detail": "ejected",
            },
        ),
    ]


def test_an_attempt_left_open_is_ended_as_abandoned() -> None:
    r = rig()
    tel = start(r)
    routed(tel)
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.finish(500, error_type="internal")
    (attempt,) = r.attempts()
    assert (attempt.attributes or {})["edgeproxy.outcome"] == "abandoned"
    assert value(r.samples(), "edgeproxy_attempts_total", edgeproxy_outcome="abandoned") == 1
    assert r.telemetry.recent.snapshot()[US.key]["requests"] == 1


def test_events_for_unknown_attempts_are_ignored() -> None:
    r = rig()
    tel = start(r)
    for event in (
        FirstToken(7, 0.1),
        UsageRecorded(7, US, USAGE, 1.0),
        Committed(7, US),
        RelayEnded(7, "cut", 1, 1),
        AttemptEnded(7, US, FIRST, "ok", 0.1),
    ):
        tel.on_event(event)
    tel.finish(200)
    assert r.log.one()["attempts"] == 0 and r.log.one()["cost_usd"] == 0.0


def test_finish_is_idempotent_and_counts_inflight() -> None:
    r = rig()
    tel = start(r)
    assert r.telemetry.inflight == 1
    assert value(r.samples(), "edgeproxy_requests_inflight") == 1
    tel.finish(200)
    tel.finish(500)
    assert r.telemetry.inflight == 0 and len(r.log.lines) == 1 and len(r.spans()) == 1


# -- off, sampled out, metrics off ---------------------------------------------------------------


def test_tracing_off_records_metrics_and_log_but_no_span() -> None:
    r = rig(tracing=False)
    assert not r.telemetry.tracing
    tel = start(r, {"traceparent": TRACEPARENT, "tracestate": "vendor=x"})
    routed(tel)
    tel.on_event(AttemptStarted(1, US, FIRST))
    assert tel.trace_headers(1) == {"traceparent": TRACEPARENT, "tracestate": "vendor=x"}
    tel.on_event(AttemptEnded(1, US, FIRST, "ok", 0.1))
    tel.finish(200)
    assert r.spans() == []
    assert r.log.one()["trace_id"] == TRACE_ID
    assert value(r.samples(), "edgeproxy_requests_total") == 1


def test_metrics_off_still_logs() -> None:
    r = rig(tracing=False, metrics=False)
    tel = start(r)
    routed(tel)
    served(tel, r, 1, US, FIRST)
    tel.finish(200)
    assert r.log.one()["candidate"] == US.key
    assert r.telemetry.render_prometheus().startswith(b"#")


def test_a_sampled_out_request_builds_no_span_but_propagates() -> None:
    r = rig()
    assert r.provider is not None
    r.provider.sampler = ALWAYS_OFF
    tel = start(r, {"traceparent": TRACEPARENT})
    tel.on_event(AttemptStarted(1, US, FIRST))
    headers = tel.trace_headers(1)
    tel.on_event(AttemptEnded(1, US, FIRST, "ok", 0.1))
    tel.finish(200)
    assert r.spans() == []
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "00") and span_id != PARENT
    assert r.log.one()["trace_id"] == TRACE_ID


def test_the_upstream_sees_the_attempt_span_as_parent() -> None:
    r = rig()
    tel = start(r, {"traceparent": TRACEPARENT, "tracestate": "vendor=x,other=y"})
    tel.on_event(AttemptStarted(1, US, FIRST))
    tel.on_event(AttemptStarted(2, EU, HEDGE))
    one, two = dict(tel.trace_headers(1)), dict(tel.trace_headers(2))
    tel.on_event(AttemptEnded(1, US, FIRST, "ok", 0.1))
    tel.on_event(AttemptEnded(2, EU, HEDGE, "abandoned", 0.1))
    tel.finish(200)
    server = r.server()
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT
    first, second = r.attempts()
    for headers, span in ((one, first), (two, second)):
        assert headers["traceparent"] == (f"00-{TRACE_ID}-{span.context.span_id:016x}-01")
        assert headers["tracestate"] == "vendor=x,other=y"


def test_an_invalid_incoming_context_starts_a_new_trace() -> None:
    r = rig()
    tel = start(r, {"traceparent": "00-zz-bad-01", "tracestate": "vendor=café"})
    tel.on_event(AttemptStarted(1, US, FIRST))
    headers = tel.trace_headers(1)
    tel.finish(200)
    assert r.server().parent is None
    assert headers["traceparent"].split("-")[1] == format(r.server().context.trace_id, "032x")
    assert "tracestate" not in headers
    off = rig(tracing=False)
    tel = start(off, {"traceparent": TRACEPARENT, "tracestate": "vendor=café"})
    assert tel.trace_headers(1) == {"traceparent": TRACEPARENT}  # the bad tracestate is dropped
    tel.finish(200)


# -- content, secrets, breakers ------------------------------------------------------------------


def test_content_goes_on_the_span_only_when_opted_in() -> None:
    r = rig()
    tel = start(r, capture_content=True)
    assert tel.capture_content
    tel.content(input_messages=[{"role": "user", "content": f"hi {CANARY_KEY}"}])
    tel.content(output_messages=[{"role": "assistant", "content": "hello"}])
    tel.finish(200)
    a = r.server().attributes or {}
    inputs = orjson.loads(str(a["gen_ai.input.messages"]))
    assert inputs == [{"role": "user", "content": "hi [REDACTED]"}]
    assert orjson.loads(str(a["gen_ai.output.messages"]))[0]["content"] == "hello"

    r = rig()
    tel = start(r)  # the policy did not opt in
    assert not tel.capture_content
    tel.content(input_messages=[{"role": "user", "content": "secret prompt"}])
    tel.finish(200)
    assert "gen_ai.input.messages" not in (r.server().attributes or {})

    r = rig(tracing=False)
    tel = start(r, capture_content=True)
    assert not tel.capture_content  # nothing would record it: the request path skips the work


def test_long_content_is_cut() -> None:
    r = rig()
    tel = start(r, capture_content=True)
    tel.content(input_messages="x" * 100_000)
    tel.finish(200)
    assert len(str((r.server().attributes or {})["gen_ai.input.messages"])) == 32_768


def test_the_canary_key_reaches_no_span_event_or_log_line() -> None:
    r = rig()
    tel = start(r, {"traceparent": TRACEPARENT, "authorization": f"Bearer {CANARY_KEY}"})
    tel.request_parsed(f"model-{CANARY_KEY}", stream=True)
    skipped = CandidateSkipped(BETA, SkipReason.WIRE, f"probe failed: key={CANARY_KEY}")
    tel.on_event(RouteDecided(ROUTE, (US, EU), (skipped,), "v1"))
    tel.on_event(AttemptStarted(1, US, FIRST))
    assert CANARY_KEY not in str(tel.trace_headers(1))
    failure = AttemptFailure(
        FailureClass.CLIENT_ERROR,
        f"401 Incorrect API key provided: {CANARY_KEY}; Authorization: Bearer {CANARY_KEY}",
        401,
    )
    tel.on_event(AttemptEnded(1, US, FIRST, "client_error", 0.1, failure))
    tel.on_event(AttemptStarted(2, EU, FAILOVER))
    tel.on_event(Committed(2, EU))
    tel.on_event(RelayEnded(2, "malformed", 1, 10, f"bad event echoing {CANARY_KEY}"))
    tel.on_event(AttemptEnded(2, EU, FAILOVER, "malformed", 0.1))
    tel.content(input_messages=[{"role": "user", "content": CANARY_KEY}])  # not opted in
    tel.finish(200)
    dump = "\n".join(s.to_json() for s in r.spans())
    assert "POST /v1/chat/completions" in dump and "[REDACTED]" in dump
    assert CANARY_KEY not in dump and "canary" not in dump
    assert "gen_ai.input.messages" not in dump
    assert CANARY_KEY not in str(r.log.lines) and "model-" in str(r.log.lines)


def test_breaker_transitions_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    r = rig()
    caplog.set_level(logging.INFO, logger="edgeproxy.breaker")
    r.telemetry.breaker_transition(BreakerTransition(US.key, "closed", "open", f"k={CANARY_KEY}"))
    r.telemetry.breaker_transition(BreakerTransition(US.key, "open", "half_open", "probe"))
    r.telemetry.breaker_transition(BreakerTransition(US.key, "half_open", "open", "probe failed"))
    samples = r.samples()
    labels = {"edgeproxy_candidate": US.key}
    assert value(samples, "edgeproxy_breaker_transitions_total", edgeproxy_breaker_to="open", **labels) == 2  # fmt: skip
    assert value(samples, "edgeproxy_breaker_transitions_total", edgeproxy_breaker_to="half_open", **labels) == 1  # fmt: skip
    opened = [rec for rec in caplog.records if rec.getMessage() == "breaker open"]
    assert len(opened) == 2 and opened[0].levelno == logging.WARNING
    assert CANARY_KEY not in str([vars(rec) for rec in caplog.records])


def test_a_telemetry_defect_never_reaches_the_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from edgeproxy.telemetry import listener

    r = rig()
    tel = start(r)
    tel.on_event("not an event")  # type: ignore[arg-type]  # an unknown type: ignored

    def broken(self: RequestTelemetry, event: object) -> None:
        raise RuntimeError("defect")

    monkeypatch.setitem(listener._DISPATCH, CacheLooked, broken)
    tel.on_event(CacheLooked("miss"))  # does not raise
    assert "telemetry could not record CacheLooked" in caplog.text
    tel.finish(200)
    assert r.log.one()["status"] == 200


def test_a_client_request_id_that_looks_like_a_key_is_redacted() -> None:
    r = rig()
    tel = RequestTelemetry(r.telemetry, CANARY_KEY, {}, "POST", "/v1/chat/completions", "chat", False)  # fmt: skip
    tel.finish(200)
    assert r.log.one()["request_id"] == "[REDACTED]"
    assert (r.server().attributes or {})["edgeproxy.request_id"] == "[REDACTED]"

"""LEGACY: the hop-by-hop facade the request path still calls, turned into events.

Delete with telemetry/legacy.py once the request path emits events itself. What it proves: each
old call reaches the listener as the event the request path will emit (the listener's own
tests, test_telemetry_listener.py, cover what the events become), the attempt kinds this
facade has to guess, usage priced here, and the facade's summary."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import StatusCode
from test_telemetry_support import BETA, EU, US, rig, value

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Price

PRICE = Price(input=0.15, output=0.60, cached_input=0.075)
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "prompt_tokens_details": {"cached_tokens": 400},
}


def test_a_failover_stream_hop_by_hop() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_2", headers={})
    tel.request_parsed("gpt-4o-mini", stream=True)
    tel.route_decided(
        "gpt-4o-mini",
        (US, EU, BETA),
        skipped=[(BETA.key, f"{BETA.key}: context window 8192 < prompt 9000 + max_tokens 0")],
        policy_version="v1",
    )
    tel.cache("bypass")
    with tel.attempt(US) as att:
        att.fail(AttemptFailure(FailureClass.SERVER_ERROR, "upstream answered 503", status=503))
    with tel.attempt(EU, price=PRICE) as att:
        r.clock._now += 0.1
        att.first_token()
        att.succeed(200)
        with att.relay() as relay:
            relay.chunk(100)
            relay.chunk(50)
            relay.complete()
        att.record_usage(USAGE)
    summary = tel.finish(200)

    first, second = r.attempts()
    assert (first.attributes or {})["error.type"] == "server_error"
    assert first.status.description == "upstream answered 503"
    s = second.attributes or {}
    assert s["edgeproxy.attempt.kind"] == "failover"
    assert s["edgeproxy.relay.chunks"] == 2 and s["edgeproxy.relay.bytes"] == 150
    assert s["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.1)
    cost = (600 * 0.15 + 400 * 0.075 + 200 * 0.6) / 1e6
    assert s["edgeproxy.cost_usd"] == pytest.approx(cost)  # priced by the facade
    skipped = r.server().events[0].attributes or {}
    assert skipped["edgeproxy.reason"] == "context_window"
    assert value(r.samples(), "edgeproxy_failovers_total", error_type="server_error") == 1
    assert summary.candidate == EU.key and summary.outcome == "ok" and summary.attempts == 2
    assert summary.ttft_s == pytest.approx(0.1) and summary.cost_usd == pytest.approx(cost)
    assert r.log.one()["attempt_outcomes"] == [f"{US.key}=server_error", f"{EU.key}=ok"]
    assert sum(a.cost for a in tel.attempts) == pytest.approx(cost)  # the cost header's sum


def test_kinds_the_facade_guesses() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="k", headers={})
    tel.route_decided("gpt-4o-mini", (US, EU))
    first = tel.attempt(US)  # still running when the next one starts: a hedge
    hedge = tel.attempt(EU)
    hedge.abandon("lost the hedge race")
    hedge.end()
    first.fail(FailureClass.RATE_LIMITED, "429", status=429)
    first.end()
    tel.backoff(0.1, "retrying")
    with tel.attempt(US) as retry:  # the same candidate after a failure: a retry
        retry.first_token()
        retry.succeed()
        with retry.relay() as relay:
            relay.fail(FailureClass.CUT, "cut")
    with tel.attempt(EU) as resume:  # after a committed attempt: a resume
        resume.succeed()
    tel.finish(200)
    kinds = [(a.attributes or {})["edgeproxy.attempt.kind"] for a in r.attempts()]
    assert kinds == ["first", "hedge", "retry", "resume"]
    assert [e.name for e in r.server().events] == ["edgeproxy.backoff"]
    samples = r.samples()
    assert value(samples, "edgeproxy_hedges_total") == 1
    assert value(samples, "edgeproxy_failovers_total", error_type="cut") == 1


def test_exceptions_escaping_an_attempt_are_recorded() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="req_x", headers={})
    with pytest.raises(AttemptFailure), tel.attempt(US):
        raise AttemptFailure(FailureClass.CONNECT_TIMEOUT, "connect took over 2s")
    with pytest.raises(asyncio.CancelledError), tel.attempt(EU):
        raise asyncio.CancelledError
    with pytest.raises(RuntimeError), tel.attempt(BETA):
        raise RuntimeError("bug")
    tel.finish(502)
    first, second, third = r.attempts()
    assert (first.attributes or {})["error.type"] == "connect_timeout"
    assert (second.attributes or {})["edgeproxy.outcome"] == "abandoned"
    assert (third.attributes or {})["edgeproxy.outcome"] == "internal"
    assert third.status.description == "RuntimeError"
    server = r.server()
    assert (server.attributes or {})["error.type"] == "internal"
    assert server.status.status_code is StatusCode.ERROR


def test_a_cut_relay_and_a_client_that_left() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="c", headers={})
    with tel.attempt(US, price=PRICE) as att:
        att.first_token()
        att.succeed(200)
        with att.relay() as relay:
            relay.fail(FailureClass.CUT, "upstream closed the stream before it was complete")
        att.record_usage({"prompt_tokens": 100, "completion_tokens": 40}, estimated=True)
    summary = tel.finish(200)
    assert summary.outcome == "cut" and summary.cost_usd == pytest.approx(0.000039)
    assert (r.attempts()[0].attributes or {})["edgeproxy.usage.estimated"] is True

    gone = r.telemetry.start_request(request_id="g", headers={})
    with gone.attempt(US) as att:
        att.succeed()
        with pytest.raises(ConnectionResetError), att.relay():
            raise ConnectionResetError
    assert gone.finish(200).outcome == "client_gone"


def test_the_context_manager_finishes_a_request() -> None:
    r = rig()
    with pytest.raises(RuntimeError), r.telemetry.start_request(request_id="q", headers={}):
        raise RuntimeError("boom")
    a = r.server().attributes or {}
    assert a["http.response.status_code"] == 500 and a["error.type"] == "RuntimeError"
    assert r.telemetry.inflight == 0


def test_a_cache_hit_and_its_replayed_first_token() -> None:
    r = rig()
    tel = r.telemetry.start_request(request_id="h", headers={})
    tel.route_decided("gpt-4o-mini", (US,))
    tel.cache("hit")
    r.clock._now += 0.003
    tel.first_token()
    tel.event("edgeproxy.note", {"edgeproxy.candidate": US.key})
    summary = tel.finish(200, usage={"prompt_tokens": 7, "completion_tokens": 3})
    assert summary.outcome == "cache_hit" and summary.cost_usd == 0.0
    assert summary.ttft_s == pytest.approx(0.003) and summary.usage.output_tokens == 3
    assert [e.name for e in r.server().events] == ["edgeproxy.note"]

"""Metrics recorded by the facade, and ``GET /metrics`` parsed with prometheus_client's parser."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_telemetry_support import CANARY_KEY, EU, US, parse, rig, value

from edgeproxy.cost import Usage
from edgeproxy.events import (
    AttemptEnded,
    AttemptKind,
    AttemptStarted,
    BreakerTransition,
    CacheLooked,
    Committed,
    FirstToken,
    RelayEnded,
    RouteDecided,
    UsageRecorded,
)
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.metrics import TELEMETRY, handle_metrics
from edgeproxy.telemetry.listener import RequestTelemetry
from edgeproxy.telemetry.metrics import metrics_readers_from_env
from edgeproxy.telemetry.process import Telemetry

FIRST, FAILOVER, HEDGE = AttemptKind.FIRST, AttemptKind.FAILOVER, AttemptKind.HEDGE
COST = (1000 * 1.0 + 500 * 2.0) / 1e6  # 1000 in, 500 out at $1/$2 per million


def listener(t: Telemetry, rid: str) -> RequestTelemetry:
    return RequestTelemetry(t, rid, {}, "POST", "/v1/chat/completions", "chat", False)


def drive(t: Telemetry) -> None:
    """A failover-then-hedged stream, a cache hit, a shed request, a breaker opening."""
    tel = listener(t, "a")
    tel.request_parsed("client-asked-model", stream=True)
    tel.on_event(RouteDecided("gpt-4o-mini", (US, EU), (), "v1"))
    tel.on_event(CacheLooked("miss"))
    tel.on_event(AttemptStarted(1, US, FIRST))
    failure = AttemptFailure(FailureClass.SERVER_ERROR, "503", 503)
    tel.on_event(AttemptEnded(1, US, FIRST, "server_error", 0.01, failure, 503))
    tel.on_event(AttemptStarted(2, EU, FAILOVER))
    tel.on_event(AttemptStarted(3, US, HEDGE))
    tel.on_event(FirstToken(2, 0.02))
    tel.on_event(Committed(2, EU))
    tel.on_event(AttemptEnded(3, US, HEDGE, "abandoned", 0.01))
    tel.on_event(UsageRecorded(2, EU, Usage(1000, 500), COST))
    tel.on_event(RelayEnded(2, "complete", 5, 500))
    tel.on_event(AttemptEnded(2, EU, FAILOVER, "ok", 0.1))
    tel.finish(200)

    hit = listener(t, "b")
    hit.on_event(RouteDecided("gpt-4o-mini", (US, EU), (), "v1"))
    hit.on_event(CacheLooked("hit"))
    hit.finish(200)

    shed = listener(t, "c")
    shed.shed("queue_full")
    shed.finish(503)

    t.breaker_transition(BreakerTransition(US.key, "closed", "open", "5 failures"))


async def test_metrics_endpoint_text_parses_and_counts() -> None:
    r = rig(tracing=False, metrics=True)
    r.telemetry.observe_breakers(
        lambda: [{"key": US.key, "state": "open"}, {"key": EU.key, "state": "closed"}]
    )
    drive(r.telemetry)
    app = web.Application()
    app[TELEMETRY] = r.telemetry
    app.router.add_get("/metrics", handle_metrics)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    s = parse(text)
    route = {"edgeproxy_route": "gpt-4o-mini"}
    assert value(s, "edgeproxy_requests_total", edgeproxy_outcome="ok", **route) == 1
    assert value(s, "edgeproxy_requests_total", edgeproxy_outcome="cache_hit", **route) == 1
    assert value(s, "edgeproxy_requests_total", edgeproxy_outcome="shed") == 1
    assert value(s, "edgeproxy_requests_shed_total", edgeproxy_reason="queue_full") == 1
    assert value(s, "edgeproxy_attempts_total", edgeproxy_outcome="server_error") == 1
    assert value(s, "edgeproxy_attempts_total", edgeproxy_outcome="abandoned") == 1
    assert (
        value(s, "edgeproxy_attempts_total", edgeproxy_outcome="ok", edgeproxy_candidate=EU.key)
        == 1
    )
    assert value(s, "edgeproxy_failovers_total", error_type="server_error") == 1
    assert value(s, "edgeproxy_hedges_total", **route) == 1
    assert (
        value(
            s,
            "edgeproxy_breaker_transitions_total",
            edgeproxy_candidate=US.key,
            edgeproxy_breaker_to="open",
        )
        == 1
    )
    assert value(s, "edgeproxy_access_log_dropped_total") == 0
    assert value(s, "edgeproxy_cache_lookups_total", edgeproxy_cache_result="hit") == 1
    assert value(s, "edgeproxy_cache_lookups_total", edgeproxy_cache_result="miss") == 1
    assert value(s, "edgeproxy_cost_usd_total", edgeproxy_candidate=EU.key) == COST
    assert value(s, "edgeproxy_requests_inflight") == 0
    assert value(s, "edgeproxy_breaker_state", edgeproxy_candidate=US.key) == 2
    assert value(s, "edgeproxy_breaker_state", edgeproxy_candidate=EU.key) == 0
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 1000
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 500
    assert value(s, "gen_ai_client_operation_duration_seconds_count") == 3
    assert (
        value(s, "gen_ai_client_operation_duration_seconds_count", error_type="server_error") == 1
    )
    assert value(s, "gen_ai_client_operation_time_to_first_chunk_seconds_count") == 1
    assert value(s, "gen_ai_server_time_to_first_token_seconds_count", **route) == 1
    assert value(s, "gen_ai_server_request_duration_seconds_count") == 3
    assert CANARY_KEY not in text
    # The client's model string never becomes a label (unbounded cardinality).
    assert "client-asked-model" not in text


async def test_inflight_gauge_while_a_request_is_open() -> None:
    r = rig(tracing=False, metrics=True)
    tel = listener(r.telemetry, "x")
    assert r.telemetry.inflight == 1
    assert (
        value(parse(r.telemetry.render_prometheus().decode()), "edgeproxy_requests_inflight") == 1
    )
    tel.finish(200)
    assert (
        value(parse(r.telemetry.render_prometheus().decode()), "edgeproxy_requests_inflight") == 0
    )


def test_breaker_callback_errors_do_not_break_the_scrape() -> None:
    r = rig(tracing=False, metrics=True)

    def broken() -> list[dict[str, object]]:
        raise RuntimeError("registry gone")

    r.telemetry.observe_breakers(broken)
    assert "edgeproxy_breaker_state{" not in r.telemetry.render_prometheus().decode()


def test_metrics_off() -> None:
    assert metrics_readers_from_env({"OTEL_METRICS_EXPORTER": "none"}) == []
    assert metrics_readers_from_env({}) == ["prometheus"]
    t = Telemetry()
    assert t.render_prometheus().startswith(b"#")
    drive(t)  # still works, records nothing
    parse(t.render_prometheus().decode())


def test_pushed_readers_get_the_same_instruments() -> None:
    """Counters (observable) and histograms (collect hook) reach a non-Prometheus reader too,
    with the SDK's bucket rule: a value equal to a boundary falls in that boundary's bucket."""
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

    from edgeproxy.telemetry.metrics import ProxyMetrics

    reader = InMemoryMetricReader()
    metrics = ProxyMetrics([reader], prometheus=False)
    drive(Telemetry(metrics=metrics, access_log_enabled=False))
    metrics.time_to_first_token.record(0.01, ("r", "chat"))
    data = reader.get_metrics_data()
    assert data is not None
    found = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {"edgeproxy.requests", "edgeproxy.attempts", "gen_ai.client.token.usage"} <= set(found)
    ttft = {
        p.attributes["edgeproxy.route"]: p
        for p in found["gen_ai.server.time_to_first_token"].data.data_points
        if isinstance(p, HistogramDataPoint) and p.attributes is not None
    }["r"]
    assert ttft.count == 1 and ttft.bucket_counts[2] == 1  # (0.005, 0.01]
    duration = found["gen_ai.client.operation.duration"].data.data_points
    assert sorted(str((p.attributes or {}).get("error.type")) for p in duration) == [
        "None",
        "abandoned",
        "server_error",
    ]


def test_the_metrics_table_in_docs_observability_is_every_instrument() -> None:
    """docs/observability.md lists exactly the instruments metrics.py registers: a metric
    documented but never emitted (issue #9 found two) or emitted but undocumented fails."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source = (root / "python" / "edgeproxy" / "telemetry" / "metrics.py").read_text()
    registered = set(
        re.findall(r'(?:LabelCounter|LabelHistogram|create_observable_\w+)\(\s*"([^"]+)"', source)
    )
    docs = (root / "docs" / "observability.md").read_text()
    section = docs.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_.]+)` \| `", section, flags=re.MULTILINE))
    assert len(registered) >= 20  # the pattern found the instruments, not nothing
    assert documented == registered, (documented - registered, registered - documented)

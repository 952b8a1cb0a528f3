"""Metrics recorded by the facade, and ``GET /metrics`` parsed with prometheus_client's parser."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from test_telemetry_support import CANARY_KEY, EU, US, rig

from edgeproxy.failure import FailureClass
from edgeproxy.server.metrics import TELEMETRY, handle_metrics
from edgeproxy.snapshot import Price
from edgeproxy.telemetry.metrics import metrics_readers_from_env
from edgeproxy.telemetry.request import Telemetry

PRICE = Price(input=1.0, output=2.0)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    hits = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert hits, f"no sample {name} {labels}: {sorted({n for n, _ in samples})}"
    return sum(hits)


def drive(t: Telemetry) -> None:
    """One failover-then-stream request, one cache hit, one shed request."""
    tel = t.start_request(request_id="a", headers={})
    tel.request_parsed("client-asked-model", stream=True)
    tel.route_decided("gpt-4o-mini", (US, EU))
    tel.cache("miss")
    with tel.attempt(US, price=PRICE) as att:
        att.fail(FailureClass.SERVER_ERROR, "503", status=503)
    with tel.attempt(EU, price=PRICE) as att:
        att.first_token()
        att.succeed()
        with att.relay() as relay:
            relay.chunk(5)
        att.record_usage({"prompt_tokens": 1000, "completion_tokens": 500})
    tel.finish(200)

    hit = t.start_request(request_id="b", headers={})
    hit.route_decided("gpt-4o-mini", (US, EU))
    hit.cache("hit")
    hit.finish(200)

    shed = t.start_request(request_id="c", headers={})
    shed.shed("queue_full")
    shed.finish(503)


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
    assert (
        value(s, "edgeproxy_attempts_total", edgeproxy_outcome="ok", edgeproxy_candidate=EU.key)
        == 1
    )
    assert value(s, "edgeproxy_failovers_total", error_type="server_error") == 1
    assert value(s, "edgeproxy_cache_lookups_total", edgeproxy_cache_result="hit") == 1
    assert value(s, "edgeproxy_cache_lookups_total", edgeproxy_cache_result="miss") == 1
    assert value(s, "edgeproxy_cost_usd_total", edgeproxy_candidate=EU.key) == (
        (1000 * 1.0 + 500 * 2.0) / 1e6
    )
    assert value(s, "edgeproxy_requests_inflight") == 0
    assert value(s, "edgeproxy_breaker_state", edgeproxy_candidate=US.key) == 2
    assert value(s, "edgeproxy_breaker_state", edgeproxy_candidate=EU.key) == 0
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 1000
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 500
    assert value(s, "gen_ai_client_operation_duration_seconds_count") == 2
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
    tel = r.telemetry.start_request(request_id="x", headers={})
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
        "server_error",
    ]

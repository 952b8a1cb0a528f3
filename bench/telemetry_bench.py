"""Telemetry facade overhead per request: tracing off vs on.

Drives the facade exactly as a streamed request with one failover does (route, cache, two
attempts, a 20-chunk relay, usage, finish) and reports the median per-request cost over runs.

    .venv/bin/python bench/telemetry_bench.py [--requests 5000] [--runs 7]

Configurations:
  off       tracing off, metrics off (OTEL_METRICS_EXPORTER=none): the no-op facade
  default   tracing off, Prometheus metrics on: what `edgeproxy serve` does out of the box
  traced    tracing on (every span sampled, in-memory exporter) + metrics
  sampled0  tracing on but the sampler drops everything (ratio 0) + metrics

The access log is silenced (its cost is the logging handler's, not the facade's).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from types import MappingProxyType

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from edgeproxy.failure import FailureClass
from edgeproxy.snapshot import Candidate, Price
from edgeproxy.telemetry.metrics import ProxyMetrics
from edgeproxy.telemetry.request import Telemetry
from edgeproxy.wires import upstream_wire


def _candidate(region: str, port: int) -> Candidate:
    return Candidate(
        provider="alpha",
        region=region,
        model="gpt-4o-mini",
        upstream_model="gpt-4o-mini",
        wire=upstream_wire("openai"),
        base_url=f"http://127.0.0.1:{port}/v1",
        chat_url=f"http://127.0.0.1:{port}/v1/chat/completions",
        context_window=128000,
        tags=MappingProxyType({}),
        headers=MappingProxyType({}),
    )


US, EU = _candidate("us-east", 18101), _candidate("eu-west", 18102)
CHAIN = (US, EU)
PRICE = Price(0.15, 0.6, 0.075)
USAGE = {"prompt_tokens": 500, "completion_tokens": 200}
HEADERS = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def one_request(t: Telemetry, i: int) -> None:
    tel = t.start_request(request_id=f"req_{i}", headers=HEADERS)
    tel.request_parsed("gpt-4o-mini", stream=True)
    tel.route_decided("gpt-4o-mini", CHAIN, policy_version="v1")
    tel.cache("miss")
    with tel.attempt(US, price=PRICE) as att:
        att.headers()
        att.fail(FailureClass.SERVER_ERROR, "upstream answered 503", status=503)
    with tel.attempt(EU, price=PRICE) as att:
        att.headers()
        att.first_token()
        att.succeed(200)
        with att.relay() as relay:
            for _ in range(20):
                relay.chunk(64)
            relay.complete()
        att.record_usage(USAGE)
    tel.finish(200)


def make(config: str) -> Telemetry:
    provider = None
    if config in ("traced", "sampled0"):
        provider = TracerProvider(sampler=ALWAYS_OFF if config == "sampled0" else None)
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = None if config == "off" else ProxyMetrics()
    return Telemetry(tracer_provider=provider, metrics=metrics, access_log_enabled=False)


CONFIGS = ("off", "default", "sampled0", "traced")


def run_once(config: str, requests: int) -> float:
    """Microseconds per request for one run of one configuration."""
    t = make(config)
    for i in range(200):  # warm up
        one_request(t, i)
    start = time.perf_counter()
    for i in range(requests):
        one_request(t, i)
    elapsed = (time.perf_counter() - start) / requests * 1e6
    if t.tracer_provider is not None:
        t.tracer_provider.shutdown()
    return elapsed


def measure(requests: int, runs: int) -> dict[str, float]:
    """Median microseconds per request; the configurations take turns within each run, so a
    busy shared machine slows them alike."""
    results: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for _ in range(runs):
        for config in CONFIGS:
            results[config].append(run_once(config, requests))
    return {c: statistics.median(v) for c, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("edgeproxy.access").setLevel(logging.WARNING)
    print(
        f"{'config':<10} {'us/request':>11}   ({args.requests} requests x {args.runs} runs, median)"
    )
    medians = measure(args.requests, args.runs)
    for config, us in medians.items():
        print(f"{config:<10} {us:>11.1f}   x{us / medians['off']:.1f} of off")


if __name__ == "__main__":
    main()

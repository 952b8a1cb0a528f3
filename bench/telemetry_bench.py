"""Telemetry's cost per request: tracing off vs on, metrics off vs on.

Feeds one request's listener the events of a streamed request with one failover (route, cache
miss, a failed attempt, a second one that commits and relays 20 chunks, usage, finish), as the
request path emits them, and reports the median CPU per request over runs. CPU is the whole
process's (``time.process_time``), so the span processor's thread counts: in ``otlp`` it
encodes every span to OTLP protobuf (all the exporter does but the POST).

    .venv/bin/python -m bench.telemetry_bench [--requests 5000] [--runs 7]

Configurations:
  off       tracing off, metrics off (OTEL_METRICS_EXPORTER=none)
  default   tracing off, Prometheus metrics on: what `edgeproxy serve` does out of the box
  sampled0  tracing on but the sampler drops everything (ratio 0) + metrics
  traced    tracing on, every span sampled, in-memory exporter (synchronous) + metrics
  otlp      tracing on, every span sampled, batch processor + OTLP protobuf encoding + metrics

The access log is off (bench/access_log_bench.py measures it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from types import MappingProxyType

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from edgeproxy.cost import Usage
from edgeproxy.events import (
    AttemptEnded,
    AttemptKind,
    AttemptStarted,
    CacheLooked,
    Committed,
    FirstToken,
    RelayEnded,
    RouteDecided,
    UsageRecorded,
)
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Candidate
from edgeproxy.telemetry.metrics import ProxyMetrics
from edgeproxy.telemetry.process import Telemetry
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
FIRST, FAILOVER = AttemptKind.FIRST, AttemptKind.FAILOVER
EVENTS = (
    RouteDecided("gpt-4o-mini", (US, EU), (), "v1"),
    CacheLooked("miss"),
    AttemptStarted(1, US, FIRST),
    AttemptEnded(
        1,
        US,
        FIRST,
        "server_error",
        0.01,
        AttemptFailure(FailureClass.SERVER_ERROR, "upstream answered 503", 503),
        503,
    ),
    AttemptStarted(2, EU, FAILOVER),
    FirstToken(2, 0.05),
    Committed(2, EU),
    UsageRecorded(2, EU, Usage(500, 200), 0.000195),
    RelayEnded(2, "complete", 20, 1280),
    AttemptEnded(2, EU, FAILOVER, "ok", 0.4),
)
HEADERS = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def one_request(t: Telemetry, i: int) -> None:
    tel = t.start_request(request_id=f"req_{i}", headers=HEADERS)
    tel.request_parsed("gpt-4o-mini", stream=True)
    for event in EVENTS:
        tel.on_event(event)
        if type(event) is AttemptStarted:
            tel.trace_headers(event.number)
    tel.finish(200)


class EncodeOnly(SpanExporter):
    """The OTLP exporter's work without the socket: spans to protobuf bytes."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializePartialToString()
        return SpanExportResult.SUCCESS


def make(config: str) -> Telemetry:
    provider = None
    if config in ("traced", "sampled0"):
        provider = TracerProvider(sampler=ALWAYS_OFF if config == "sampled0" else None)
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    elif config == "otlp":
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(EncodeOnly(), max_queue_size=1 << 16))
    metrics = None if config == "off" else ProxyMetrics()
    return Telemetry(tracer_provider=provider, metrics=metrics, access_log_enabled=False)


CONFIGS = ("off", "default", "sampled0", "traced", "otlp")


def run_once(config: str, requests: int) -> float:
    """CPU microseconds per request for one run of one configuration."""
    t = make(config)
    for i in range(200):  # warm up
        one_request(t, i)
    if t.tracer_provider is not None:
        t.tracer_provider.force_flush()
    start = time.process_time()
    for i in range(requests):
        one_request(t, i)
    if t.tracer_provider is not None:
        t.tracer_provider.force_flush()  # the batch thread's encoding is part of the cost
    elapsed = (time.process_time() - start) / requests * 1e6
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
    print(
        f"{'config':<10} {'CPU us/request':>15}   ({args.requests} requests x {args.runs} runs, "
        "median)"
    )
    medians = measure(args.requests, args.runs)
    for config, us in medians.items():
        print(f"{config:<10} {us:>15.1f}   x{us / medians['off']:.1f} of off")


if __name__ == "__main__":
    main()

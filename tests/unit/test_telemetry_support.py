"""Shared helpers for the telemetry unit tests: candidates, a policy, an in-memory tracer, a
collected access log and the Prometheus text parsed."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.clock import FakeClock
from edgeproxy.snapshot import Candidate, Policy, Route, Timeouts
from edgeproxy.telemetry.access_log import FIELDS, AccessValues
from edgeproxy.telemetry.metrics import ProxyMetrics
from edgeproxy.telemetry.process import Telemetry
from edgeproxy.wires import upstream_wire

CANARY_KEY = "sk-canary-5f2c9e1d7a3b4c8e9f00112233445566"


def candidate(
    provider: str, region: str, model: str = "gpt-4o-mini", port: int = 9101
) -> Candidate:
    return Candidate(
        provider=provider,
        region=region,
        model=model,
        upstream_model=model,
        wire=upstream_wire("openai"),
        base_url=f"http://127.0.0.1:{port}/v1",
        chat_url=f"http://127.0.0.1:{port}/v1/chat/completions",
        context_window=128000,
        tags=MappingProxyType({}),
        headers=MappingProxyType({"Authorization": f"Bearer {CANARY_KEY}"}),
    )


US = candidate("alpha", "us-east", port=9101)
EU = candidate("alpha", "eu-west", port=9102)
BETA = candidate("beta", "local", "llama-3.1-8b", port=9103)


def policy() -> Policy:
    route = Route(
        name="gpt-4o-mini",
        aliases=("default",),
        chain=(US, EU, BETA),
        timeouts=Timeouts(),
        max_attempts=3,
        on_midstream_failure="error",
    )
    return Policy(
        source="policies/test.yaml",
        version="v1abc",
        routes=MappingProxyType({"gpt-4o-mini": route, "default": route}),
        route_names=("gpt-4o-mini",),
        max_body_bytes=1024,
    )


class CollectedLog:
    """An access log sink that keeps each line's fields (as ``finish`` handed them over)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.on = True

    def enabled(self) -> bool:
        return self.on

    def write(self, created: float, values: AccessValues) -> None:
        self.lines.append(dict(zip(FIELDS, values, strict=True)))

    def flush(self) -> None:
        pass

    def one(self) -> dict[str, Any]:
        assert len(self.lines) == 1, self.lines
        return self.lines[0]


@dataclass
class Rig:
    telemetry: Telemetry
    exporter: InMemorySpanExporter
    clock: FakeClock
    log: CollectedLog
    metrics: ProxyMetrics | None = None
    provider: TracerProvider | None = field(default=None)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def by_name(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.by_name(name)
        assert len(found) == 1, f"{name}: {[s.name for s in self.spans()]}"
        return found[0]

    def server(self) -> ReadableSpan:
        return self.one("POST /v1/chat/completions")

    def attempts(self) -> list[ReadableSpan]:
        """The CLIENT spans, by attempt number."""
        found = [s for s in self.spans() if "edgeproxy.attempt" in (s.attributes or {})]
        return sorted(found, key=lambda s: int((s.attributes or {})["edgeproxy.attempt"]))

    def samples(self) -> Samples:
        return parse(self.telemetry.render_prometheus().decode())


def rig(*, tracing: bool = True, metrics: bool = True) -> Rig:
    exporter = InMemorySpanExporter()
    provider = None
    if tracing:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = FakeClock()
    proxy_metrics = ProxyMetrics() if metrics else None
    log = CollectedLog()
    telemetry = Telemetry(
        tracer_provider=provider, metrics=proxy_metrics, clock=clock, access_log=log
    )
    return Rig(telemetry, exporter, clock, log, proxy_metrics, provider)


# -- the Prometheus text -------------------------------------------------------------------------

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


def absent(samples: Samples, name: str, **labels: str) -> bool:
    want = set(labels.items())
    return not [v for (n, ls), v in samples.items() if n == name and want <= set(ls) and v]

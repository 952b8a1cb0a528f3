"""Shared helpers for the telemetry unit tests: candidates, a policy, an in-memory tracer."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edgeproxy.clock import FakeClock
from edgeproxy.snapshot import Candidate, Policy, Route, Timeouts
from edgeproxy.telemetry.metrics import ProxyMetrics
from edgeproxy.telemetry.request import Telemetry
from edgeproxy.wires import upstream_wire

CANARY_KEY = "sk-canary-5f2c9e1d7a3b4c8e9f00112233445566"


def candidate(
    provider: str, region: str, model: str = "gpt-4o-mini", port: int = 18101
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


US = candidate("alpha", "us-east", port=18101)
EU = candidate("alpha", "eu-west", port=18102)
BETA = candidate("beta", "local", "llama-3.1-8b", port=18103)


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


@dataclass
class Rig:
    telemetry: Telemetry
    exporter: InMemorySpanExporter
    clock: FakeClock
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


def rig(*, tracing: bool = True, metrics: bool = False) -> Rig:
    exporter = InMemorySpanExporter()
    provider = None
    if tracing:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = FakeClock()
    proxy_metrics = ProxyMetrics() if metrics else None
    telemetry = Telemetry(tracer_provider=provider, metrics=proxy_metrics, clock=clock)
    return Rig(telemetry, exporter, clock, proxy_metrics, provider)

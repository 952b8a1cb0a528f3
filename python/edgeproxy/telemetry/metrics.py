"""Metrics: OpenTelemetry instruments with the GenAI names where they exist, plus the proxy's own.

Readers (``OTEL_METRICS_EXPORTER``, comma-separated; default ``prometheus``):

- ``prometheus``: the OTel SDK's ``PrometheusMetricReader`` on a *private* prometheus_client
  registry, rendered by ``GET /metrics`` (text format 0.0.4). Pull-based: nothing is exported
  unless scraped.
- ``otlp``: pushed over OTLP/HTTP every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (default 60 s).
- ``console``: printed every interval (debugging).
- ``none``: no instruments are recorded at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from edgeproxy.telemetry.tracing import INSTRUMENTATION_SCOPE, _truthy, resource_from_env

log = logging.getLogger("edgeproxy.telemetry")

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST

# Bucket boundaries the GenAI semantic conventions advise.
DURATION_BUCKETS: Sequence[float] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TTFT_BUCKETS: Sequence[float] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TOKEN_BUCKETS: Sequence[float] = tuple(float(4**i) for i in range(14))  # 1 … 67,108,864

# Breaker states as gauge values: 0 closed, 1 half_open, 2 open.
BREAKER_STATE_VALUES: Mapping[str, int] = {"closed": 0, "half_open": 1, "open": 2}

BreakerSource = Callable[[], Iterable[Mapping[str, Any]]]


class MetricsConfigError(ValueError):
    pass


def metrics_readers_from_env(env: Mapping[str, str]) -> list[str]:
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return []
    names = [
        n.strip().lower()
        for n in env.get("OTEL_METRICS_EXPORTER", "prometheus").split(",")
        if n.strip()
    ]
    for name in names:
        if name not in ("prometheus", "otlp", "console", "none"):
            raise MetricsConfigError(
                f"OTEL_METRICS_EXPORTER={name!r} is not supported "
                "(use prometheus, otlp, console or none)"
            )
    return [n for n in names if n != "none"]


class ProxyMetrics:
    """Every instrument the request path records, on one MeterProvider."""

    def __init__(
        self,
        readers: Sequence[MetricReader] = (),
        *,
        prometheus: bool = True,
        resource: Resource | None = None,
    ) -> None:
        self.registry: CollectorRegistry | None = None
        all_readers = list(readers)
        if prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            self.registry = CollectorRegistry(auto_describe=True)
            all_readers.append(
                PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
            )
        self.provider = MeterProvider(
            metric_readers=all_readers, resource=resource or Resource({"service.name": "edgeproxy"})
        )
        self._breakers: BreakerSource | None = None
        m = self.provider.get_meter(INSTRUMENTATION_SCOPE)

        # GenAI semantic conventions.
        self.operation_duration = m.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of one upstream GenAI call (one attempt), streams included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.token_usage = m.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens one upstream call used, by gen_ai.token.type (input/output).",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.time_to_first_chunk = m.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Upstream call start to its first content chunk (one attempt).",
            explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
        )
        self.time_to_first_token = m.create_histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            description="Request arrival to the first token sent to the app, failovers included.",
            explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
        )
        self.request_duration = m.create_histogram(
            "gen_ai.server.request.duration",
            unit="s",
            description="Request arrival to the end of the response, as the app sees it.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        # The proxy's own.
        self.requests = m.create_counter(
            "edgeproxy.requests",
            unit="{request}",
            description="Requests by route, served candidate and outcome.",
        )
        self.attempts = m.create_counter(
            "edgeproxy.attempts",
            unit="{attempt}",
            description="Upstream attempts by candidate and outcome (ok or the failure class).",
        )
        self.failovers = m.create_counter(
            "edgeproxy.failovers",
            unit="{failover}",
            description="Moves to another candidate after a failed attempt, by the failure class.",
        )
        self.hedges = m.create_counter(
            "edgeproxy.hedges", unit="{hedge}", description="Hedged attempts started."
        )
        self.cache_lookups = m.create_counter(
            "edgeproxy.cache.lookups",
            unit="{lookup}",
            description="Prompt-cache lookups by result (hit, miss, bypass).",
        )
        self.cost = m.create_counter(
            "edgeproxy.cost_usd",
            unit="{USD}",
            description="Upstream spend (tokens x price), failed and abandoned attempts included.",
        )
        # Read at collection time from the facade's own count: no metric update per request.
        self.inflight_source: Callable[[], int] | None = None
        m.create_observable_gauge(
            "edgeproxy.requests.inflight",
            callbacks=[self._observe_inflight],
            unit="{request}",
            description="Requests in progress.",
        )
        self.shed = m.create_counter(
            "edgeproxy.requests.shed",
            unit="{request}",
            description="Requests refused by a limit before routing, by reason.",
        )
        self.breaker_transitions = m.create_counter(
            "edgeproxy.breaker.transitions",
            unit="{transition}",
            description="Circuit breaker state changes seen on the request path.",
        )
        m.create_observable_gauge(
            "edgeproxy.breaker.state",
            callbacks=[self._observe_breakers],
            unit="1",
            description="Circuit breaker state per candidate: 0 closed, 1 half_open, 2 open.",
        )

    def observe_breakers(self, source: BreakerSource | None) -> None:
        """Feed the breaker gauge: ``source()`` returns dicts with ``key`` and ``state`` (e.g.
        ``BreakerRegistry.snapshot``). Called only when metrics are collected."""
        self._breakers = source

    def _observe_inflight(self, options: CallbackOptions) -> Iterable[Observation]:
        source = self.inflight_source
        return [] if source is None else [Observation(source())]

    def _observe_breakers(self, options: CallbackOptions) -> Iterable[Observation]:
        source = self._breakers
        if source is None:
            return []
        try:
            rows = list(source())
        except Exception:
            log.exception("breaker state callback failed")
            return []
        return [
            Observation(
                BREAKER_STATE_VALUES.get(str(row.get("state")), -1),
                {"edgeproxy.candidate": str(row.get("key"))},
            )
            for row in rows
        ]

    def render_prometheus(self) -> bytes:
        """The Prometheus text exposition of every instrument (empty when not enabled)."""
        if self.registry is None:
            return b"# prometheus metrics are not enabled (OTEL_METRICS_EXPORTER)\n"
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()


def metrics_from_env(env: Mapping[str, str]) -> ProxyMetrics | None:
    names = metrics_readers_from_env(env)
    if not names:
        return None
    readers: list[MetricReader] = []
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if "console" in names:
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    return ProxyMetrics(readers, prometheus="prometheus" in names, resource=resource_from_env(env))

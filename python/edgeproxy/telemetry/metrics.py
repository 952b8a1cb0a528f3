"""Metrics: OpenTelemetry instruments with the GenAI names where they exist, plus the proxy's own.

Readers (``OTEL_METRICS_EXPORTER``, comma-separated; default ``prometheus``):

- ``prometheus``: the OTel SDK's ``PrometheusMetricReader`` on a *private* prometheus_client
  registry, rendered by ``GET /metrics`` (text format 0.0.4). Pull-based: nothing is exported
  unless scraped.
- ``otlp``: pushed over OTLP/HTTP every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (default 60 s).
- ``console``: printed every interval (debugging).
- ``none``: no instruments are recorded at all.

The request path does not call the SDK's synchronous instruments: ``Counter.add`` and
``Histogram.record`` hash the attribute dict on every call (~13 updates per request, ~10-14% of
the proxy's CPU). It records into plain Python aggregates instead, keyed by a tuple of label
values (``LabelCounter``, ``LabelHistogram``), and the SDK reads them only at collection time:
counters through observable counters, histograms through a hook on every reader's collect that
adds their data points (same names, units, labels and bucket boundaries as before).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import AttributeValue
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from edgeproxy.errors import EdgeProxyError
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


class MetricsConfigError(EdgeProxyError, ValueError):
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


LabelValues = tuple[str | None, ...]


def _attributes(keys: tuple[str, ...], values: LabelValues) -> dict[str, AttributeValue]:
    """Label values back to an attribute dict; a ``None`` value leaves its label out."""
    return {k: v for k, v in zip(keys, values, strict=True) if v is not None}


class LabelCounter:
    """A monotonic counter aggregated in a plain dict keyed by the tuple of label values (in
    ``keys`` order). ``add`` is a dict update: no attribute hashing, no locks."""

    __slots__ = ("description", "keys", "name", "unit", "values")

    def __init__(self, name: str, keys: tuple[str, ...], *, unit: str, description: str) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.keys = keys
        self.values: dict[LabelValues, float] = {}

    def add(self, amount: float, labels: LabelValues) -> None:
        if amount >= 0:  # as the SDK's Counter: negative amounts are dropped
            values = self.values
            values[labels] = values.get(labels, 0) + amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        """The observable counter's callback: cumulative values, read at collection time."""
        keys = self.keys
        return [Observation(v, _attributes(keys, k)) for k, v in list(self.values.items())]


class _Series:
    __slots__ = ("buckets", "max", "min", "sum")

    def __init__(self, n: int) -> None:
        self.buckets = [0] * n
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")


class LabelHistogram:
    """An explicit-bucket histogram aggregated per tuple of label values: the SDK's bucket
    rule (``bisect_left``: a value equal to a boundary falls in that boundary's bucket),
    sum, min and max. Exported as cumulative data points by ``ProxyMetrics``' collect hook."""

    __slots__ = ("bounds", "description", "keys", "name", "series", "unit")

    def __init__(
        self,
        name: str,
        keys: tuple[str, ...],
        bounds: Sequence[float],
        *,
        unit: str,
        description: str,
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.keys = keys
        self.bounds = tuple(bounds)
        self.series: dict[LabelValues, _Series] = {}

    def record(self, value: float, labels: LabelValues) -> None:
        if value < 0:  # as the SDK's Histogram: negative values are dropped
            return
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = _Series(len(self.bounds) + 1)
        s.buckets[bisect_left(self.bounds, value)] += 1
        s.sum += value
        if value < s.min:
            s.min = value
        if value > s.max:
            s.max = value

    def metric(self, start_ns: int, now_ns: int) -> Metric | None:
        points = []
        for labels, s in list(self.series.items()):
            buckets = list(s.buckets)  # count derives from the copy: always consistent with it
            points.append(
                HistogramDataPoint(
                    attributes=_attributes(self.keys, labels),
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns,
                    count=sum(buckets),
                    sum=s.sum,
                    bucket_counts=buckets,
                    explicit_bounds=self.bounds,
                    min=s.min,
                    max=s.max,
                )
            )
        if not points:
            return None
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=HistogramData(points, AggregationTemporality.CUMULATIVE),
        )


_OP = "gen_ai.operation.name"
_ROUTE = "edgeproxy.route"
_CANDIDATE = "edgeproxy.candidate"
# An attempt's label tuple; ``error.type``/``gen_ai.token.type`` are appended.
ATTEMPT_KEYS = (_OP, "gen_ai.provider.name", "gen_ai.request.model", _CANDIDATE)


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
        self._resource = resource or Resource({"service.name": "edgeproxy"})
        self.provider = MeterProvider(metric_readers=all_readers, resource=self._resource)
        self._breakers: BreakerSource | None = None
        self._start_ns = time.time_ns()
        for reader in all_readers:
            _hook_collect(reader, self._add_histograms)
        m = self.provider.get_meter(INSTRUMENTATION_SCOPE)

        # GenAI semantic conventions. Label tuples are in the order of the keys given here; a
        # trailing None (error.type on success) leaves that label out.
        self.operation_duration = LabelHistogram(
            "gen_ai.client.operation.duration",
            (*ATTEMPT_KEYS, "error.type"),
            DURATION_BUCKETS,
            unit="s",
            description="Duration of one upstream GenAI call (one attempt), streams included.",
        )
        self.token_usage = LabelHistogram(
            "gen_ai.client.token.usage",
            (*ATTEMPT_KEYS, "gen_ai.token.type"),
            TOKEN_BUCKETS,
            unit="{token}",
            description="Tokens one upstream call used, by gen_ai.token.type (input/output).",
        )
        self.time_to_first_chunk = LabelHistogram(
            "gen_ai.client.operation.time_to_first_chunk",
            ATTEMPT_KEYS,
            TTFT_BUCKETS,
            unit="s",
            description="Upstream call start to its first content chunk (one attempt).",
        )
        self.time_to_first_token = LabelHistogram(
            "gen_ai.server.time_to_first_token",
            (_ROUTE, _OP),
            TTFT_BUCKETS,
            unit="s",
            description="Request arrival to the first token sent to the app, failovers included.",
        )
        self.request_duration = LabelHistogram(
            "gen_ai.server.request.duration",
            (_ROUTE, _OP, "error.type"),
            DURATION_BUCKETS,
            unit="s",
            description="Request arrival to the end of the response, as the app sees it.",
        )
        self.histograms: tuple[LabelHistogram, ...] = (
            self.operation_duration,
            self.token_usage,
            self.time_to_first_chunk,
            self.time_to_first_token,
            self.request_duration,
        )
        # The proxy's own.
        self.requests = LabelCounter(
            "edgeproxy.requests",
            (_ROUTE, _CANDIDATE, "edgeproxy.outcome"),
            unit="{request}",
            description="Requests by route, served candidate and outcome.",
        )
        self.attempts = LabelCounter(
            "edgeproxy.attempts",
            (_ROUTE, _CANDIDATE, "edgeproxy.outcome"),
            unit="{attempt}",
            description="Upstream attempts by candidate and outcome (ok or the failure class).",
        )
        self.failovers = LabelCounter(
            "edgeproxy.failovers",
            (_ROUTE, "error.type"),
            unit="{failover}",
            description="Moves to another candidate after a failed attempt, by the failure class.",
        )
        self.hedges = LabelCounter(
            "edgeproxy.hedges", (_ROUTE,), unit="{hedge}", description="Hedged attempts started."
        )
        self.cache_lookups = LabelCounter(
            "edgeproxy.cache.lookups",
            (_ROUTE, "edgeproxy.cache.result"),
            unit="{lookup}",
            description="Prompt-cache lookups by result (hit, miss, bypass).",
        )
        self.cost = LabelCounter(
            "edgeproxy.cost_usd",
            (_ROUTE, _CANDIDATE),
            unit="{USD}",
            description="Upstream spend (tokens x price), failed and abandoned attempts included.",
        )
        self.shed = LabelCounter(
            "edgeproxy.requests.shed",
            ("edgeproxy.reason",),
            unit="{request}",
            description="Requests refused by a limit before routing, by reason.",
        )
        self.breaker_transitions = LabelCounter(
            "edgeproxy.breaker.transitions",
            (_CANDIDATE, "edgeproxy.breaker.to"),
            unit="{transition}",
            description="Circuit breaker state changes, by candidate and new state.",
        )
        # Context management (docs/context.md): where prompt tokens came from, what compaction
        # and cache-affinity routing did.
        self.prompt_cache_tokens = LabelCounter(
            "edgeproxy.prompt_cache.tokens",
            (_ROUTE, _CANDIDATE, "edgeproxy.prompt_cache.kind"),
            unit="{token}",
            description="Prompt tokens by how the provider's cache took them: read (a hit), "
            "write (stored) or uncached; the hit rate is read over all three.",
        )
        self.compactions = LabelCounter(
            "edgeproxy.context.compactions",
            (_ROUTE, _CANDIDATE, "edgeproxy.context.strategies"),
            unit="{attempt}",
            description="Attempts sent a compacted conversation, by the strategies that ran.",
        )
        self.summaries = LabelCounter(
            "edgeproxy.context.summaries",
            (_ROUTE, _CANDIDATE, "edgeproxy.outcome"),
            unit="{summary}",
            description="Summaries compaction asked for, by outcome (ok, cached, a failure).",
        )
        self.affinity_routed = LabelCounter(
            "edgeproxy.affinity.routed",
            (_ROUTE, "edgeproxy.affinity.outcome"),
            unit="{request}",
            description="Cache-affinity decisions: home, spilled (bounded load), unhealthy, "
            "random.",
        )
        # Keys, limits and the fleet tier (docs/keys.md, docs/fleet.md).
        self.limits_refused = LabelCounter(
            "edgeproxy.limits.refused",
            (_ROUTE, "edgeproxy.limit"),
            unit="{request}",
            description="Requests refused with 429 by a key's, team's or route's limit or "
            "budget, by the limit (key:rpm, team:budget, ...).",
        )
        self.fleet_fallbacks = LabelCounter(
            "edgeproxy.fleet.fallbacks",
            ("edgeproxy.fleet.op", "edgeproxy.reason"),
            unit="{call}",
            description="Fleet calls answered from local state (Redis down, slower than "
            "fleet.timeout, or failing), by operation and reason.",
        )
        for counter in (
            self.limits_refused,
            self.fleet_fallbacks,
            self.requests,
            self.attempts,
            self.failovers,
            self.hedges,
            self.cache_lookups,
            self.cost,
            self.shed,
            self.breaker_transitions,
            self.prompt_cache_tokens,
            self.compactions,
            self.summaries,
            self.affinity_routed,
        ):
            m.create_observable_counter(
                counter.name,
                callbacks=[counter.observe],
                unit=counter.unit,
                description=counter.description,
            )
        # Read at collection time from the listener's own count: no metric update per request.
        self.inflight_source: Callable[[], int] | None = None
        m.create_observable_gauge(
            "edgeproxy.requests.inflight",
            callbacks=[self._observe_inflight],
            unit="{request}",
            description="Requests in progress.",
        )
        # The access log writer's count of lines it dropped (a full queue), read at collection.
        self.access_log_dropped_source: Callable[[], int] | None = None
        m.create_observable_counter(
            "edgeproxy.access_log.dropped",
            callbacks=[self._observe_access_log_dropped],
            unit="{line}",
            description="Access log lines dropped because the writer fell behind.",
        )
        # The fleet's Redis as this sidecar last found it (absent without a fleet).
        self.fleet_up: int | None = None
        m.create_observable_gauge(
            "edgeproxy.fleet.redis.up",
            callbacks=[self._observe_fleet],
            unit="1",
            description="1 while the fleet's Redis answers, 0 while the sidecar serves on "
            "local state.",
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

    def _observe_access_log_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        source = self.access_log_dropped_source
        return [] if source is None else [Observation(source())]

    def _observe_fleet(self, options: CallbackOptions) -> Iterable[Observation]:
        return [] if self.fleet_up is None else [Observation(self.fleet_up)]

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

    def _add_histograms(self, data: MetricsData | None) -> MetricsData | None:
        """Appends the histograms' cumulative data points to a collection, in this scope."""
        now = time.time_ns()
        extra = [
            metric for h in self.histograms if (metric := h.metric(self._start_ns, now)) is not None
        ]
        if not extra:
            return data
        resources = list(data.resource_metrics) if data is not None else []
        if not resources:
            resources = [ResourceMetrics(self._resource, [], "")]
        first = resources[0]
        scopes = list(first.scope_metrics)
        for i, scope in enumerate(scopes):
            if scope.scope.name == INSTRUMENTATION_SCOPE:
                scopes[i] = ScopeMetrics(scope.scope, [*scope.metrics, *extra], scope.schema_url)
                break
        else:
            scopes.append(ScopeMetrics(InstrumentationScope(INSTRUMENTATION_SCOPE), extra, ""))
        resources[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resources)

    def render_prometheus(self) -> bytes:
        """The Prometheus text exposition of every instrument (empty when not enabled)."""
        if self.registry is None:
            return b"# prometheus metrics are not enabled (OTEL_METRICS_EXPORTER)\n"
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _hook_collect(
    reader: MetricReader, add: Callable[[MetricsData | None], MetricsData | None]
) -> None:
    """Wraps the collect callback the MeterProvider registered on ``reader`` so every
    collection (a Prometheus scrape, a periodic OTLP/console export) also carries ``add``'s
    metrics. The SDK has no observable histogram and no metric-producer hook on its readers."""
    collect = reader._collect
    if collect is None:  # pragma: no cover - the MeterProvider always registers one
        return

    def hooked(r: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        # The SDK annotates the callback loosely; it returns the MetricsData (or None).
        data = cast("MetricsData | None", collect(r, timeout_millis=timeout_millis))  # type: ignore[call-arg]
        return add(data)

    reader._set_collect_callback(hooked)  # type: ignore[arg-type]


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

"""The process's telemetry: tracing, metrics, the access log, ``/admin/status``' window.

One ``Telemetry`` per proxy (``ProxyServer`` makes it from the ``OTEL_*`` environment). It makes
each request's listener (``start_request``) and listens to the breakers itself
(``breaker_transition``, to register with ``BreakerRegistry.on_transition``): a transition is
not tied to a request, so it is counted (``edgeproxy.breaker.transitions``) and logged here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from edgeproxy.clock import Clock, SystemClock
from edgeproxy.events import BreakerTransition, FleetEvent, FleetFallback, FleetState
from edgeproxy.telemetry.access_log import AccessLog, NoAccessLog, process_access_log
from edgeproxy.telemetry.listener import RequestTelemetry
from edgeproxy.telemetry.metrics import BreakerSource, ProxyMetrics, metrics_from_env
from edgeproxy.telemetry.recent import RecentStats
from edgeproxy.telemetry.redact import redact
from edgeproxy.telemetry.spans import SpanBuilder
from edgeproxy.telemetry.tracing import tracer_provider_from_env

breaker_log = logging.getLogger("edgeproxy.breaker")


class Telemetry:
    """Process-wide telemetry: spans (None = tracing off), metrics (None = off), the access
    log, the rolling per-candidate stats behind ``/admin/status``, and the in-flight count."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        metrics: ProxyMetrics | None = None,
        recent: RecentStats | None = None,
        clock: Clock | None = None,
        access_log: AccessLog | None = None,
        access_log_enabled: bool = True,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.spans = SpanBuilder(tracer_provider) if tracer_provider is not None else None
        self.metrics = metrics
        self.clock: Clock = clock or SystemClock()
        self.recent = recent or RecentStats(clock=self.clock)
        if not access_log_enabled:
            access_log = NoAccessLog()
        # The sink ``configure_logging`` installed (the batched writer), else ``logging``.
        self.access_log: AccessLog = access_log or process_access_log()
        self.inflight = 0
        if metrics is not None:
            metrics.inflight_source = lambda: self.inflight
            sink = self.access_log
            metrics.access_log_dropped_source = lambda: int(getattr(sink, "dropped", 0))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> Telemetry:
        env = os.environ if env is None else env
        return cls(
            tracer_provider=tracer_provider_from_env(env), metrics=metrics_from_env(env), **kwargs
        )

    @property
    def tracing(self) -> bool:
        return self.spans is not None

    def start_request(
        self,
        *,
        request_id: str,
        headers: Mapping[str, str],
        method: str = "POST",
        path: str = "/v1/chat/completions",
        operation: str = "chat",
        capture_content: bool = False,
    ) -> RequestTelemetry:
        """At ingress, before the body is read: the request's listener (its SERVER span is a
        child of a valid incoming ``traceparent``); counts the request in flight."""
        return RequestTelemetry(self, request_id, headers, method, path, operation, capture_content)

    def breaker_transition(self, event: BreakerTransition) -> None:
        """A breaker changed state (register with ``BreakerRegistry.on_transition``)."""
        if self.metrics is not None:
            self.metrics.breaker_transitions.add(1, (event.key, event.new))
        level = logging.WARNING if event.new == "open" else logging.INFO
        if breaker_log.isEnabledFor(level):
            breaker_log.log(
                level,
                "breaker %s",
                event.new,
                extra={"candidate": event.key, "from": event.old, "reason": redact(event.reason)},
            )

    def fleet_event(self, event: FleetEvent) -> None:
        """The fleet tier's Redis came or went, or a call fell back to local state."""
        metrics = self.metrics
        if isinstance(event, FleetState):
            if metrics is not None:
                metrics.fleet_up = 1 if event.up else 0
        elif isinstance(event, FleetFallback) and metrics is not None:
            metrics.fleet_fallbacks.add(1, (event.op, event.reason))

    def fleet_joined(self) -> None:
        """A fleet tier started: the ``edgeproxy.fleet.redis.up`` gauge is shown (1)."""
        if self.metrics is not None and self.metrics.fleet_up is None:
            self.metrics.fleet_up = 1

    def observe_breakers(self, source: BreakerSource | None) -> None:
        """Feed the ``edgeproxy.breaker.state`` gauge, e.g. with ``BreakerRegistry.snapshot``."""
        if self.metrics is not None:
            self.metrics.observe_breakers(source)

    def render_prometheus(self) -> bytes:
        if self.metrics is None:
            return b"# metrics are off (OTEL_METRICS_EXPORTER=none)\n"
        return self.metrics.render_prometheus()

    def shutdown(self) -> None:
        """Flush the access log and the exporters (at a clean stop)."""
        self.access_log.flush()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.metrics is not None:
            self.metrics.shutdown()


_default: Telemetry | None = None


def get_telemetry() -> Telemetry:
    """The process's telemetry, configured from the environment on first use."""
    global _default
    if _default is None:
        _default = Telemetry.from_env()
    return _default


def set_telemetry(telemetry: Telemetry | None) -> None:
    global _default
    _default = telemetry

"""``GET /metrics``: the Prometheus text exposition of the proxy's OpenTelemetry metrics."""

from __future__ import annotations

from aiohttp import web

from edgeproxy.telemetry.metrics import PROMETHEUS_CONTENT_TYPE
from edgeproxy.telemetry.request import Telemetry, get_telemetry

# The app's telemetry; without it the process default (configured from OTEL_* variables).
TELEMETRY = web.AppKey("edgeproxy_telemetry", Telemetry)


def app_telemetry(app: web.Application) -> Telemetry:
    telemetry = app.get(TELEMETRY)
    return telemetry if telemetry is not None else get_telemetry()


async def handle_metrics(request: web.Request) -> web.Response:
    body = app_telemetry(request.app).render_prometheus()
    # The SDK's collection is in-memory aggregation (no I/O): cheap enough for the event loop
    # at scrape intervals.
    response = web.Response(body=body)
    response.headers["Content-Type"] = PROMETHEUS_CONTENT_TYPE
    return response

"""``GET /metrics``: the Prometheus text exposition of the proxy's OpenTelemetry metrics, and the
client-connection counters (``connections.py``).

Access: with ``EDGEPROXY_METRICS_TOKEN`` set, a scrape must carry ``Authorization: Bearer`` with
it (or with the admin token); without it but with ``EDGEPROXY_ADMIN_TOKEN`` set, with the admin
token; with neither, ``/metrics`` is open like ``/healthz`` (the proxy binds to loopback by
default). See ``admin.authorize_metrics``.
"""

from __future__ import annotations

from aiohttp import web

from edgeproxy.server.admin import admin_config, authorize_metrics
from edgeproxy.server.connections import CONNECTIONS
from edgeproxy.telemetry.metrics import PROMETHEUS_CONTENT_TYPE
from edgeproxy.telemetry.process import Telemetry, get_telemetry

# The app's telemetry; without it the process default (configured from OTEL_* variables).
TELEMETRY = web.AppKey("edgeproxy_telemetry", Telemetry)


def app_telemetry(app: web.Application) -> Telemetry:
    telemetry = app.get(TELEMETRY)
    return telemetry if telemetry is not None else get_telemetry()


async def handle_metrics(request: web.Request) -> web.Response:
    authorize_metrics(admin_config(request), request.headers.get("Authorization"))
    telemetry = app_telemetry(request.app)
    body = telemetry.render_prometheus()
    connections = request.app.get(CONNECTIONS)
    if connections is not None and telemetry.metrics is not None:
        body += connections.prometheus()
    # The SDK's collection is in-memory aggregation (no I/O): cheap enough for the event loop
    # at scrape intervals.
    response = web.Response(body=body)
    response.headers["Content-Type"] = PROMETHEUS_CONTENT_TYPE
    return response

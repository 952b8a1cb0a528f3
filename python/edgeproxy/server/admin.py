"""Admin endpoints: ``GET /admin/policy``, ``POST /admin/reload``, ``GET /admin/status``,
``GET /admin/auto`` (the auto routes' decisions: docs/auto.md) and ``GET /admin/debug/runtime``
(asyncio tasks, open fds, RSS, gc, upstream pool, client connections: for leak hunts).

Access: with an admin token configured (``EDGEPROXY_ADMIN_TOKEN``), every admin request must carry
``Authorization: Bearer <token>`` (or 401), from any address. Without a token, admin endpoints
answer loopback clients only (403 for anyone else). The proxy binds to loopback by default, so
out of the box the admin endpoints are reachable from the pod or host only; the Host allow-list
(``hosts.py``) keeps a browser page from reaching them through DNS rebinding. ``/metrics`` has its
own optional token (``EDGEPROXY_METRICS_TOKEN``, ``authorize_metrics``).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from edgeproxy.policy.describe import describe_policy
from edgeproxy.policy.reload import PolicyReloader
from edgeproxy.server.connections import CONNECTIONS
from edgeproxy.server.context import STATE
from edgeproxy.server.hosts import is_loopback as is_loopback  # re-exported (it lived here)
from edgeproxy.server.ingress.base import ClientError
from edgeproxy.telemetry.runtime import runtime_facts
from edgeproxy.telemetry.status import build_status

ADMIN_TOKEN_ENV = "EDGEPROXY_ADMIN_TOKEN"
METRICS_TOKEN_ENV = "EDGEPROXY_METRICS_TOKEN"


@dataclass(frozen=True)
class AdminConfig:
    token: str | None = None
    metrics_token: str | None = None
    reloader: PolicyReloader | None = None
    # When the admin routes were installed (the proxy started): the runtime endpoint's uptime.
    started: float = field(default_factory=time.monotonic)


ADMIN = web.AppKey("edgeproxy_admin", AdminConfig)


def authorize(config: AdminConfig, authorization: str | None, remote: str | None) -> None:
    """Raise the ClientError to answer with, or return if the caller may use admin endpoints."""
    if config.token:
        if not _bearer_matches(authorization, config.token):
            raise ClientError(
                401,
                "Admin endpoints need 'Authorization: Bearer <EDGEPROXY_ADMIN_TOKEN>'.",
                type="authentication_error",
                code="invalid_admin_token",
                headers={"WWW-Authenticate": 'Bearer realm="edgeproxy-admin"'},
            )
        return
    if not is_loopback(remote):
        raise ClientError(
            403,
            "Admin endpoints answer loopback clients only unless EDGEPROXY_ADMIN_TOKEN is set.",
            type="permission_error",
            code="admin_loopback_only",
        )


def authorize_metrics(config: AdminConfig, authorization: str | None) -> None:
    """``/metrics``: the metrics token or the admin token when either is set, else open."""
    tokens = [t for t in (config.metrics_token, config.token) if t]
    if tokens and not any(_bearer_matches(authorization, t) for t in tokens):
        raise ClientError(
            401,
            "/metrics needs 'Authorization: Bearer <token>' with EDGEPROXY_METRICS_TOKEN "
            "(or EDGEPROXY_ADMIN_TOKEN).",
            type="authentication_error",
            code="invalid_metrics_token",
            headers={"WWW-Authenticate": 'Bearer realm="edgeproxy-metrics"'},
        )


def _bearer_matches(authorization: str | None, token: str) -> bool:
    scheme, _, given = (authorization or "").partition(" ")
    # surrogatepass: header bytes that are not UTF-8 arrive as surrogate escapes; they must make
    # a mismatch (401), not an encoding error (500).
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )


def admin_config(request: web.Request) -> AdminConfig:
    config = request.app.get(ADMIN)
    return config if config is not None else AdminConfig()


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2),
        content_type="application/json",
    )


async def handle_admin_policy(request: web.Request) -> web.Response:
    config = admin_config(request)
    authorize(config, request.headers.get("Authorization"), request.remote)
    policy = request.app[STATE].policy
    data: dict[str, Any] = describe_policy(policy)
    data["reload"] = config.reloader.describe() if config.reloader is not None else None
    response = _json(data)
    response.headers["x-edgeproxy-policy-version"] = policy.version
    return response


async def handle_admin_reload(request: web.Request) -> web.Response:
    config = admin_config(request)
    authorize(config, request.headers.get("Authorization"), request.remote)
    if config.reloader is None:
        raise ClientError(
            409,
            "This proxy was started without a policy file to reload.",
            code="reload_unavailable",
        )
    result = await config.reloader.reload("admin")
    response = _json(result.as_dict(), status=422 if result.outcome == "rejected" else 200)
    response.headers["x-edgeproxy-policy-version"] = result.version
    return response


async def handle_admin_status(request: web.Request) -> web.Response:
    """Policy version, every candidate's breaker and probe state, recent error rate and latency,
    the retry budget, hedging and shedding counters, the reloader's state (a rejected file shows
    here while the last good policy serves) and whether the proxy is draining (``edgeproxy
    status`` renders it)."""
    config = admin_config(request)
    authorize(config, request.headers.get("Authorization"), request.remote)
    state = request.app[STATE]
    engine = state.engine
    probes = engine.prober.snapshot() if engine.prober is not None else []
    data = build_status(
        state.policy,
        engine.breakers.snapshot(),
        # A probe row covers every candidate behind its base URL.
        {key: row for row in probes for key in row["keys"]},  # type: ignore[attr-defined]
        state.telemetry.inflight,
        state.telemetry.recent,
    )
    data["resilience"] = {
        "retry_budget": engine.budget.snapshot(),
        "hedging": engine.hedger.snapshot(),
        "shedding": engine.shedder.snapshot(),
    }
    data["reload"] = config.reloader.describe() if config.reloader is not None else None
    data["draining"] = state.draining
    # The fleet tier, when this sidecar is part of one (docs/fleet.md).
    data["fleet"] = state.fleet.describe() if state.fleet is not None else None
    return _json(data)


async def handle_admin_auto(request: web.Request) -> web.Response:
    """Per auto route x task: incumbent, challenger and ramp, the latest scorecard's values,
    the chain, the decisions and why (``edgeproxy auto status`` renders it)."""
    authorize(admin_config(request), request.headers.get("Authorization"), request.remote)
    return _json(request.app[STATE].auto.status())


async def handle_admin_debug_runtime(request: web.Request) -> web.Response:
    """Runtime facts for leak hunting (``asyncio_tasks``, ``open_fds``, ``rss_bytes``, gc, the
    upstream pool's idle connections, uptime); schema in ``telemetry/runtime.py``."""
    config = admin_config(request)
    authorize(config, request.headers.get("Authorization"), request.remote)
    state = request.app[STATE]
    pool = state.pool
    data = runtime_facts(
        started=config.started,
        http=pool.http,
        cache=state.cache.stats(),
        inflight=state.telemetry.inflight,
        tracemalloc_top=15 if request.query.get("tracemalloc") == "top" else 0,
    )
    connections = request.app.get(CONNECTIONS)
    if connections is not None:
        data["client_connections"] = connections.snapshot()
    return _json(data)


def add_admin_routes(app: web.Application, config: AdminConfig) -> None:
    app[ADMIN] = config
    app.router.add_get("/admin/policy", handle_admin_policy)
    app.router.add_post("/admin/reload", handle_admin_reload)
    app.router.add_get("/admin/status", handle_admin_status)
    app.router.add_get("/admin/auto", handle_admin_auto)
    app.router.add_get("/admin/debug/runtime", handle_admin_debug_runtime)

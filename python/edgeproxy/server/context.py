"""State shared by the handlers of one proxy process, and per-request keys."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from aiohttp import web

from edgeproxy.auto.router import AutoRouter
from edgeproxy.cache.layer import PromptCache
from edgeproxy.clock import Clock
from edgeproxy.fleet import FleetTier
from edgeproxy.resilience.engine import ResilienceEngine
from edgeproxy.server.admission import Limiter
from edgeproxy.server.context_state import ContextState
from edgeproxy.snapshot import Policy
from edgeproxy.telemetry.process import Telemetry
from edgeproxy.upstreams.pool import UpstreamPool


@dataclass
class ProxyState:
    """The current policy snapshot (swapped whole on reload), the upstream pool, the clock, the
    resilience engine (breakers, budgets) and the auto router (incumbents, ramps) that outlive
    any one policy."""

    policy: Policy
    pool: UpstreamPool
    clock: Clock
    engine: ResilienceEngine
    telemetry: Telemetry
    cache: PromptCache
    auto: AutoRouter  # the auto routes' choices per task (docs/auto.md)
    # Set when a graceful shutdown starts (SIGTERM): /readyz answers 503 from then on.
    draining: bool = False
    # The summary cache and affinity's in-flight counts (docs/context.md).
    context: ContextState = field(default_factory=ContextState)
    # Virtual keys, limits and budgets (docs/keys.md); off: nothing is counted.
    limiter: Limiter = field(default_factory=Limiter)
    # The fleet tier on Redis (docs/fleet.md); None: this sidecar alone.
    fleet: FleetTier | None = None


STATE = web.AppKey("edgeproxy_state", ProxyState)
# The Server header of every response (aiohttp's default names Python's and aiohttp's versions).
SERVER_HEADER = "edgeproxy"
REQUEST_ID = web.RequestKey("edgeproxy_request_id", str)
# The request's task, once decided: every answer names it (``x-edgeproxy-task``).
TASK = web.RequestKey("edgeproxy_task", str)

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id(client_value: str | None) -> str:
    """Keep a sane client-supplied id (so app and proxy logs join up); otherwise make one."""
    if client_value and _CLIENT_REQUEST_ID.match(client_value):
        return client_value
    return f"req_{os.urandom(16).hex()}"  # 128 random bits, as uuid4 without the object


def request_id(request: web.Request) -> str:
    rid = request.get(REQUEST_ID)
    if not isinstance(rid, str):
        rid = new_request_id(request.headers.get("x-request-id"))
        request[REQUEST_ID] = rid
    return rid

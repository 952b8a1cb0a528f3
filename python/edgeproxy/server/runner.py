"""Start and stop a proxy on a socket; used by the CLI, the demo and the tests.

Stopping gracefully (``drain``, what ``edgeproxy serve`` does on SIGTERM): readiness fails at once
(``/readyz`` answers 503, and every response asks its client to close the connection), the
listener stays open for ``delay`` seconds more (so a load balancer or Kubernetes, which stops
routing on the failed readiness or on the pod's deletion, has time to notice), then closes: new
connections are refused. Requests and streams in flight get up to ``shutdown_timeout`` seconds to
finish; what is still running then is cancelled. See docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from edgeproxy import tokens
from edgeproxy.auto.router import AutoRouter
from edgeproxy.cache.layer import PromptCache
from edgeproxy.clock import Clock, SystemClock
from edgeproxy.policy.reload import PolicyReloader, ReloadOptions
from edgeproxy.resilience.engine import ResilienceEngine
from edgeproxy.server.admin import AdminConfig, add_admin_routes
from edgeproxy.server.app import create_app
from edgeproxy.server.connections import (
    CONNECTIONS,
    ConnectionGuard,
    ConnectionSettings,
    fd_limits,
    protocol_factory,
)
from edgeproxy.server.context import SERVER_HEADER, ProxyState
from edgeproxy.server.hosts import HostAllowList
from edgeproxy.server.limiter import build_limits
from edgeproxy.snapshot import CacheSettings, Policy
from edgeproxy.telemetry.process import Telemetry
from edgeproxy.upstreams.pool import UpstreamPool

log = logging.getLogger("edgeproxy.server")


class ProxyServer:
    def __init__(
        self,
        policy: Policy,
        *,
        host: str = "127.0.0.1",
        port: int = 8787,
        clock: Clock | None = None,
        shutdown_timeout: float = 30.0,
        telemetry: Telemetry | None = None,
        reload: ReloadOptions | None = None,
        admin_token: str | None = None,
        metrics_token: str | None = None,
        connections: ConnectionSettings | None = None,
        allowed_hosts: str | None = None,
        fleet_redis: str | None = None,
    ) -> None:
        """``connections``: keep-alive, header-read timeout and connection cap (``connections.py``);
        ``allowed_hosts``: the Host allow-list, comma-separated (``hosts.py``; None: the default
        for ``host``); ``shutdown_timeout``: how long requests in flight may take to finish once
        the proxy stops (``edgeproxy serve --drain-timeout``); ``fleet_redis``: the fleet's
        Redis when the policy names none (``EDGEPROXY_FLEET_REDIS``: docs/fleet.md)."""
        clock = clock or SystemClock()
        self.state = ProxyState(
            policy=policy,
            pool=UpstreamPool(),
            clock=clock,
            engine=ResilienceEngine(clock, policy.engine, policy),
            # Traces and metrics as configured by the standard OTEL_* variables (tracing is off
            # unless an exporter is named); one instance per proxy so tests do not share counters.
            telemetry=telemetry or Telemetry.from_env(clock=clock),
            # One store for every route; its bounds are read here (a reload does not resize it).
            cache=PromptCache(
                CacheSettings(
                    max_bytes=policy.cache_max_bytes, max_entries=policy.cache_max_entries
                ),
                clock,
            ),
            # Scorecards are watched like the policy file (docs/auto.md).
            auto=AutoRouter(
                policy,
                clock,
                watch=reload is None or reload.watch,
                force_polling=reload is not None and reload.force_polling,
            ),
        )
        # Keys, limits and budgets (docs/keys.md) and the fleet tier (docs/fleet.md); the store
        # and the Redis URL are read here (a reload does not move them).
        self.limits = build_limits(self.state, fleet_redis)
        self.state.telemetry.observe_breakers(self.state.engine.breakers.snapshot)
        # Every breaker state change is counted and logged (edgeproxy_breaker_transitions_total).
        self.state.engine.breakers.on_transition(self.state.telemetry.breaker_transition)
        # Hot reload of the policy file (watch, SIGHUP via the CLI, POST /admin/reload).
        self.reloader = PolicyReloader(self.state, reload) if reload is not None else None
        if self.reloader is not None:
            # Breaker state and probe schedules carry over for candidates the new policy keeps.
            self.reloader.add_swap_hook(self._policy_swapped)
        self.admin_token = admin_token
        self.metrics_token = metrics_token
        self.connections = ConnectionGuard(connections or ConnectionSettings())
        self.allowed_hosts = HostAllowList.for_bind(host, allowed_hosts)
        self.host = host
        self.port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _policy_swapped(self, old: Policy, new: Policy) -> None:
        # Incumbents and ramps carry over for auto route x tasks whose decisions are unchanged.
        self.state.auto.policy_swapped(old, new)
        carried = self.state.engine.policy_swapped(new)
        log.info(
            "breaker state carried over",
            extra={
                "kept": len(carried.kept),
                "reset": len(carried.reset),
                "dropped": len(carried.dropped),
            },
        )

    async def start(self) -> None:
        # The rank tables of the policy's encodings (~30-60 MiB each) load in a thread (the
        # Rust side releases the GIL) while the proxy starts: the first request does not pay.
        policy = self.state.policy
        tokenizers = (c.tokenizer for route in policy.routes.values() for c in route.candidates)
        encodings = tokens.encodings_for(tokenizers)
        if encodings:
            asyncio.get_running_loop().run_in_executor(None, tokens.preload, *encodings)
        await self.state.pool.start()
        await self.limits.start()  # the key table loaded, the fleet joined, before listening
        self.state.engine.start_probing(self.state.policy, self.state.pool.http)
        await self.state.auto.start(self.state.pool.http)  # scorecards read before listening
        app = create_app(self.state, self.allowed_hosts)
        add_admin_routes(
            app,
            AdminConfig(
                token=self.admin_token, metrics_token=self.metrics_token, reloader=self.reloader
            ),
        )
        app[CONNECTIONS] = self.connections
        app.on_response_prepare.append(self._stamp_response)
        # handler_cancellation: a client that disconnects cancels its handler, and with it the
        # upstream request (no paying for answers nobody will read).
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=self._shutdown_timeout
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        # Our own listener instead of web.TCPSite: each accepted connection gets the handler
        # with the header-read timer and the connection cap (connections.py).
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                protocol_factory(server, self.connections),
                self.host,
                self.port,
                reuse_address=True,
                backlog=128,
            )
        except OSError as exc:
            await self.stop()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise OSError(
                exc.errno, f"cannot listen on {self.host}:{self.port}: {reason}"
            ) from None
        if self.port == 0:
            self.port = int(self._listener.sockets[0].getsockname()[1])
        settings = self.connections.settings
        limits = fd_limits()
        facts = {
            "max_connections": self.connections.limit,
            "keepalive_timeout": settings.keepalive_timeout,
            "header_timeout": settings.header_timeout,
            "allowed_hosts": self.allowed_hosts.describe(),
            **limits,
        }
        log.info("client connections", extra=facts)
        if self.connections.limit >= limits["fd_soft_limit"]:
            log.warning(
                "--max-connections is not below the open-file limit: client connections can "
                "use every descriptor and leave none for upstream connections",
                extra=facts,
            )
        if self.reloader is not None:
            await self.reloader.start()

    @property
    def draining(self) -> bool:
        return self.state.draining

    async def _stamp_response(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER_HEADER
        if self.state.draining:
            # The client reconnects for its next request (elsewhere, or refused once the
            # listener is closed) instead of reusing a connection that is about to close.
            response.headers["Connection"] = "close"
            response.force_close()

    async def drain(self, delay: float) -> None:
        """Stop gracefully: fail readiness now, close the listener after ``delay`` seconds, then
        ``stop`` (in-flight requests get up to ``shutdown_timeout`` seconds)."""
        if not self.state.draining:
            self.state.draining = True
            log.info(
                "draining: /readyz answers 503; new connections are refused in %.1f s; requests "
                "in flight get up to %.1f s more",
                delay,
                self._shutdown_timeout,
            )
        if delay > 0:
            await self.state.clock.sleep(delay)
        await self.stop()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.state.draining = True
        if self._listener is not None:
            self._listener.close()  # no new connections; the runner finishes the open ones
            self._listener = None
        if self.reloader is not None:
            await self.reloader.stop()
        await self.state.engine.stop_probing()
        await self.state.auto.stop()
        if self._runner is not None:
            # Waits up to shutdown_timeout for requests and streams in flight (idle keep-alive
            # connections are closed at once), then cancels what is left.
            await self._runner.cleanup()
            self._runner = None
        await self.limits.stop()  # settlements in flight, usage rows written, Redis closed
        # After the requests in flight: their spans, metrics and access-log lines still count.
        self.state.telemetry.shutdown()
        await self.state.pool.close()

"""Start and stop a proxy on a socket; used by the CLI, the demo and the tests."""

from __future__ import annotations

import logging

from aiohttp import web

from edgeproxy.clock import Clock, SystemClock
from edgeproxy.policy.snapshot import Policy
from edgeproxy.resilience.engine import ResilienceEngine
from edgeproxy.server.app import create_app
from edgeproxy.server.context import ProxyState
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
        shutdown_timeout: float = 10.0,
    ) -> None:
        clock = clock or SystemClock()
        self.state = ProxyState(
            policy=policy, pool=UpstreamPool(), clock=clock, engine=ResilienceEngine(clock)
        )
        self.host = host
        self.port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self.state.pool.start()
        self.state.engine.start_probing(self.state.policy, self.state.pool.session)
        app = create_app(self.state)
        # handler_cancellation: a client that disconnects cancels its handler, and with it the
        # upstream request (no paying for answers nobody will read).
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=self._shutdown_timeout
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise OSError(
                exc.errno, f"cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from None
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self.state.engine.stop_probing()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.state.pool.close()

"""The fleet's one Redis client, and the rule that Redis being away never fails a request.

Every call a request makes waits at most ``fleet.timeout``. A call that fails or times out marks
Redis away for ``fleet.retry_interval``: meanwhile calls raise ``FleetUnavailable`` at once
(no wait at all) and their callers answer from local state. A background task pings Redis each
``retry_interval`` while it is away; when it answers, the link is up again and the catch-up
hooks run (spend settled meanwhile, health published meanwhile). Each fallback and each change
of state is told to the process's telemetry (``FleetFallback``, ``FleetState``): the metrics
``edgeproxy.fleet.fallbacks`` and ``edgeproxy.fleet.redis.up`` say so.

``redis.asyncio`` (redis-py, the Redis project's own client) is the client: asyncio-native,
with Lua script objects (EVALSHA with an EVAL fallback), pub/sub and a connection pool; see
docs/fleet.md for why it, and not a hand-written RESP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edgeproxy.clock import Clock
from edgeproxy.errors import EdgeProxyError
from edgeproxy.events import FleetEvent, FleetFallback, FleetState
from edgeproxy.snapshot.limits import FleetSettings

log = logging.getLogger("edgeproxy.fleet")

T = TypeVar("T")
# Longest wait of the background work (pings, settlements, publishing): off the request path.
BACKGROUND_TIMEOUT = 2.0


class FleetUnavailable(EdgeProxyError):
    """Redis is away (or slower than the bound): answer from local state."""


class RedisLink:
    def __init__(
        self,
        url: str,
        settings: FleetSettings,
        clock: Clock,
        listener: Callable[[FleetEvent], None] | None = None,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self._clock = clock
        self._listener = listener
        self.redis: aioredis.Redis = client or aioredis.Redis.from_url(
            url,
            socket_connect_timeout=max(settings.timeout, 0.5),
            socket_keepalive=True,
            health_check_interval=0,
            decode_responses=False,
        )
        self.up = True  # until a call says otherwise
        self._retry_at = 0.0
        self._hooks: list[Callable[[], Awaitable[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def on_up(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` each time Redis comes back (catch-up)."""
        self._hooks.append(hook)

    def _emit(self, event: FleetEvent) -> None:
        if self._listener is not None:
            try:
                self._listener(event)
            except Exception:  # telemetry's defect must not break the fleet
                log.exception("fleet listener failed")

    @property
    def available(self) -> bool:
        """Worth asking now: up, or away long enough that a call may find it back."""
        return self.up or self._clock.monotonic() >= self._retry_at

    async def call(
        self, op: str, fn: Callable[[aioredis.Redis], Awaitable[T]], bound: float | None = None
    ) -> T:
        """``fn(redis)`` within the bound (``fleet.timeout`` unless given), or
        ``FleetUnavailable`` (told as a fallback)."""
        if not self.up:
            self._emit(FleetFallback(op, "down"))
            raise FleetUnavailable(op)
        try:
            return await asyncio.wait_for(fn(self.redis), bound or self.settings.timeout)
        except TimeoutError:
            self.failed(op, "timeout")
        except (RedisError, OSError) as exc:
            self.failed(op, "error", type(exc).__name__)
        raise FleetUnavailable(op)

    async def background(self, op: str, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``call`` for work off the request path (a longer bound)."""
        return await self.call(op, fn, BACKGROUND_TIMEOUT)

    def failed(self, op: str, reason: str, detail: str = "") -> None:
        """A call failed: Redis is away until a ping finds it back."""
        self._emit(FleetFallback(op, reason))
        self._retry_at = self._clock.monotonic() + self.settings.retry_interval
        if self.up:
            self.up = False
            log.warning(
                "fleet: Redis is unreachable; serving on local state",
                extra={"op": op, "reason": reason, "error": detail},
            )
            self._emit(FleetState(False, reason))
            self._wake.set()

    # -- the watcher ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            if self.up:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._clock.sleep(max(0.0, self._retry_at - self._clock.monotonic()))
            try:
                await asyncio.wait_for(self.redis.ping(), BACKGROUND_TIMEOUT)
            except (TimeoutError, RedisError, OSError):
                self._retry_at = self._clock.monotonic() + self.settings.retry_interval
                continue
            self.up = True
            log.info("fleet: Redis is back; catching up")
            self._emit(FleetState(True, "reconnected"))
            for hook in list(self._hooks):
                try:
                    await hook()
                except FleetUnavailable:
                    break  # gone again: the next reconnect runs them anew
                except Exception:
                    log.exception("fleet catch-up failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.redis.aclose()

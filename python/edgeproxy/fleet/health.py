"""Shared health: an ejection one sidecar makes, every sidecar of the fleet makes at once.

A sidecar's breaker that opens on what this sidecar saw (failures, failed probes, a 429's
``Retry-After``, an exhausted quota) is published: a hash holds every ejection still running
(``<prefix>:health``: candidate -> until, why, who) and a pub/sub message tells the others now.
A sidecar that receives it ejects the candidate for the time left (``fleet: <who>: <why>``),
held or not as the origin's was: a probe may end an outlier ejection early here as there. A
breaker that closes again after a successful trial is published too: the others' fleet
ejections of it end (half-open: their own trial traffic decides). Ejections received from the
fleet are never published again (no echo), and a sidecar that connects, or reconnects after
Redis was away, reads the hash first: it catches up on what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from redis.exceptions import RedisError

from edgeproxy.clock import Clock
from edgeproxy.events import BreakerTransition
from edgeproxy.fleet.link import FleetUnavailable, RedisLink
from edgeproxy.fleet.scripts import HEALTH_ALL, HEALTH_CLOSED, HEALTH_OPEN
from edgeproxy.resilience.breaker import BreakerRegistry

log = logging.getLogger("edgeproxy.fleet")
FLEET_REASON = "fleet: "
MAX_REASON = 200
# An ejection received is held at most a day (the hash is shared: what another writer put there
# must not take a candidate out for good).
MAX_EJECTION = 86_400.0


class HealthShare:
    def __init__(
        self,
        link: RedisLink,
        breakers: Callable[[], BreakerRegistry],
        clock: Clock,
        sidecar: str,
        known: Callable[[], set[str]],
    ) -> None:
        self.link = link
        self._breakers = breakers
        self._clock = clock
        self.sidecar = sidecar
        self._known = known  # candidate keys of the current policy
        self._hash = link.key("health")
        self._channel = link.key("health", "events")
        self._open = link.redis.register_script(HEALTH_OPEN)
        self._closed = link.redis.register_script(HEALTH_CLOSED)
        self._all = link.redis.register_script(HEALTH_ALL)
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self.received = 0  # ejections taken from the fleet (tests, /admin/status)
        self.published = 0
        link.on_up(self.catch_up)

    # -- what this sidecar saw --------------------------------------------------------------

    def local_transition(self, event: BreakerTransition) -> None:
        """``BreakerRegistry.on_transition``: publish this sidecar's own ejections."""
        if event.reason.startswith(FLEET_REASON):
            return  # received from the fleet: never echoed
        if event.new == "open":
            breaker = self._breakers().get(event.key)
            reopen = breaker.reopen_at
            if reopen is None:
                return
            seconds = reopen - self._clock.monotonic()
            if seconds <= 0:
                return
            info = {"by": self.sidecar, "why": event.reason[:MAX_REASON], "held": breaker.held}
            self._spawn(self._publish_open(event.key, seconds, info))
        elif event.new == "closed" and event.old == "half_open":
            self._spawn(self._publish_closed(event.key))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if not self.link.available:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_open(self, key: str, seconds: float, info: dict[str, object]) -> None:
        payload = orjson.dumps(info).decode()
        args = [key, f"{seconds:.3f}", payload]
        with contextlib.suppress(FleetUnavailable):
            await self.link.background(
                "health", lambda r: self._open([self._hash, self._channel], args, r)
            )
            self.published += 1

    async def _publish_closed(self, key: str) -> None:
        payload = orjson.dumps({"by": self.sidecar}).decode()
        with contextlib.suppress(FleetUnavailable):
            await self.link.background(
                "health", lambda r: self._closed([self._hash, self._channel], [key, payload], r)
            )

    # -- what the others saw ----------------------------------------------------------------

    def apply_open(self, key: str, seconds: float, info: dict[str, object]) -> bool:
        if info.get("by") == self.sidecar or key not in self._known():
            return False
        if not 0 < seconds < math.inf:  # NaN or infinite: not what a breaker publishes
            return False
        seconds = min(seconds, MAX_EJECTION)
        breaker = self._breakers().get(key)
        if breaker.state == "open" and (breaker.reopen_at or 0) >= (
            self._clock.monotonic() + seconds
        ):
            return False
        why = str(info.get("why", ""))[:MAX_REASON]
        held = bool(info.get("held", False))
        breaker.eject(seconds, f"{FLEET_REASON}{info.get('by', '?')}: {why}", held=held)
        self.received += 1
        return True

    def apply_closed(self, key: str, info: dict[str, object]) -> None:
        if info.get("by") == self.sidecar or key not in self._known():
            return
        breaker = self._breakers().get(key)
        if breaker.state == "open" and breaker.reason.startswith(FLEET_REASON):
            breaker.probe_succeeded()  # half-open: trial traffic decides (a held one waits)

    def _message(self, data: bytes) -> None:
        try:
            kind, key, seconds, payload = data.decode().split("\t", 3)
            info = orjson.loads(payload)
            if not isinstance(info, dict):
                return
            if kind == "open":
                self.apply_open(key, float(seconds), info)
            elif kind == "closed":
                self.apply_closed(key, info)
        except (ValueError, orjson.JSONDecodeError):
            log.warning("fleet: an unreadable health message was ignored")

    async def catch_up(self) -> None:
        """Every ejection still running in the fleet, applied here (at start, after Redis)."""
        found = await self.link.background("health", lambda r: self._all([self._hash], [], r))
        now = float(found[0])
        for i in range(1, len(found) - 1, 2):
            # The hash is shared: a field another writer put there is skipped, never a failed
            # start (this runs before the sidecar listens).
            try:
                key = found[i].decode()
                until, _, payload = found[i + 1].decode().partition("\t")
                info = orjson.loads(payload)
                seconds = float(until) - now
            except (ValueError, AttributeError):  # UnicodeDecodeError, JSONDecodeError included
                log.warning("fleet: an unreadable ejection in the health hash was ignored")
                continue
            if isinstance(info, dict):
                self.apply_open(key, seconds, info)

    # -- the subscriber ---------------------------------------------------------------------

    def start(self) -> None:
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            pubsub = self.link.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                with contextlib.suppress(FleetUnavailable):
                    await self.catch_up()  # what was published before we listened
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._message(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.link.failed("health", "error", type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await self._clock.sleep(self.link.settings.retry_interval)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

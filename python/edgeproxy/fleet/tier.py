"""One sidecar's part of the fleet: the link, the shared counters, cache level and health."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable

from edgeproxy.cache.layer import CachedReply, CachePlan, PromptCache
from edgeproxy.clock import Clock
from edgeproxy.events import FleetEvent
from edgeproxy.fleet.cache import SharedCache
from edgeproxy.fleet.counters import FleetCounters
from edgeproxy.fleet.health import HealthShare
from edgeproxy.fleet.keystore import RedisKeyStore
from edgeproxy.fleet.link import FleetUnavailable, RedisLink
from edgeproxy.limits.local import LocalCounters
from edgeproxy.resilience.breaker import BreakerRegistry
from edgeproxy.snapshot.limits import FleetSettings


def sidecar_name() -> str:
    """How this sidecar signs what it publishes: host, process and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"


class FleetTier:
    def __init__(
        self,
        url: str,
        settings: FleetSettings,
        clock: Clock,
        *,
        local: LocalCounters,
        breakers: Callable[[], BreakerRegistry],
        known: Callable[[], set[str]],
        listener: Callable[[FleetEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sidecar = sidecar_name()
        self.link = RedisLink(url, settings, clock, listener)
        self.counters = FleetCounters(self.link, local)
        self.cache = SharedCache(self.link) if settings.cache else None
        self.health = (
            HealthShare(self.link, breakers, clock, self.sidecar, known)
            if settings.health
            else None
        )
        self.keystore = RedisKeyStore(self.link.redis, settings.prefix, self.link)

    async def cache_lookup(
        self, cache: PromptCache, plan: CachePlan, stream: bool
    ) -> CachedReply | None:
        if self.cache is None:
            return None
        return await self.cache.lookup(cache, plan, stream)

    def describe(self) -> dict[str, object]:
        """For ``/admin/status``: this sidecar's part of the fleet (never the URL)."""
        return {
            "sidecar": self.sidecar,
            "redis_up": self.link.up,
            "prefix": self.settings.prefix,
            "cache": self.cache is not None,
            "health": self.health is not None,
            "ejections_published": self.health.published if self.health is not None else 0,
            "ejections_received": self.health.received if self.health is not None else 0,
            "settlements_pending": self.counters.pending,
        }

    async def start(self, cache: PromptCache, breakers: BreakerRegistry) -> None:
        self.link.start()
        if self.cache is not None:
            cache.on_store = self.cache.stored
        if self.health is not None:
            breakers.on_transition(self.health.local_transition)
            # Redis away: the subscriber catches up when it is there.
            with contextlib.suppress(FleetUnavailable):
                await self.health.catch_up()
            self.health.start()

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.cache is not None:
            await self.cache.drain()
        if self.link.up:
            await self.counters.catch_up()  # spend settled while Redis was away, if any
        await self.link.close()

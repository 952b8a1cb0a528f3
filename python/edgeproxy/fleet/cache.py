"""The prompt cache's shared second level: what one sidecar stores, the others can serve.

The local LRU (``cache.layer.PromptCache``) stays in front: a local hit never asks Redis. On a
local miss the entry is looked up in Redis (one bounded call); a hit there is kept locally with
the age and the time to live it has in Redis, and served from the local store as any hit. Every
answer stored locally is written to Redis too, in the background, compressed (zlib). Keys are
the local cache's keys, which hold the tenant scope: one client's answers never reach another
client, on any sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib

from edgeproxy.cache.layer import CachedReply, CachePlan, PromptCache
from edgeproxy.fleet.link import FleetUnavailable, RedisLink
from edgeproxy.fleet.scripts import CACHE_GET, CACHE_PUT

log = logging.getLogger("edgeproxy.fleet")
MAX_ENTRY_BYTES = 4 * 1024 * 1024  # compressed; a larger answer stays local
OFF_LOOP_BYTES = 64 * 1024  # compressing or inflating more than this runs in a thread


class SharedCache:
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._get = link.redis.register_script(CACHE_GET)
        self._put = link.redis.register_script(CACHE_PUT)
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, key: bytes) -> str:
        return self.link.key("cache", key.hex())

    async def lookup(self, cache: PromptCache, plan: CachePlan, stream: bool) -> CachedReply | None:
        """The entry from Redis, kept locally and served as a local hit; None on a miss, a
        bypass, or Redis away (one bounded wait at most)."""
        if plan.key is None or not plan.lookup:
            return None
        key = plan.key
        try:
            found = await self.link.call("cache", lambda r: self._get([self._key(key)], [], r))
        except FleetUnavailable:
            return None
        if not found:
            return None
        packed, age_ms, ttl_ms = found[0], int(found[1]), int(found[2])
        try:
            entry = (
                await asyncio.to_thread(zlib.decompress, packed)
                if len(packed) > OFF_LOOP_BYTES
                else zlib.decompress(packed)
            )
        except zlib.error:
            return None
        if not cache.adopt(key, entry, age_ms / 1000, ttl_ms / 1000):
            return None
        return cache.lookup(plan, stream)

    def stored(self, key: bytes, entry: bytes, ttl: float) -> None:
        """``PromptCache.on_store``: write the entry to Redis in the background."""
        if not self.link.available:
            return
        task = asyncio.get_running_loop().create_task(self._write(key, entry, ttl))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, key: bytes, entry: bytes, ttl: float) -> None:
        packed = (
            await asyncio.to_thread(zlib.compress, entry, 6)
            if len(entry) > OFF_LOOP_BYTES
            else zlib.compress(entry, 6)
        )
        if len(packed) > MAX_ENTRY_BYTES:
            return
        ttl_ms = max(1, int(ttl * 1000))
        # Redis away: the local store has it; the others will store their own.
        with contextlib.suppress(FleetUnavailable):
            await self.link.background(
                "cache", lambda r: self._put([self._key(key)], [packed, ttl_ms], r)
            )

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

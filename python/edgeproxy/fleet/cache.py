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
from typing import Any

import orjson

from edgeproxy.cache.layer import CachedReply, CachePlan, PromptCache
from edgeproxy.fleet.link import FleetUnavailable, RedisLink
from edgeproxy.fleet.scripts import CACHE_GET, CACHE_PUT

log = logging.getLogger("edgeproxy.fleet")
MAX_ENTRY_BYTES = 4 * 1024 * 1024  # compressed; a larger answer stays local
# Inflated, an entry from Redis is never larger than this (an upstream's whole answer is held
# to 64 MiB): anything that inflates beyond it is not an entry a sidecar wrote (a zip bomb).
MAX_INFLATED_BYTES = 64 * 1024 * 1024
OFF_LOOP_BYTES = 64 * 1024  # compressing more than this runs in a thread
# Inflating more than this runs in a thread: zlib inflates up to about 1000 times its input, so
# a kilobyte may become a megabyte (about a millisecond of the loop), no more.
INFLATE_OFF_LOOP_BYTES = 1024


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
        entry = _entry(found)
        if entry is None:
            return None
        packed, age_ms, ttl_ms = entry
        inflated = (
            await asyncio.to_thread(inflate, packed)
            if len(packed) > INFLATE_OFF_LOOP_BYTES
            else inflate(packed)
        )
        if inflated is None or not _entry_shape(inflated):
            log.warning("fleet: a shared cache entry that is not ours was ignored")
            return None
        if not cache.adopt(key, inflated, age_ms / 1000, ttl_ms / 1000):
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


def _entry(found: object) -> tuple[bytes, int, int] | None:
    """The script's reply as (compressed entry, age ms, ms to live); None for a miss or for
    anything else Redis holds there (a key another writer put, of another shape)."""
    if not isinstance(found, list | tuple) or len(found) != 3:
        return None
    packed, age, ttl = found
    if not isinstance(packed, bytes):
        return None
    try:
        return packed, int(age), int(ttl)
    except (TypeError, ValueError):
        return None


def inflate(packed: bytes, limit: int = MAX_INFLATED_BYTES) -> bytes | None:
    """``packed`` decompressed, or None when it is not one whole zlib stream or would inflate
    beyond ``limit`` bytes: Redis is shared, so what it holds is checked before it is trusted,
    and no more than ``limit`` bytes are ever produced."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(packed, limit + 1)
    except zlib.error:
        return None
    if len(out) > limit or inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        return None
    return out


def _entry_shape(raw: bytes) -> bool:
    """Whether ``raw`` has the shape of an entry a sidecar stores (``cache.answers.Answer``):
    the answer's JSON, its events, and the headers that name who served it, which go back to
    clients as headers (so printable ``x-edgeproxy-*`` only)."""
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(data, dict) or data.get("v") is None:
        return False
    events, served = data.get("events"), data.get("served")
    return (
        isinstance(data.get("completion"), str)
        and isinstance(data.get("stored_at"), int | float)
        and (
            events is None or (isinstance(events, list) and all(isinstance(e, str) for e in events))
        )
        and isinstance(served, dict)
        and all(
            isinstance(k, str)
            and k.startswith("x-edgeproxy-")
            and isinstance(v, str)
            and len(v) <= 256
            and v.isprintable()
            for k, v in served.items()
        )
    )

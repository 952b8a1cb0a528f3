"""The fleet's key store: the key table and usage rows in Redis (``edgeproxy keys`` with a
policy that names ``fleet.redis``, and every sidecar's ``KeyRing``).

``<prefix>:keys`` maps each key's digest to its record; ``<prefix>:keys:version`` moves on each
change (sidecars reload the table when it does). Usage rows are hashes per UTC day
(``<prefix>:usage:<day>``, written by the settle script: ``fleet.counters``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

from edgeproxy.fleet.counters import SEP
from edgeproxy.fleet.link import FleetUnavailable, RedisLink
from edgeproxy.keys.model import VirtualKey
from edgeproxy.keys.ring import StoreAway
from edgeproxy.limits.asks import UsageRow
from edgeproxy.limits.periods import days_between

T = TypeVar("T")


class RedisKeyStore:
    """``link``: a sidecar's (its reads are bounded, and not made while Redis is away: the
    ring keeps its table); without it, the ``edgeproxy keys`` command's own client."""

    def __init__(self, redis: aioredis.Redis, prefix: str, link: RedisLink | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self._link = link
        self._table = f"{prefix}:keys"
        self._version = f"{prefix}:keys:version"

    async def _read(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        if self._link is None:
            return await fn(self.redis)
        try:
            return await self._link.background("keys", fn)
        except FleetUnavailable:
            raise StoreAway from None

    async def fetch_version(self) -> int | None:
        raw = await self._read(lambda r: r.get(self._version))
        return int(raw) if raw is not None else None

    async def fetch_all(self) -> tuple[int, list[VirtualKey]]:
        version, records = await self._read(self._table_of)
        keys = []
        for record in records:
            try:
                keys.append(VirtualKey.from_json(record))
            except (ValueError, KeyError, TypeError):
                continue
        return int(version or 0), keys

    async def _table_of(self, client: aioredis.Redis) -> tuple[bytes | None, list[bytes]]:
        async with client.pipeline(transaction=True) as pipe:
            pipe.get(self._version)
            pipe.hvals(self._table)
            version, records = await pipe.execute()
        return version, records

    async def create(self, key: VirtualKey) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self._table, key.digest, key.to_json())
            pipe.incr(self._version)
            created, _ = await pipe.execute()
        if not created:
            raise ValueError("a key with this digest exists already")

    async def revoke(self, which: str, now: float) -> list[VirtualKey]:
        _, keys = await self.fetch_all()
        done = []
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in keys:
                if which not in (key.id, key.name):
                    continue
                if key.revoked is None:
                    key = key.revoke(now)
                    pipe.hset(self._table, key.digest, key.to_json())
                done.append(key)
            pipe.incr(self._version)
            await pipe.execute()
        return done

    async def usage(self, start: float, end: float) -> list[UsageRow]:
        days = days_between(start, end)
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(f"{self.prefix}:usage:{day}")
            found = await pipe.execute()
        totals: dict[tuple[str, str, str, str], dict[str, float]] = defaultdict(
            lambda: defaultdict(float)
        )
        for fields in found:
            for raw, value in fields.items():
                parts = raw.decode().split(SEP)
                if len(parts) != 5:
                    continue
                totals[(parts[0], parts[1], parts[2], parts[3])][parts[4]] += float(value)
        rows = [
            UsageRow(
                days[0] if days else "",
                *who,
                int(v["requests"]),
                int(v["input_tokens"]),
                int(v["output_tokens"]),
                v["usd"],
            )
            for who, v in totals.items()
        ]
        return sorted(rows, key=lambda r: -r.usd)

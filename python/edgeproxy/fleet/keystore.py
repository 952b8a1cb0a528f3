"""The fleet's key store: the key table and usage rows in Redis (``edgeproxy keys`` with a
policy that names ``fleet.redis``, and every sidecar's ``KeyRing``).

``<prefix>:keys`` maps each key's digest to its record; ``<prefix>:keys:version`` moves on each
change (sidecars reload the table when it does). Usage rows are hashes per UTC day
(``<prefix>:usage:<day>``, written by the settle script: ``fleet.counters``).
"""

from __future__ import annotations

from collections import defaultdict

import redis.asyncio as aioredis

from edgeproxy.fleet.counters import SEP
from edgeproxy.keys.model import VirtualKey
from edgeproxy.limits.asks import UsageRow
from edgeproxy.limits.periods import days_between


class RedisKeyStore:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._table = f"{prefix}:keys"
        self._version = f"{prefix}:keys:version"

    async def fetch_version(self) -> int | None:
        raw = await self.redis.get(self._version)
        return int(raw) if raw is not None else None

    async def fetch_all(self) -> tuple[int, list[VirtualKey]]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self._version)
            pipe.hvals(self._table)
            version, records = await pipe.execute()
        keys = []
        for record in records:
            try:
                keys.append(VirtualKey.from_json(record))
            except (ValueError, KeyError, TypeError):
                continue
        return int(version or 0), keys

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

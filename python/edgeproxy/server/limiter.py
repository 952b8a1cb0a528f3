"""Builds a proxy's keys, limits and fleet tier from its policy at start (docs/keys.md,
docs/fleet.md), and starts and stops them with it.

- no ``keys.store`` and no fleet: limits and budgets count in memory (a restart forgets the
  spend); usage rows are not kept; key auth cannot be turned on;
- ``keys.store``: the SQLite file holds the keys and the usage rows (a budget's spend survives a
  restart);
- ``fleet.redis`` (or ``EDGEPROXY_FLEET_REDIS``): Redis holds the keys, the counters, the usage,
  a shared cache level and the fleet's health; the local counters are the fallback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edgeproxy.errors import EdgeProxyError
from edgeproxy.fleet import FleetTier
from edgeproxy.keys import KeyRing, KeySource, SqliteStore
from edgeproxy.keys.usage import UsageWriter
from edgeproxy.limits import LocalCounters
from edgeproxy.server.admission import Limiter
from edgeproxy.server.context import ProxyState
from edgeproxy.snapshot import Policy

log = logging.getLogger("edgeproxy.limits")
FLEET_ENV = "EDGEPROXY_FLEET_REDIS"


class LimitsMisconfigured(EdgeProxyError, ValueError):
    """What the keys, limits or fleet settings cannot start with (``serve`` says it, exits 2)."""


class KeyStoreMissing(LimitsMisconfigured):
    """The policy turns key auth on but names no key store (and no fleet holds one)."""


def store_path(policy: Policy) -> Path | None:
    """The SQLite store as the policy names it, relative to the policy file."""
    written = policy.keys.store
    if written is None:
        return None
    path = Path(written)
    if not path.is_absolute():
        path = Path(policy.source).resolve().parent / path
    return path


@dataclass
class Limits:
    """What ``build_limits`` made, to start and stop with the server."""

    state: ProxyState
    ring: KeyRing | None
    writer: UsageWriter | None
    fleet: FleetTier | None

    async def start(self) -> None:
        if self.fleet is not None:
            await self.fleet.start(self.state.cache, self.state.engine.breakers)
        if self.ring is not None:
            await self.ring.start()

    async def stop(self) -> None:
        await self.state.limiter.drain()
        if self.ring is not None:
            await self.ring.stop()
        if self.writer is not None:
            await self.writer.stop()
        if self.fleet is not None:
            await self.fleet.stop()


def build_limits(state: ProxyState, fleet_redis: str | None = None) -> Limits:
    policy, clock = state.policy, state.clock
    url = policy.fleet.redis or fleet_redis or None
    path = store_path(policy)
    writer: UsageWriter | None = None
    source: KeySource | None = None
    fleet: FleetTier | None = None
    if url is not None:
        local = LocalCounters(clock)
        telemetry = state.telemetry
        try:
            fleet = FleetTier(
                url,
                policy.fleet,
                clock,
                local=local,
                breakers=lambda: state.engine.breakers,
                known=lambda: {c.key for r in state.policy.routes.values() for c in r.candidates},
                listener=telemetry.fleet_event,
            )
        except ValueError as exc:  # redis-py's URL parser (its message never holds the URL)
            where = "fleet.redis" if policy.fleet.redis else FLEET_ENV
            raise LimitsMisconfigured(f"{where} is not a valid Redis URL: {exc}") from None
        telemetry.fleet_joined()
        source = fleet.keystore
        state.limiter = Limiter(counters=fleet.counters, record=fleet.counters.record)
        if path is not None:
            log.info("keys.store is not used: the fleet keeps keys and usage in Redis")
    elif path is not None:
        store = SqliteStore(path)
        writer = UsageWriter(store, clock)
        source = store
        local = LocalCounters(clock, spent=writer.spent, record=writer.record)
        state.limiter = Limiter(counters=local, record=writer.record)
    else:
        state.limiter = Limiter(counters=LocalCounters(clock))
    if policy.keys.auth and source is None:
        raise KeyStoreMissing(
            "keys.auth is on but there is no key store: set keys.store (a SQLite file) or "
            f"fleet.redis (or {FLEET_ENV})"
        )
    ring = KeyRing(source, clock, refresh=policy.keys.refresh) if source is not None else None
    state.limiter.keys = ring
    state.fleet = fleet
    return Limits(state, ring, writer, fleet)

"""A sidecar's copy of the key table, and key auth against it.

The whole table (records, never keys: each is found by its key's digest) is loaded at start and
reloaded when the store's version changes (checked every ``keys.refresh``). A request's lookup
is one dict read: it never waits on SQLite or Redis, and while the store is unreachable the
last table keeps serving (a store that answers with no table at all, a Redis that lost its data,
is treated the same: the table is kept and a warning logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from edgeproxy.clock import Clock
from edgeproxy.errors import EdgeProxyError
from edgeproxy.keys.model import VirtualKey, digest_of

log = logging.getLogger("edgeproxy.keys")


class KeySource(Protocol):
    async def fetch_version(self) -> int | None:
        """The table's version; None when the store has no table (or cannot be read)."""
        ...

    async def fetch_all(self) -> tuple[int, list[VirtualKey]]: ...


class StoreAway(EdgeProxyError):
    """The store cannot be asked now (the fleet's Redis is away, and its link said so once):
    the table is kept without a warning per check."""


class Refused(EdgeProxyError):
    """Key auth failed: ``reason`` is missing, unknown, revoked or expired (never the key)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def credential(headers: Mapping[str, str]) -> str:
    """The key a client sent: ``Authorization: Bearer KEY`` (OpenAI's SDKs) or ``x-api-key:
    KEY`` (Anthropic's); "" when neither."""
    auth = (headers.get("Authorization") or "").strip()
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return (headers.get("x-api-key") or "").strip()


class KeyRing:
    def __init__(
        self,
        source: KeySource,
        clock: Clock,
        *,
        refresh: float = 5.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self._clock = clock
        self._wall = wall
        self.refresh = refresh
        self.version: int | None = None
        self._by_digest: dict[str, VirtualKey] = {}
        self._task: asyncio.Task[None] | None = None
        self.loaded = False

    @property
    def keys(self) -> list[VirtualKey]:
        return list(self._by_digest.values())

    def authenticate(self, headers: Mapping[str, str]) -> VirtualKey:
        given = credential(headers)
        if not given:
            raise Refused("missing")
        key = self._by_digest.get(digest_of(given))
        if key is None:
            raise Refused("unknown")
        refusal = key.refusal(self._wall())
        if refusal is not None:
            raise Refused(refusal)
        return key

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self.refresh)
            await self.check()

    async def check(self) -> None:
        """Reload the table if the store's version moved; keep it when the store is away."""
        try:
            version = await self.source.fetch_version()
            if version is None:
                if self.loaded:
                    log.warning("the key store has no key table: the last one loaded is kept")
                return
            if version == self.version:
                return
            version, keys = await self.source.fetch_all()
        except StoreAway:
            return
        except Exception as exc:
            log.warning(
                "the key store could not be read: the last key table is kept",
                extra={"error": type(exc).__name__},
            )
            return
        self._by_digest = {k.digest: k for k in keys}
        self.version = version
        if not self.loaded:
            log.info("key table loaded", extra={"keys": len(keys)})
        self.loaded = True

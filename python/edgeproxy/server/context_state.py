"""Process-wide state of context management: the summary cache and affinity's in-flight counts.

One per proxy process (``ProxyState.context``); both outlive any one policy snapshot, like the
breakers do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from edgeproxy._core import CacheStore
from edgeproxy.routing.affinity import AffinityTable

MAX_BYTES: Final = 16 * 1024 * 1024
MAX_ENTRIES: Final = 4096


class SummaryStore:
    """Summaries by history key (``context.summary.summary_key``), as UTF-8 text: bounded by
    entries and bytes, least recently used out first, a TTL per entry on the proxy's clock."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES) -> None:
        self._store = CacheStore(max_bytes, max_entries)

    def get(self, key: bytes, now: float) -> str | None:
        value = self._store.get(key, now)
        return None if value is None else value.decode()

    def put(self, key: bytes, text: str, ttl: float, now: float) -> None:
        self._store.put(key, text.encode(), ttl, now)

    def stats(self) -> dict[str, int]:
        return self._store.stats()


@dataclass
class ContextState:
    summaries: SummaryStore = field(default_factory=SummaryStore)
    affinity: AffinityTable = field(default_factory=AffinityTable)

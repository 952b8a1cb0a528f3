"""Usage rows written to the embedded store in batches, in a worker thread (never on the loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from edgeproxy.clock import Clock
from edgeproxy.keys.sqlite import SqliteStore
from edgeproxy.limits.asks import BudgetAsk, UsageRow
from edgeproxy.limits.periods import day_name

log = logging.getLogger("edgeproxy.keys")
MAX_PENDING = 100_000  # rows kept while the file cannot be written (then the oldest go)


class UsageWriter:
    def __init__(self, store: SqliteStore, clock: Clock, interval: float = 1.0) -> None:
        self.store = store
        self._clock = clock
        self._interval = interval
        self._pending: list[UsageRow] = []
        self._task: asyncio.Task[None] | None = None

    def record(self, rows: Sequence[UsageRow]) -> None:
        self._pending.extend(rows)
        if len(self._pending) > MAX_PENDING:
            del self._pending[: len(self._pending) - MAX_PENDING]
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def spent(self, ask: BudgetAsk) -> float:
        """A budget's spend so far: the file's rows and those still waiting to be written."""
        stored = await self.store.fetch_spent(ask)
        first, end = day_name(ask.period_start), day_name(ask.period_end)
        column = {"key": "key_id", "team": "team", "route": "route"}[ask.scope]
        waiting = sum(
            r.usd for r in self._pending if first <= r.day < end and getattr(r, column) == ask.name
        )
        return stored + waiting

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        try:
            await asyncio.to_thread(self.store.add_usage, rows)
        except Exception as exc:  # a locked or full disk: keep the rows for the next try
            log.warning("usage rows could not be written", extra={"error": type(exc).__name__})
            self._pending[:0] = rows

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

"""Limits and budgets shared by the fleet: one Lua script admits a request's limits on Redis,
another settles them; the local counters answer while Redis is away.

While Redis is away each sidecar enforces every limit on its own (a rate of N per minute per
sidecar, a budget from the fleet's spend as Redis last told it plus its own since): the fleet
may then overshoot, by at most what the sidecars admit during the outage (docs/fleet.md). What
they settle meanwhile (spend and usage) is kept and pushed when Redis returns, so a budget's
spend is whole again after the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from edgeproxy.fleet.link import FleetUnavailable, RedisLink
from edgeproxy.fleet.scripts import ADMIT, SETTLE
from edgeproxy.limits.asks import (
    Admission,
    BudgetAsk,
    Settlement,
    Ticket,
    UsageRow,
    Verdict,
)
from edgeproxy.limits.local import LocalCounters, budget_key
from edgeproxy.limits.periods import DAY

log = logging.getLogger("edgeproxy.fleet")
MAX_PENDING = 50_000  # settlements kept while Redis is away (then the oldest go)
# Usage rows are kept this long in Redis (a year and a month: `keys usage` of last year).
USAGE_FIELDS = ("requests", "input_tokens", "output_tokens", "usd")
SEP = "\t"


def usage_field(row: UsageRow, what: str) -> str:
    return SEP.join((row.key_id, row.team, row.route, row.model, what))


class FleetCounters:
    """``Counters`` on Redis, with ``local`` as the fallback."""

    def __init__(self, link: RedisLink, local: LocalCounters) -> None:
        self.link = link
        self.local = local
        self._admit = link.redis.register_script(ADMIT)
        self._settle = link.redis.register_script(SETTLE)
        # Spend settled while Redis was away: (budgets, usd, usage rows), pushed on return.
        self._pending: list[tuple[tuple[BudgetAsk, ...], float, Sequence[UsageRow]]] = []
        self._lock = asyncio.Lock()  # one catch-up at a time: each pending entry pushed once
        self._tasks: set[asyncio.Task[None]] = set()
        link.on_up(self.catch_up)

    def _budget_keys(self, ask: BudgetAsk) -> list[str]:
        h = self.link.key("budget", ask.counter, ask.period_id)
        return [h, h + ":res"]

    @staticmethod
    def _keep(ask: BudgetAsk, wall: float) -> int:
        return int(max(ask.period_end - wall, 0) + 2 * DAY)

    async def admit(self, admission: Admission) -> Verdict:
        if admission.empty:
            return await self.local.admit(admission)
        keys: list[str] = [self.link.key("rate", r.counter) for r in admission.rates]
        rid = os.urandom(8).hex()
        args: list[Any] = [len(admission.rates), len(admission.budgets), rid, admission.hold]
        for rate in admission.rates:
            args += [rate.limit, rate.cost]
        wall = self.local.wall()
        for ask in admission.budgets:
            keys += self._budget_keys(ask)
            args += [f"{ask.limit:.12f}", f"{ask.reserve:.12f}", self._keep(ask, wall)]
        try:
            result = await self.link.call("counters", lambda r: self._admit(keys, args, r))
        except FleetUnavailable:
            return await self.local.admit(admission)
        self._flush_soon()
        if int(result[0]) == 1:
            for ask, spent in zip(admission.budgets, result[1:], strict=False):
                self.local.known_spent(ask, float(spent))
            return Verdict(True, ticket=Ticket(admission, rid, "fleet"))
        index = int(result[1]) - 1
        for ask, spent in zip(admission.budgets, result[3:], strict=False):
            self.local.known_spent(ask, float(spent))
        if index < len(admission.rates):
            return Verdict(False, admission.rates[index], int(result[2]) / 1000)
        ask = admission.budgets[index - len(admission.rates)]
        return Verdict(False, ask, max(1.0, ask.period_end - wall))

    async def settle(self, ticket: Ticket, settlement: Settlement) -> None:
        if ticket.settled:
            return
        if ticket.where == "local":
            self.local.settle_now(ticket, settlement)
            self._pending.append((ticket.admission.budgets, settlement.usd, settlement.rows))
            await self.catch_up()
            return
        ticket.settled = True
        try:
            await self.link.background(
                "counters", lambda r: self._run_settle(r, ticket, settlement)
            )
        except FleetUnavailable:
            # Its reservation expires in Redis by itself; the spend is pushed on return.
            self._pending.append((ticket.admission.budgets, settlement.usd, settlement.rows))
            self._trim()
        for ask in ticket.admission.budgets:
            self.local.add_spent(ask, settlement.usd)

    async def _run_settle(
        self,
        client: aioredis.Redis,
        ticket: Ticket | None,
        settlement: Settlement,
        budgets: Sequence[BudgetAsk] = (),
    ) -> Any:
        admission = ticket.admission if ticket is not None else None
        rates = [r for r in admission.rates if r.tokens] if admission is not None else []
        asks = admission.budgets if admission is not None else tuple(budgets)
        keys = [self.link.key("rate", r.counter) for r in rates]
        args: list[Any] = [len(rates), len(asks), 0, ticket.reservation if ticket else ""]
        for rate in rates:
            args += [rate.limit, settlement.tokens - rate.cost]
        wall = self.local.wall()
        for ask in asks:
            keys += self._budget_keys(ask)
            args += [f"{settlement.usd:.12f}", self._keep(ask, wall)]
        by_day: dict[str, list[Any]] = {}
        for row in settlement.rows:
            pairs = by_day.setdefault(row.day, [])
            pairs += [
                usage_field(row, "requests"), row.requests,
                usage_field(row, "input_tokens"), row.input_tokens,
                usage_field(row, "output_tokens"), row.output_tokens,
                usage_field(row, "usd"), f"{row.usd:.12f}",
            ]  # fmt: skip
        args[2] = len(by_day)
        for day, pairs in by_day.items():
            keys.append(self.link.key("usage", day))
            args += [len(pairs) // 2, *pairs]
        return await self._settle(keys, args, client)

    def record(self, rows: Sequence[UsageRow]) -> None:
        """Usage rows of a request no limit applied to (``keys usage`` still counts it)."""
        if rows:
            self._pending.append(((), 0.0, rows))
            self._trim()
            self._flush_soon()

    def _trim(self) -> None:
        if len(self._pending) > MAX_PENDING:
            del self._pending[: len(self._pending) - MAX_PENDING]

    def _flush_soon(self) -> None:
        if self._pending and not self._lock.locked():
            task = asyncio.get_running_loop().create_task(self._quiet_catch_up())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _quiet_catch_up(self) -> None:
        with contextlib.suppress(FleetUnavailable):
            await self.catch_up()

    async def catch_up(self) -> None:
        """Push the spend and usage settled while Redis was away (kept if it is away again)."""
        async with self._lock:
            while self._pending and self.link.up:
                budgets, usd, rows = self._pending[0]
                settled = Settlement(0, usd, rows)

                async def push(
                    client: aioredis.Redis,
                    budgets: Sequence[BudgetAsk] = budgets,
                    settled: Settlement = settled,
                ) -> Any:
                    return await self._run_settle(client, None, settled, budgets)

                try:
                    await self.link.background("counters", push)
                except FleetUnavailable:
                    return
                self._pending.pop(0)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def budget_key(self, ask: BudgetAsk) -> str:
        return budget_key(ask)

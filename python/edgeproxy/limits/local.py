"""The counters of one process: GCRA rates on the clock, budgets with held reservations.

A single sidecar's limits and budgets (the embedded store keeps the spend across restarts: a
budget's spend so far is read from it, once, when the budget is first asked for), and a fleet
sidecar's while Redis is away (``fleet.counters`` feeds it the fleet's spend as it last saw it).

Everything here runs on the event loop without awaiting between the check and the commit, so
an admission is atomic: two requests can never both take the last unit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from edgeproxy.clock import Clock
from edgeproxy.limits import gcra
from edgeproxy.limits.asks import (
    Admission,
    BudgetAsk,
    Settlement,
    Ticket,
    UsageRow,
    Verdict,
)

# The USD already spent in a budget's period (from the store), when it is first asked for.
SpentLoader = Callable[[BudgetAsk], Awaitable[float]]
USD_EPSILON = 1e-9
_MAX_BUDGETS = 10_000  # budget states kept before old periods are dropped


@dataclass(slots=True)
class _Budget:
    spent: float
    period_end: float
    reserved: float = 0.0
    holds: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (usd, expiry)

    def expire(self, now: float) -> None:
        stale = [rid for rid, (_, until) in self.holds.items() if until <= now]
        for rid in stale:
            self.release(rid)

    def release(self, rid: str) -> None:
        held = self.holds.pop(rid, None)
        if held is not None:
            self.reserved = max(0.0, self.reserved - held[0])


def budget_has_room(spent: float, reserved: float, reserve: float, limit: float) -> bool:
    """Room for ``reserve`` more: nothing is left once spent and reserved reach the limit."""
    return spent + reserved < limit and spent + reserved + reserve <= limit + USD_EPSILON


def budget_key(ask: BudgetAsk) -> str:
    return f"{ask.counter}:{ask.period_id}"


class LocalCounters:
    """``Counters`` in this process."""

    def __init__(
        self,
        clock: Clock,
        *,
        wall: Callable[[], float] = time.time,
        spent: SpentLoader | None = None,
        record: Callable[[Sequence[UsageRow]], None] | None = None,
    ) -> None:
        self._clock = clock
        self.wall = wall
        self._load_spent = spent
        self._record = record
        self._tats: dict[str, float] = {}
        self._budgets: dict[str, _Budget] = {}

    # -- what the fleet tier tells it ------------------------------------------------------

    def known_spent(self, ask: BudgetAsk, spent: float) -> None:
        """The fleet's spend of a budget as Redis last said (the base while Redis is away)."""
        state = self._budgets.get(budget_key(ask))
        if state is None:
            self._budgets[budget_key(ask)] = _Budget(spent, ask.period_end)
        else:
            state.spent = max(state.spent, spent)

    # -- Counters ---------------------------------------------------------------------------

    async def admit(self, admission: Admission) -> Verdict:
        for ask in admission.budgets:
            await self._ensure(ask)
        now = self._clock.monotonic()
        wall = self.wall()
        new_tats: list[tuple[str, float]] = []
        for rate in admission.rates:
            tat = self._tats.get(rate.counter, now)
            ok, new_tat, wait = gcra.take(tat, now, rate.limit, rate.cost)
            if not ok:
                return Verdict(False, rate, wait)
            new_tats.append((rate.counter, new_tat))
        for ask in admission.budgets:
            state = self._budgets[budget_key(ask)]
            state.expire(now)
            if not budget_has_room(state.spent, state.reserved, ask.reserve, ask.limit):
                return Verdict(False, ask, max(1.0, ask.period_end - wall))
        # Every limit has room: take them all (no await since the checks).
        rid = os.urandom(8).hex()
        self._tats.update(new_tats)
        for ask in admission.budgets:
            state = self._budgets[budget_key(ask)]
            state.reserved += ask.reserve
            state.holds[rid] = (ask.reserve, now + admission.hold)
        return Verdict(True, ticket=Ticket(admission, rid, "local"))

    async def settle(self, ticket: Ticket, settlement: Settlement) -> None:
        self.settle_now(ticket, settlement)

    def settle_now(self, ticket: Ticket, settlement: Settlement) -> None:
        if ticket.settled:
            return
        ticket.settled = True
        now = self._clock.monotonic()
        for rate in ticket.admission.rates:
            if rate.tokens and rate.counter in self._tats:
                self._tats[rate.counter] = gcra.adjust(
                    self._tats[rate.counter], now, rate.limit, settlement.tokens - rate.cost
                )
        for ask in ticket.admission.budgets:
            state = self._budgets.get(budget_key(ask))
            if state is None:
                continue
            if ticket.where == "local":
                state.release(ticket.reservation)
            state.spent += settlement.usd
        if self._record is not None and settlement.rows:
            self._record(settlement.rows)

    def add_spent(self, ask: BudgetAsk, usd: float) -> None:
        """Spend settled elsewhere (the fleet) that this process's view must include."""
        state = self._budgets.get(budget_key(ask))
        if state is not None:
            state.spent += usd

    async def _ensure(self, ask: BudgetAsk) -> None:
        key = budget_key(ask)
        if key in self._budgets:
            return
        spent = await self._load_spent(ask) if self._load_spent is not None else 0.0
        if key not in self._budgets:  # another request loaded it meanwhile
            if len(self._budgets) >= _MAX_BUDGETS:
                self._prune()
            self._budgets[key] = _Budget(spent, ask.period_end)

    def _prune(self) -> None:
        wall = self.wall()
        for key in [k for k, b in self._budgets.items() if b.period_end <= wall]:
            del self._budgets[key]

    def snapshot(self) -> dict[str, object]:
        """For ``/admin/status``: the budgets this process tracks (spent and reserved USD)."""
        return {
            key: {"spent_usd": round(b.spent, 6), "reserved_usd": round(b.reserved, 6)}
            for key, b in self._budgets.items()
        }

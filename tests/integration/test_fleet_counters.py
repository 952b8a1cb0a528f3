"""The fleet's Lua counters on a real redis-server, against the local counters' rules, and the
fallback and catch-up when Redis goes away and comes back.

Same admissions to ``LocalCounters`` (on a fake clock) and ``FleetCounters`` (on Redis's clock):
the same verdicts. Then Redis away: every call answers from local state, says so, and the spend
settled meanwhile reaches Redis when it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgeproxy.clock import FakeClock, SystemClock
from edgeproxy.events import FleetEvent, FleetFallback, FleetState
from edgeproxy.fleet.counters import FleetCounters
from edgeproxy.fleet.link import RedisLink
from edgeproxy.limits import Admission, BudgetAsk, LocalCounters, RateAsk, Settlement, UsageRow
from edgeproxy.limits.periods import period_bounds
from edgeproxy.snapshot import FleetSettings
from fixtures.redis import RedisServer, free_port


def rate(limit: int, cost: int = 1, counter: str = "key:k:rpm", tokens: bool = False) -> RateAsk:
    return RateAsk(counter, limit, cost, f"{counter} {limit}", tokens=tokens)


def budget(limit: float, reserve: float, counter: str = "key:k") -> BudgetAsk:
    start, end, name = period_bounds("day", time.time())
    return BudgetAsk(counter, "key", "k", limit, reserve, "day", name, start, end, "key:budget")


class Both:
    def __init__(self, link: RedisLink) -> None:
        self.local = LocalCounters(FakeClock())
        self.fleet = FleetCounters(link, LocalCounters(SystemClock()))

    async def admit(self, admission: Admission) -> tuple[bool, bool]:
        a = await self.local.admit(admission)
        b = await self.fleet.admit(admission)
        self.last = (a, b)
        assert b.ticket is None or b.ticket.where == "fleet"
        return a.admitted, b.admitted

    async def settle(self, settlement: Settlement) -> None:
        a, b = self.last
        assert a.ticket is not None and b.ticket is not None
        await self.local.settle(a.ticket, settlement)
        await self.fleet.settle(b.ticket, settlement)


@pytest.fixture
async def link(redis_server: RedisServer) -> AsyncIterator[RedisLink]:
    made = RedisLink(redis_server.url, FleetSettings(redis_server.url, timeout=1.0), SystemClock())
    made.start()
    yield made
    await made.close()


async def test_rates_admit_a_burst_of_the_limit_then_refuse(link: RedisLink) -> None:
    both = Both(link)
    verdicts = [await both.admit(Admission((rate(5),))) for _ in range(7)]
    assert verdicts == [(True, True)] * 5 + [(False, False)] * 2
    local, fleet = both.last
    assert local.hit == fleet.hit == rate(5)
    assert 0 < fleet.retry_after <= 12.01 and 0 < local.retry_after <= 12.01


async def test_limits_are_all_or_nothing(link: RedisLink) -> None:
    both = Both(link)
    rpm, tpm = rate(10), rate(100, cost=60, counter="key:k:tpm", tokens=True)
    assert await both.admit(Admission((rpm, tpm))) == (True, True)
    assert await both.admit(Admission((rpm, tpm))) == (False, False)  # the tpm has 40 left
    # The refused request took no rpm: nine more single requests still fit.
    assert [await both.admit(Admission((rpm,))) for _ in range(10)] == [(True, True)] * 9 + [
        (False, False)
    ]


async def test_tpm_settles_on_the_real_usage(link: RedisLink) -> None:
    both = Both(link)
    tpm = rate(1000, cost=900, counter="key:k:tpm", tokens=True)
    assert await both.admit(Admission((tpm,))) == (True, True)
    first = both.last
    assert await both.admit(Admission((tpm,))) == (False, False)
    both.last = first
    await both.settle(Settlement(tokens=10, usd=0.0))  # 900 reserved, 10 used: 890 back
    assert await both.admit(Admission((tpm,))) == (True, True)
    assert await both.admit(Admission((tpm,))) == (False, False)


async def test_budgets_reserve_the_worst_case_and_settle_the_real_cost(link: RedisLink) -> None:
    both = Both(link)
    assert await both.admit(Admission(budgets=(budget(1.0, 0.4),))) == (True, True)
    first = both.last
    assert await both.admit(Admission(budgets=(budget(1.0, 0.4),))) == (True, True)
    assert await both.admit(Admission(budgets=(budget(1.0, 0.4),))) == (False, False)
    both.last = first
    await both.settle(Settlement(tokens=0, usd=0.1))  # reserved 0.4, cost 0.1
    assert await both.admit(Admission(budgets=(budget(1.0, 0.4),))) == (True, True)
    # 0.1 spent + 0.8 reserved: nothing more fits, not even a free request.
    assert await both.admit(Admission(budgets=(budget(1.0, 0.2),))) == (False, False)
    a, b = both.last
    assert b.retry_after > 0 and a.retry_after > 0


async def test_a_budget_of_nothing_admits_nothing(link: RedisLink) -> None:
    both = Both(link)
    assert await both.admit(Admission(budgets=(budget(0.0, 0.0),))) == (False, False)


async def test_a_reservation_its_sidecar_never_settled_is_released(link: RedisLink) -> None:
    both = Both(link)
    held = Admission(budgets=(budget(1.0, 0.9, "team:t"),), hold=0.05)
    assert await both.admit(held) == (True, True)
    assert await both.admit(held) == (False, False)
    assert isinstance(both.local._clock, FakeClock)
    both.local._clock.advance(0.1)
    await asyncio.sleep(0.1)  # Redis's own clock: the hold is 50 ms
    assert await both.admit(held) == (True, True)


async def test_redis_away_falls_back_at_once_and_catches_up_on_return(
    redis_server: RedisServer,
) -> None:
    events: list[FleetEvent] = []
    settings = FleetSettings(redis_server.url, timeout=0.2, retry_interval=0.05)
    link = RedisLink(redis_server.url, settings, SystemClock(), events.append)
    link.start()
    counters = FleetCounters(link, LocalCounters(SystemClock()))
    ask = budget(10.0, 0.5, "route:r")
    try:
        assert (await counters.admit(Admission(budgets=(ask,)))).admitted
        redis_server.kill()
        away = await counters.admit(Admission(budgets=(ask,)))
        assert away.admitted and away.ticket is not None and away.ticket.where == "local"
        again = await counters.admit(Admission(budgets=(ask,)))  # no wait: known to be away
        assert again.admitted
        assert FleetState(False, "error") in events or FleetState(False, "timeout") in events
        assert FleetFallback("counters", "down") in events
        row = UsageRow("2026-01-01", "k", "", "r", "m", 1, 10, 5, 0.25)
        assert away.ticket is not None
        await counters.settle(away.ticket, Settlement(15, 0.25, (row,)))
        assert counters.pending == 1
        redis_server.start()  # the same port and directory: what it acknowledged is back

        for _ in range(500):  # the watcher pings every 50 ms; the catch-up follows
            if not counters.pending and link.up:
                break
            await asyncio.sleep(0.02)
        assert not counters.pending and link.up
        assert FleetState(True, "reconnected") in events
        spent = redis_server.command(
            "HGET", link.key("budget", ask.counter, ask.period_id), "spent"
        )
        assert float(spent) == pytest.approx(0.25)
        usd = redis_server.command("HGET", link.key("usage", row.day), "k\t\tr\tm\tusd")
        assert float(usd) == pytest.approx(0.25)
    finally:
        await link.close()


async def test_a_redis_that_never_answers_costs_one_bounded_wait(tmp_path: Any) -> None:
    # A listening socket that accepts and never answers: the slow Redis.
    port = free_port()
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
    events: list[FleetEvent] = []
    url = f"redis://127.0.0.1:{port}/0"
    link = RedisLink(
        url, FleetSettings(url, timeout=0.05, retry_interval=60), SystemClock(), events.append
    )
    counters = FleetCounters(link, LocalCounters(SystemClock()))
    try:
        for _ in range(5):
            assert (await counters.admit(Admission((rate(100),)))).admitted
        reasons = [e.reason for e in events if isinstance(e, FleetFallback)]
        assert reasons[0] == "timeout" and reasons[1:] == ["down"] * 4
    finally:
        await link.close()
        server.close()

"""Keys, limits and budgets without sockets: the GCRA, budgets with held reservations on a fake
clock, budget strings and periods, key records and key auth, and the redactor's ``epk_`` shape."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.clock import FakeClock
from edgeproxy.keys import KeyRing, SqliteStore, VirtualKey, digest_of, make_key, parse_expiry
from edgeproxy.keys.ring import Refused, credential
from edgeproxy.limits import (
    Admission,
    BudgetAsk,
    LocalCounters,
    RateAsk,
    Settlement,
    UsageRow,
    gcra,
)
from edgeproxy.limits.periods import period_bounds
from edgeproxy.snapshot import Budget, Limits
from edgeproxy.telemetry.redact import redact

# -- the GCRA -----------------------------------------------------------------------------


@given(st.integers(1, 100_000))
def test_a_burst_of_exactly_the_limit_fits_a_minute(limit: int) -> None:
    tat, now = 0.0, 1000.0
    for _ in range(min(limit, 2000)):
        ok, tat, _ = gcra.take(tat, now, limit, 1)
        assert ok
    if limit <= 2000:
        ok, _, wait = gcra.take(tat, now, limit, 1)
        assert not ok and 0 < wait <= 60 / limit + 1e-6


def test_a_refused_request_takes_nothing_and_room_returns_with_time() -> None:
    ok, tat, _ = gcra.take(0.0, 0.0, 2, 2)
    assert ok
    ok, same, wait = gcra.take(tat, 0.0, 2, 1)
    assert not ok and same == tat and wait == pytest.approx(30.0)
    ok, _, _ = gcra.take(tat, 30.0, 2, 1)
    assert ok


def test_a_cost_above_the_whole_limit_waits_a_minute_not_forever() -> None:
    ok, _, wait = gcra.take(0.0, 0.0, 100, 101)
    assert not ok and wait == 60.0


def test_units_given_back_never_move_the_tat_behind_now() -> None:
    assert gcra.adjust(10.0, 5.0, 60, -100) == 5.0
    assert gcra.adjust(10.0, 5.0, 60, 3) == 13.0


# -- local counters on a fake clock ---------------------------------------------------------


def _budget(limit: float, reserve: float) -> BudgetAsk:
    start, end, name = period_bounds("month", time.time())
    return BudgetAsk("key:k", "key", "k", limit, reserve, "month", name, start, end, "key:budget")


async def test_local_rates_refill_on_the_clock() -> None:
    clock = FakeClock()
    counters = LocalCounters(clock)
    ask = Admission((RateAsk("r", 3, 1, "rpm 3"),))
    assert [(await counters.admit(ask)).admitted for _ in range(4)] == [True, True, True, False]
    clock.advance(20)  # one unit comes back every 20 s
    assert [(await counters.admit(ask)).admitted for _ in range(2)] == [True, False]


async def test_a_budget_loads_its_spend_once_and_counts_on() -> None:
    loads: list[str] = []

    async def spent(ask: BudgetAsk) -> float:
        loads.append(ask.counter)
        return 0.7

    rows: list[UsageRow] = []
    counters = LocalCounters(FakeClock(), spent=spent, record=rows.extend)
    first = await counters.admit(Admission(budgets=(_budget(1.0, 0.2),)))
    assert first.admitted and first.ticket is not None
    refused = await counters.admit(Admission(budgets=(_budget(1.0, 0.2),)))
    assert not refused.admitted and refused.retry_after >= 1  # 0.7 + 0.2 + 0.2 > 1
    row = UsageRow("d", "k", "", "r", "m", 1, 3, 4, 0.05)
    await counters.settle(first.ticket, Settlement(7, 0.05, (row,)))
    await counters.settle(first.ticket, Settlement(7, 0.05, (row,)))  # once only
    assert rows == [row] and loads == ["key:k"]
    assert (await counters.admit(Admission(budgets=(_budget(1.0, 0.2),)))).admitted  # 0.75 + 0.2


async def test_a_held_reservation_is_released_when_its_hold_ends() -> None:
    clock = FakeClock()
    counters = LocalCounters(clock)
    held = Admission(budgets=(_budget(1.0, 0.6),), hold=30)
    assert (await counters.admit(held)).admitted
    assert not (await counters.admit(held)).admitted
    clock.advance(31)  # the request never settled (its sidecar died): its hold runs out
    assert (await counters.admit(held)).admitted


# -- budgets and periods ------------------------------------------------------------------


@given(st.floats(0, 1e9, allow_nan=False), st.sampled_from(["day", "week", "month"]))
def test_a_budget_reads_back_as_written(usd: float, period: str) -> None:
    budget = Budget(round(usd, 6), period)  # type: ignore[arg-type]
    assert Budget.parse(str(budget)) == budget


@pytest.mark.parametrize(
    "text", ["50usd", "usd/month", "-1usd/day", "5usd/year", "1e3usd/day", "nanusd/day"]
)
def test_a_malformed_budget_is_refused_in_words(text: str) -> None:
    with pytest.raises(ValueError, match="<amount>usd/<period>"):
        Budget.parse(text)


def test_periods_are_utc_calendar_periods() -> None:
    moment = datetime(2025, 6, 18, 23, 59, tzinfo=UTC).timestamp()  # a Wednesday
    start, end, name = period_bounds("day", moment)
    assert name == "2025-06-18" and end - start == 86_400
    start, end, name = period_bounds("week", moment)
    assert name == "2025-W25" and datetime.fromtimestamp(start, UTC).weekday() == 0
    start, end, name = period_bounds("month", moment)
    assert name == "2025-06" and (end - start) == 30 * 86_400


# -- keys ---------------------------------------------------------------------------------


def test_a_key_is_stored_as_its_digest_only() -> None:
    key, record = make_key("ci", now=1.0, team="t", limits=Limits(rpm=5, budget=Budget(2, "day")))
    assert key.startswith("epk_") and len(key) == 36
    assert record.digest == digest_of(key) and key not in record.to_json().decode()
    assert record.hint.endswith(key[-4:])
    assert VirtualKey.from_json(record.to_json()) == record


def test_a_newer_records_fields_are_kept() -> None:
    _, record = make_key("ci", now=1.0)
    raw = record.to_json().replace(b'"v":1', b'"v":1,"scopes":["x"]')
    assert VirtualKey.from_json(raw).extra == {"scopes": ["x"]}


def test_expiry_dates_are_utc() -> None:
    assert parse_expiry("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError, match="--expires"):
        parse_expiry("next tuesday")


def test_the_redactor_knows_a_virtual_key_anywhere() -> None:
    key, _ = make_key("ci", now=1.0)
    assert key not in redact(f"upstream said: invalid key {key}, retry")
    assert key not in redact(f'{{"api_key":"{key}"}}')


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ({"Authorization": "Bearer epk_abc"}, "epk_abc"),
        ({"Authorization": "bearer   epk_abc  "}, "epk_abc"),
        ({"x-api-key": "epk_abc"}, "epk_abc"),
        ({"Authorization": "Basic Zm9v", "x-api-key": "epk_abc"}, "epk_abc"),
        ({"Authorization": "Bearer "}, ""),
        ({}, ""),
    ],
)
def test_a_credential_is_read_from_either_sdks_header(headers: dict[str, str], found: str) -> None:
    assert credential(headers) == found


class FlakySource:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.broken = False

    async def fetch_version(self) -> int | None:
        if self.broken:
            raise OSError("store away")
        return self.store.version()

    async def fetch_all(self) -> tuple[int, list[VirtualKey]]:
        return self.store.load()


async def test_the_ring_keeps_its_table_while_the_store_is_away(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "k.sqlite")
    key, record = make_key("ci", now=time.time())
    store.create(record)
    source = FlakySource(store)
    ring = KeyRing(source, FakeClock())
    await ring.check()
    assert ring.authenticate({"x-api-key": key}).id == record.id
    source.broken = True
    store.revoke(record.id, time.time())
    await ring.check()  # cannot read: the last table serves
    assert ring.authenticate({"x-api-key": key}).id == record.id
    source.broken = False
    await ring.check()
    with pytest.raises(Refused, match="revoked"):
        ring.authenticate({"x-api-key": key})
    with pytest.raises(Refused, match="unknown"):
        ring.authenticate({"x-api-key": key + "x"})
    with pytest.raises(Refused, match="missing"):
        ring.authenticate({})


def test_the_sqlite_store_sums_usage_by_scope_and_period(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "k.sqlite")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    store.add_usage([UsageRow(today, "k1", "t", "r", "m", 1, 10, 5, 0.5)])
    store.add_usage([UsageRow(today, "k1", "t", "r", "m", 2, 10, 5, 0.25)])
    store.add_usage([UsageRow("2000-01-01", "k1", "t", "r", "m", 1, 1, 1, 9.0)])
    start, end, _ = period_bounds("month", time.time())
    assert store.spent("key", "k1", start, end) == pytest.approx(0.75)
    assert store.spent("team", "t", start, end) == pytest.approx(0.75)
    assert store.spent("route", "other", start, end) == 0
    (row,) = store.usage(start, end)
    assert (row.requests, row.input_tokens, row.usd) == (3, 20, pytest.approx(0.75))

"""Load shedding: the in-flight bound, the bounded queue and its clock-driven timeout."""

from __future__ import annotations

import asyncio

import pytest

from edgeproxy.clock import FakeClock
from edgeproxy.resilience.shedding import Overloaded, Shedder
from edgeproxy.snapshot import ShedSettings


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_over_the_bound_are_rejected_at_once() -> None:
    shedder = Shedder(ShedSettings(max_in_flight=2, max_queue=0, retry_after=3), FakeClock())
    first, second = await shedder.acquire(), await shedder.acquire()
    with pytest.raises(Overloaded) as raised:
        await shedder.acquire()
    assert raised.value.reason == "queue_full" and raised.value.retry_after == 3
    assert shedder.in_flight == 2
    first.release()
    first.release()  # idempotent
    assert shedder.in_flight == 1
    with await shedder.acquire():
        assert shedder.in_flight == 2
    second.release()
    assert shedder.in_flight == 0
    assert shedder.snapshot()["rejected_total"] == {"queue_full": 1, "queue_timeout": 0}


async def test_the_queue_hands_slots_over_in_order_and_is_bounded() -> None:
    clock = FakeClock(auto_advance=False)
    shedder = Shedder(ShedSettings(max_in_flight=1, max_queue=2), clock)
    held = await shedder.acquire()
    a = asyncio.create_task(shedder.acquire())
    await settle()
    b = asyncio.create_task(shedder.acquire())
    await settle()
    assert shedder.queued == 2
    with pytest.raises(Overloaded):
        await shedder.acquire()  # the queue is full
    assert shedder.try_acquire() is None  # and nobody jumps it
    held.release()
    await settle()
    assert a.done() and not b.done()  # first come, first served
    assert shedder.in_flight == 1  # the slot moved; it was not freed
    a.result().release()
    await settle()
    b.result().release()
    assert shedder.in_flight == 0 and shedder.queued == 0


async def test_a_queued_request_times_out_on_the_clock() -> None:
    clock = FakeClock(auto_advance=False)
    shedder = Shedder(ShedSettings(max_in_flight=1, max_queue=4, max_queue_wait=2.0), clock)
    held = await shedder.acquire()
    waiting = asyncio.create_task(shedder.acquire())
    await settle()
    clock.advance(1.9)
    await settle()
    assert not waiting.done()
    clock.advance(0.1)
    await settle()
    with pytest.raises(Overloaded) as raised:
        await waiting
    assert raised.value.reason == "queue_timeout"
    assert shedder.queued == 0 and shedder.in_flight == 1
    held.release()
    assert shedder.in_flight == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_returns_a_granted_slot() -> None:
    clock = FakeClock(auto_advance=False)
    shedder = Shedder(ShedSettings(max_in_flight=1, max_queue=4), clock)
    held = await shedder.acquire()
    gone = asyncio.create_task(shedder.acquire())
    await settle()
    gone.cancel()
    await settle()
    assert shedder.queued == 0
    granted_then_gone = asyncio.create_task(shedder.acquire())
    await settle()
    held.release()  # hands the slot over ...
    granted_then_gone.cancel()  # ... to a client that left in the same instant
    await settle()
    assert granted_then_gone.cancelled()
    assert shedder.in_flight == 0 and shedder.queued == 0

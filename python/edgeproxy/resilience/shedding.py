"""Load shedding: a bound on in-flight requests with a short, bounded queue in front of it.

A sidecar that accepts everything turns an overload into timeouts for every request; refusing
the excess quickly (503 + Retry-After, which the OpenAI and Anthropic SDKs retry with backoff)
keeps the admitted ones fast. The queue only absorbs bursts: a full queue rejects at once, and a
queued request that waits longer than ``max_queue_wait`` is rejected too. Slots are handed to
waiters in arrival order (FIFO), so a burst cannot starve an early waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType

from edgeproxy.clock import Clock
from edgeproxy.errors import EdgeProxyError
from edgeproxy.snapshot.settings import ShedSettings


class Overloaded(EdgeProxyError):
    """Rejected: answer 503 with ``Retry-After: retry_after``."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(f"overloaded: {reason}")
        self.reason = reason  # "queue_full" or "queue_timeout"
        self.retry_after = retry_after


class Slot:
    """One admitted request. ``release()`` when it finishes (idempotent; ``with`` does it)."""

    __slots__ = ("_released", "_shedder")

    def __init__(self, shedder: Shedder) -> None:
        self._shedder = shedder
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._shedder._free()

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Shedder:
    def __init__(self, settings: ShedSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._in_flight = 0
        self._queue: deque[asyncio.Future[None]] = deque()
        self.admitted_total = 0
        self.queued_total = 0
        self.rejected_total: dict[str, int] = {"queue_full": 0, "queue_timeout": 0}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._queue)

    def try_acquire(self) -> Slot | None:
        """A slot if one is free now and nobody is queued ahead; never waits."""
        if self._in_flight < self.settings.max_in_flight and not self._queue:
            self._in_flight += 1
            self.admitted_total += 1
            return Slot(self)
        return None

    async def acquire(self) -> Slot:
        """A slot, waiting in the queue if needed; raises ``Overloaded`` at once when the queue is
        full, or after ``max_queue_wait`` (on the clock) in the queue."""
        slot = self.try_acquire()
        if slot is not None:
            return slot
        if len(self._queue) >= self.settings.max_queue:
            raise self._reject("queue_full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        self.queued_total += 1
        timer = asyncio.ensure_future(self._clock.sleep(self.settings.max_queue_wait))
        try:
            await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The client went away while queued; a slot handed over meanwhile goes back.
            self._abandon(waiter)
            raise
        finally:
            timer.cancel()
        if waiter.done():  # granted, even if the timer fired in the same instant
            self.admitted_total += 1
            return Slot(self)
        self._abandon(waiter)
        raise self._reject("queue_timeout")

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done() and not waiter.cancelled():
            self._free()  # it had been handed a slot it will never use
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._queue.remove(waiter)

    def _free(self) -> None:
        # Hand the slot straight to the oldest waiter: in_flight stays the same.
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_flight -= 1

    def _reject(self, reason: str) -> Overloaded:
        self.rejected_total[reason] += 1
        return Overloaded(reason, self.settings.retry_after)

    def snapshot(self) -> dict[str, object]:
        return {
            "in_flight": self._in_flight,
            "queued": len(self._queue),
            "admitted_total": self.admitted_total,
            "queued_total": self.queued_total,
            "rejected_total": dict(self.rejected_total),
        }

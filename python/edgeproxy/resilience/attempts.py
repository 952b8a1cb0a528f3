"""The attempt loop: one request's tries across its candidate chain.

One deadline and one attempt cap cover retries AND fallbacks (no 3x3x3 = 27 attempts):

1. Candidates are tried in chain order. An open breaker skips its candidate without a network
   call; a request whose every candidate is open fails fast (the caller answers 503).
2. A failure that may fail over moves on to the next candidate at once: another candidate now is
   faster than the same one after a backoff.
3. When no other candidate is left, a transient failure is retried on the same candidate after
   an exponential backoff with full jitter (``Retry-After`` as a floor), while attempts, the
   retry budget and the deadline allow (``backoff.decide`` holds these rules).
4. Every attempt after the first is a retry and needs the retry budget's consent, so a total
   outage cannot become a retry storm.
5. With a hedge delay (streams), a second candidate starts when the first has produced nothing
   within the delay; the first to answer wins and the other is cancelled at once.

The attempt itself (send, wait for the first token or the whole answer) is a callback, so this
module knows nothing of HTTP, and its logic runs on a fake clock in the unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from edgeproxy.clock import Clock
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.backoff import Action, Backoff, decide
from edgeproxy.snapshot import Candidate

T = TypeVar("T")


class Permit(Protocol):
    def success(self) -> None: ...

    def failure(self, failure: FailureClass) -> None: ...

    def release(self) -> None: ...


class Gate(Protocol):
    """Admission per candidate: the breaker registry, or anything with the same contract."""

    def acquire(self, key: str) -> Permit | None: ...

    def reopen_at(self, key: str) -> float | None: ...

    def eject(self, key: str, seconds: float, reason: str) -> None: ...


class RetryBudget(Protocol):
    def can_retry(self) -> bool: ...

    def try_retry(self) -> bool: ...


class Observer(Protocol):
    """Where the loop reports what it does (telemetry, logs). Every method is optional work."""

    def attempt_started(self, candidate: Candidate, number: int, hedge: bool) -> None: ...

    def attempt_finished(
        self, candidate: Candidate, number: int, failure: AttemptFailure | None, seconds: float
    ) -> None: ...

    def skipped(self, candidate: Candidate, reason: str) -> None: ...

    def backing_off(self, candidate: Candidate, seconds: float) -> None: ...


class Deadline:
    """The request's one deadline, read on the clock."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock = clock
        self.end = clock.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - self.clock.monotonic()

    def clip(self, limit: float) -> tuple[float, bool]:
        """How long a step may take, and whether the deadline (not ``limit``) bounds it."""
        remaining = self.remaining()
        return (remaining, True) if remaining < limit else (limit, False)


@dataclass
class AttemptRecord:
    candidate: Candidate
    failure: AttemptFailure | None
    seconds: float
    hedge: bool = False


@dataclass
class Outcome(Generic[T]):
    """What the loop did, whatever the result: the decision record of the request."""

    attempts: list[AttemptRecord] = field(default_factory=list)
    skipped: list[tuple[Candidate, str]] = field(default_factory=list)
    stopped_because: str = ""  # why the loop gave up, when it did
    served: Candidate | None = None
    value: T | None = None
    retry_after: float | None = None  # for a fast 503: when the first candidate may return
    # With ``defer_success``: the served attempt's breaker permit, for the caller to settle once
    # the answer is really complete (a stream can still fail after its first token).
    permit: Permit | None = None


class PassThrough(Exception):
    """A client error from the upstream: answer with it as is, no failover."""

    def __init__(self, candidate: Candidate, failure: AttemptFailure) -> None:
        super().__init__(str(failure))
        self.candidate = candidate
        self.failure = failure


Attempt = Callable[[Candidate], Awaitable[T]]


class AttemptLoop(Generic[T]):
    def __init__(
        self,
        *,
        chain: tuple[Candidate, ...],
        max_attempts: int,
        deadline: Deadline,
        gate: Gate,
        budget: RetryBudget,
        backoff: Backoff,
        try_hedge: Callable[[], bool] | None = None,
        observer: Observer,
        hedge_delay: float | None = None,
        discard: Callable[[T], None] | None = None,
        quota_ejection: float = 3600.0,
        defer_success: bool = False,
    ) -> None:
        self._chain = chain
        self._max_attempts = max_attempts
        self._deadline = deadline
        self._clock = deadline.clock
        self._gate = gate
        self._budget = budget
        self._backoff = backoff
        self._observer = observer
        self._hedge_delay = hedge_delay
        self._try_hedge = try_hedge or (lambda: True)
        self._discard = discard
        self._quota_ejection = quota_ejection
        self._defer_success = defer_success
        self.outcome: Outcome[T] = Outcome()
        self._retries: dict[str, int] = {}  # retries spent per candidate key

    async def run(self, attempt: Attempt[T]) -> Outcome[T]:
        """Try candidates until one answers. Raises PassThrough for a client error."""
        pending = list(self._chain)
        outcome = self.outcome
        try:
            while pending:
                if self._deadline.remaining() <= 0:
                    outcome.stopped_because = "the request deadline passed"
                    break
                candidate = pending.pop(0)
                permit = self._admit(candidate)
                if permit is None:
                    continue
                before = len(outcome.attempts)
                hedge = self._hedge_partner(pending) if self._hedge_delay is not None else None
                if await self._try(candidate, permit, attempt, hedge, pending) is not None:
                    return outcome
                failed = [r for r in outcome.attempts[before:] if r.failure is not None]
                for record in failed:
                    assert record.failure is not None
                    self._after_failure(record.candidate, record.failure, pending)
                if not await self._next_step(failed[-1], pending):
                    break
            else:
                if not outcome.stopped_because and outcome.attempts:
                    outcome.stopped_because = "no candidate left to try"
        except _Stop:
            pass
        if not outcome.attempts and outcome.skipped and not outcome.stopped_because:
            outcome.stopped_because = "every candidate's circuit breaker is open"
            reopen = [self._gate.reopen_at(c.key) for c, _ in outcome.skipped]
            times = [t - self._clock.monotonic() for t in reopen if t is not None]
            outcome.retry_after = max(1.0, min(times)) if times else None
        return outcome

    # -- steps --------------------------------------------------------------------------------

    def _admit(self, candidate: Candidate) -> Permit | None:
        permit = self._gate.acquire(candidate.key)
        if permit is None:
            reason = "circuit breaker open"
            self.outcome.skipped.append((candidate, reason))
            self._observer.skipped(candidate, reason)
            return None
        if self.outcome.attempts and not self._budget.try_retry():
            permit.release()
            self.outcome.stopped_because = (
                "the retry budget is exhausted (too many retries overall)"
            )
            raise _Stop
        return permit

    def _hedge_partner(self, pending: list[Candidate]) -> Candidate | None:
        return (
            pending[0] if pending and len(self.outcome.attempts) + 1 < self._max_attempts else None
        )

    async def _try(
        self,
        candidate: Candidate,
        permit: Permit,
        attempt: Attempt[T],
        hedge: Candidate | None,
        pending: list[Candidate],
    ) -> T | None:
        if hedge is None or self._hedge_delay is None:
            return await self._one(candidate, permit, attempt, hedge=False)
        return await self._hedged(candidate, permit, attempt, hedge, pending)

    async def _one(
        self, candidate: Candidate, permit: Permit, attempt: Attempt[T], *, hedge: bool
    ) -> T | None:
        number = len(self.outcome.attempts) + 1
        record = AttemptRecord(candidate, None, 0.0, hedge)
        self.outcome.attempts.append(record)
        self._observer.attempt_started(candidate, number, hedge)
        started = self._clock.monotonic()
        try:
            value = await attempt(candidate)
        except AttemptFailure as failure:
            record.failure = failure
            record.seconds = self._clock.monotonic() - started
            permit.failure(failure.failure)
            self._observer.attempt_finished(candidate, number, failure, record.seconds)
            if not failure.may_fail_over:
                raise PassThrough(candidate, failure) from None
            return None
        except BaseException:
            permit.release()
            raise
        record.seconds = self._clock.monotonic() - started
        if self._defer_success:
            self.outcome.permit = permit
        else:
            permit.success()
        self._observer.attempt_finished(candidate, number, None, record.seconds)
        self.outcome.served = candidate
        self.outcome.value = value
        return value

    async def _hedged(
        self,
        first: Candidate,
        permit: Permit,
        attempt: Attempt[T],
        second: Candidate,
        pending: list[Candidate],
    ) -> T | None:
        assert self._hedge_delay is not None
        racing = {asyncio.ensure_future(self._one(first, permit, attempt, hedge=False))}
        try:
            delay, _ = self._deadline.clip(self._hedge_delay)
            done, racing = await asyncio.wait(racing, timeout=max(delay, 0.0))
            if done:
                return done.pop().result()
            second_permit = self._gate.acquire(second.key)
            if second_permit is not None and self._try_hedge() and self._budget.try_retry():
                pending.remove(second)
                racing.add(
                    asyncio.ensure_future(self._one(second, second_permit, attempt, hedge=True))
                )
            elif second_permit is not None:
                second_permit.release()
            while racing:
                done, racing = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    value = task.result()  # a PassThrough propagates; the loser is cancelled below
                    if value is not None:
                        return value
            return None
        finally:
            # The loser (or everything, if this request was cancelled) stops at once; an answer
            # that arrived in the same instant is handed back for closing.
            for task in racing:
                task.cancel()
            for task in racing:
                with contextlib.suppress(asyncio.CancelledError, AttemptFailure, PassThrough):
                    late = await task
                    if late is not None and self._discard is not None:
                        self._discard(late)

    def _after_failure(
        self, candidate: Candidate, failure: AttemptFailure, pending: list[Candidate]
    ) -> None:
        if failure.failure is FailureClass.QUOTA_EXHAUSTED:
            # The account is out of credit: retrying this candidate is pointless for a while.
            self._gate.eject(candidate.key, self._quota_ejection, "quota exhausted")
        elif failure.failure is FailureClass.RATE_LIMITED and failure.retry_after and pending:
            # The upstream said when it will take requests again; until then other requests
            # skip it instead of each earning their own 429.
            self._gate.eject(candidate.key, failure.retry_after, "Retry-After")
        elif failure.failure is FailureClass.CONTEXT_LENGTH:
            # Only a model with a larger window can take this prompt: keep just those, and if
            # there are none the client gets the upstream's own answer.
            window = candidate.context_window or 0
            pending[:] = [c for c in pending if (c.context_window or 0) > window]
            if not pending:
                raise PassThrough(candidate, failure)

    async def _next_step(self, record: AttemptRecord, pending: list[Candidate]) -> bool:
        """Fail over, retry the same candidate after a pause, or stop (False)."""
        failure = record.failure
        assert failure is not None
        key = record.candidate.key
        decision = decide(
            failure.failure,
            retry_after=failure.retry_after,
            retries_on_candidate=self._retries.get(key, 0),
            next_candidate=bool(pending),
            attempts_left=self._max_attempts - len(self.outcome.attempts),
            remaining=self._deadline.remaining(),
            budget_allows=self._budget.can_retry(),
            backoff=self._backoff,
        )
        if decision.action is Action.GIVE_UP:
            self.outcome.stopped_because = decision.reason
            if failure.retry_after is not None:
                self.outcome.retry_after = failure.retry_after
            return False
        if decision.action is Action.RETRY_SAME:
            self._retries[key] = self._retries.get(key, 0) + 1
            self._observer.backing_off(record.candidate, decision.delay)
            await self._clock.sleep(decision.delay)
            pending.insert(0, record.candidate)
        return True


class _Stop(Exception):
    """Internal: the loop must end now (reason already recorded)."""

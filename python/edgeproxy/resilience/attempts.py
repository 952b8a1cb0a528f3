"""The attempt loop: one request's tries across its candidate chain.

One deadline and one attempt cap cover retries AND fallbacks (no 3x3x3 = 27 attempts):

1. Candidates are tried in chain order. An open breaker skips its candidate without a network
   call; a request whose every candidate is open fails fast (the caller answers 503).
2. A failure that may fail over moves on to the next candidate at once: another candidate now is
   faster than the same one after a backoff.
3. When no other candidate is left, a transient failure is retried on the same candidate after
   an exponential backoff with full jitter (``Retry-After`` as a floor, ``max_retry_after`` as a
   clamp), while attempts, the retry budget and the deadline allow (``backoff.decide``).
4. The retry budget bounds the attempts that add load to failing upstreams, not the ones that
   move a request to a healthy one (``budget`` has the reasoning): the first attempt and a
   failover onto a candidate whose breaker is closed and whose recent failure ratio is below
   ``retry_budget.failing_ratio`` are free; a retry of the same candidate, a failover onto a
   candidate that is failing itself (or half-open) and a hedge spend from it. A failing
   candidate the budget refuses is skipped, and the next one in the chain may still answer.
5. With a hedge delay (streams), a second candidate starts when the first has produced nothing
   within the delay (waited on the clock); the first to answer wins and the other is cancelled
   at once, an answer it produced in the same instant handed to ``discard``.
6. An attempt ends in an answer, an ``AttemptFailure``, or any other exception: that is a failure
   of this attempt (``internal_error``: logged once with its type, never its message) that fails
   over like any other, never an error of the whole request. Cancellation propagates.

The attempt itself (send, wait for the first token or the whole answer) is a callback, so this
module knows nothing of HTTP, and its logic runs on a fake clock in the unit tests.

What the loop does is reported as typed events (``edgeproxy.events``) to a listener with
``on_event``: ``AttemptStarted`` (its number over the whole request and its kind: first, retry,
failover, hedge or resume, decided here and never re-derived from the order), ``AttemptEnded``
(failed, abandoned, or answered when the loop settles the answer itself), ``CandidateSkipped``
and ``BackingOff``. With ``defer_success`` (streams: the attempt returns at the first token and
the answer is settled by the caller after the relay) a winning attempt is reported as
``FirstToken`` and its ``AttemptEnded`` is the caller's to emit, from ``Outcome.served_attempt``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from edgeproxy.clock import Clock
from edgeproxy.errors import EdgeProxyError
from edgeproxy.events import (
    AttemptEnded,
    AttemptKind,
    AttemptStarted,
    BackingOff,
    CandidateSkipped,
    FirstToken,
    RequestEvent,
    SkipReason,
)
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.backoff import Action, Backoff, decide
from edgeproxy.resilience.breaker import Ejection
from edgeproxy.snapshot import Candidate

T = TypeVar("T")

log = logging.getLogger("edgeproxy.attempts")


class Permit(Protocol):
    # The candidate's recent failures / outcomes (1.0 for a half-open trial): the budget's
    # measure of whether a failover onto it is free.
    @property
    def failure_ratio(self) -> float: ...

    def success(self) -> None: ...

    def failure(self, failure: FailureClass) -> None: ...

    def release(self) -> None: ...


class Gate(Protocol):
    """Admission per candidate: the breaker registry, or anything with the same contract."""

    def acquire(self, key: str) -> Permit | None: ...

    def reopen_at(self, key: str) -> float | None: ...

    def open_reason(self, key: str) -> str:
        """Why the candidate is out ("" when it is not), for the skip's detail."""
        ...

    def eject(self, key: str, seconds: float, reason: str) -> None: ...


_LIMITED = frozenset({SkipReason.PROVIDER_LIMIT, SkipReason.OVER_PROVIDER_LIMIT})


class CandidateLimits(Protocol):
    """The providers' own rate limits per candidate (docs/keys.md): asked before each attempt
    (hedges included) once the breaker admitted it."""

    async def take(self, candidate: Candidate) -> tuple[str, float] | None:
        """None: room for one more attempt (its reservation is held until the request is
        settled); else why not in words, and the seconds until there is room (``math.inf``:
        the request alone is more than the limit, so there never will be)."""
        ...


class RetryBudget(Protocol):
    def can_retry(self) -> bool: ...

    def try_retry(self) -> bool: ...

    def try_attempt(self, *, failover: bool, failure_ratio: float) -> bool: ...


class EventSink(Protocol):
    """Where the loop reports what it does: a ``RequestListener``, or anything with
    ``on_event``. Called inline: it must neither raise nor block."""

    def on_event(self, event: RequestEvent) -> None: ...


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
    number: int  # 1-based over the whole request (a resume loop continues the count)
    candidate: Candidate
    kind: AttemptKind
    failure: AttemptFailure | None = None
    seconds: float = 0.0

    @property
    def hedge(self) -> bool:
        return self.kind is AttemptKind.HEDGE


@dataclass
class Outcome(Generic[T]):
    """What the loop did, whatever the result: the decision record of the request."""

    attempts: list[AttemptRecord] = field(default_factory=list)
    skipped: list[CandidateSkipped] = field(default_factory=list)
    stopped_because: str = ""  # why the loop gave up, when it did
    served: Candidate | None = None
    served_attempt: AttemptRecord | None = None
    value: T | None = None
    retry_after: float | None = None  # for a fast 503: when the first candidate may return
    # With ``defer_success``: the served attempt's breaker permit, for the caller to settle once
    # the answer is really complete (a stream can still fail after its first token).
    permit: Permit | None = None


class PassThrough(EdgeProxyError):
    """A client error from the upstream: answer with it as is, no failover."""

    def __init__(self, candidate: Candidate, failure: AttemptFailure) -> None:
        super().__init__(str(failure))
        self.candidate = candidate
        self.failure = failure


# One try of a candidate, given the attempt's number over the request (for its trace context).
Attempt = Callable[[Candidate, int], Awaitable[T]]
# What an answer says about itself for ``AttemptEnded``: the upstream's status and model.
Describe = Callable[[T], tuple[int | None, str | None]]


@dataclass(slots=True)
class _Answer(Generic[T]):
    record: AttemptRecord
    value: T
    permit: Permit


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
        listener: EventSink,
        try_hedge: Callable[[], bool] | None = None,
        hedge_delay: float | None = None,
        discard: Callable[[T], None] | None = None,
        quota_ejection: float = 3600.0,  # also for auth_rejected / model_not_found
        defer_success: bool = False,
        first_number: int = 1,
        first_kind: AttemptKind = AttemptKind.FIRST,
        describe: Describe[T] | None = None,
        limits: CandidateLimits | None = None,
    ) -> None:
        """``first_number``/``first_kind``: a loop that continues a request (``RESUME``) numbers
        its attempts after the ones already made. ``describe``: the status and model of an
        answer, for its ``AttemptEnded`` (when the loop settles it). ``limits``: providers' rate
        limits; a candidate at its limit is skipped (``provider_limit``) like an open breaker."""
        self._chain = chain
        self._max_attempts = max_attempts
        self._deadline = deadline
        self._clock = deadline.clock
        self._gate = gate
        self._budget = budget
        self._backoff = backoff
        self._listener = listener
        self._hedge_delay = hedge_delay
        self._try_hedge = try_hedge or (lambda: True)
        self._discard = discard
        self._quota_ejection = quota_ejection
        self._defer_success = defer_success
        self._first_number = first_number
        self._first_kind = first_kind
        self._describe = describe
        self._limits = limits
        self._limit_waits: list[float] = []  # seconds until a limited candidate has room
        self.outcome: Outcome[T] = Outcome()
        self._retries: dict[str, int] = {}  # retries spent per candidate key
        self._tried: set[str] = set()  # candidate keys attempted by this loop
        self._denied = ""  # set when the budget refused a failing candidate

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
                admitted = self._admit(candidate)
                if admitted is None:
                    continue
                permit, kind = admitted
                if not await self._within_limits(candidate, permit):
                    continue
                before = len(outcome.attempts)
                hedge = self._hedge_partner(pending) if self._hedge_delay is not None else None
                answer = await self._try(candidate, permit, kind, attempt, hedge, pending)
                if answer is not None:
                    self._serve(answer)
                    return outcome
                failed = [r for r in outcome.attempts[before:] if r.failure is not None]
                for record in failed:
                    assert record.failure is not None
                    self._after_failure(record.candidate, record.failure, pending)
                if not failed or not await self._next_step(failed[-1], pending):
                    break
        except _Stop:
            pass
        if not outcome.stopped_because:
            if self._denied:
                outcome.stopped_because = self._denied
            elif outcome.attempts:
                outcome.stopped_because = "no candidate left to try"
            elif outcome.skipped:
                limited = sum(s.reason in _LIMITED for s in outcome.skipped)
                outcome.stopped_because = (
                    "every candidate is at its provider's rate limit"
                    if limited == len(outcome.skipped)
                    else "every candidate's circuit breaker is open"
                    + (" or its provider's rate limit reached" if limited else "")
                )
                reopen = [self._gate.reopen_at(s.candidate.key) for s in outcome.skipped]
                times = [t - self._clock.monotonic() for t in reopen if t is not None]
                times += self._limit_waits
                outcome.retry_after = max(1.0, min(times)) if times else None
        return outcome

    # -- steps --------------------------------------------------------------------------------

    def _emit(self, event: RequestEvent) -> None:
        self._listener.on_event(event)

    def _kind_of(self, candidate: Candidate) -> AttemptKind:
        if candidate.key in self._tried:
            return AttemptKind.RETRY
        return self._first_kind if not self.outcome.attempts else AttemptKind.FAILOVER

    def _admit(self, candidate: Candidate) -> tuple[Permit, AttemptKind] | None:
        permit = self._gate.acquire(candidate.key)
        if permit is None:
            why = self._gate.open_reason(candidate.key)
            detail = f"circuit breaker open: {why}" if why else "circuit breaker open"
            self._skip(candidate, SkipReason.BREAKER_OPEN, detail)
            return None
        kind = self._kind_of(candidate)
        if kind is AttemptKind.FIRST:
            return permit, kind
        if kind is AttemptKind.RETRY:
            if self._budget.try_retry():
                return permit, kind
            permit.release()
            self.outcome.stopped_because = (
                "the retry budget is exhausted (too many retries overall)"
            )
            raise _Stop
        # A failover (or a resume): free onto a healthy candidate, budgeted onto a failing one.
        ratio = permit.failure_ratio
        if self._budget.try_attempt(failover=True, failure_ratio=ratio):
            return permit, kind
        permit.release()
        self._skip(
            candidate,
            SkipReason.RETRY_BUDGET,
            f"failing ({ratio:.0%} of its recent requests) and the retry budget is spent",
        )
        self._denied = (
            "the retry budget is exhausted and the candidates left are failing themselves"
        )
        return None

    async def _within_limits(self, candidate: Candidate, permit: Permit) -> bool:
        """The provider's limit has room for this attempt; else the candidate is skipped."""
        if self._limits is None:
            return True
        refused = await self._limits.take(candidate)
        if refused is None:
            return True
        permit.release()
        detail, wait = refused
        if math.isinf(wait):
            self._skip(candidate, SkipReason.OVER_PROVIDER_LIMIT, detail)
            return False
        self._limit_waits.append(wait)
        self._skip(candidate, SkipReason.PROVIDER_LIMIT, detail)
        return False

    def _skip(self, candidate: Candidate, reason: SkipReason, detail: str) -> None:
        skipped = CandidateSkipped(candidate, reason, detail)
        self.outcome.skipped.append(skipped)
        self._emit(skipped)

    def _hedge_partner(self, pending: list[Candidate]) -> Candidate | None:
        return (
            pending[0] if pending and len(self.outcome.attempts) + 1 < self._max_attempts else None
        )

    async def _try(
        self,
        candidate: Candidate,
        permit: Permit,
        kind: AttemptKind,
        attempt: Attempt[T],
        hedge: Candidate | None,
        pending: list[Candidate],
    ) -> _Answer[T] | None:
        if hedge is None:
            return await self._one(candidate, permit, kind, attempt)
        return await self._hedged(candidate, permit, kind, attempt, hedge, pending)

    async def _one(
        self, candidate: Candidate, permit: Permit, kind: AttemptKind, attempt: Attempt[T]
    ) -> _Answer[T] | None:
        record = AttemptRecord(self._first_number + len(self.outcome.attempts), candidate, kind)
        self.outcome.attempts.append(record)
        self._tried.add(candidate.key)
        self._emit(AttemptStarted(record.number, candidate, kind))
        started = self._clock.monotonic()
        try:
            value = await attempt(candidate, record.number)
        except AttemptFailure as failure:
            self._failed(record, permit, failure, started)
            if not failure.may_fail_over:
                raise PassThrough(candidate, failure) from None
            return None
        except Exception as exc:  # any other error is this attempt's failure, not the request's
            self._failed(record, permit, _unexpected(candidate, exc), started)
            return None
        except BaseException:  # cancelled: a hedge that lost, or the client left
            record.seconds = self._clock.monotonic() - started
            permit.release()
            self._emit(AttemptEnded(record.number, candidate, kind, "abandoned", record.seconds))
            raise
        record.seconds = self._clock.monotonic() - started
        if self._defer_success:
            self._emit(FirstToken(record.number, record.seconds))
        else:
            permit.success()
            status, model = self._describe(value) if self._describe else (None, None)
            self._emit(
                AttemptEnded(
                    record.number,
                    candidate,
                    kind,
                    "ok",
                    record.seconds,
                    status=status,
                    response_model=model,
                )
            )
        return _Answer(record, value, permit)

    def _failed(
        self, record: AttemptRecord, permit: Permit, failure: AttemptFailure, started: float
    ) -> None:
        record.failure = failure
        record.seconds = self._clock.monotonic() - started
        permit.failure(failure.failure)
        self._emit(
            AttemptEnded(
                record.number,
                record.candidate,
                record.kind,
                str(failure.failure),
                record.seconds,
                failure=failure,
                status=failure.status,
            )
        )

    def _serve(self, answer: _Answer[T]) -> None:
        outcome = self.outcome
        outcome.served = answer.record.candidate
        outcome.served_attempt = answer.record
        outcome.value = answer.value
        if self._defer_success:
            outcome.permit = answer.permit

    def _drop(self, answer: _Answer[T]) -> None:
        """An answer nobody will use (the other side of a hedge won in the same instant)."""
        if self._defer_success:
            answer.permit.release()
            record = answer.record
            self._emit(
                AttemptEnded(
                    record.number, record.candidate, record.kind, "abandoned", record.seconds
                )
            )
        if self._discard is not None:
            self._discard(answer.value)

    async def _hedged(
        self,
        first: Candidate,
        permit: Permit,
        kind: AttemptKind,
        attempt: Attempt[T],
        second: Candidate,
        pending: list[Candidate],
    ) -> _Answer[T] | None:
        assert self._hedge_delay is not None
        racing: set[asyncio.Future[_Answer[T] | None]] = {
            asyncio.ensure_future(self._one(first, permit, kind, attempt))
        }
        try:
            delay, _ = self._deadline.clip(self._hedge_delay)
            timer = asyncio.ensure_future(self._clock.sleep(max(delay, 0.0)))
            try:
                watched: set[asyncio.Future[Any]] = {*racing, timer}
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
            if not any(task.done() for task in racing):
                await self._start_hedge(second, attempt, racing, pending)
            while racing:
                done, racing = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                answers: list[_Answer[T]] = []
                passed: PassThrough | None = None
                for task in done:
                    try:
                        result = task.result()
                    except PassThrough as exc:
                        passed = exc
                        continue
                    if result is not None:
                        answers.append(result)
                if answers:
                    for extra in answers[1:]:
                        self._drop(extra)
                    return answers[0]
                if passed is not None:
                    raise passed
            return None
        finally:
            # The loser (or everything, if this request was cancelled) stops at once; an answer
            # that arrived in the same instant is handed back for closing.
            for task in racing:
                task.cancel()
            for task in racing:
                try:
                    late = await task
                except (asyncio.CancelledError, PassThrough):
                    continue
                if late is not None:
                    self._drop(late)

    async def _start_hedge(
        self,
        second: Candidate,
        attempt: Attempt[T],
        racing: set[asyncio.Future[_Answer[T] | None]],
        pending: list[Candidate],
    ) -> None:
        permit = self._gate.acquire(second.key)
        if permit is None:
            return  # the loop skips it (and says so) if it ever gets to it
        if not (self._try_hedge() and self._budget.try_retry()):
            permit.release()
            return
        if not await self._within_limits(second, permit):
            pending.remove(second)  # skipped (and said so) now, not tried again later
            return
        pending.remove(second)
        racing.add(asyncio.ensure_future(self._one(second, permit, AttemptKind.HEDGE, attempt)))

    def _after_failure(
        self, candidate: Candidate, failure: AttemptFailure, pending: list[Candidate]
    ) -> None:
        if failure.failure is FailureClass.QUOTA_EXHAUSTED:
            # The account is out of credit: retrying this candidate is pointless for a while.
            self._gate.eject(candidate.key, self._quota_ejection, Ejection.QUOTA)
        elif failure.failure is FailureClass.AUTH_REJECTED:
            # The proxy's key is wrong, revoked or lacks access: no request will fare better
            # until an operator fixes it (a passing health probe, with the same key, ends it).
            self._gate.eject(candidate.key, self._quota_ejection, Ejection.AUTH_REJECTED)
        elif failure.failure is FailureClass.MODEL_NOT_FOUND:
            # The policy's model is retired or renamed (or its base URL is wrong): the same.
            self._gate.eject(candidate.key, self._quota_ejection, Ejection.MODEL_NOT_FOUND)
        elif failure.failure is FailureClass.RATE_LIMITED and failure.retry_after and pending:
            # The upstream said when it will take requests again; until then other requests
            # skip it instead of each earning their own 429 (capped at max_ejection_time, and
            # ended early by a passing health probe: the breaker sees to both).
            self._gate.eject(candidate.key, failure.retry_after, Ejection.RETRY_AFTER)
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
            self._emit(BackingOff(record.candidate, decision.delay))
            await self._clock.sleep(decision.delay)
            pending.insert(0, record.candidate)
        return True


def _unexpected(candidate: Candidate, exc: Exception) -> AttemptFailure:
    """An exception the attempt did not classify, as this attempt's failure. Logged once, with
    its type and where it was raised: never its text, which may quote a URL with a key in it."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = f"{Path(last.filename).name}:{last.lineno} in {last.name}"
    name = type(exc).__name__
    log.warning(
        "attempt failed with an unexpected error",
        extra={"candidate": candidate.key, "error": name, "where": where},
    )
    return AttemptFailure(FailureClass.INTERNAL, f"unexpected {name} inside the attempt")


class _Stop(Exception):
    """Internal: the loop must end now (reason already recorded)."""

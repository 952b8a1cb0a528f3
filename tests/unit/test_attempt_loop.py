"""The attempt loop on a fake clock, with a scripted fake attempt and the real breakers, retry
budget and backoff: deadlines, the budget (failover onto a healthy candidate is free, a storm is
bounded), hedging, context-length pruning, Retry-After, quota ejection, client errors passed
through, the fast 503, unexpected errors, and the typed events the loop emits."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from edgeproxy.clock import FakeClock
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
from edgeproxy.resilience.attempts import AttemptLoop, Deadline, Outcome, PassThrough, Permit
from edgeproxy.resilience.backoff import Backoff
from edgeproxy.resilience.breaker import BreakerRegistry
from edgeproxy.resilience.budget import RetryBudget
from edgeproxy.snapshot import (
    BackoffSettings,
    BreakerSettings,
    Candidate,
    RetryBudgetSettings,
)
from edgeproxy.wires import upstream_wire

SERVER_ERROR = FailureClass.SERVER_ERROR


def cand(key: str, window: int | None = None) -> Candidate:
    provider, region, model = key.split("/")
    return Candidate(
        provider=provider,
        region=region,
        model=model,
        upstream_model=model,
        wire=upstream_wire("openai"),
        base_url=f"http://{region}.example/v1",
        chat_url=f"http://{region}.example/v1/chat/completions",
        context_window=window,
        tags={},
        headers={},
    )


A, B, C = cand("p/a/m"), cand("p/b/m"), cand("q/c/m")


def fail(failure: FailureClass = SERVER_ERROR, **kw: Any) -> AttemptFailure:
    return AttemptFailure(failure, "scripted", **kw)


@dataclass
class Step:
    """What one attempt on a candidate does: take ``seconds`` on the clock, then answer
    ``result`` (or raise it, when it is an exception)."""

    result: Any
    seconds: float = 0.0


class Script:
    """The fake attempt: per candidate key, the steps of its successive attempts (the last one
    repeats). Records the order of the calls."""

    def __init__(self, clock: FakeClock, plan: dict[str, list[Step] | Step | Any]) -> None:
        self.clock = clock
        self.plan: dict[str, list[Step]] = {}
        for key, steps in plan.items():
            if isinstance(steps, Step):
                steps = [steps]
            elif not isinstance(steps, list):
                steps = [Step(steps)]
            self.plan[key] = steps
        self.calls: list[str] = []
        self.numbers: list[int] = []  # the attempt number each call was given

    async def __call__(self, candidate: Candidate, number: int) -> Any:
        self.calls.append(candidate.key)
        self.numbers.append(number)
        steps = self.plan[candidate.key]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if step.seconds:
            await self.clock.sleep(step.seconds)
        if isinstance(step.result, BaseException):
            raise step.result
        return step.result


class Gate:
    """The breaker registry as the loop's gate (what ``ResilienceEngine`` does)."""

    def __init__(self, breakers: BreakerRegistry) -> None:
        self.breakers = breakers

    def acquire(self, key: str) -> Permit | None:
        return self.breakers.get(key).acquire()

    def reopen_at(self, key: str) -> float | None:
        return self.breakers.get(key).reopen_at

    def open_reason(self, key: str) -> str:
        return self.breakers.get(key).reason

    def eject(self, key: str, seconds: float, reason: str) -> None:
        self.breakers.get(key).eject(seconds, reason)


@dataclass
class Events:
    seen: list[RequestEvent] = field(default_factory=list)

    def on_event(self, event: RequestEvent) -> None:
        self.seen.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind)]

    def kinds(self) -> list[AttemptKind]:
        return [e.kind for e in self.of(AttemptStarted)]


@dataclass
class World:
    """Process-wide state shared by the requests of one test."""

    clock: FakeClock
    breakers: BreakerRegistry
    budget: RetryBudget
    backoff: Backoff
    hedges_allowed: bool = True

    def loop(
        self, chain: tuple[Candidate, ...], events: Events | None = None, **kw: Any
    ) -> AttemptLoop[Any]:
        kw.setdefault("max_attempts", 3)
        total = kw.pop("total", 60.0)
        self.budget.request_started()
        return AttemptLoop(
            chain=chain,
            deadline=Deadline(self.clock, total),
            gate=Gate(self.breakers),
            budget=self.budget,
            backoff=self.backoff,
            listener=events if events is not None else Events(),
            try_hedge=lambda: self.hedges_allowed,
            **kw,
        )


def world(
    clock: FakeClock | None = None,
    *,
    breaker: BreakerSettings | None = None,
    budget: RetryBudgetSettings | None = None,
    backoff: BackoffSettings | None = None,
) -> World:
    clock = clock or FakeClock()
    breaker = breaker or BreakerSettings()
    return World(
        clock,
        BreakerRegistry(lambda _key: breaker, clock),
        RetryBudget(budget or RetryBudgetSettings(), clock),
        Backoff(backoff or BackoffSettings(), random.Random(7)),
    )


EMPTY_BUDGET = RetryBudgetSettings(ratio=0.0, min_retries_per_second=0.0)


async def settle() -> None:
    """Let every ready task run until they all wait (on the clock or each other)."""
    for _ in range(30):
        await asyncio.sleep(0)


# -- the order of things, and what the loop says about it ------------------------------------


async def test_the_first_candidate_answers_in_one_attempt() -> None:
    w = world()
    events = Events()
    outcome = await w.loop((A, B), events).run(Script(w.clock, {A.key: "answer"}))
    assert (outcome.served, outcome.value, len(outcome.attempts)) == (A, "answer", 1)
    assert outcome.served_attempt is outcome.attempts[0]
    assert events.seen == [
        AttemptStarted(1, A, AttemptKind.FIRST),
        AttemptEnded(1, A, AttemptKind.FIRST, "ok", 0.0),
    ]


async def test_a_failure_fails_over_at_once_and_the_loop_says_it_was_a_failover() -> None:
    w = world()
    events = Events()
    script = Script(w.clock, {A.key: fail(status=503), B.key: "from b"})
    outcome = await w.loop((A, B, C), events).run(script)
    assert (outcome.served, script.calls) == (B, [A.key, B.key])
    assert events.kinds() == [AttemptKind.FIRST, AttemptKind.FAILOVER]
    ended = events.of(AttemptEnded)
    assert [(e.number, e.outcome, e.status) for e in ended] == [
        (1, "server_error", 503),
        (2, "ok", None),
    ]
    assert w.clock.monotonic() == 1000.0  # failover never waits


async def test_the_last_candidate_is_retried_after_a_backoff_and_the_loop_says_retry() -> None:
    w = world()
    events = Events()
    script = Script(w.clock, {A.key: [Step(fail()), Step("second time lucky")]})
    outcome = await w.loop((A,), events).run(script)
    assert outcome.value == "second time lucky"
    assert events.kinds() == [AttemptKind.FIRST, AttemptKind.RETRY]
    (backoff,) = events.of(BackingOff)
    assert backoff.candidate == A and 0 <= backoff.seconds <= BackoffSettings().base
    assert w.clock.monotonic() == pytest.approx(1000.0 + backoff.seconds)


async def test_attempts_are_numbered_over_the_whole_request_when_a_loop_resumes_it() -> None:
    w = world()
    events = Events()
    script = Script(w.clock, {B.key: fail(), C.key: "continued"})
    loop = w.loop((B, C), events, first_number=4, first_kind=AttemptKind.RESUME)
    outcome = await loop.run(script)
    assert [(r.number, r.kind) for r in outcome.attempts] == [
        (4, AttemptKind.RESUME),
        (5, AttemptKind.FAILOVER),
    ]
    assert [e.number for e in events.of(AttemptStarted)] == [4, 5]
    assert script.numbers == [4, 5]  # each try is told its number (for its trace context)


async def test_the_attempt_cap_covers_retries_and_failovers_together() -> None:
    w = world()
    script = Script(w.clock, {A.key: fail(), B.key: fail(), C.key: "never asked"})
    outcome = await w.loop((A, B, C), max_attempts=2).run(script)
    assert outcome.served is None and script.calls == [A.key, B.key]
    assert outcome.stopped_because == "the attempt cap is reached"


async def test_an_answer_settled_later_is_reported_as_its_first_token_only() -> None:
    # defer_success (streams): the attempt returns at the first token; the permit goes to the
    # caller and so does the attempt's end (after the relay).
    w = world()
    events = Events()
    script = Script(w.clock, {A.key: Step("stream", seconds=0.5)})
    outcome = await w.loop((A,), events, defer_success=True).run(script)
    assert outcome.permit is not None
    assert events.seen == [AttemptStarted(1, A, AttemptKind.FIRST), FirstToken(1, 0.5)]
    outcome.permit.failure(FailureClass.CUT)  # the caller settles it: the breaker counts it
    assert w.breakers.get(A.key).snapshot()["window_failures"] == 1


async def test_the_answer_can_describe_its_status_and_model_for_the_end_event() -> None:
    w = world()
    events = Events()
    loop = w.loop((A,), events, describe=lambda value: (200, value["model"]))
    await loop.run(Script(w.clock, {A.key: {"model": "m-2025"}}))
    (ended,) = events.of(AttemptEnded)
    assert (ended.status, ended.response_model) == (200, "m-2025")


# -- the retry budget ------------------------------------------------------------------------


async def test_failover_onto_a_healthy_candidate_is_free_even_with_the_budget_spent() -> None:
    w = world(budget=EMPTY_BUDGET)
    assert not w.budget.can_retry()
    outcome = await w.loop((A, B)).run(Script(w.clock, {A.key: fail(), B.key: "served"}))
    assert outcome.served == B
    assert w.budget.snapshot()["free_failovers_total"] == 1
    assert w.budget.denied_total == 0


async def test_a_failing_candidate_spends_the_budget_and_without_it_is_skipped() -> None:
    w = world(budget=EMPTY_BUDGET)
    w.breakers.get(B.key).record_failure(SERVER_ERROR)  # B: 1 of 1 recent requests failed
    assert w.breakers.get(B.key).state == "closed"
    events = Events()
    script = Script(w.clock, {A.key: fail(), B.key: "never asked", C.key: "served by c"})
    outcome = await w.loop((A, B, C), events).run(script)
    assert (outcome.served, script.calls) == (C, [A.key, C.key])
    (skip,) = events.of(CandidateSkipped)
    assert (skip.candidate, skip.reason) == (B, SkipReason.RETRY_BUDGET)
    assert "100%" in skip.detail
    # With nothing healthy after it, the request ends and says why.
    script = Script(w.clock, {A.key: fail(), B.key: "never asked"})
    outcome = await w.loop((A, B)).run(script)
    assert outcome.served is None and script.calls == [A.key]
    assert "retry budget is exhausted" in outcome.stopped_because


async def test_a_failing_candidate_is_tried_while_the_budget_lasts() -> None:
    w = world(budget=RetryBudgetSettings(ratio=0.0, min_retries_per_second=0.1))  # 1 retry
    w.breakers.get(B.key).record_failure(SERVER_ERROR)
    outcome = await w.loop((A, B)).run(Script(w.clock, {A.key: fail(), B.key: "served"}))
    assert outcome.served == B
    assert w.budget.snapshot()["retries_in_window"] == 1


async def test_a_half_open_candidate_is_failing_until_its_trial_passes() -> None:
    w = world(budget=EMPTY_BUDGET, breaker=BreakerSettings(base_ejection_time=30.0))
    w.breakers.get(B.key).trip("probe failed")
    w.clock.advance(30)
    assert w.breakers.get(B.key).state == "half_open"
    script = Script(w.clock, {A.key: fail(), B.key: "never asked", C.key: "served"})
    outcome = await w.loop((A, B, C)).run(script)
    assert outcome.served == C
    assert w.breakers.get(B.key).snapshot()["half_open_trials"] == 0  # its trial slot freed


async def test_a_retry_of_the_same_candidate_always_spends_the_budget() -> None:
    w = world(budget=EMPTY_BUDGET)
    script = Script(w.clock, {A.key: [Step(fail()), Step("never asked")]})
    outcome = await w.loop((A,)).run(script)
    assert outcome.served is None and script.calls == [A.key]
    assert outcome.stopped_because == "the retry budget is exhausted"


@pytest.mark.parametrize("primary_failure_rate", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
async def test_with_a_healthy_fallback_every_request_is_served(primary_failure_rate: float) -> None:
    """1,000 requests at 50/s, default settings; the primary fails at the given rate."""
    w = world()
    rng = random.Random(11)
    served = attempts = 0
    requests = 1000
    for _ in range(requests):
        failing = rng.random() < primary_failure_rate
        script = Script(w.clock, {A.key: fail() if failing else "a", B.key: "b"})
        outcome = await w.loop((A, B)).run(script)
        served += outcome.served is not None
        attempts += len(outcome.attempts)
        w.clock.advance(0.02)
    assert served == requests
    assert attempts / requests <= 1 + primary_failure_rate + 0.05


async def test_a_total_outage_is_held_to_the_budget() -> None:
    """Every candidate fails, 100 requests/s for 60 s. The breakers are kept from opening here,
    so the budget alone must hold the extra attempts to ratio + floor (20 % + 1/s)."""
    no_trips = BreakerSettings(consecutive_failures=10**9, min_requests=10**9)
    budget = RetryBudgetSettings(ratio=0.2, min_retries_per_second=1.0, window=10.0)
    w = world(breaker=no_trips, budget=budget)
    requests = attempts = 0
    for _ in range(6000):
        script = Script(w.clock, {A.key: fail(), B.key: fail(), C.key: fail()})
        outcome = await w.loop((A, B, C)).run(script)
        requests += 1
        attempts += len(outcome.attempts)
        snap = w.budget.snapshot()
        assert snap["retries_in_window"] <= snap["allowance"]
        w.clock.advance(0.01)
    # Free failovers happen only before B and C have failed once: a handful, not a share.
    assert w.budget.snapshot()["free_failovers_total"] <= 4
    assert attempts / requests <= 1 + 0.2 + 1.0 / 100 + 0.01


async def test_in_a_total_outage_the_breakers_open_and_requests_fail_fast() -> None:
    w = world()
    for _ in range(20):
        await w.loop((A, B)).run(Script(w.clock, {A.key: fail(), B.key: fail()}))
    script = Script(w.clock, {A.key: fail(), B.key: fail()})
    outcome = await w.loop((A, B)).run(script)
    assert script.calls == [] and outcome.attempts == []


# -- deadlines -------------------------------------------------------------------------------


async def test_an_attempt_that_outlives_the_deadline_ends_the_request() -> None:
    w = world()
    script = Script(w.clock, {A.key: Step(fail(FailureClass.RESET), seconds=12), B.key: "late"})
    outcome = await w.loop((A, B), total=10).run(script)
    assert outcome.served is None and script.calls == [A.key]
    assert outcome.stopped_because == "the request deadline is (almost) spent"


async def test_an_answer_that_arrives_after_the_deadline_is_still_the_answer() -> None:
    # The attempt enforces its own limits (clipped to the deadline); what it returns is served.
    w = world()
    outcome = await w.loop((A,), total=10).run(Script(w.clock, {A.key: Step("slow", 11)}))
    assert outcome.value == "slow"


async def test_no_attempt_starts_with_less_than_min_attempt_time_left() -> None:
    w = world()  # min_attempt_time: 1 s
    script = Script(w.clock, {A.key: Step(fail(), seconds=9.5), B.key: "never asked"})
    outcome = await w.loop((A, B), total=10).run(script)
    assert script.calls == [A.key]
    assert outcome.stopped_because == "the request deadline is (almost) spent"


async def test_a_failure_classed_deadline_is_not_followed_by_another_attempt() -> None:
    w = world()
    script = Script(w.clock, {A.key: fail(FailureClass.DEADLINE), B.key: "never asked"})
    outcome = await w.loop((A, B)).run(script)
    assert script.calls == [A.key] and outcome.served is None


async def test_a_backoff_that_does_not_fit_the_deadline_is_not_taken() -> None:
    w = world()
    throttled = fail(FailureClass.RATE_LIMITED, retry_after=8.0)
    script = Script(w.clock, {A.key: Step(throttled, seconds=3)})
    outcome = await w.loop((A,), total=10).run(script)
    assert script.calls == [A.key]
    assert "does not fit the deadline" in outcome.stopped_because
    assert w.clock.monotonic() == 1003.0  # no wait


# -- Retry-After and quota -------------------------------------------------------------------


async def test_retry_after_is_the_floor_of_the_wait_before_a_retry() -> None:
    w = world()
    events = Events()
    throttled = fail(FailureClass.RATE_LIMITED, retry_after=3.0)
    script = Script(w.clock, {A.key: [Step(throttled), Step("ok")]})
    outcome = await w.loop((A,), events).run(script)
    assert outcome.value == "ok"
    (backoff,) = events.of(BackingOff)
    assert backoff.seconds == 3.0 and w.clock.monotonic() == 1003.0


async def test_a_retry_after_longer_than_max_retry_after_is_not_waited_out() -> None:
    w = world()  # max_retry_after: 20 s
    script = Script(w.clock, {A.key: fail(FailureClass.RATE_LIMITED, retry_after=60.0)})
    outcome = await w.loop((A,)).run(script)
    assert script.calls == [A.key] and w.clock.monotonic() == 1000.0
    assert outcome.retry_after == 60.0  # for the client's own Retry-After
    assert "too long to wait" in outcome.stopped_because


async def test_retry_after_ejects_the_candidate_for_that_long_while_failing_over() -> None:
    w = world()
    throttled = fail(FailureClass.RATE_LIMITED, retry_after=30.0)
    await w.loop((A, B)).run(Script(w.clock, {A.key: throttled, B.key: "b"}))
    breaker = w.breakers.get(A.key)
    assert breaker.state == "open" and breaker.reopen_at == 1030.0
    script = Script(w.clock, {A.key: "never asked", B.key: "b"})
    outcome = await w.loop((A, B)).run(script)
    assert script.calls == [B.key] and outcome.served == B
    assert [s.reason for s in outcome.skipped] == [SkipReason.BREAKER_OPEN]
    # The skip says why the candidate is out, not only that it is.
    assert outcome.skipped[0].detail == f"circuit breaker open: {breaker.reason}"
    assert breaker.reason


async def test_a_retry_after_ejection_is_capped_and_a_passing_probe_ends_it() -> None:
    w = world(breaker=BreakerSettings(max_ejection_time=300.0))
    throttled = fail(FailureClass.RATE_LIMITED, retry_after=86_400.0)
    await w.loop((A, B)).run(Script(w.clock, {A.key: throttled, B.key: "b"}))
    breaker = w.breakers.get(A.key)
    assert breaker.reopen_at == 1300.0  # not a day
    breaker.probe_succeeded()
    assert breaker.state == "half_open"  # the upstream's word is a hint, not a sentence


async def test_an_exhausted_quota_ejects_at_once_for_quota_ejection_and_is_held() -> None:
    w = world()
    quota = fail(FailureClass.QUOTA_EXHAUSTED, status=429, code="insufficient_quota")
    loop = w.loop((A, B), quota_ejection=3600.0)
    outcome = await loop.run(Script(w.clock, {A.key: quota, B.key: "b"}))
    assert outcome.served == B
    breaker = w.breakers.get(A.key)
    assert breaker.reopen_at == 4600.0  # quota_ejection, not capped by max_ejection_time
    breaker.probe_succeeded()
    assert breaker.state == "open"  # /models answers on an exhausted account: held


# -- failures that are not the upstream's ------------------------------------------------------


async def test_a_client_error_is_passed_through_without_failover() -> None:
    w = world()
    rejected = fail(FailureClass.CLIENT_ERROR, status=400, body=b'{"error": {}}')
    script = Script(w.clock, {A.key: rejected, B.key: "never asked"})
    loop = w.loop((A, B))
    with pytest.raises(PassThrough) as info:
        await loop.run(script)
    assert (info.value.candidate, info.value.failure) == (A, rejected)
    assert script.calls == [A.key]
    assert w.breakers.get(A.key).snapshot()["window_failures"] == 0  # not the upstream's fault


async def test_context_length_only_tries_candidates_with_a_larger_window() -> None:
    small, same, large = cand("p/a/m", 8000), cand("p/b/m", 8000), cand("q/c/m", 128_000)
    w = world()
    too_long = fail(FailureClass.CONTEXT_LENGTH, status=400)
    script = Script(w.clock, {small.key: too_long, same.key: "never asked", large.key: "fits"})
    outcome = await w.loop((small, same, large)).run(script)
    assert (outcome.served, script.calls) == (large, [small.key, large.key])
    assert w.breakers.get(small.key).snapshot()["window_failures"] == 0
    # No larger window left: the upstream's own answer goes to the client.
    script = Script(w.clock, {small.key: too_long, same.key: "never asked"})
    with pytest.raises(PassThrough):
        await w.loop((small, same)).run(script)
    assert script.calls == [small.key]


async def test_when_every_breaker_is_open_the_request_fails_fast_with_a_retry_after() -> None:
    w = world(breaker=BreakerSettings(base_ejection_time=30.0))
    w.breakers.get(A.key).trip("down")
    w.clock.advance(10)
    w.breakers.get(B.key).trip("down")
    events = Events()
    script = Script(w.clock, {A.key: "never asked", B.key: "never asked"})
    outcome = await w.loop((A, B), events).run(script)
    assert script.calls == [] and outcome.attempts == []
    assert outcome.stopped_because == "every candidate's circuit breaker is open"
    assert outcome.retry_after == 20.0  # A half-opens first
    assert [(e.candidate, e.reason) for e in events.of(CandidateSkipped)] == [
        (A, SkipReason.BREAKER_OPEN),
        (B, SkipReason.BREAKER_OPEN),
    ]


@pytest.mark.parametrize(
    "error",
    [
        ValueError("Port out of range 0-65535"),
        UnicodeError("label too long"),
        KeyError("usage"),
        TypeError("'str' object cannot be interpreted as an integer"),
        OSError("sk-secret in a message"),
    ],
)
async def test_an_unexpected_error_inside_an_attempt_is_its_failure_and_fails_over(
    error: Exception,
) -> None:
    w = world()
    events = Events()
    outcome = await w.loop((A, B), events).run(Script(w.clock, {A.key: error, B.key: "b"}))
    assert outcome.served == B
    failure = outcome.attempts[0].failure
    assert failure is not None and failure.failure is FailureClass.INTERNAL
    assert type(error).__name__ in failure.detail
    assert str(error) not in failure.detail  # its text may quote a secret
    assert events.of(AttemptEnded)[0].outcome == "internal_error"
    assert w.breakers.get(A.key).snapshot()["window_failures"] == 1


async def test_cancellation_propagates_and_frees_the_attempts_permit() -> None:
    clock = FakeClock(auto_advance=False)
    w = world(clock, breaker=BreakerSettings(base_ejection_time=30.0))
    w.breakers.get(A.key).trip("down")
    clock.advance(30)  # half-open: one trial slot
    events = Events()
    task = asyncio.ensure_future(w.loop((A,), events).run(Script(clock, {A.key: Step("x", 5)})))
    await settle()
    assert w.breakers.get(A.key).snapshot()["half_open_trials"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert w.breakers.get(A.key).snapshot()["half_open_trials"] == 0
    assert events.of(AttemptEnded)[0].outcome == "abandoned"


# -- hedging ---------------------------------------------------------------------------------


class Discarded(list[Any]):
    def __call__(self, value: Any) -> None:
        self.append(value)


def hedged(
    w: World, events: Events, discard: Callable[[Any], None] | None = None, **kw: Any
) -> AttemptLoop[Any]:
    return w.loop((A, B, C), events, hedge_delay=1.0, defer_success=True, discard=discard, **kw)


async def test_a_slow_first_candidate_is_hedged_after_the_delay_and_the_loser_cancelled() -> None:
    clock = FakeClock(auto_advance=False)
    w = world(clock)
    events, discarded = Events(), Discarded()
    script = Script(clock, {A.key: Step("a", 5), B.key: Step("b", 0.5)})
    task = asyncio.ensure_future(hedged(w, events, discarded).run(script))
    await settle()
    assert script.calls == [A.key]  # the hedge waits for its delay
    clock.advance(0.99)
    await settle()
    assert script.calls == [A.key]
    clock.advance(0.01)
    await settle()
    assert script.calls == [A.key, B.key]
    clock.advance(0.5)
    outcome: Outcome[Any] = await task
    assert (outcome.served, outcome.value) == (B, "b")
    assert events.kinds() == [AttemptKind.FIRST, AttemptKind.HEDGE]
    assert [(e.number, e.outcome) for e in events.of(AttemptEnded)] == [(1, "abandoned")]
    assert discarded == []  # the loser never answered: nothing to close
    assert w.breakers.get(A.key).snapshot()["window_failures"] == 0  # abandoned, not failed
    assert clock.sleepers == 0  # the loser's wait is gone too


async def test_no_hedge_when_the_first_answers_within_the_delay() -> None:
    clock = FakeClock(auto_advance=False)
    w = world(clock)
    events = Events()
    script = Script(clock, {A.key: Step("a", 0.5), B.key: "never asked"})
    task = asyncio.ensure_future(hedged(w, events).run(script))
    await settle()
    clock.advance(0.5)
    outcome = await task
    assert (outcome.served, script.calls) == (A, [A.key])
    assert clock.sleepers == 0  # the hedge timer did not outlive the race


async def test_a_first_candidate_failing_within_the_delay_fails_over_without_a_hedge() -> None:
    clock = FakeClock(auto_advance=False)
    w = world(clock)
    events = Events()
    script = Script(clock, {A.key: Step(fail(), 0.2), B.key: "b"})
    task = asyncio.ensure_future(hedged(w, events).run(script))
    await settle()
    clock.advance(0.2)
    await settle()
    clock.advance(1.0)  # B's own hedge delay (C is its partner) passes without effect
    outcome = await task
    assert outcome.served == B
    assert events.kinds() == [AttemptKind.FIRST, AttemptKind.FAILOVER]


async def test_two_answers_in_the_same_instant_serve_one_and_discard_the_other() -> None:
    clock = FakeClock(auto_advance=False)
    w = world(clock)
    events, discarded = Events(), Discarded()
    script = Script(clock, {A.key: Step("a", 2.0), B.key: Step("b", 1.0)})
    task = asyncio.ensure_future(hedged(w, events, discarded).run(script))
    await settle()
    clock.advance(1.0)  # the hedge starts; B will answer at 2.0, like A
    await settle()
    clock.advance(1.0)
    outcome = await task
    assert outcome.served in (A, B)
    assert len(discarded) == 1 and discarded[0] != outcome.value
    (abandoned,) = events.of(AttemptEnded)
    assert abandoned.outcome == "abandoned" and abandoned.candidate != outcome.served
    assert len(events.of(FirstToken)) == 2


@pytest.mark.parametrize("why", ["hedge cap", "retry budget", "attempt cap", "open breaker"])
async def test_no_hedge_without_the_cap_the_budget_an_attempt_or_the_partners_breaker(
    why: str,
) -> None:
    clock = FakeClock(auto_advance=False)
    w = world(clock, budget=EMPTY_BUDGET if why == "retry budget" else None)
    w.hedges_allowed = why != "hedge cap"
    if why == "open breaker":
        w.breakers.get(B.key).trip("down")
    kw = {"max_attempts": 1} if why == "attempt cap" else {}
    script = Script(clock, {A.key: Step("a", 5), B.key: "never asked"})
    task = asyncio.ensure_future(hedged(w, Events(), **kw).run(script))
    await settle()
    clock.advance(1.0)
    await settle()
    assert script.calls == [A.key]
    clock.advance(4.0)
    outcome = await task
    assert outcome.served == A

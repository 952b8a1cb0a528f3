"""Shadow traffic (opt-in, ``routes.<name>.auto.shadow``): a sampled share of a task's live
requests mirrored to its challenger, the answers discarded, graded by the judge.

- **Which requests**: the router samples ``share`` of an ``auto`` route's requests of a task
  that has a challenger: the ramping one, else the best-ranked candidate after the incumbent.
- **Off the request's path**: the request only hands the job over (a bounded queue; full: the
  job is dropped and counted) once its first attempt has answered; a background worker sends the
  mirrored call later, through the proxy's upstream client and the challenger's wire. Nothing of
  it ever reaches the app, and the app's request never waits for it.
- **Capped in cost**: before each mirrored call (and each judging) its worst case is reserved
  against ``max_cost`` USD per ``window`` (a request without ``max_tokens`` is mirrored with
  ``max_tokens`` 1024, so the worst case is bounded); a call the budget cannot cover is not
  sent.
- **Graded**: with ``judge: true`` and an ``evals.judge``, the answer is scored like a ``judge``
  grader in ``score`` mode (the suite's rubric for the task, else one ``overall`` criterion; no
  reference: live requests carry none), passing at the rubric's ``pass_score`` (0.7). The pass
  rate and its 95 % interval per candidate are the live quality estimate; a ramping challenger
  whose interval lies wholly below the task's floor is rolled back (``ramp.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from edgeproxy.auto.ramp import Graded
from edgeproxy.clock import Clock
from edgeproxy.evals.budget import worst_case_usd
from edgeproxy.evals.client import call
from edgeproxy.evals.judge import (
    JudgeError,
    conversation_text,
    normalised,
    parse_scores,
    score_messages,
)
from edgeproxy.evals.suite import Criterion
from edgeproxy.snapshot import Candidate, ShadowSettings
from edgeproxy.upstreams.http1 import Http1Pool

log = logging.getLogger("edgeproxy.auto")

QUEUE: Final = 64  # jobs waiting; more are dropped
IN_FLIGHT: Final = 4  # mirrored calls at once
DEFAULT_MAX_TOKENS: Final = 1024  # for a mirrored request that asked for no limit
JUDGE_MAX_TOKENS: Final = 400
OVERALL: Final = (
    Criterion(name="overall", description="Answers the request correctly and completely."),
)
DEFAULT_PASS_SCORE: Final = 0.7

Rubric = Callable[[str], tuple[Sequence[Criterion], float]]


class WindowBudget:
    """USD spent and reserved per window of ``window`` seconds on the clock."""

    def __init__(self, limit: float, window: float, clock: Clock) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.started = clock.monotonic()
        self.spent = 0.0
        self.reserved = 0.0
        self.refused = 0

    def _roll(self) -> None:
        now = self.clock.monotonic()
        if now - self.started >= self.window:
            self.started = now
            self.spent = 0.0

    def reserve(self, worst: float) -> bool:
        self._roll()
        if self.spent + self.reserved + worst > self.limit + 1e-12:
            self.refused += 1
            return False
        self.reserved += worst
        return True

    def settle(self, worst: float, actual: float) -> None:
        self.reserved = max(0.0, self.reserved - worst)
        self.spent += actual

    def as_dict(self) -> dict[str, object]:
        return {
            "max_cost_usd": self.limit,
            "window_s": self.window,
            "spent_usd": round(self.spent, 8),
            "refused": self.refused,
        }


class Sink(Protocol):
    """Where a job's outcome goes (the task's state): ``graded`` per candidate, and a check."""

    def graded(self, candidate: str) -> Graded: ...

    def check_rollback(self, now: float, wall: float) -> object: ...


@dataclass(frozen=True, slots=True)
class ShadowJob:
    route: str
    task: str
    target: Candidate
    body: dict[str, Any]
    settings: ShadowSettings
    sink: Sink


class ShadowRunner:
    """The background worker of shadow traffic (see the module docstring)."""

    def __init__(
        self,
        clock: Clock,
        http: Http1Pool,
        judge: Candidate | None,
        rubric: Rubric,
    ) -> None:
        self.clock = clock
        self.http = http
        self.judge = judge
        self.rubric = rubric
        self.budgets: dict[str, WindowBudget] = {}
        self.queue: asyncio.Queue[ShadowJob] = asyncio.Queue(QUEUE)
        self.dropped = 0
        self.sent = 0
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(IN_FLIGHT)

    def budget(self, route: str, settings: ShadowSettings) -> WindowBudget:
        budget = self.budgets.get(route)
        if budget is None or (budget.limit, budget.window) != (settings.max_cost, settings.window):
            budget = self.budgets[route] = WindowBudget(
                settings.max_cost, settings.window, self.clock
            )
        return budget

    def submit(self, job: ShadowJob) -> bool:
        """Hand a job over (O(1), never waits); False when the queue is full."""
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="auto-shadow")

    async def stop(self) -> None:
        tasks = [t for t in (self._worker, *self._running) if t is not None]
        self._worker = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            await self._slots.acquire()
            task = asyncio.create_task(self._guarded(job))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _guarded(self, job: ShadowJob) -> None:
        try:
            await self.run(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a shadow call failed unexpectedly", extra={"route": job.route})
        finally:
            self._slots.release()

    async def run(self, job: ShadowJob) -> None:
        """One mirrored call, and its judging (the request it mirrors is long answered)."""
        settings = job.settings
        budget = self.budget(job.route, settings)
        body = dict(job.body)
        if not (body.get("max_tokens") or body.get("max_completion_tokens")):
            body["max_tokens"] = DEFAULT_MAX_TOKENS
        for drop in ("stream", "stream_options", "n"):
            body.pop(drop, None)
        worst = worst_case_usd(job.target, body)
        if not budget.reserve(worst):
            return
        try:
            result = await call(
                self.http, job.target, body, clock=self.clock, limit=settings.timeout
            )
        except BaseException:
            budget.settle(worst, worst)
            raise
        budget.settle(worst, result.cost_usd)
        self.sent += 1
        graded = job.sink.graded(job.target.key)
        graded.calls += 1
        graded.cost_usd += result.cost_usd
        if not result.ok:
            graded.failed += 1
            return
        if not settings.judge or self.judge is None:
            return
        score = await self._judge(job, body, result.text, budget)
        if score is None:
            return
        criteria_pass = self.rubric(job.task)[1]
        graded.graded += 1
        graded.score_sum += score
        if score >= criteria_pass:
            graded.passed += 1
        job.sink.check_rollback(self.clock.monotonic(), time.time())

    async def _judge(
        self,
        job: ShadowJob,
        body: dict[str, Any],
        answer: str,
        budget: WindowBudget,
    ) -> float | None:
        judge = self.judge
        assert judge is not None
        criteria, _ = self.rubric(job.task)
        messages = score_messages(
            job.task, conversation_text(body.get("messages") or []), criteria, answer, None
        )
        request = {"messages": messages, "max_tokens": JUDGE_MAX_TOKENS, "temperature": 0}
        worst = worst_case_usd(judge, request)
        if not budget.reserve(worst):
            return None
        try:
            verdict = await call(
                self.http, judge, request, clock=self.clock, limit=job.settings.timeout
            )
        except BaseException:
            budget.settle(worst, worst)
            raise
        budget.settle(worst, verdict.cost_usd)
        job.sink.graded(job.target.key).cost_usd += verdict.cost_usd
        if not verdict.ok:
            return None
        try:
            return normalised(parse_scores(verdict.text, criteria))
        except JudgeError:
            return None

    def as_dict(self) -> dict[str, object]:
        return {
            "queued": self.queue.qsize(),
            "in_flight": len(self._running),
            "sent": self.sent,
            "dropped": self.dropped,
            "judge": self.judge.key if self.judge is not None else None,
            "budgets": {route: b.as_dict() for route, b in self.budgets.items()},
        }

"""``edgeproxy eval run``: every suite item against every candidate, graded, into a scorecard.

Work is one *unit* per candidate x item x repeat, taken in the order repeat, item, candidate (so
the providers share the load). ``concurrency`` workers take units; every call (candidate or
judge) first waits for its ``rps`` slot and reserves its worst-case cost under the cap
(``budget.py``). A unit is sent up to ``1 + retries`` times while it fails in a way a retry may
cure (5xx, 429, overloaded, a broken stream, a timeout), with jittered exponential backoff; then
its answer is graded (``graders.py``, or the judge). Each finished unit is appended to the
progress file before the next is counted, so an interruption loses only the units in flight
and a rerun skips the rest. When the cap refuses a call the run stops taking units, lets those
in flight finish, and writes a scorecard marked incomplete.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from edgeproxy.clock import Clock, SystemClock
from edgeproxy.cost import Usage
from edgeproxy.evals import aggregate
from edgeproxy.evals.budget import CostCap, Pacer, worst_case_usd
from edgeproxy.evals.client import CallResult, call
from edgeproxy.evals.graders import grade_text
from edgeproxy.evals.judge import (
    JudgeError,
    PairwiseOutcome,
    conversation_text,
    normalised,
    pairwise_messages,
    parse_scores,
    parse_winner,
    score_messages,
)
from edgeproxy.evals.progress import (
    ProgressWriter,
    Record,
    open_progress,
    usage_sum,
)
from edgeproxy.evals.scorecard import PolicyInfo, Scorecard, SuiteInfo, now
from edgeproxy.evals.suite import Item, JudgeGrader, Suite, reference_text
from edgeproxy.snapshot import Candidate, Policy
from edgeproxy.upstreams.http1 import Http1Pool

JUDGE_MAX_TOKENS: Final = 400


class CapReached(Exception):
    """The cost cap refused a call: the unit is not recorded (a rerun with a larger cap does it)."""


@dataclass(frozen=True)
class EvalOptions:
    policy: Policy
    suite: Suite
    candidates: Sequence[Candidate]
    out: Path
    judge: Candidate | None = None
    repeats: int = 1
    max_cost: float | None = None
    concurrency: int = 8
    rps: float | None = None
    retries: int = 2
    retry_backoff: float = 0.25  # seconds before the first retry (doubling, jittered)
    timeout: float = 120.0  # seconds per call
    fresh: bool = False
    seed: int = 0  # backoff jitter

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ValueError("no candidates to evaluate")
        if self.repeats < 1 or self.concurrency < 1 or self.retries < 0:
            raise ValueError("repeats and concurrency must be >= 1, retries >= 0")
        keys = [c.key for c in self.candidates]
        if len(set(keys)) != len(keys):
            raise ValueError("a candidate is listed twice")
        needs_judge = any(isinstance(i.grader, JudgeGrader) for i in self.suite.items)
        if needs_judge and self.judge is None:
            raise ValueError(
                "the suite has judge graders but no judge: set evals.judge in the policy"
            )


@dataclass
class RunResult:
    scorecard: Scorecard
    ran: int  # units finished by this run
    skipped: int  # units an earlier run had finished
    stopped: str | None  # "max_cost" when the cap stopped it
    damaged_lines: int = 0
    records: list[Record] = field(default_factory=list)


@dataclass(frozen=True)
class Unit:
    candidate: Candidate
    item: Item
    repeat: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.candidate.key, self.item.id, self.repeat)


OnRecord = Callable[[Record], None]


class EvalRun:
    def __init__(
        self,
        options: EvalOptions,
        *,
        clock: Clock | None = None,
        on_record: OnRecord | None = None,
        on_start: Callable[[int, int], None] | None = None,
    ) -> None:
        self.options = options
        self.clock = clock or SystemClock()
        self._on_record = on_record
        self._on_start = on_start
        self._rng = random.Random(options.seed)

    async def run(self) -> RunResult:
        o = self.options
        progress = open_progress(o.out, o.suite.hash, fresh=o.fresh)
        spent, judge_spent = progress.spent()
        self.cap = CostCap(o.max_cost, spent, judge_spent)
        self.pacer = Pacer(o.rps, self.clock)
        units = [
            Unit(candidate, item, repeat)
            for repeat in range(o.repeats)
            for item in o.suite.items
            for candidate in o.candidates
        ]
        todo = [u for u in units if u.key not in progress.records]
        if self._on_start is not None:
            self._on_start(len(units), len(units) - len(todo))
        writer = ProgressWriter(progress.path)
        writer.run(
            suite=o.suite.name,
            suite_hash=o.suite.hash,
            policy_version=o.policy.version,
            started=now().isoformat(),
            candidates=[c.key for c in o.candidates],
            repeats=o.repeats,
        )
        records = dict(progress.records)
        ran = 0
        pool = Http1Pool()
        queue = iter(todo)
        stopped: str | None = None

        async def worker() -> None:
            nonlocal ran, stopped
            for unit in queue:
                if stopped is not None:
                    return
                try:
                    record = await self._unit(pool, unit)
                except CapReached:
                    stopped = "max_cost"
                    return
                records[unit.key] = record
                writer.result(record)
                ran += 1
                if self._on_record is not None:
                    self._on_record(record)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(o.concurrency, max(1, len(todo)))):
                    group.create_task(worker())
        finally:
            writer.close()
            await pool.close()
        wanted = {u.key for u in units}
        kept = [r for key, r in records.items() if key in wanted]
        card = self._scorecard(kept, complete=stopped is None and len(kept) == len(units))
        if stopped is not None:
            card = card.model_copy(update={"stopped": stopped})
        return RunResult(card, ran, len(units) - len(todo), stopped, progress.damaged_lines, kept)

    def _scorecard(self, records: list[Record], *, complete: bool) -> Scorecard:
        o = self.options
        return Scorecard(
            created=now(),
            suite=SuiteInfo(
                name=o.suite.name,
                hash=o.suite.hash,
                items=len(o.suite.items),
                tasks=tuple(o.suite.tasks),
            ),
            policy=PolicyInfo(source=o.policy.source, version=o.policy.version),
            judge=o.judge.key if o.judge else None,
            repeats=o.repeats,
            complete=complete,
            max_cost_usd=o.max_cost,
            spent_usd=self.cap.spent,
            judge_spent_usd=self.cap.judge_spent,
            cells=aggregate.cells(o.candidates, o.suite.tasks, records, o.judge),
        )

    # -- one unit ---------------------------------------------------------------------------

    async def _unit(self, pool: Http1Pool, unit: Unit) -> Record:
        o = self.options
        body = o.suite.request_body(unit.item)
        base: dict[str, Any] = {
            "candidate": unit.candidate.key,
            "item": unit.item.id,
            "task": unit.item.task,
        }
        refusal = unit.candidate.wire.refusal(body)
        if refusal is not None:
            return Record(
                **base,
                repeat=unit.repeat,
                score=0.0,
                passed=False,
                detail=f"unsupported: {refusal.reason}",
                unsupported=True,
            )
        results, waited = await self._attempts(pool, unit.candidate, body, judge=False)
        last = results[-1]
        latency = sum(r.latency_s for r in results) + waited
        usage = usage_sum(r.usage for r in results)
        common: dict[str, Any] = {
            **base,
            "repeat": unit.repeat,
            "attempts": len(results),
            "errors": sum(1 for r in results if not r.ok),
            "usage": usage,
            "cost_usd": sum(r.cost_usd for r in results),
            "latency_s": latency,
            "ttft_s": last.ttft_s if last.ok else None,
            "answer": last.text,
        }
        if not last.ok:
            assert last.failure is not None
            return Record(
                **common, score=0.0, passed=False, failed=True, detail=str(last.failure)[:300]
            )
        grader = unit.item.grader
        if not isinstance(grader, JudgeGrader):
            grade = grade_text(grader, last.text)
            return Record(
                **common, score=grade.score, passed=grade.score >= 1.0, detail=grade.detail
            )
        return await self._judged(pool, unit, grader, body, last.text, common)

    async def _attempts(
        self, pool: Http1Pool, candidate: Candidate, body: dict[str, Any], *, judge: bool
    ) -> tuple[list[CallResult], float]:
        """Send until an answer or a failure no retry cures: every attempt's result, in order,
        and the seconds of backoff between them (part of the request's latency)."""
        o = self.options
        results: list[CallResult] = []
        waited = 0.0
        worst = worst_case_usd(candidate, body)
        for attempt in range(o.retries + 1):
            if attempt:
                delay = o.retry_backoff * 2 ** (attempt - 1) * self._rng.uniform(0.5, 1.0)
                waited += delay
                await self.clock.sleep(delay)
            if not self.cap.reserve(worst):
                raise CapReached
            try:
                await self.pacer.wait()
                result = await call(pool, candidate, body, clock=self.clock, limit=o.timeout)
            except BaseException:
                self.cap.settle(worst, worst, judge=judge)  # unknown: count the worst case
                raise
            self.cap.settle(worst, result.cost_usd, judge=judge)
            results.append(result)
            if result.ok or not result.retryable:
                break
        return results, waited

    # -- the judge --------------------------------------------------------------------------

    async def _judged(
        self,
        pool: Http1Pool,
        unit: Unit,
        grader: JudgeGrader,
        body: dict[str, Any],
        answer: str,
        common: dict[str, Any],
    ) -> Record:
        o = self.options
        assert o.judge is not None
        item = unit.item
        criteria = o.suite.criteria(item, grader)
        conversation = conversation_text(body["messages"])
        reference = reference_text(item)
        usages: list[Usage] = []
        cost = 0.0
        verdicts: dict[str, Any] = {}
        score: float | None
        detail: str
        try:
            if grader.mode == "score":
                text, used, spent = await self._judge_call(
                    pool, score_messages(item.task, conversation, criteria, answer, reference)
                )
                usages.append(used)
                cost += spent
                scores = parse_scores(text, criteria)
                verdicts["scores"] = scores
                score = normalised(scores)
                detail = "judge: " + ", ".join(f"{k}={v}" for k, v in scores.items())
            else:
                assert reference is not None  # the suite loader checked it
                first, used, spent = await self._judge_call(
                    pool, pairwise_messages(item.task, conversation, criteria, answer, reference)
                )
                usages.append(used)
                cost += spent
                second, used, spent = await self._judge_call(
                    pool, pairwise_messages(item.task, conversation, criteria, reference, answer)
                )
                usages.append(used)
                cost += spent
                outcome = PairwiseOutcome(parse_winner(first), parse_winner(second))
                verdicts["candidate_first"] = outcome.candidate_first
                verdicts["candidate_second"] = outcome.candidate_second
                score = outcome.score
                detail = (
                    f"pairwise vs reference: {outcome.candidate_first} as A, "
                    f"{outcome.candidate_second} as B -> {score:g}"
                )
        except JudgeError as exc:
            score, detail = None, f"not graded: {exc}"
        passed = score is not None and score >= o.suite.pass_score(item, grader)
        return Record(
            **common,
            score=score,
            passed=passed,
            detail=detail,
            judge_usage=usage_sum(usages),
            judge_cost_usd=cost,
            judge=verdicts or None,
        )

    async def _judge_call(
        self, pool: Http1Pool, messages: list[dict[str, str]]
    ) -> tuple[str, Usage, float]:
        """The judge's answer text, with its usage and cost; JudgeError when it gave none."""
        judge = self.options.judge
        assert judge is not None
        body = {"messages": messages, "max_tokens": JUDGE_MAX_TOKENS, "temperature": 0}
        results, _ = await self._attempts(pool, judge, body, judge=True)
        usage = usage_sum(r.usage for r in results)
        cost = sum(r.cost_usd for r in results)
        last = results[-1]
        if not last.ok:
            raise JudgeError(f"the judge failed: {last.failure}")
        return last.text, usage, cost

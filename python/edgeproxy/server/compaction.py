"""Compaction on the request path: a conversation fitted to each candidate's window.

The plan (``plan.plan_candidates``) keeps a candidate whose window is too small when the route
says ``context.overflow: compact``, with the prompt tokens it may take. ``ContextFit.check``
then measures the conversation in that candidate's encoding (once per encoding, in a worker
thread for a large body) and drops the candidates no strategy can fit, saying by how much (the
client's 400 names them all when none is left). At attempt time, ``ContextFit.fitted`` builds the
compacted body for a candidate (once per encoding and limit: a retry, a hedge or another region
of the same model share it), asking the route's summariser when ``summarize`` is among the
strategies, and counts it whole before it is sent (``context.compact.fit``). Each attempt that
sends a compacted body emits ``ContextCompacted``; the answer says ``x-edgeproxy-compacted:
<tokens before>-><tokens after>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import orjson

from edgeproxy.context.compact import Fitted, Summarised, TooLong, fit, floor, plan
from edgeproxy.context.measure import Measured, count_text, measure
from edgeproxy.context.turns import block_prefix_hashes
from edgeproxy.events import CandidateSkipped, SkipReason
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.attempts import Deadline
from edgeproxy.server.context import ProxyState
from edgeproxy.server.ledger import Ledger
from edgeproxy.server.plan import Plan
from edgeproxy.server.summaries import History, summarise
from edgeproxy.snapshot import Candidate, Route
from edgeproxy.tokens import OFF_LOOP_BYTES

HEADER = "x-edgeproxy-compacted"

T = TypeVar("T")


class ContextFit:
    """Fits one request body to the windows of the candidates its plan marks for compaction."""

    def __init__(
        self,
        *,
        state: ProxyState,
        route: Route,
        body: Mapping[str, Any],
        body_bytes: int,
        ledger: Ledger,
        deadline: Deadline,
        rid: str,
        tenant: str,
    ) -> None:
        self._state = state
        self._route = route
        self._body = body
        self._bytes = body_bytes
        self._ledger = ledger
        self._deadline = deadline
        self._rid = rid
        self._tenant = tenant
        self.limits: dict[str, int] = {}  # candidate key -> prompt tokens it may take
        self._measured: dict[str, asyncio.Future[Measured]] = {}
        self._fitted: dict[tuple[str, int], asyncio.Future[Fitted | TooLong]] = {}
        self._hashes: asyncio.Future[list[bytes]] | None = None

    def for_body(self, body: Mapping[str, Any], body_bytes: int) -> ContextFit:
        """The same candidates and limits for another body (a resumed stream's)."""
        other = ContextFit(
            state=self._state,
            route=self._route,
            body=body,
            body_bytes=body_bytes,
            ledger=self._ledger,
            deadline=self._deadline,
            rid=self._rid,
            tenant=self._tenant,
        )
        other.limits = dict(self.limits)
        return other

    def needs(self, candidate: Candidate) -> bool:
        return candidate.key in self.limits

    # -- at plan time -----------------------------------------------------------------------

    async def check(self, plan: Plan) -> Plan:
        """The plan without the candidates that no strategy can fit (skipped, with by how much);
        the others' limits are kept for ``fitted``."""
        if not plan.compact:
            return plan
        settings = self._route.context
        cannot: list[CandidateSkipped] = []
        for candidate in plan.chain:
            limit = plan.compact.get(candidate.key)
            if limit is None:
                continue
            window = candidate.context_window or 0
            if limit <= 0:
                detail = (
                    f"context window {window} leaves no room for the prompt after the answer's "
                    f"{window - limit} tokens"
                )
                cannot.append(CandidateSkipped(candidate, SkipReason.CONTEXT_WINDOW, detail))
                continue
            measured = await self.measure(candidate.tokenizer)
            least = floor(measured, settings, limit)
            if least.tokens > limit:
                ran = ", ".join(least.strategies) or "no strategy applies"
                detail = (
                    f"context window {window}: the prompt may take {limit} tokens (the rest is "
                    f"the answer's); compacted ({ran}) it still needs ~{least.tokens}, "
                    f"{least.tokens - limit} too many"
                )
                cannot.append(CandidateSkipped(candidate, SkipReason.CONTEXT_WINDOW, detail))
                continue
            self.limits[candidate.key] = limit
        if not cannot:
            return plan
        gone = {s.candidate.key for s in cannot}
        return replace(
            plan,
            chain=tuple(c for c in plan.chain if c.key not in gone),
            skipped=(*plan.skipped, *cannot),
            compact={k: v for k, v in plan.compact.items() if k not in gone},
        )

    async def measure(self, encoding: str) -> Measured:
        task = self._measured.get(encoding)
        if task is None:
            task = self._measured[encoding] = asyncio.ensure_future(
                self._off_loop(measure, self._body, encoding)
            )
        return await asyncio.shield(task)

    # -- at attempt time --------------------------------------------------------------------

    async def fitted(self, candidate: Candidate) -> Fitted:
        """The compacted body for ``candidate`` (shared by every attempt with its encoding and
        limit). Raises ``AttemptFailure`` (context length) when it cannot be made to fit."""
        limit = self.limits[candidate.key]
        key = (candidate.tokenizer, limit)
        task = self._fitted.get(key)
        if task is None:
            task = self._fitted[key] = asyncio.ensure_future(self._fit(candidate, limit))
        result = await asyncio.shield(task)
        if isinstance(result, TooLong):
            raise too_long(candidate, result)
        return result

    async def _fit(self, candidate: Candidate, limit: int) -> Fitted | TooLong:
        encoding = candidate.tokenizer
        measured = await self.measure(encoding)
        settings = self._route.context
        summary: Summarised | None = None
        summarizer = self._route.summarizer
        if "summarize" in settings.strategies and summarizer is not None:
            wanted = plan(measured, settings, limit, summary_tokens=settings.summary_max_tokens)
            chosen = wanted.summarised
            if chosen is not None:
                history = History(
                    await self._prefix_hashes(measured),
                    chosen.start,
                    chosen.end,
                    lambda a, b: measured.messages[
                        measured.blocks[a].start : measured.blocks[b - 1].end
                    ],
                )
                text = await summarise(
                    state=self._state,
                    route=self._route,
                    summarizer=summarizer,
                    history=history,
                    tenant=self._tenant,
                    deadline=self._deadline,
                    rid=self._rid,
                    ledger=self._ledger,
                )
                if text is not None:
                    size = count_text(text, encoding)
                    summary = Summarised(chosen.start, chosen.end, size, text)
        return await self._off_loop(fit, self._body, measured, settings, limit, summary)

    async def _prefix_hashes(self, measured: Measured) -> list[bytes]:
        if self._hashes is None:
            self._hashes = asyncio.ensure_future(
                self._off_loop(block_prefix_hashes, self._body, measured.blocks)
            )
        return await asyncio.shield(self._hashes)

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread for a large body (the token counter releases the
        GIL), inline for a small one (a thread hop would cost more)."""
        if self._bytes < OFF_LOOP_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def too_long(candidate: Candidate, result: TooLong) -> AttemptFailure:
    """The attempt's failure when compaction cannot fit: a client error in OpenAI's shape (the
    attempt loop passes it through when no larger window is left)."""
    ran = ", ".join(result.strategies) or "no strategy applied"
    message = (
        f"The conversation cannot be compacted to fit {candidate.key} (its prompt may take "
        f"{result.limit} tokens): after {ran} the prompt is too long by {result.over} tokens."
    )
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    return AttemptFailure(FailureClass.CONTEXT_LENGTH, message, status=400, body=orjson.dumps(body))

"""``POST /v1/embeddings``: a sibling of the chat exchange (docs/embeddings.md).

Not a chat exchange (no task, no stream, no commit point), but the same request path around it:
the handler's limits, slot and telemetry (``handler.run_exchange``); the route and its chain;
the cache (an embedding is deterministic, so it is cached whatever the route's ``cacheable``
says about sampling); the attempt loop with its deadline, budget, breakers and backoff; the
ledger, whose events telemetry hears; the candidate's wire for URL, body, headers, failure
classes and client errors (``UpstreamWire.embeddings``). In steps:

1. **Cache**: the whole answer, keyed by the request (model, inputs, format, dimensions).
2. **Plan**: the candidates whose wire can embed these inputs, whose context window holds the
   longest one, and whose declared ``dimensions`` can give what is asked; the inputs' tokens
   are counted once per encoding (exactly for OpenAI's encodings).
3. **Attempts**: one candidate embeds every input (vectors of two models are never mixed in an
   answer), in batches under its wire's (or model's) limits, at most ``CONCURRENT_BATCHES`` at
   a time; a failed batch fails the attempt, and the loop fails over.
4. **Answer**: the vectors in the client's ``encoding_format``, checked to be the length the
   route declares; usage the upstream's count when every batch reported one, else the proxy's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from edgeproxy import tokens
from edgeproxy.cache.layer import HEADER as CACHE_HEADER
from edgeproxy.cache.layer import HIT, CachePlan
from edgeproxy.events import CacheLooked, CandidateSkipped, RouteDecided, SkipReason
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.keys import VirtualKey
from edgeproxy.resilience.attempts import AttemptLoop, CandidateLimits, Deadline, PassThrough
from edgeproxy.server.admission import PRINCIPAL, Asked, admit_request, check_route
from edgeproxy.server.attempt import MAX_RESPONSE_BYTES, Within
from edgeproxy.server.cached_answers import who_served
from edgeproxy.server.context import ProxyState
from edgeproxy.server.embeddings_request import (
    EmbeddingsRequest,
    answer_body,
    batches,
    parse_embeddings_request,
    shaped,
)
from edgeproxy.server.exchange import COST_HEADER, SKIPPED_HEADER, skipped_header
from edgeproxy.server.handler import Handler, run_exchange
from edgeproxy.server.ingress import ClientError
from edgeproxy.server.ingress.openai_chat import INGRESS as OPENAI
from edgeproxy.server.ledger import Ledger
from edgeproxy.server.responses import all_failed, pass_through, served_headers
from edgeproxy.snapshot import Candidate, Policy, Route
from edgeproxy.snapshot.wire import EmbeddedBatch, EmbeddingInput, EmbeddingsWire
from edgeproxy.telemetry.listener import RequestTelemetry
from edgeproxy.upstreams.send import send

PATH: Final = "/v1/embeddings"
CACHE_WIRE: Final = "embeddings"  # scopes cache entries apart from every chat wire's
CONCURRENT_BATCHES: Final = 4  # one request's batches in flight at once, on one candidate


@dataclass(frozen=True, slots=True)
class Embedded:
    """One attempt's answer: every input's vector, in the client's format."""

    vectors: list[list[float] | str]
    prompt_tokens: int
    model: str


def describe(value: Embedded) -> tuple[int | None, str | None]:
    return 200, value.model


def embeddings_handler() -> Handler:
    """``POST /v1/embeddings`` under the handler every endpoint shares."""

    async def serve(
        request: web.Request, state: ProxyState, rid: str, tel: RequestTelemetry, raw: bytes
    ) -> web.StreamResponse:
        policy = state.policy
        body, asked = parse_embeddings_request(raw)
        tel.request_parsed(asked.model)
        route = policy.route_for(asked.model)
        if route is None:
            raise OPENAI.not_served(asked.model, policy.route_names)
        return await EmbeddingsExchange(state, policy, route, asked, raw, body, rid, tel).serve(
            request
        )

    async def handle(request: web.Request) -> web.StreamResponse:
        return await run_exchange(request, serve, PATH)

    return handle


class EmbeddingsExchange:
    """One embeddings request under one policy snapshot, route and deadline."""

    def __init__(
        self,
        state: ProxyState,
        policy: Policy,
        route: Route,
        asked: EmbeddingsRequest,
        raw: bytes,
        body: dict[str, Any],
        rid: str,
        tel: RequestTelemetry,
    ) -> None:
        self.state = state
        self.policy = policy
        self.route = route
        self.asked = asked
        self.raw = raw
        self.body = body
        self.rid = rid
        self.deadline = Deadline(state.clock, route.timeouts.total)
        self.ledger = Ledger(tel, state.clock)
        self._counts: dict[str, list[int]] = {}  # per encoding, each input's tokens

    async def serve(self, request: web.Request) -> web.StreamResponse:
        route, cache = self.route, self.state.cache
        key = request.get(PRINCIPAL)
        check_route(key, route)  # a key limited to other routes: 403, as for chat
        plan = cache.plan(
            self.raw,
            self.body,
            route.name,
            route.cache,
            request.headers,
            wire=CACHE_WIRE,
            deterministic=True,
        )
        reply = cache.lookup(plan, stream=False)
        if reply is not None and reply.body is not None:
            self._route_decided(())
            self.ledger.on_event(CacheLooked(HIT))
            headers = {
                **reply.headers,
                "x-edgeproxy-attempts": "0",
                "x-edgeproxy-policy-version": self.policy.version,
            }
            return web.Response(body=reply.body, content_type="application/json", headers=headers)
        self.ledger.on_event(CacheLooked(plan.status))
        return await self._serve_upstream(plan, key)

    def _route_decided(self, skipped: tuple[CandidateSkipped, ...]) -> None:
        route = self.route
        self.ledger.on_event(RouteDecided(route.name, route.chain, skipped, self.policy.version))

    # -- the plan -----------------------------------------------------------------------------

    async def counts(self, encoding: str) -> list[int]:
        """Each input's tokens in ``encoding`` (a token array's own length), counted once and
        off the event loop when the inputs are large."""
        known = self._counts.get(encoding)
        if known is None:
            inputs = self.asked.inputs
            size = sum(len(item) for item in inputs if isinstance(item, str))
            if size >= tokens.OFF_LOOP_BYTES:
                loop = asyncio.get_running_loop()
                known = await loop.run_in_executor(None, _count_all, inputs, encoding)
            else:
                known = _count_all(inputs, encoding)
            self._counts[encoding] = known
        return known

    async def _plan(self) -> tuple[tuple[Candidate, ...], tuple[CandidateSkipped, ...]]:
        kept: list[Candidate] = []
        skipped: list[CandidateSkipped] = []
        for candidate in self.route.chain:
            why = await self._why_not(candidate)
            if why is None:
                kept.append(candidate)
            else:
                skipped.append(CandidateSkipped(candidate, *why))
        return tuple(kept), tuple(skipped)

    async def _why_not(self, candidate: Candidate) -> tuple[SkipReason, str] | None:
        wire = candidate.wire.embeddings
        if wire is None:
            return SkipReason.WIRE, f"the {candidate.wire.name} wire has no embeddings API"
        refusal = wire.refusal(self.asked.inputs, self.asked.options)
        if refusal is not None:
            return SkipReason.WIRE, refusal.reason
        wanted, declared = self.asked.options.dimensions, candidate.dimensions
        if wanted is not None and declared is not None and wanted > declared:
            return SkipReason.WIRE, f"asks for {wanted} dimensions, the model gives {declared}"
        window = candidate.context_window
        if window is not None:
            counts = await self.counts(candidate.tokenizer)
            longest = max(counts)
            if longest > window:
                return (
                    SkipReason.CONTEXT_WINDOW,
                    f"an input of {longest} tokens > context window {window}",
                )
        return None

    # -- the attempts -------------------------------------------------------------------------

    async def _total_tokens(self, encoding: str) -> int:
        return sum(await self.counts(encoding))

    async def _serve_upstream(self, cache_plan: CachePlan, key: VirtualKey | None) -> web.Response:
        chain, skipped = await self._plan()
        self._route_decided(skipped)
        if not chain:
            raise _nothing_embeds(skipped)
        # The key's, team's and route's limits and budgets, as for chat (docs/keys.md): the
        # inputs' tokens are what is reserved (an embedding has no answer tokens).
        asked = Asked(
            self.policy,
            self.route,
            key,
            self._total_tokens,
            lambda candidate: 0,
            self.ledger,
            answer_param="input",
            prompt_param="input",
        )
        granted = await admit_request(self.state.limiter, asked, chain)
        try:
            return await self._attempts(cache_plan, chain, skipped, granted.provider)
        finally:
            granted.settle(self.ledger)

    async def _attempts(
        self,
        cache_plan: CachePlan,
        chain: tuple[Candidate, ...],
        skipped: tuple[CandidateSkipped, ...],
        limits: CandidateLimits | None,
    ) -> web.Response:
        route, engine, policy, ledger = self.route, self.state.engine, self.policy, self.ledger
        engine.budget.request_started()
        loop: AttemptLoop[Embedded] = AttemptLoop(
            chain=chain,
            max_attempts=route.max_attempts,
            deadline=self.deadline,
            gate=engine,
            budget=engine.budget,
            backoff=engine.backoff,
            listener=ledger,
            quota_ejection=policy.engine.quota_ejection,
            describe=describe,
            limits=limits,
        )
        try:
            outcome = await loop.run(self._attempt)
        except PassThrough as final:
            failure = final.failure
            failure.body, failure.content_type = final.candidate.wire.client_error_body(
                failure, self.rid
            )
            return pass_through(failure, final.candidate, ledger.attempts, policy.version)
        if outcome.served is None or outcome.value is None:
            failed = all_failed(route, outcome, self.rid, policy.version, skipped)
            if skipped:
                failed.headers[SKIPPED_HEADER] = skipped_header(skipped)
            return failed
        headers = served_headers(outcome.served, ledger.attempts, policy.version)
        headers[CACHE_HEADER] = cache_plan.status
        if skipped:
            headers[SKIPPED_HEADER] = skipped_header(skipped)
        if outcome.served.price is not None:
            headers[COST_HEADER] = f"{ledger.cost:.8f}"
        value = outcome.value
        body = answer_body(value.vectors, value.model, value.prompt_tokens)
        self.state.cache.store_answer(cache_plan, body, who_served(headers))
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _attempt(self, candidate: Candidate, number: int) -> Embedded:
        wire = candidate.wire.embeddings
        assert wire is not None  # the plan kept only candidates whose wire embeds
        inputs, options = self.asked.inputs, self.asked.options
        counts = await self.counts(candidate.tokenizer)
        limit = min(wire.max_inputs, candidate.max_batch_inputs or wire.max_inputs)
        slices = list(batches(inputs, counts, limit, wire.max_tokens))
        post = self._poster(candidate, wire, number)
        answers = await _gathered([post(inputs[a:b]) for a, b in slices])
        expected = options.dimensions or candidate.dimensions
        vectors: list[list[float] | str] = []
        for answer in answers:
            for vector in answer.vectors:
                value, length = shaped(vector, options.encoding_format)
                expected = expected or length  # undeclared: every vector as long as the first
                if length != expected:
                    raise AttemptFailure(
                        FailureClass.MALFORMED,
                        f"the model returned a {length}-dimensional vector where "
                        f"{expected} dimensions are expected",
                    )
                vectors.append(value)
        reported = [a.prompt_tokens for a in answers]
        own = sum(counts)
        if all(r is not None for r in reported):
            used, estimated = sum(r for r in reported if r is not None), False
        else:
            used, estimated = own, candidate.tokenizer == tokens.ESTIMATE
        self.ledger.usage(
            number, {"prompt_tokens": used, "completion_tokens": 0}, estimated=estimated
        )
        model = next((a.model for a in answers if a.model), None) or candidate.upstream_model
        return Embedded(vectors, used, model)

    def _poster(
        self, candidate: Candidate, wire: EmbeddingsWire, number: int
    ) -> Callable[[Sequence[EmbeddingInput]], Awaitable[EmbeddedBatch]]:
        state, route, options = self.state, self.route, self.asked.options
        url = wire.url(candidate)
        trace = self.ledger.trace_headers(number)

        async def post(batch: Sequence[EmbeddingInput]) -> EmbeddedBatch:
            body = wire.request_body(batch, options, candidate)
            limit = route.timeouts.response
            async with Within(self.deadline, limit, FailureClass.RESPONSE_TIMEOUT, "embeddings"):
                response = await send(
                    state.pool.http,
                    candidate,
                    body,
                    stream=False,
                    connect_timeout=route.timeouts.connect,
                    request_id=self.rid,
                    extra_headers=trace,
                    to=url,
                )
                try:
                    data = await response.read(MAX_RESPONSE_BYTES)
                except ConnectionError as exc:
                    raise AttemptFailure(
                        FailureClass.CUT, f"upstream connection lost mid-body: {type(exc).__name__}"
                    ) from None
                finally:
                    response.release()
            if len(data) > MAX_RESPONSE_BYTES:
                raise AttemptFailure(
                    FailureClass.MALFORMED, "upstream answer is larger than 64 MiB"
                )
            return wire.answer(data, len(batch))

        return post


def _count_all(inputs: Sequence[EmbeddingInput], encoding: str) -> list[int]:
    return [tokens.count(item, encoding) if isinstance(item, str) else len(item) for item in inputs]


async def _gathered(calls: list[Awaitable[EmbeddedBatch]]) -> list[EmbeddedBatch]:
    """Every batch's answer in order, at most ``CONCURRENT_BATCHES`` in flight; the first
    failure cancels the rest and is raised as it is (the loop classifies it)."""
    if len(calls) == 1:
        return [await calls[0]]
    gate = asyncio.Semaphore(CONCURRENT_BATCHES)

    async def bounded(call: Awaitable[EmbeddedBatch]) -> EmbeddedBatch:
        async with gate:
            return await call

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(bounded(call)) for call in calls]
    except BaseExceptionGroup as failed:
        first = _first_leaf(failed)
        if first is not None:
            raise first from None
        raise
    return [task.result() for task in tasks]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_leaf(exc)
            if inner is not None:
                return inner
        elif not isinstance(exc, asyncio.CancelledError):
            leaf: BaseException = exc
            return leaf
    return None


def _nothing_embeds(skipped: tuple[CandidateSkipped, ...]) -> ClientError:
    reasons = "; ".join(f"{s.candidate.key}: {s.detail}" for s in skipped)
    reasons = reasons or "the route has no chain (an auto route chooses among chat models)"
    too_long = any(s.reason is SkipReason.CONTEXT_WINDOW for s in skipped)
    return ClientError(
        400,
        f"No model this route may use can embed this request: {reasons}.",
        param="input",
        code="context_length_exceeded" if too_long else "unsupported_parameter",
        headers={SKIPPED_HEADER: skipped_header(skipped)},
    )

"""One request on its way through the proxy, in typed steps.

0. **Task** (``routing.tasks``): the request's category decides which of the route's chains
   serves it.
1. **Cache** (``cached_answers``): a stored answer, or an identical request already in flight,
   may serve it without an upstream call.
2. **Plan** (``plan``): the route's candidates that can take the request (their wire can carry
   it, their context window holds it), and why the others were skipped.
3. **Attempts** (``resilience.attempts``): the loop tries the plan's chain under one deadline and
   one budget; ``attempter`` makes each try; every event goes through the exchange's ``Ledger``
   to the request's telemetry.
4. **Answer**: a whole answer (non-stream), or the stream relayed from its first token on
   (``relay``), resumed on another candidate if the route allows (``resume``).

Everything is OpenAI-shaped inside; the client's ingress wire (``server.ingress``) shaped what
came in and shapes what leaves.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from edgeproxy.cache.layer import HEADER as CACHE_HEADER
from edgeproxy.cache.layer import HIT, CachePlan
from edgeproxy.cache.singleflight import FollowerTimeout, LeaderFailed
from edgeproxy.events import (
    AttemptKind,
    CacheLooked,
    CandidateSkipped,
    RouteDecided,
    SkipReason,
    TaskDecided,
)
from edgeproxy.resilience.attempts import AttemptLoop, Deadline, Outcome, PassThrough
from edgeproxy.routing.affinity import Lease
from edgeproxy.routing.tasks import UnknownTask, classify, without_task
from edgeproxy.server.admission import PRINCIPAL, ProviderLimits, admit, check_route
from edgeproxy.server.attempter import Answer, Attempter, StreamStart, Tried, describe, discard
from edgeproxy.server.cached_answers import (
    CacheTap,
    answer_from_cache,
    follow_stream,
    shared_answer,
    who_served,
)
from edgeproxy.server.compaction import HEADER as COMPACTED_HEADER
from edgeproxy.server.context import TASK, ProxyState
from edgeproxy.server.context_plan import context_plan
from edgeproxy.server.ingress import ClientError, IngressRequest, IngressWire, StreamEncoder
from edgeproxy.server.ledger import Ledger
from edgeproxy.server.plan import Plan, encodings_to_count, max_output_tokens, plan_candidates
from edgeproxy.server.prompt import PromptTokens
from edgeproxy.server.relay import Leg, relay_to_client
from edgeproxy.server.responses import all_failed, pass_through, served_headers
from edgeproxy.server.resume import Resumer
from edgeproxy.server.upstream_stream import StreamOptions
from edgeproxy.snapshot import Candidate, Policy, Route
from edgeproxy.telemetry.listener import MAX_CONTENT, RequestTelemetry

SKIPPED_HEADER = "x-edgeproxy-skipped"
COST_HEADER = "x-edgeproxy-cost-usd"


class Exchange:
    """One chat request (OpenAI-shaped) under one policy snapshot, route and deadline."""

    def __init__(
        self,
        state: ProxyState,
        policy: Policy,
        route: Route,
        asked: IngressRequest,
        rid: str,
        tel: RequestTelemetry,
        ingress: IngressWire,
    ) -> None:
        self.ingress = ingress
        self.asked = asked
        self.state = state
        self.engine = state.engine
        self.policy = policy
        self.route = route
        self.raw = raw = asked.raw
        self.body = body = asked.body
        self.rid = rid
        self.tel = tel
        self.stream = bool(body.get("stream"))
        self.task = route.default_task  # until _decide_task
        self.chain = route.chain  # the chain for the task
        self.deadline = Deadline(state.clock, route.timeouts.total)
        self.prompt = PromptTokens(raw)
        self.ledger = Ledger(tel, state.clock, self.engine.hedger if self.stream else None)
        self.attempter = Attempter(
            state=state,
            route=route,
            deadline=self.deadline,
            request_id=rid,
            ledger=self.ledger,
            prompt=self.prompt,
            body=body,
            stream=self.stream,
            options=StreamOptions(capture_chars=MAX_CONTENT if tel.capture_content else 0),
        )
        if tel.capture_content:
            tel.content(input_messages=body.get("messages"))
        self.leases: list[Lease] = []  # affinity's holds on candidates, until the exchange ends
        self.provider_limits: ProviderLimits | None = None  # candidates' own RPM/TPM

    async def serve(self, request: web.Request) -> web.StreamResponse:
        check_route(request.get(PRINCIPAL), self.route)  # a key limited to other routes: 403
        await self._decide_task(request)
        try:
            response = await self._serve(request)
        finally:
            for lease in self.leases:
                lease.release()
        if isinstance(response, web.Response):
            # Streams were encoded as they went.
            return self.ingress.answer(response, self.asked, self.rid)
        return response

    # -- 0. the task -----------------------------------------------------------------------------

    async def _decide_task(self, request: web.Request) -> None:
        """The request's task (docs/tasks.md): its route's chain for that task, the
        ``x-edgeproxy-task`` header of the answer, telemetry's fields."""
        decision = await classify(
            self.policy.tasks, self.route, request.headers, self.body, self.prompt.count
        )
        if isinstance(decision, UnknownTask):
            raise ClientError(400, decision.message, param=decision.param, code="unknown_task")
        self.task = decision.task
        self.chain = self.route.chain_for(decision.task)
        if self.route.auto is not None:  # the chain is chosen from scorecards (docs/auto.md)
            pick = self.state.auto.choose(self.route, decision.task, without_task(self.body))
            self.ledger.on_event(pick.event)
            if pick.refusal is not None:
                raise ClientError(503, pick.refusal, code="no_evaluated_candidate")
            self.chain = pick.chain
            if pick.observer is not None:
                self.ledger.observers.append(pick.observer)
        request[TASK] = decision.task
        fields = decision.log_fields()
        detail = {k: v for k, v in fields.items() if k not in ("task", "task_source")}
        self.ledger.on_event(TaskDecided(decision.task, decision.source.value, detail))
        upstream = without_task(self.body)
        if upstream is not self.body:  # metadata.task is the proxy's, not the provider's
            self.attempter = self.attempter.with_body(upstream, self.attempter.options)

    # -- 1. the cache -------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        route, cache = self.route, self.state.cache
        plan = cache.plan(
            self.raw, self.body, route.name, route.cache, request.headers, wire=self.ingress.name
        )
        reply = cache.lookup(plan, self.stream)
        fleet = self.state.fleet
        if reply is None and fleet is not None:  # the fleet's shared level (docs/fleet.md)
            reply = await fleet.cache_lookup(cache, plan, self.stream)
        if reply is not None:
            self._route_decided(())
            self.ledger.on_event(CacheLooked(HIT))
            return await answer_from_cache(
                request, reply, self.encoder(), self.tel, self.policy, self.deadline
            )
        self.ledger.on_event(CacheLooked(plan.status))
        if self.stream:
            return await self._serve_stream(request, plan)
        with cache.join(plan) as flight:
            if not flight.leader:
                # An identical request is already upstream: share its answer.
                try:
                    shared = await flight.wait(max(self.deadline.remaining(), 0.0))
                except (LeaderFailed, FollowerTimeout):
                    pass  # fall back to an upstream call of its own
                else:
                    self._route_decided(())
                    return shared_answer(shared, plan, self.state.cache, self.policy)
            response = await self._serve_upstream(request, plan)
            if flight.leader and response.status == 200 and isinstance(response, web.Response):
                assert isinstance(response.body, bytes)
                flight.publish(response.body)
            return response

    async def _serve_stream(self, request: web.Request, plan: CachePlan) -> web.StreamResponse:
        cache = self.state.cache
        broadcast, leader = cache.join_stream(plan)
        if not leader:
            followed = await follow_stream(request, broadcast, self)
            if followed is not None:
                self._route_decided(())
                return followed
        tap = CacheTap(broadcast if leader else None, plan, cache)
        try:
            return await self._serve_upstream(request, plan, tap)
        finally:
            tap.end(False, b"")  # no-op when the relay already ended it

    # -- 2. the plan --------------------------------------------------------------------------

    async def _plan(self, request: web.Request) -> Plan:
        chain = self.chain
        wanted = encodings_to_count(chain, len(self.raw), max_output_tokens(self.body))
        counts = {encoding: await self.prompt.count(encoding) for encoding in sorted(wanted)}
        overflow = self.route.context.overflow
        plan = plan_candidates(chain, self.body, len(self.raw), counts, overflow)
        # Compaction's check and cache-affinity's order (docs/context.md).
        plan = await context_plan(self, plan, request.headers)
        self._route_decided(plan.skipped)
        if not plan.chain:
            raise _nothing_fits(plan)
        return plan

    def _route_decided(self, skipped: tuple[CandidateSkipped, ...]) -> None:
        route = self.route
        self.ledger.on_event(RouteDecided(route.name, self.chain, skipped, self.policy.version))

    # -- 3. the attempts ----------------------------------------------------------------------

    def loop(
        self,
        chain: tuple[Candidate, ...],
        max_attempts: int,
        hedge_delay: float | None = None,
        resume: bool = False,
    ) -> AttemptLoop[Tried]:
        engine = self.engine
        return AttemptLoop(
            chain=chain,
            max_attempts=max_attempts,
            deadline=self.deadline,
            gate=engine,
            budget=engine.budget,
            backoff=engine.backoff,
            listener=self.ledger,
            discard=discard,
            defer_success=self.stream,
            hedge_delay=hedge_delay,
            try_hedge=engine.hedger.try_hedge,
            quota_ejection=self.policy.engine.quota_ejection,
            first_number=self.ledger.attempts + 1,
            first_kind=AttemptKind.RESUME if resume else AttemptKind.FIRST,
            describe=describe,
            limits=self.provider_limits,
        )

    async def _serve_upstream(
        self, request: web.Request, cache_plan: CachePlan, tap: CacheTap | None = None
    ) -> web.StreamResponse:
        plan = await self._plan(request)
        # The key's, team's and route's limits and budgets (docs/keys.md): 429 when one is hit.
        granted = await admit(self, request, plan)
        self.provider_limits = granted.provider
        try:
            return await self._attempts(request, cache_plan, plan, tap)
        finally:
            granted.settle(self.ledger)

    async def _attempts(
        self, request: web.Request, cache_plan: CachePlan, plan: Plan, tap: CacheTap | None
    ) -> web.StreamResponse:
        route, engine, policy, ledger = self.route, self.engine, self.policy, self.ledger
        engine.budget.request_started()
        engine.hedger.request_started()
        hedge = engine.hedge_delay(route.hedge, plan.chain[0].key) if self.stream else None
        loop = self.loop(plan.chain, route.max_attempts, hedge_delay=hedge)
        try:
            outcome = await loop.run(self.attempter)
        except PassThrough as final:
            failure = final.failure
            # The upstream's own error, in OpenAI's shape (the client wire re-shapes it again
            # if the client does not speak OpenAI).
            failure.body, failure.content_type = final.candidate.wire.client_error_body(
                failure, self.rid
            )
            return pass_through(failure, final.candidate, ledger.attempts, policy.version)
        if outcome.served is None:
            failed = all_failed(route, outcome, self.rid, policy.version, plan.skipped)
            if plan.skipped:
                failed.headers[SKIPPED_HEADER] = skipped_header(plan.skipped)
            return failed
        headers = served_headers(outcome.served, ledger.attempts, policy.version)
        headers[CACHE_HEADER] = cache_plan.status
        if plan.skipped:
            headers[SKIPPED_HEADER] = skipped_header(plan.skipped)
        value = outcome.value
        if value is not None and value.compacted is not None:
            headers[COMPACTED_HEADER] = value.compacted
        if isinstance(value, Answer):
            if outcome.served.price is not None:
                # What this answer cost, failed attempts included (a failover's real price).
                headers[COST_HEADER] = f"{ledger.cost:.8f}"
            self._captured(value.body)
            self.state.cache.store_completion(cache_plan, value.body, who_served(headers))
            return web.Response(body=value.body, content_type="application/json", headers=headers)
        # ---- 4. the stream, from its first token on
        if tap is not None:
            tap.start(who_served(headers))
        resume = Resumer(self) if route.on_midstream_failure == "resume" else None
        return await relay_to_client(
            request,
            self.leg(outcome),
            headers,
            route,
            self.deadline,
            self.rid,
            resume,
            tap,
            self.encoder(),
            capture=self.tel.content if self.tel.capture_content else None,
        )

    def encoder(self) -> StreamEncoder:
        """A stream's encoder into the client's wire."""
        return self.ingress.stream(self.asked)

    def leg(self, outcome: Outcome[Tried]) -> Leg:
        """The served stream attempt of ``outcome``, for the relay."""
        start = outcome.value
        assert isinstance(start, StreamStart) and outcome.permit is not None
        return Leg(
            start.stream,
            start.first,
            outcome.permit,
            self.ledger.leg(start.number),
            count_text=start.counter.text_now,
            prompt_tokens=start.counter.prompt_now,
        )

    def _captured(self, answer: bytes) -> None:
        """The answer's text on the request's span, when the policy opts in."""
        if not self.tel.capture_content:
            return
        try:
            message = orjson.loads(answer)["choices"][0]["message"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            return
        self.tel.content(output_messages=[message])


def skipped_header(skipped: tuple[CandidateSkipped, ...]) -> str:
    return ", ".join(f"{s.candidate.key}={s.reason}" for s in skipped)


def _nothing_fits(plan: Plan) -> ClientError:
    """No candidate of the route can take the request: a 400 naming why, per candidate."""
    header = {SKIPPED_HEADER: skipped_header(plan.skipped)}
    too_small = plan.skipped_for(SkipReason.CONTEXT_WINDOW)
    reasons = "; ".join(f"{s.candidate.key}: {s.detail}" for s in too_small or plan.skipped)
    if plan.refused_overflow:
        return ClientError(
            400,
            "The prompt plus max_tokens does not fit the context window of every model this "
            "route may fail over to, and the route refuses what its fallbacks could not take "
            f"(context.overflow: error): {reasons}.",
            param="messages",
            code="context_length_exceeded",
            headers=header,
        )
    if too_small:
        return ClientError(
            400,
            "The prompt plus max_tokens does not fit the context window of any model this route "
            f"may use: {reasons}.",
            param="messages",
            code="context_length_exceeded",
            headers=header,
        )
    return ClientError(
        400,
        f"No model this route may use can take this request: {reasons}.",
        param=plan.refused_param,
        code="unsupported_parameter",
        headers=header,
    )

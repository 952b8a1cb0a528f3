"""POST /v1/chat/completions: route, try candidates in order, answer or relay the stream.

One deadline (``timeouts.total``) and one attempt cap (``max_attempts``) cover the whole request
(``resilience.attempts``). A failure before the first byte reaches the client moves on to the
next candidate; a 4xx caused by the request itself is returned as the upstream sent it. Every
hop is reported to the request's telemetry (spans, metrics, the access log line).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from edgeproxy import tokens
from edgeproxy.cache.layer import HEADER as CACHE_HEADER
from edgeproxy.cache.layer import (
    HIT,
    CachePlan,
)
from edgeproxy.cache.singleflight import FollowerTimeout, LeaderFailed
from edgeproxy.errors import TokenizerError
from edgeproxy.events import AttemptKind
from edgeproxy.failure import AttemptFailure
from edgeproxy.resilience.attempts import AttemptLoop, Deadline, Outcome, PassThrough
from edgeproxy.resilience.shedding import Overloaded
from edgeproxy.server.attempt import UpstreamCall, attempt_once, attempt_stream
from edgeproxy.server.attempt_log import AttemptLog, discard_stream
from edgeproxy.server.body import read_json_body
from edgeproxy.server.cached_answers import (
    CacheTap,
    answer_from_cache,
    follow_stream,
    shared_answer,
    who_served,
)
from edgeproxy.server.client_wire import ClientWire, OpenAIClient
from edgeproxy.server.context import STATE, ProxyState, request_id
from edgeproxy.server.openai_wire import IngressError, parse_chat_request
from edgeproxy.server.relay import (
    Leg,
    StreamOptions,
    StreamProgress,
    UsageCounter,
    UsageCounterNow,
    add_usage,
    relay_to_client,
)
from edgeproxy.server.responses import all_failed, pass_through, served_headers
from edgeproxy.snapshot import Candidate, Policy, Route
from edgeproxy.telemetry.request import AttemptTelemetry, RequestTelemetry

Serve = Callable[
    [web.Request, ProxyState, str, RequestTelemetry, bytes], Awaitable[web.StreamResponse]
]


async def handle_chat_completions(request: web.Request) -> web.StreamResponse:
    return await run_exchange(request, _serve, "/v1/chat/completions")


async def run_exchange(request: web.Request, serve: Serve, path: str) -> web.StreamResponse:
    """What every ingress shares: the request's telemetry, the body read (its size and time
    limits) and then load shedding, and the request's outcome recorded however it ends. Errors
    are raised as ``IngressError`` (the ingress renders them in its own wire). The body is in
    before a slot is taken: a client trickling its body holds a connection, never a slot."""
    state = request.app[STATE]
    rid = request_id(request)
    tel = state.telemetry.start_request(
        request_id=rid,
        headers=request.headers,
        path=path,
        capture_content=state.policy.capture_content,
    )
    try:
        policy = state.policy
        raw = await read_json_body(request, policy.max_body_bytes, policy.body_read_timeout)
        try:
            slot = await state.engine.shedder.acquire()
        except Overloaded as overloaded:
            tel.shed(overloaded.reason)
            raise IngressError(
                503,
                "The proxy is at its concurrency limit; retry shortly.",
                type="server_error",
                code="overloaded",
                headers={"Retry-After": str(max(1, round(overloaded.retry_after)))},
            ) from None
        with slot:
            response = await serve(request, state, rid, tel, raw)
    except IngressError as err:
        tel.finish(err.status, error_type=err.code or err.type)
        raise
    except asyncio.CancelledError:
        tel.finish(499, outcome="client_gone")
        raise
    except BaseException:
        tel.finish(500, error_type="internal")
        raise
    tel.finish(response.status)
    return response


async def _serve(
    request: web.Request, state: ProxyState, rid: str, tel: RequestTelemetry, raw: bytes
) -> web.StreamResponse:
    policy = state.policy  # this request is served start to end under this one snapshot
    body = parse_chat_request(raw)
    stream = bool(body.get("stream"))
    tel.request_parsed(body["model"], stream=stream)
    route = policy.route_for(body["model"])
    if route is None:
        raise IngressError(
            404,
            f"The model {body['model']!r} does not exist or is not served by this proxy "
            f"(served: {', '.join(policy.route_names)}).",
            param="model",
            code="model_not_found",
        )
    exchange = ChatExchange(state, policy, route, raw, body, rid, tel)
    return await exchange.serve(request)


class ChatExchange:
    """One chat request on its way through the proxy: its route, deadline and attempts."""

    def __init__(
        self,
        state: ProxyState,
        policy: Policy,
        route: Route,
        raw: bytes,
        body: dict[str, Any],
        rid: str,
        tel: RequestTelemetry,
        client: ClientWire | None = None,
    ) -> None:
        self.client: ClientWire = client or OpenAIClient()
        self.state = state
        self.engine = state.engine
        self.policy = policy
        self.route = route
        self.raw = raw
        self.body = body
        self.rid = rid
        self.tel = tel
        self.stream = bool(body.get("stream"))
        options = body.get("stream_options")
        self.wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.deadline = Deadline(state.clock, route.timeouts.total)
        self.attempts_used = 0
        # The prompt's token count per encoding, counted once (held here until done: the loop
        # keeps only weak references to tasks).
        self._prompt_counts: dict[str, asyncio.Future[int]] = {}
        self._untranslatable_param: str | None = None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        response = await self._serve(request)
        if isinstance(response, web.Response):
            return self.client.answer(response, self.rid)  # streams were encoded as they went
        return response

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        route, cache = self.route, self.state.cache
        plan = cache.plan(
            self.raw, self.body, route.name, route.cache, request.headers, wire=self.client.name
        )
        reply = cache.lookup(plan, self.stream)
        if reply is not None:
            self.tel.cache(HIT)
            return await answer_from_cache(request, reply, self.client, self.tel, self.policy)
        self.tel.cache(plan.status)
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
                return followed
        tap = CacheTap(broadcast if leader else None, plan, cache)
        try:
            return await self._serve_upstream(request, plan, tap)
        finally:
            tap.end(False, b"")  # no-op when the relay already ended it

    async def _serve_upstream(
        self, request: web.Request, plan: CachePlan, tap: CacheTap | None = None
    ) -> web.StreamResponse:
        route, engine, policy = self.route, self.engine, self.policy
        chain, untranslatable = self._translatable(route.chain)
        chain, too_small = await self._fitting(chain)
        open_now = [
            (c.key, "circuit breaker open") for c in chain if not engine.breakers.get(c.key).allow()
        ]
        skipped = untranslatable + too_small
        self.tel.route_decided(
            route.name, route.chain, skipped=skipped + open_now, policy_version=policy.version
        )
        if not chain:
            if too_small:
                raise IngressError(
                    400,
                    "The prompt plus max_tokens does not fit the context window of any model "
                    f"this route may use: {'; '.join(why for _, why in too_small)}.",
                    param="messages",
                    code="context_length_exceeded",
                    headers={SKIPPED_HEADER: _skipped_header(skipped)},
                )
            raise IngressError(
                400,
                "No model this route may use can take this request: "
                f"{'; '.join(why for _, why in untranslatable)}.",
                param=self._untranslatable_param,
                code="unsupported_parameter",
                headers={SKIPPED_HEADER: _skipped_header(skipped)},
            )
        engine.budget.request_started()
        engine.hedger.request_started()
        hedge = engine.hedge_delay(route.hedge, chain[0].key) if self.stream else None
        loop = self._loop(chain, route.max_attempts, hedge_delay=hedge)
        try:
            outcome = await loop.run(self._attempt(self.body, StreamOptions()))
        except PassThrough as final:
            failure = final.failure
            # The upstream's own error, in OpenAI's shape (the client wire re-shapes it again
            # if the client does not speak OpenAI).
            failure.body, failure.content_type = final.candidate.wire.client_error_body(
                failure, self.rid
            )
            return pass_through(failure, final.candidate, loop.outcome.attempts, policy.version)
        finally:
            self.attempts_used = len(loop.outcome.attempts)
        if outcome.served is None:
            return all_failed(route, outcome, self.rid, policy.version)
        headers = served_headers(outcome.served, outcome.attempts, policy.version)
        headers[CACHE_HEADER] = plan.status
        if skipped:
            headers[SKIPPED_HEADER] = _skipped_header(skipped)
        if not self.stream:
            assert isinstance(outcome.value, bytes)
            if outcome.served.price is not None:
                # What this answer cost, failed attempts included (a failover's real price).
                cost = sum(a.cost for a in self.tel.attempts)
                headers[COST_HEADER] = f"{cost:.8f}"
            self.state.cache.store_completion(plan, outcome.value, who_served(headers))
            return web.Response(
                body=outcome.value, content_type="application/json", headers=headers
            )
        if tap is not None:
            tap.start(who_served(headers))
        leg = self._leg(outcome)
        resume = self._resume if route.on_midstream_failure == "resume" else None
        try:
            return await relay_to_client(
                request,
                leg,
                headers,
                route,
                self.deadline,
                self.rid,
                resume,
                tap,
                self.client.stream(),
            )
        finally:
            leg.attempt.end()

    def _translatable(
        self, chain: tuple[Candidate, ...]
    ) -> tuple[tuple[Candidate, ...], list[tuple[str, str]]]:
        """The candidates whose wire can carry this request. An OpenAI request that uses a
        feature Anthropic lacks (n > 1, logprobs, ...) skips Anthropic-wire candidates, with the
        field named, rather than being silently changed."""
        refusals = {}
        for wire in {c.wire for c in chain}:
            refusal = wire.refusal(self.body)
            if refusal is not None:
                refusals[wire] = refusal
                self._untranslatable_param = refusal.param
        if not refusals:
            return chain, []
        kept = tuple(c for c in chain if c.wire not in refusals)
        return kept, [
            (c.key, f"{c.key}: {refusals[c.wire].reason}") for c in chain if c.wire in refusals
        ]

    def _max_output(self) -> int:
        out = self.body.get("max_completion_tokens") or self.body.get("max_tokens") or 0
        return out if isinstance(out, int) and out > 0 else 0

    async def _fitting(
        self, chain: tuple[Candidate, ...]
    ) -> tuple[tuple[Candidate, ...], list[tuple[str, str]]]:
        """The candidates whose context window holds the prompt plus ``max_tokens``, and why the
        others were skipped. The prompt is only counted when it could matter: a token is at
        least one byte, so a body shorter than the window always fits."""
        out = self._max_output()
        kept: list[Candidate] = []
        skipped: list[tuple[str, str]] = []
        for candidate in chain:
            window = candidate.context_window
            if window is None or len(self.raw) + out <= window:
                kept.append(candidate)
                continue
            prompt = await self._prompt_count(candidate.tokenizer)
            if prompt + out <= window:
                kept.append(candidate)
            else:
                skipped.append(
                    (
                        candidate.key,
                        f"{candidate.key}: context window {window} < prompt {prompt} + "
                        f"max_tokens {out}",
                    )
                )
        return tuple(kept), skipped

    def _prompt_task(self, encoding: str) -> asyncio.Future[int]:
        """The count of the prompt in ``encoding``: one per request and encoding, shared by
        whatever needs it (context-window routing, hedged attempts, the usage fill)."""
        task = self._prompt_counts.get(encoding)
        if task is None:
            task = self._prompt_counts[encoding] = asyncio.ensure_future(
                self._count_prompt(encoding)
            )
        return task

    async def _count_prompt(self, encoding: str) -> int:
        """Off the event loop for a large body (``tokens.count_chat_async``)."""
        try:
            return (await tokens.count_chat_async(self.raw, encoding)).tokens
        except TokenizerError:
            return self._prompt_estimate()

    async def _prompt_count(self, encoding: str) -> int:
        # Shielded: one caller cancelled (a hedge that lost) leaves the count to the others.
        return await asyncio.shield(self._prompt_task(encoding))

    def _prompt_count_now(self, encoding: str) -> int:
        """``_prompt_count`` without waiting, for a ``finally`` that must not be cancelled half
        way: the shared count if it is done (a large stream's starts when the stream opens:
        ``_count_prompt_early``), else counted inline."""
        task = self._prompt_counts.get(encoding)
        if task is not None and task.done() and not task.cancelled():
            return task.result()
        try:
            return tokens.count_chat(self.raw, encoding).tokens
        except TokenizerError:
            return self._prompt_estimate()

    def _prompt_estimate(self) -> int:
        """For a body the counter refuses although the proxy accepted it (JSON nested deeper
        than 128 levels, e.g. in a tool schema): ~4 bytes a token, rather than failing an answer
        the upstream gave."""
        return -(-len(self.raw) // 4)

    def _count_prompt_early(self, encoding: str) -> None:
        """Starts counting a large prompt off the loop while its answer streams, so that the
        count at the stream's end (telemetry, when the upstream reports no usage) finds it."""
        if len(self.raw) >= tokens.OFF_LOOP_BYTES:
            self._prompt_task(encoding)

    def _loop(
        self,
        chain: tuple[Candidate, ...],
        max_attempts: int,
        hedge_delay: float | None = None,
        resume: bool = False,
    ) -> AttemptLoop[Any]:
        engine = self.engine
        return AttemptLoop(
            chain=chain,
            max_attempts=max_attempts,
            deadline=self.deadline,
            gate=engine,
            budget=engine.budget,
            backoff=engine.backoff,
            listener=AttemptLog(self.rid, engine, self.stream, self.tel),
            discard=discard_stream if self.stream else None,
            defer_success=self.stream,
            hedge_delay=hedge_delay,
            try_hedge=engine.hedger.try_hedge,
            quota_ejection=self.policy.engine.quota_ejection,
            first_number=self.attempts_used + 1,
            first_kind=AttemptKind.RESUME if resume else AttemptKind.FIRST,
        )

    def _attempt(
        self, body: dict[str, Any], options: StreamOptions
    ) -> Callable[[Candidate], Awaitable[Any]]:
        async def attempt(candidate: Candidate) -> Any:
            upstream_body = _upstream_body(body, candidate)
            att = self.tel.attempt(candidate, price=candidate.price)
            call = UpstreamCall(
                self.state,
                self.route,
                candidate,
                upstream_body,
                self.deadline,
                self.rid,
                att.headers(),
            )
            try:
                if self.stream:
                    self._count_prompt_early(candidate.tokenizer)
                    stream_options = replace(
                        options,
                        count_usage=self._usage_counter(candidate) if self.wants_usage else None,
                    )
                    opened, first = await attempt_stream(call, stream_options)
                    att.first_token()
                    att.succeed(200, response_model=opened.progress.model)
                    # The attempt's span stays open through the relay.
                    return opened, first, att, self._usage_counter_now(candidate)
                answer, parsed = await attempt_once(call)
                # Inside the try: the count may wait for a worker thread (a large prompt).
                answer = await self._with_usage(answer, parsed, candidate, att)
            except AttemptFailure as failure:
                att.fail(failure)
                att.end()
                raise
            except BaseException:
                att.abandon()
                att.end()
                raise
            model = parsed.get("model")
            att.succeed(200, response_model=model if isinstance(model, str) else None)
            att.end()
            return answer

        return attempt

    def _leg(self, outcome: Outcome[Any]) -> Leg:
        assert outcome.value is not None and outcome.permit is not None
        assert outcome.served is not None
        opened, first, att, counter = outcome.value
        return Leg(opened, first, outcome.permit, att, outcome.served.key, counter)

    # -- usage -----------------------------------------------------------------------------

    def _usage_counter(self, candidate: Candidate) -> UsageCounter:
        """The proxy's own usage count for an answer's text, with ``candidate``'s tokenizer."""
        encoding = candidate.tokenizer

        async def count_usage(text: str) -> dict[str, int]:
            return {
                "prompt_tokens": await self._prompt_count(encoding),
                "completion_tokens": await tokens.count_async(text, encoding),
            }

        return count_usage

    def _usage_counter_now(self, candidate: Candidate) -> UsageCounterNow:
        """``_usage_counter`` without waiting (telemetry at the end of a relayed stream)."""
        encoding = candidate.tokenizer

        def count_usage(text: str) -> dict[str, int]:
            return {
                "prompt_tokens": self._prompt_count_now(encoding),
                "completion_tokens": tokens.count(text, encoding),
            }

        return count_usage

    async def _with_usage(
        self, answer: bytes, parsed: dict[str, Any], candidate: Candidate, att: AttemptTelemetry
    ) -> bytes:
        """Record the answer's usage; an upstream that sends none gets the proxy's own count."""
        usage = parsed.get("usage")
        if isinstance(usage, dict) and usage:
            att.record_usage(usage)
            return answer
        choices = parsed.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        counted = add_usage(
            await self._usage_counter(candidate)(content if isinstance(content, str) else ""), {}
        )
        att.record_usage(counted, estimated=True)
        return orjson.dumps({**parsed, "usage": counted})

    # -- resuming a committed stream ----------------------------------------------------------

    async def _resume(self, text: str, original: StreamProgress, failed: str) -> Leg | None:
        """Continue a cut answer on another candidate that supports an assistant prefill: the
        text already sent goes to it as a trailing assistant message, and its continuation is
        relayed into the same stream (same id, usage of both legs)."""
        chain = tuple(c for c in self.route.chain if c.key != failed and c.assistant_prefill)
        attempts_left = self.route.max_attempts - self.attempts_used
        if not chain or attempts_left <= 0 or self.deadline.remaining() <= 0:
            return None
        first = next(c for c in self.route.chain if c.key == failed)
        prior = self._usage_counter_now(first)(text)
        body = {
            **self.body,
            "messages": [*self.body["messages"], {"role": "assistant", "content": text}],
        }
        options = StreamOptions(continues=original, prior_usage=prior)
        loop = self._loop(chain, attempts_left, resume=True)
        try:
            outcome = await loop.run(self._attempt(body, options))
        except PassThrough:
            return None
        finally:
            self.attempts_used += len(loop.outcome.attempts)
        if outcome.served is None:
            return None
        self.tel.event("edgeproxy.resumed", {"edgeproxy.candidate": outcome.served.key})
        return self._leg(outcome)


SKIPPED_HEADER = "x-edgeproxy-skipped"
COST_HEADER = "x-edgeproxy-cost-usd"


def _skipped_header(skipped: list[tuple[str, str]]) -> str:
    return ", ".join(
        f"{key}={'context_window' if 'context window' in why else 'wire'}" for key, why in skipped
    )


def _upstream_body(body: dict[str, Any], candidate: Candidate) -> bytes:
    """The request as this candidate's wire and model name want it."""
    return candidate.wire.request_body(body, candidate)

"""POST /v1/chat/completions: route, try candidates in order, answer or relay the stream.

One deadline (``timeouts.total``) and one attempt cap (``max_attempts``) cover the whole request.
A failure before the first byte reaches the client moves on to the next candidate; a 4xx caused by
the request itself is returned as the upstream sent it, without failover.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from edgeproxy._core import encode_sse
from edgeproxy.policy.snapshot import Candidate, Route
from edgeproxy.resilience.attempts import (
    AttemptLoop,
    AttemptRecord,
    Deadline,
    Outcome,
    PassThrough,
    Permit,
)
from edgeproxy.resilience.engine import ResilienceEngine
from edgeproxy.resilience.failure import TIMEOUTS, AttemptFailure, FailureClass
from edgeproxy.resilience.shedding import Overloaded
from edgeproxy.server.body import read_json_body
from edgeproxy.server.context import STATE, ProxyState, request_id
from edgeproxy.server.openai_wire import IngressError, error_body, parse_chat_request
from edgeproxy.server.relay import UpstreamErrorEvent, UpstreamStream, open_stream
from edgeproxy.upstreams import openai as openai_upstream

log = logging.getLogger("edgeproxy.access")

# A non-stream answer larger than this is refused rather than buffered without bound.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


async def handle_chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        slot = await state.engine.shedder.acquire()
    except Overloaded as overloaded:
        raise IngressError(
            503,
            "The proxy is at its concurrency limit; retry shortly.",
            type="server_error",
            code="overloaded",
            headers={"Retry-After": str(max(1, round(overloaded.retry_after)))},
        ) from None
    with slot:
        return await _serve(request, state)


async def _serve(request: web.Request, state: ProxyState) -> web.StreamResponse:
    policy = state.policy  # this request is served start to end under this one snapshot
    rid = request_id(request)
    raw = await read_json_body(request, policy.max_body_bytes)
    body = parse_chat_request(raw)
    route = policy.route_for(body["model"])
    if route is None:
        raise IngressError(
            404,
            f"The model {body['model']!r} does not exist or is not served by this proxy "
            f"(served: {', '.join(policy.route_names)}).",
            param="model",
            code="model_not_found",
        )
    stream = bool(body.get("stream"))
    engine = state.engine
    engine.budget.request_started()
    engine.hedger.request_started()
    deadline = Deadline(state.clock, route.timeouts.total)
    loop: AttemptLoop[Any] = AttemptLoop(
        chain=route.chain,
        max_attempts=route.max_attempts,
        deadline=deadline,
        gate=engine,
        budget=engine.budget,
        backoff=engine.backoff,
        observer=AttemptLog(rid, engine, stream),
        discard=_discard_stream if stream else None,
        defer_success=stream,
    )

    async def attempt(candidate: Candidate) -> Any:
        upstream_body = openai_upstream.upstream_body(body, candidate)
        if stream:
            return await _attempt_stream(state, route, candidate, upstream_body, deadline, rid)
        return await _attempt_once(state, route, candidate, upstream_body, deadline, rid)

    try:
        outcome = await loop.run(attempt)
    except PassThrough as final:
        return _pass_through(final.failure, final.candidate, loop.outcome.attempts, policy.version)
    if outcome.served is None:
        return _all_failed(route, outcome, rid, policy.version)
    headers = _served_headers(outcome.served, outcome.attempts, policy.version)
    if stream:
        assert outcome.value is not None
        opened, first = outcome.value
        assert outcome.permit is not None
        return await _relay(request, opened, first, headers, route, deadline, rid, outcome.permit)
    return web.Response(body=outcome.value, content_type="application/json", headers=headers)


class AttemptLog:
    """The attempt loop's observer: a log line per failed attempt, TTFT samples for hedging."""

    def __init__(self, rid: str, engine: ResilienceEngine, stream: bool) -> None:
        self._rid = rid
        self._engine = engine
        self._stream = stream

    def attempt_started(self, candidate: Candidate, number: int, hedge: bool) -> None:
        pass

    def attempt_finished(
        self, candidate: Candidate, number: int, failure: AttemptFailure | None, seconds: float
    ) -> None:
        if failure is None:
            if self._stream:
                self._engine.hedger.observe_ttft(candidate.key, seconds)
            return
        log.info(
            "attempt failed",
            extra={
                "request_id": self._rid,
                "candidate": candidate.key,
                "attempt": number,
                "failure": str(failure),
            },
        )

    def skipped(self, candidate: Candidate, reason: str) -> None:
        extra = {"request_id": self._rid, "candidate": candidate.key, "reason": reason}
        log.info("candidate skipped", extra=extra)

    def backing_off(self, candidate: Candidate, seconds: float) -> None:
        extra = {"request_id": self._rid, "candidate": candidate.key, "wait_s": round(seconds, 3)}
        log.info("retrying after backoff", extra=extra)


def _discard_stream(value: tuple[UpstreamStream, bytes]) -> None:
    value[0].close()


async def _attempt_once(
    state: ProxyState,
    route: Route,
    candidate: Candidate,
    body: bytes,
    deadline: Deadline,
    rid: str,
) -> bytes:
    limit, by_deadline = deadline.clip(route.timeouts.response)
    try:
        async with asyncio.timeout(limit):
            response = await openai_upstream.send(
                state.pool.session,
                candidate,
                body,
                stream=False,
                connect_timeout=route.timeouts.connect,
                request_id=rid,
            )
            try:
                data = await response.content.read(MAX_RESPONSE_BYTES + 1)
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise AttemptFailure(
                    FailureClass.CUT, f"upstream connection lost mid-body: {type(exc).__name__}"
                ) from None
            finally:
                response.release()
    except TimeoutError:
        failure = FailureClass.DEADLINE if by_deadline else FailureClass.RESPONSE_TIMEOUT
        raise AttemptFailure(failure, f"no complete answer within {limit:.3g}s") from None
    if len(data) > MAX_RESPONSE_BYTES:
        raise AttemptFailure(FailureClass.MALFORMED, "upstream answer is larger than 64 MiB")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise AttemptFailure(FailureClass.MALFORMED, "upstream answer is not valid JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
        raise AttemptFailure(FailureClass.MALFORMED, "upstream answer has no 'choices' array")
    return data


async def _attempt_stream(
    state: ProxyState,
    route: Route,
    candidate: Candidate,
    body: bytes,
    deadline: Deadline,
    rid: str,
) -> tuple[UpstreamStream, bytes]:
    limit, by_deadline = deadline.clip(route.timeouts.first_token)
    try:
        async with asyncio.timeout(limit):
            response = await openai_upstream.send(
                state.pool.session,
                candidate,
                body,
                stream=True,
                connect_timeout=route.timeouts.connect,
                request_id=rid,
            )
            if response.content_type != "text/event-stream":
                response.close()
                raise AttemptFailure(
                    FailureClass.MALFORMED,
                    f"upstream answered a stream request with {response.content_type!r}",
                )
            return await open_stream(response, limit)
    except TimeoutError:
        failure = FailureClass.DEADLINE if by_deadline else FailureClass.FIRST_TOKEN_TIMEOUT
        raise AttemptFailure(failure, f"no first event within {limit:.3g}s") from None


async def _relay(
    request: web.Request,
    upstream: UpstreamStream,
    first: bytes,
    headers: dict[str, str],
    route: Route,
    deadline: Deadline,
    rid: str,
    permit: Permit,
) -> web.StreamResponse:
    """Relay a committed stream. Its breaker permit is settled here: success only when the answer
    is complete; a failure after the commit ends the stream with an in-band error and counts
    against the upstream like any other."""
    response = web.StreamResponse(
        status=200,
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
    )
    clean = False
    try:
        await response.prepare(request)  # the commit point: from here on, no silent failover
        await response.write(first)
        while not upstream.progress.done:
            idle, by_deadline = deadline.clip(route.timeouts.idle)
            timeout_class = FailureClass.DEADLINE if by_deadline else FailureClass.IDLE_TIMEOUT
            try:
                out = await upstream.read(max(idle, 0.0), timeout_class)
            except UpstreamErrorEvent as event:
                # Already an error in OpenAI's format: pass it on, and end without [DONE].
                await response.write(encode_sse(event.data))
                break
            except AttemptFailure as failure:
                permit.failure(failure.failure)
                await response.write(_midstream_error(failure, upstream, rid))
                break
            if out is None:
                if upstream.progress.finished:
                    # Every choice finished but [DONE] never came: the answer is whole, so the
                    # client gets the terminator it expects.
                    await response.write(encode_sse("[DONE]"))
                    clean = True
                else:
                    cut = AttemptFailure(
                        FailureClass.CUT, "upstream closed the stream before it was complete"
                    )
                    permit.failure(cut.failure)
                    await response.write(_midstream_error(cut, upstream, rid))
                break
            if out:
                await response.write(out)
        else:
            clean = True
        await response.write_eof()
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        clean = False  # the client went away; the upstream is dropped below
    finally:
        if clean:
            permit.success()
            upstream.release()
        else:
            permit.release()  # settles nothing if already failed; a client leaving is neutral
            upstream.close()
    return response


def _midstream_error(failure: AttemptFailure, upstream: UpstreamStream, rid: str) -> bytes:
    body = error_body(
        f"The upstream stream failed after {upstream.progress.events} events ({failure}); "
        "the answer is incomplete.",
        type="upstream_error",
        code="stream_interrupted",
        request_id=rid,
    )
    return encode_sse(orjson.dumps(body).decode())


def _served_headers(
    candidate: Candidate, attempts: list[AttemptRecord], version: str
) -> dict[str, str]:
    return {
        "x-edgeproxy-provider": candidate.provider,
        "x-edgeproxy-region": candidate.region,
        "x-edgeproxy-model": candidate.model,
        "x-edgeproxy-attempts": str(len(attempts)),
        "x-edgeproxy-policy-version": version,
    }


def _pass_through(
    failure: AttemptFailure, candidate: Candidate, attempts: list[AttemptRecord], version: str
) -> web.Response:
    assert failure.status is not None
    return web.Response(
        status=failure.status,
        body=failure.body,
        headers={
            **_served_headers(candidate, attempts, version),
            "Content-Type": failure.content_type,
        },
    )


def _all_failed(route: Route, outcome: Outcome[Any], rid: str, version: str) -> web.Response:
    attempts = outcome.attempts
    failures = [a.failure for a in attempts if a.failure is not None]
    headers = {
        "x-edgeproxy-attempts": str(len(attempts)),
        "x-edgeproxy-policy-version": version,
        # The proxy already retried across the chain; the SDK retrying too would multiply load.
        "x-should-retry": "false",
    }
    retry_after = outcome.retry_after
    if not attempts:
        # Nothing was tried: every breaker is open (fail fast), or no time was left.
        status, type_, code = 503, "server_error", "upstream_unavailable"
    elif all(f.failure is FailureClass.RATE_LIMITED for f in failures):
        status, type_, code = 429, "rate_limit_error", "rate_limit_exceeded"
        waits = [f.retry_after for f in failures if f.retry_after is not None]
        retry_after = min(waits) if waits else retry_after
    elif all(f.failure in TIMEOUTS for f in failures):
        status, type_, code = 504, "upstream_error", "upstream_timeout"
    else:
        status, type_, code = 502, "upstream_error", "upstream_unavailable"
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    tried = "; ".join(f"{a.candidate.key}: {a.failure}" for a in attempts)
    skipped = "; ".join(f"{c.key}: skipped ({why})" for c, why in outcome.skipped)
    detail = "; ".join(part for part in (tried, skipped) if part)
    message = (
        f"No candidate for model {route.name!r} could answer ({len(attempts)} attempts; "
        f"{outcome.stopped_because}): {detail}."
    )
    body: dict[str, Any] = error_body(message, type=type_, code=code, request_id=rid)
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )

"""Answers that do not come from this request's own upstream call: cache hits (JSON, or a stored
stream replayed in the client's wire), a coalesced follower's share of an identical request in
flight (single-flight), and the tap that records a leader's stream for both."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

from aiohttp import web

from edgeproxy.cache.layer import HEADER as CACHE_HEADER
from edgeproxy.cache.layer import HIT, CachedReply, CachePlan, PromptCache, StreamRecorder
from edgeproxy.cache.singleflight import FollowerTimeout, LeaderFailed, StreamBroadcast
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.attempts import Deadline
from edgeproxy.server.ingress.base import StreamEncoder
from edgeproxy.server.relay import SSE_HEADERS, SseResponse
from edgeproxy.snapshot import Policy
from edgeproxy.telemetry.listener import RequestTelemetry
from edgeproxy.translate import TranslationError


class Following(Protocol):
    """What a coalesced follower needs of its own exchange."""

    def encoder(self) -> StreamEncoder: ...

    tel: RequestTelemetry
    policy: Policy
    deadline: Deadline
    rid: str


async def answer_from_cache(
    request: web.Request,
    reply: CachedReply,
    encoder: StreamEncoder,
    tel: RequestTelemetry,
    policy: Policy,
    deadline: Deadline,
) -> web.StreamResponse:
    """A cache hit: the stored JSON, or the stored stream replayed in the client's wire (its
    write bounded by the deadline, like every write of a stream to a client)."""
    headers = {
        **reply.headers,
        "x-edgeproxy-attempts": "0",
        "x-edgeproxy-policy-version": policy.version,
    }
    if reply.body is not None:
        return web.Response(body=reply.body, content_type="application/json", headers=headers)
    assert reply.chunks is not None
    response = SseResponse(headers={**headers, **SSE_HEADERS})
    await response.prepare(request)
    tel.first_token_sent()
    # The whole recorded stream, its headers and the end of the body in one write.
    try:
        await _bounded(
            response.write_eof(encoder.encode(b"".join(reply.chunks)) + encoder.close()), deadline
        )
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()  # its client did not read before the deadline
    return response


def shared_answer(
    answer: bytes, plan: CachePlan, cache: PromptCache, policy: Policy
) -> web.Response:
    """A coalesced follower's answer: the leader's, as the cache stored it."""
    stored = cache.lookup(plan, stream=False)
    served = stored.served if stored is not None else {}
    headers = {
        **served,
        CACHE_HEADER: HIT,
        "x-edgeproxy-attempts": "0",
        "x-edgeproxy-policy-version": policy.version,
    }
    return web.Response(body=answer, content_type="application/json", headers=headers)


async def follow_stream(
    request: web.Request, broadcast: StreamBroadcast, exchange: Following
) -> web.StreamResponse | None:
    """Relay an identical stream already in flight; None when its leader failed before
    sending anything (then this request makes its own upstream call). Every write is bounded
    by the follower's own deadline: a follower whose client stops reading is dropped."""
    response: web.StreamResponse | None = None
    encoder = exchange.encoder()
    failure: AttemptFailure | None = None
    try:
        try:
            async for chunk in broadcast.follow(max(exchange.deadline.remaining(), 0.0)):
                if response is None:
                    headers = {
                        CACHE_HEADER: HIT,
                        "x-edgeproxy-attempts": "0",
                        "x-edgeproxy-policy-version": exchange.policy.version,
                        **SSE_HEADERS,
                    }
                    response = web.StreamResponse(headers=headers)
                    await response.prepare(request)
                    exchange.tel.first_token_sent()
                try:
                    await _bounded(response.write(encoder.encode(chunk)), exchange.deadline)
                except TranslationError:
                    # The leader's stream ended in an error event (OpenAI's shape).
                    failure = AttemptFailure(FailureClass.CUT, "the shared stream failed")
                    break
        except LeaderFailed:
            return None
        except FollowerTimeout as timeout:
            if response is None and not timeout.committed:
                return None
            failure = AttemptFailure(FailureClass.DEADLINE, "the shared stream outlasted it")
        if response is None:
            return None
        if failure is not None:
            await _bounded(
                response.write(encoder.error(failure, 0, exchange.rid, None)), exchange.deadline
            )
        else:
            await _bounded(response.write(encoder.close()), exchange.deadline)
        await _bounded(response.write_eof(), exchange.deadline)
    except TimeoutError:
        # Its client did not read before the deadline: drop it (the slot is freed on return).
        if request.transport is not None:
            request.transport.abort()
    return response


async def _bounded(write: Awaitable[None], deadline: Deadline) -> None:
    """A write to the client within what is left of the deadline (TimeoutError after)."""
    async with asyncio.timeout(max(deadline.remaining(), 0.0)):
        await write


def who_served(headers: dict[str, str]) -> dict[str, str]:
    """The headers naming who served an answer, kept with it in the cache."""
    return {k: v for k, v in headers.items() if k in _WHO}


_WHO = frozenset({"x-edgeproxy-provider", "x-edgeproxy-region", "x-edgeproxy-model"})


class CacheTap:
    """Records a leader's stream for the cache and shares it with coalesced followers.

    Neither grows with the stream: the recording stops (and the answer is not stored) past the
    cache's ``MAX_RECORD_BYTES``, and the broadcast keeps at most ``MAX_SHARED_BYTES``; a
    stream nobody can follow (its plan has no key, or no lookup) is not shared at all.
    """

    def __init__(
        self, broadcast: StreamBroadcast | None, plan: CachePlan, cache: PromptCache
    ) -> None:
        followable = plan.key is not None and plan.lookup  # as ``PromptCache.join_stream``
        self._broadcast = broadcast if followable else None
        self._plan = plan
        self._cache = cache
        self._recorder: StreamRecorder | None = None
        self._ended = False

    def start(self, served: dict[str, str]) -> None:
        self._recorder = self._cache.recorder(self._plan, served)

    def write(self, data: bytes) -> None:
        if self._recorder is not None:
            self._recorder.feed_bytes(data)
        if self._broadcast is not None:
            self._broadcast.append(data)

    def end(self, complete: bool, error: bytes, cacheable: bool = True) -> None:
        if self._ended:
            return
        self._ended = True
        if self._recorder is not None:
            self._recorder.finish(complete and cacheable)  # stores only a complete answer
        if self._broadcast is not None:
            if complete:
                self._broadcast.close()
            else:
                self._broadcast.fail(error)

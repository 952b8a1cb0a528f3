"""The handler every ingress wire's endpoints share.

In order, for every request: the request's telemetry starts; its virtual key is checked when
the policy turns key auth on (``admission.authenticate``); the body is read under the
policy's size and time limits (before a concurrency slot is taken: a client trickling its body
holds a connection, never a slot); a slot is taken or the request is shed; the wire parses the
body; the route is found; the exchange serves it. However it ends, telemetry finishes once. A
``ClientError`` raised anywhere is rendered by the errors middleware in the client's wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from edgeproxy.resilience.shedding import Overloaded
from edgeproxy.server.admission import authenticate
from edgeproxy.server.body import read_json_body
from edgeproxy.server.context import STATE, ProxyState, request_id
from edgeproxy.server.exchange import Exchange
from edgeproxy.server.ingress import ClientError, IngressWire
from edgeproxy.server.ingress.base import LocalAnswer
from edgeproxy.telemetry.listener import RequestTelemetry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[
    [web.Request, ProxyState, str, RequestTelemetry, bytes], Awaitable[web.StreamResponse]
]


def chat_handler(ingress: IngressWire) -> Handler:
    """``POST ingress.path``: a chat request in the ingress's wire, served by an exchange."""

    async def serve(
        request: web.Request, state: ProxyState, rid: str, tel: RequestTelemetry, raw: bytes
    ) -> web.StreamResponse:
        policy = state.policy  # this request is served start to end under this one snapshot
        asked = ingress.parse(raw)
        tel.request_parsed(asked.model, stream=asked.stream)
        route = policy.route_for(asked.model)
        if route is None:
            raise ingress.not_served(asked.model, policy.route_names)
        exchange = Exchange(state, policy, route, asked, rid, tel, ingress)
        return await exchange.serve(request)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await run_exchange(request, serve, ingress.path)

    return handle


def local_handler(path: str, answer: LocalAnswer) -> Handler:
    """A path an ingress answers itself (no upstream); the same limits, slot and telemetry."""

    async def serve(
        request: web.Request, state: ProxyState, rid: str, tel: RequestTelemetry, raw: bytes
    ) -> web.StreamResponse:
        return await answer(raw, rid)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await run_exchange(request, serve, path)

    return handle


async def run_exchange(request: web.Request, serve: Serve, path: str) -> web.StreamResponse:
    """What every endpoint shares: telemetry, the body's limits, load shedding, and the
    request's outcome recorded however it ends."""
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
        # A virtual key when the policy asks for one (docs/keys.md), before the body is read.
        authenticate(request, policy, state.limiter, tel)
        raw = await read_json_body(request, policy.max_body_bytes, policy.body_read_timeout)
        try:
            slot = await state.engine.shedder.acquire()
        except Overloaded as overloaded:
            tel.shed(overloaded.reason)
            raise ClientError(
                503,
                "The proxy is at its concurrency limit; retry shortly.",
                type="server_error",
                code="overloaded",
                headers={"Retry-After": str(max(1, round(overloaded.retry_after)))},
            ) from None
        with slot:
            response = await serve(request, state, rid, tel, raw)
    except ClientError as err:
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

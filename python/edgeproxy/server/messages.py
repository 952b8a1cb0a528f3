"""POST /v1/messages: Anthropic's Messages API at the ingress.

The request is validated as Anthropic's, translated to the OpenAI shape every exchange uses
inside, and served by the same attempt loop, relay, cache and telemetry as /v1/chat/completions;
the answer, the stream and every error go back in Anthropic's wire (``client_wire``). A feature
OpenAI's shape cannot carry (extended thinking, server tools, ...) is refused with a 400 naming
it (docs/anthropic.md).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from edgeproxy.server.anthropic_wire import (
    AnthropicIngressError,
    anthropic_error_response,
    count_tokens_response,
    error_response,
    parse_messages_request,
)
from edgeproxy.server.chat import ChatExchange, run_exchange
from edgeproxy.server.client_wire import AnthropicClient
from edgeproxy.server.context import ProxyState, request_id
from edgeproxy.server.openai_wire import IngressError
from edgeproxy.telemetry.request import RequestTelemetry
from edgeproxy.translate import TranslationError, anthropic_error_type, anthropic_to_openai_request


async def handle_messages(request: web.Request) -> web.StreamResponse:
    rid = request_id(request)
    try:
        return await run_exchange(request, _serve, "/v1/messages")
    except IngressError as err:
        return _refusal(err, rid)
    except AnthropicIngressError as err:
        return error_response(err, rid)


async def _serve(
    request: web.Request, state: ProxyState, rid: str, tel: RequestTelemetry, raw: bytes
) -> web.StreamResponse:
    policy = state.policy  # this request is served start to end under this one snapshot
    body = parse_messages_request(raw)
    model = body["model"]
    tel.request_parsed(model, stream=bool(body.get("stream")))
    route = policy.route_for(model)
    if route is None:
        raise AnthropicIngressError(
            404,
            f"model: {model!r} is not served by this proxy "
            f"(served: {', '.join(policy.route_names)}).",
            type="not_found_error",
        )
    try:
        inner = anthropic_to_openai_request(body)
    except TranslationError as exc:
        raise AnthropicIngressError(400, str(exc), type="invalid_request_error") from None
    exchange = ChatExchange(
        state, policy, route, orjson.dumps(inner), inner, rid, tel, AnthropicClient(model)
    )
    return await exchange.serve(request)


async def handle_count_tokens(request: web.Request) -> web.StreamResponse:
    """POST /v1/messages/count_tokens, answered locally (a labelled estimate: Anthropic's
    tokenizer is not public). The same path as every other endpoint: the body's limits, then a
    concurrency slot (counting a large prompt is real work)."""
    rid = request_id(request)
    try:
        return await run_exchange(request, _count_tokens, "/v1/messages/count_tokens")
    except IngressError as err:
        return _refusal(err, rid)


async def _count_tokens(
    request: web.Request, state: ProxyState, rid: str, tel: RequestTelemetry, raw: bytes
) -> web.StreamResponse:
    return await count_tokens_response(raw, rid)


def _refusal(err: IngressError, rid: str) -> web.Response:
    """The proxy's own refusals (limits, overload, no model can take it), Anthropic-shaped;
    Anthropic's SDK knows "overloaded" as 529."""
    status = 529 if err.code == "overloaded" else err.status
    return anthropic_error_response(
        status, anthropic_error_type(status), err.message, rid, err.headers
    )

"""The aiohttp application: routes, request ids, and errors in OpenAI's format."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from edgeproxy import __version__
from edgeproxy.server.chat import handle_chat_completions
from edgeproxy.server.context import STATE, ProxyState, request_id
from edgeproxy.server.messages import handle_count_tokens, handle_messages
from edgeproxy.server.metrics import TELEMETRY, handle_metrics
from edgeproxy.server.openai_wire import IngressError, error_response

log = logging.getLogger("edgeproxy.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves in OpenAI's shape with the request id; nothing leaks a traceback."""
    rid = request_id(request)
    try:
        return await handler(request)
    except IngressError as err:
        return error_response(err, rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"Unknown path {request.path!r}. This proxy serves /v1/chat/completions and /v1/models.",
            405: f"Method {request.method} is not allowed on {request.path}.",
        }.get(exc.status, exc.reason)
        return error_response(
            IngressError(exc.status, message, code=exc.reason.lower().replace(" ", "_")), rid
        )
    except Exception:
        log.exception("unhandled error", extra={"request_id": rid})
        return error_response(
            IngressError(
                500,
                "The proxy failed to handle this request.",
                type="server_error",
                code="internal_error",
            ),
            rid,
        )


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-request-id"] = request_id(request)


async def handle_models(request: web.Request) -> web.Response:
    policy = request.app[STATE].policy
    names: list[str] = []
    for name in policy.route_names:
        route = policy.routes[name]
        names.extend((name, *route.aliases))
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "edgeproxy"} for n in names]
    return web.json_response(
        {"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode()
    )


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def handle_readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"status": "ready", "policy_version": state.policy.version})


def create_app(state: ProxyState) -> web.Application:
    # client_max_size is the framework's own cap; the policy's limit is enforced in read_json_body.
    app = web.Application(middlewares=[errors_middleware], client_max_size=1024**3)
    app[STATE] = state
    app.on_response_prepare.append(_stamp_request_id)
    app.router.add_post("/v1/chat/completions", handle_chat_completions)
    app.router.add_post("/v1/messages", handle_messages)
    app.router.add_post("/v1/messages/count_tokens", handle_count_tokens)
    app.router.add_get("/v1/models", handle_models)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app[TELEMETRY] = state.telemetry
    app.router.add_get("/metrics", handle_metrics)
    return app

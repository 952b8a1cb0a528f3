"""The aiohttp application: routes, request ids, and errors in OpenAI's format."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from edgeproxy import __version__
from edgeproxy.routing.tasks import TASK_HEADER
from edgeproxy.server.context import STATE, TASK, ProxyState, request_id
from edgeproxy.server.embeddings import PATH as EMBEDDINGS_PATH
from edgeproxy.server.embeddings import embeddings_handler
from edgeproxy.server.handler import chat_handler, local_handler
from edgeproxy.server.hosts import HostAllowList
from edgeproxy.server.ingress import INGRESS_WIRES, ClientError, ingress_for_path, served_paths
from edgeproxy.server.metrics import TELEMETRY, handle_metrics

log = logging.getLogger("edgeproxy.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves in the client's wire (the ingress its path belongs to) with the
    request id; nothing leaks a traceback."""
    rid = request_id(request)
    try:
        return await handler(request)
    except ClientError as err:
        return ingress_for_path(request.path).error_response(err, rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"Unknown path {request.path!r}. This proxy serves "
            f"{', '.join(served_paths())}, {EMBEDDINGS_PATH} and /v1/models.",
            405: f"Method {request.method} is not allowed on {request.path}.",
        }.get(exc.status, exc.reason)
        refusal = ClientError(exc.status, message, code=exc.reason.lower().replace(" ", "_"))
        return ingress_for_path(request.path).error_response(refusal, rid)
    except Exception:
        log.exception("unhandled error", extra={"request_id": rid})
        failed = ClientError(
            500,
            "The proxy failed to handle this request.",
            type="server_error",
            code="internal_error",
        )
        return ingress_for_path(request.path).error_response(failed, rid)


ALLOWED_HOSTS = web.AppKey("edgeproxy_allowed_hosts", HostAllowList)


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests whose ``Host`` the proxy does not answer to (DNS rebinding: ``hosts.py``) get a
    421 in the client's wire, before anything else runs."""
    allowed = request.app.get(ALLOWED_HOSTS)
    host = request.headers.get("Host")
    if allowed is None or allowed.allows(host):
        return await handler(request)
    rid = request_id(request)
    message = (
        f"This proxy does not answer to the host {host!r} (allowed: {allowed.describe()}; "
        "see --allowed-hosts)."
    )
    err = ClientError(421, message, code="misdirected_request")
    return ingress_for_path(request.path).error_response(err, rid)


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request_id(request)
    response.headers["x-request-id"] = rid
    for header in ingress_for_path(request.path).request_id_headers:
        response.headers.setdefault(header, rid)  # every answer, streams and errors included
    task = request.get(TASK)
    if task is not None:
        response.headers[TASK_HEADER] = task
    if response.headers.get("Connection", "").lower() == "close":
        # An error that left the request body unread (413, 408, ...): the connection cannot
        # carry another request; aiohttp only closes it when told so.
        response.force_close()


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
    if state.draining:  # shutting down (runner.ProxyServer.drain): take no new traffic
        return web.json_response(
            {"status": "draining", "policy_version": state.policy.version}, status=503
        )
    return web.json_response({"status": "ready", "policy_version": state.policy.version})


def create_app(state: ProxyState, allowed_hosts: HostAllowList | None = None) -> web.Application:
    # Bodies are read by body.read_json_body under the current policy's limits, never by
    # aiohttp's request.read()/json()/post(); client_max_size (what those would accept) is the
    # policy's limit at start, so a handler that ever used them would not take 1 GiB.
    app = web.Application(
        middlewares=[host_middleware, errors_middleware],
        client_max_size=state.policy.max_body_bytes,
    )
    app[STATE] = state
    if allowed_hosts is not None:
        app[ALLOWED_HOSTS] = allowed_hosts
    app.on_response_prepare.append(_stamp_request_id)
    for ingress in INGRESS_WIRES:
        app.router.add_post(ingress.path, chat_handler(ingress))
        for path, answer in ingress.local_endpoints():
            app.router.add_post(path, local_handler(path, answer))
    app.router.add_post(EMBEDDINGS_PATH, embeddings_handler())
    app.router.add_get("/v1/models", handle_models)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app[TELEMETRY] = state.telemetry
    app.router.add_get("/metrics", handle_metrics)
    return app

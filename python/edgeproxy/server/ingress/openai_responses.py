"""OpenAI's Responses API at the ingress (``POST /v1/responses``), stateless (docs/responses.md).

A request is checked and translated to the inner Chat Completions shape
(``translate.responses_api``), served like any chat request (failover across every wire, the
cache, the commit point), and its answer goes back as a ``response`` object; a stream goes back
as the Responses API's typed events (``response.created`` ... ``response.completed``),
translated per relayed chunk in Python (one JSON decode and a few small encodes per chunk).

Nothing is stored: ``store`` is accepted and answered ``false``; ``previous_response_id``,
``conversation`` and item references are refused with a 400 saying what to send instead.
Errors are OpenAI's JSON (the same format as Chat Completions). An error that ends a committed
stream is an ``error`` event carrying its fields both flat (as the API reference documents
them) and nested under ``error`` (as OpenAI sends them, which makes the official SDK raise
``APIError`` rather than yield the event and end the iteration quietly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson
from aiohttp import web

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.ingress.base import ClientError, IngressRequest, LocalAnswer, StreamEncoder
from edgeproxy.server.ingress.openai_chat import INGRESS as CHAT
from edgeproxy.server.ingress.openai_chat import error_response
from edgeproxy.server.json_nesting import check_nesting
from edgeproxy.telemetry.redact import redact
from edgeproxy.translate import TranslationError
from edgeproxy.translate.responses_api import (
    ECHOED,
    ResponsesEvents,
    chat_to_response,
    responses_to_chat_request,
)

# Inner Chat Completions fields a refusal may name (a candidate's wire cannot carry one), as
# the Responses API names them: the client is told about the field it sent.
_CLIENT_PARAMS: Final = (
    ("response_format.json_schema", "text.format"),
    ("response_format", "text.format"),
    ("reasoning_effort", "reasoning.effort"),
    ("verbosity", "text.verbosity"),
    ("max_tokens", "max_output_tokens"),
)


def client_param(param: str | None) -> str | None:
    """``param`` of the inner request in the Responses API's names."""
    if param is None:
        return None
    for inner, outer in _CLIENT_PARAMS:
        if param == inner or param.startswith(inner + "."):
            return outer + param[len(inner) :]
    return param


class ResponsesFieldError(ClientError):
    """A refusal that names a field of the client's own Responses body (never renamed)."""


def parse_responses_request(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Responses body, checked, and its inner Chat Completions body (``ClientError``)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ClientError(400, "The request body must be a JSON object.")
    check_nesting(body, ClientError)
    if body.get("model") is None:
        raise ClientError(
            400,
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    try:
        inner = responses_to_chat_request(body)
    except TranslationError as exc:
        code, message = _refusal_words(exc)
        raise ResponsesFieldError(400, message, param=exc.param, code=code) from None
    return body, inner


def _refusal_words(exc: TranslationError) -> tuple[str, str]:
    """The error code and message OpenAI would use for a refused field: a wrong type, a
    missing field, an empty one, or one the proxy does not support."""
    param, text = exc.param, exc.message
    if text.startswith(("expected", "a non-empty")):
        return "invalid_type", f"Invalid '{param}': {text}."
    if text.startswith("required"):
        return "missing_required_parameter", f"Missing required parameter: '{param}' ({text})."
    if text.startswith("at least one"):
        return "invalid_value", f"Invalid '{param}': {text}."
    return "unsupported_parameter", f"'{param}' is not supported: {text}."


class ResponsesStream:
    """The relay's chat chunks out as Responses API events; errors as ``error`` events."""

    def __init__(self, request: IngressRequest) -> None:
        self._events = ResponsesEvents(request.model, request.echo)

    def encode(self, sse: bytes) -> bytes:
        return self._events.feed(sse)

    def error(self, failure: AttemptFailure, events: int, rid: str, upstream: str | None) -> bytes:
        code, kind = "stream_interrupted", "upstream_error"
        message = redact(
            f"The upstream stream failed after {events} events ({failure}); "
            "the answer is incomplete."
        )
        if upstream is not None:
            try:
                err = orjson.loads(upstream).get("error", {})
                message = redact(str(err.get("message") or "the upstream reported an error"))
                code = str(err.get("code") or code)
                kind = str(err.get("type") or kind)
            except (orjson.JSONDecodeError, AttributeError):
                message = "the upstream reported an error"
        nested = {"type": kind, "code": code, "message": message, "param": None, "request_id": rid}
        return self._events.event(
            "error", {"code": code, "message": message, "param": None, "error": nested}
        )

    def close(self) -> bytes:
        if self._events.done:
            return b""
        cut = AttemptFailure(FailureClass.CUT, "the stream ended before response.completed")
        return self.error(cut, 0, "", None)


class OpenAIResponsesIngress:
    name: Final = "responses"
    path: Final = "/v1/responses"
    request_id_headers: Final = ("x-request-id",)

    def parse(self, raw: bytes) -> IngressRequest:
        body, inner = parse_responses_request(raw)
        echo = {key: body[key] for key in ECHOED if body.get(key) is not None}
        return IngressRequest(inner, orjson.dumps(inner), body["model"], echo)

    def not_served(self, model: str, served: Sequence[str]) -> ClientError:
        return CHAT.not_served(model, served)

    def error_response(self, err: ClientError, request_id: str) -> web.Response:
        if not isinstance(err, ResponsesFieldError):
            err.param = client_param(err.param)
        return error_response(err, request_id)

    def answer(self, response: web.Response, request: IngressRequest, rid: str) -> web.Response:
        body = response.body
        if response.status != 200 or not isinstance(body, bytes):
            return response  # an error: OpenAI's format already
        try:
            converted = orjson.dumps(
                chat_to_response(orjson.loads(body), request.echo, request.model)
            )
        except (orjson.JSONDecodeError, TranslationError) as exc:
            failed = ClientError(502, f"untranslatable answer: {exc}", type="upstream_error")
            return _rebuilt(response, 502, error_response(failed, rid).body)
        return _rebuilt(response, 200, converted)

    def stream(self, request: IngressRequest) -> StreamEncoder:
        return ResponsesStream(request)

    def local_endpoints(self) -> Sequence[tuple[str, LocalAnswer]]:
        return ()


def _rebuilt(response: web.Response, status: int, body: Any) -> web.Response:
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-type")
    }
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


INGRESS: Final = OpenAIResponsesIngress()

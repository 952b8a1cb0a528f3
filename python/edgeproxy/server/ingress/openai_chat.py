"""OpenAI's Chat Completions wire at the ingress (``POST /v1/chat/completions``).

The proxy's own shape: requests pass in as they are once checked, answers and streams go out as
the relay made them. Errors are shaped exactly like OpenAI's (``{"error": {"message", "type",
"param", "code"}}``) so the official SDK raises its usual exception classes; ``request_id`` is
added inside the error and the ``x-request-id`` header carries it too (the SDK exposes it as
``exc.request_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson
from aiohttp import web

from edgeproxy._core import encode_sse
from edgeproxy.failure import AttemptFailure
from edgeproxy.server.ingress.base import ClientError, IngressRequest, LocalAnswer, StreamEncoder
from edgeproxy.server.json_nesting import check_nesting
from edgeproxy.server.responses import error_body, midstream_error
from edgeproxy.translate.thinking import X_ANTHROPIC

VALID_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# The Anthropic ingress's carrier, as it appears in an inner answer's bytes (checked on every
# non-stream answer before anything is parsed).
_X_ANTHROPIC_BYTES: Final = f'"{X_ANTHROPIC}"'.encode()


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    """Decode and check a Chat Completions body just enough to route it safely.

    The proxy does not re-validate every OpenAI field (the upstream does that, and new fields
    appear often); it checks what it relies on itself: ``model``, ``messages`` and ``stream``.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ClientError(400, "The request body must be a JSON object.")
    check_nesting(body, ClientError)
    model = body.get("model")
    if model is None:
        raise ClientError(
            400,
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    if not isinstance(model, str) or not model:
        raise ClientError(
            400, "'model' must be a non-empty string.", param="model", code="invalid_type"
        )
    messages = body.get("messages")
    if messages is None:
        raise ClientError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise ClientError(
            400, "'messages' must be a non-empty array.", param="messages", code="invalid_type"
        )
    for i, message in enumerate(messages):
        _check_message(i, message)
    if X_ANTHROPIC in body:
        # The inner shape's carrier for Anthropic's extended thinking, set by the Anthropic
        # ingress only: a client of this wire does not set it (docs/anthropic.md).
        raise ClientError(
            400,
            f"Unrecognized request argument supplied: {X_ANTHROPIC}",
            param=X_ANTHROPIC,
            code="unknown_parameter",
        )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise ClientError(400, "'stream' must be a boolean.", param="stream", code="invalid_type")
    return body


def _check_message(i: int, message: Any) -> None:
    param = f"messages[{i}]"
    if not isinstance(message, dict):
        raise ClientError(400, f"'{param}' must be an object.", param=param, code="invalid_type")
    role = message.get("role")
    if not isinstance(role, str):
        raise ClientError(
            400,
            f"Missing required parameter: '{param}.role'.",
            param=f"{param}.role",
            code="missing_required_parameter",
        )
    if role not in VALID_ROLES:
        raise ClientError(
            400,
            f"Invalid value for '{param}.role': {role!r}. Supported values are: "
            + ", ".join(f"'{r}'" for r in sorted(VALID_ROLES))
            + ".",
            param=f"{param}.role",
            code="invalid_value",
        )
    content = message.get("content")
    if content is not None and not isinstance(content, str | list):
        raise ClientError(
            400,
            f"'{param}.content' must be a string or an array of content parts.",
            param=f"{param}.content",
            code="invalid_type",
        )


def error_response(err: ClientError, request_id: str) -> web.Response:
    """``err`` as OpenAI's error JSON (``type`` defaults to ``invalid_request_error``)."""
    body = error_body(
        err.message,
        type=err.type or "invalid_request_error",
        param=err.param,
        code=err.code,
        request_id=request_id,
    )
    return web.Response(
        status=err.status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=err.headers,
    )


class OpenAIStream:
    """The identity: the client speaks the relay's own format."""

    def encode(self, sse: bytes) -> bytes:
        return sse

    def error(self, failure: AttemptFailure, events: int, rid: str, upstream: str | None) -> bytes:
        if upstream is not None:
            return encode_sse(upstream)
        return midstream_error(failure, events, rid)

    def close(self) -> bytes:
        return b""


class OpenAIChatIngress:
    name: Final = "openai"
    path: Final = "/v1/chat/completions"
    request_id_headers: Final = ("x-request-id",)

    def parse(self, raw: bytes) -> IngressRequest:
        body = parse_chat_request(raw)
        return IngressRequest(body, raw, body["model"])

    def not_served(self, model: str, served: Sequence[str]) -> ClientError:
        return ClientError(
            404,
            f"The model {model!r} does not exist or is not served by this proxy "
            f"(served: {', '.join(served)}).",
            param="model",
            code="model_not_found",
        )

    def error_response(self, err: ClientError, request_id: str) -> web.Response:
        return error_response(err, request_id)

    def answer(self, response: web.Response, request: IngressRequest, rid: str) -> web.Response:
        body = response.body
        if response.status != 200 or not isinstance(body, bytes) or _X_ANTHROPIC_BYTES not in body:
            return response
        # Thinking blocks an Anthropic upstream sent unasked: the proxy's carrier for Anthropic
        # clients (``translate.thinking``), never part of an OpenAI answer.
        answer = orjson.loads(body)
        for choice in answer.get("choices") or ():
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
                choice["message"].pop(X_ANTHROPIC, None)
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        return web.Response(
            status=200, body=orjson.dumps(answer), content_type="application/json", headers=headers
        )

    def stream(self, request: IngressRequest) -> StreamEncoder:
        return OpenAIStream()

    def local_endpoints(self) -> Sequence[tuple[str, LocalAnswer]]:
        return ()


INGRESS: Final = OpenAIChatIngress()

"""OpenAI's wire format at the ingress: request validation and error bodies.

Errors are shaped exactly like OpenAI's (``{"error": {"message", "type", "param", "code"}}``) so
the official SDK raises its usual exception classes; ``request_id`` is added inside the error and
the ``x-request-id`` header carries it too (the SDK exposes it as ``exc.request_id``).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from edgeproxy.server.json_nesting import check_nesting

VALID_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class IngressError(Exception):
    """A request the proxy refuses before routing; rendered as an OpenAI-style error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(
    message: str,
    *,
    type: str,
    request_id: str,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type,
            "param": param,
            "code": code,
            "request_id": request_id,
        }
    }


def error_response(err: IngressError, request_id: str) -> web.Response:
    body = error_body(
        err.message, type=err.type, param=err.param, code=err.code, request_id=request_id
    )
    return web.Response(
        status=err.status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=err.headers,
    )


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    """Decode and check a Chat Completions body just enough to route it safely.

    The proxy does not re-validate every OpenAI field (the upstream does that, and new fields
    appear often); it checks what it relies on itself: ``model``, ``messages`` and ``stream``.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise IngressError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise IngressError(400, "The request body must be a JSON object.")
    check_nesting(body, IngressError)
    model = body.get("model")
    if model is None:
        raise IngressError(
            400,
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    if not isinstance(model, str) or not model:
        raise IngressError(
            400, "'model' must be a non-empty string.", param="model", code="invalid_type"
        )
    messages = body.get("messages")
    if messages is None:
        raise IngressError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise IngressError(
            400, "'messages' must be a non-empty array.", param="messages", code="invalid_type"
        )
    for i, message in enumerate(messages):
        _check_message(i, message)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise IngressError(400, "'stream' must be a boolean.", param="stream", code="invalid_type")
    return body


def _check_message(i: int, message: Any) -> None:
    param = f"messages[{i}]"
    if not isinstance(message, dict):
        raise IngressError(400, f"'{param}' must be an object.", param=param, code="invalid_type")
    role = message.get("role")
    if not isinstance(role, str):
        raise IngressError(
            400,
            f"Missing required parameter: '{param}.role'.",
            param=f"{param}.role",
            code="missing_required_parameter",
        )
    if role not in VALID_ROLES:
        raise IngressError(
            400,
            f"Invalid value for '{param}.role': {role!r}. Supported values are: "
            + ", ".join(f"'{r}'" for r in sorted(VALID_ROLES))
            + ".",
            param=f"{param}.role",
            code="invalid_value",
        )
    content = message.get("content")
    if content is not None and not isinstance(content, str | list):
        raise IngressError(
            400,
            f"'{param}.content' must be a string or an array of content parts.",
            param=f"{param}.content",
            code="invalid_type",
        )

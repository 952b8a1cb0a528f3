"""Anthropic Messages wire objects: the ``message`` body, stream events and error bodies.

Shapes follow https://docs.anthropic.com/en/api/messages and .../messages-streaming.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import orjson
from aiohttp import web

from edgeproxy.translate.responses import anthropic_error_type

from .errors import reason_phrase

# The ``stop_reason`` of each simulated finish (the planner speaks OpenAI's finish reasons).
STOP_REASONS: Final = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
SSE_MALFORMED: Final = (
    b'event: content_block_delta\ndata: {"type": "content_block_delta", broken\n\n'
)

_MESSAGES: Final = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "The requested resource could not be found.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit. Please try again later.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out.",
    "overloaded_error": "Overloaded",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
}
# Fault error codes of the OpenAI wire that have an Anthropic counterpart.
_BY_CODE: Final = {
    "context_length_exceeded": (
        "invalid_request_error",
        "prompt is too long: 210000 tokens > 200000 maximum",
    ),
    "rate_limit_exceeded": ("rate_limit_error", _MESSAGES["rate_limit_error"]),
    "insufficient_quota": ("billing_error", _MESSAGES["billing_error"]),
    "invalid_api_key": ("authentication_error", _MESSAGES["authentication_error"]),
}


def new_request_id() -> str:
    return "req_sim" + uuid.uuid4().hex[:20]


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_body(status: int, code: str | None = None, message: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for a status and optional fault code.

    ``code`` is either an Anthropic error type (``overloaded_error``) or one of the OpenAI
    codes the OpenAI wire uses (``context_length_exceeded``, ``rate_limit_exceeded``, ...).
    """
    kind = anthropic_error_type(status)
    text = _MESSAGES.get(kind, f"Error {status}.")
    if code in _BY_CODE:
        kind, text = _BY_CODE[code]
    elif code is not None and code.endswith("_error"):
        kind, text = code, _MESSAGES.get(code, text)
    return {"type": "error", "error": {"type": kind, "message": message or text}}


def error_response(
    status: int,
    *,
    code: str | None = None,
    message: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    headers = {"request-id": new_request_id()}
    if retry_after is not None:
        headers["Retry-After"] = (
            str(int(retry_after)) if float(retry_after).is_integer() else repr(retry_after)
        )
    return web.Response(
        status=status,
        reason=reason_phrase(status),
        body=orjson.dumps(error_body(status, code, message)),
        content_type="application/json",
        headers=headers,
    )


def usage(
    input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
) -> dict[str, Any]:
    """Anthropic's usage: ``input_tokens`` excludes the cache reads and writes."""
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
    }


def message_object(
    *,
    message_id: str,
    model: str,
    content: list[dict[str, Any]],
    stop_reason: str | None,
    input_tokens: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage(input_tokens, output_tokens, cache_read, cache_write),
    }


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def text_delta(index: int, text: str) -> bytes:
    return event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
    )


def input_json_delta(index: int, partial_json: str) -> bytes:
    return event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial_json},
        },
    )


def thinking_delta(index: int, thinking: str) -> bytes:
    return event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "thinking_delta", "thinking": thinking},
        },
    )


def signature_delta(index: int, signature: Any) -> bytes:
    return event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "signature_delta", "signature": signature},
        },
    )


def block_stop(index: int) -> bytes:
    return event("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str, output_tokens: int) -> bytes:
    return event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )


PING: Final = event("ping", {"type": "ping"})
MESSAGE_STOP: Final = event("message_stop", {"type": "message_stop"})
OVERLOADED_EVENT: Final = event(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)

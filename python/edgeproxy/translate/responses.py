"""Response translation: a whole ``chat.completion`` <-> an Anthropic ``message``, and errors.

The stop/finish reason tables are the same as the Rust stream translators' (a test pins that).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

from edgeproxy.telemetry.redact import redact

from . import thinking
from .util import as_dict, as_list, as_str, refuse

_STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def stop_reason_for(finish_reason: str | None) -> str:
    """The Anthropic ``stop_reason`` for an OpenAI ``finish_reason`` (unknown -> ``end_turn``)."""
    return _STOP_REASONS.get(finish_reason or "stop", "end_turn")


def finish_reason_for(stop_reason: str | None) -> str:
    """The OpenAI ``finish_reason`` for an Anthropic ``stop_reason`` (unknown -> ``stop``)."""
    return _FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def openai_to_anthropic_response(
    completion: Mapping[str, Any], *, model: str | None = None
) -> dict[str, Any]:
    """An Anthropic ``message`` for an OpenAI ``chat.completion`` (exactly one choice)."""
    choices = as_list(completion.get("choices"), "choices")
    if len(choices) != 1:
        raise refuse("choices", f"an Anthropic message has one answer, not {len(choices)}")
    choice = as_dict(choices[0], "choices[0]")
    message = as_dict(choice.get("message"), "choices[0].message")
    # Thinking blocks (an Anthropic upstream's, carried by the inner shape) come first.
    content: list[dict[str, Any]] = thinking.message_blocks(message, "choices[0].message")
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    for j, call in enumerate(message.get("tool_calls") or []):
        where = f"choices[0].message.tool_calls[{j}]"
        function = as_dict(as_dict(call, where).get("function"), f"{where}.function")
        try:
            tool_input = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise refuse(
                f"{where}.function.arguments", "the model's arguments are not JSON"
            ) from None
        if not isinstance(tool_input, dict):
            raise refuse(f"{where}.function.arguments", "Anthropic tool input must be an object")
        content.append(
            {
                "type": "tool_use",
                "id": as_str(call.get("id"), f"{where}.id"),
                "name": as_str(function.get("name"), f"{where}.function.name"),
                "input": tool_input,
            }
        )
    finish = choice.get("finish_reason")
    stop_reason = "refusal" if refusal and finish == "stop" else stop_reason_for(finish)
    # An upstream's usage is not trusted to be well formed: anything but a count counts as 0.
    usage = _mapping(completion.get("usage"))
    prompt = _count(usage.get("prompt_tokens"))
    details = _mapping(usage.get("prompt_tokens_details"))
    cached = min(_count(details.get("cached_tokens")), prompt)
    # A cache write (Anthropic's, carried in the OpenAI shape as OpenRouter names it) is part of
    # prompt_tokens like a read; Anthropic's input_tokens excludes both.
    written = min(_count(details.get("cache_write_tokens")), prompt - cached)
    msg_id = str(completion.get("id") or "")
    if msg_id.startswith("chatcmpl-"):
        msg_id = "msg_" + msg_id.removeprefix("chatcmpl-")
    return {
        "id": msg_id or "msg_edgeproxy",
        "type": "message",
        "role": "assistant",
        "model": model if model is not None else completion.get("model", ""),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt - cached - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": cached,
            "output_tokens": _count(usage.get("completion_tokens")),
        },
    }


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _count(value: object) -> int:
    """A token count from an upstream's usage: a non-negative finite number, else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 2**63:
        return 0
    return int(value)


def anthropic_to_openai_response(
    message: Mapping[str, Any], *, created: int | None = None, model: str | None = None
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for an Anthropic ``message``.

    Text blocks are joined into ``content``; ``tool_use`` blocks become ``tool_calls`` (input
    serialised as compact JSON); thinking blocks are carried verbatim in the message's
    ``x_anthropic`` extension (``translate.thinking``; an OpenAI client never asks for them).
    A thinking block after text or tool use (interleaved thinking) is refused: the inner
    shape keeps thinking before the rest.
    """
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thoughts: list[dict[str, Any]] = []
    for j, block in enumerate(as_list(message.get("content"), "content")):
        block = as_dict(block, f"content[{j}]")
        kind = block.get("type")
        if kind == "text":
            texts.append(as_str(block.get("text"), f"content[{j}].text"))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": as_str(block.get("id"), f"content[{j}].id"),
                    "type": "function",
                    "function": {
                        "name": as_str(block.get("name"), f"content[{j}].name"),
                        "arguments": orjson.dumps(block.get("input", {})).decode(),
                    },
                }
            )
        elif kind in thinking.THINKING_TYPES:
            if texts or calls:
                raise refuse(f"content[{j}]", "a thinking block after text or tool use")
            thoughts.append(thinking.check_block(block, f"content[{j}]"))
        else:
            raise refuse(f"content[{j}].type", f"content block {kind!r} is not translated")
    out_message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        out_message["tool_calls"] = calls
    thinking.with_blocks(out_message, thoughts)
    usage = _mapping(message.get("usage"))
    cache_read = _count(usage.get("cache_read_input_tokens"))
    cache_write = _count(usage.get("cache_creation_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + cache_write + cache_read
    details = {"cached_tokens": cache_read}
    if cache_write:
        # Priced apart from plain input (``cost.Usage``): OpenRouter's name for it.
        details["cache_write_tokens"] = cache_write
    completion_tokens = _count(usage.get("output_tokens"))
    msg_id = str(message.get("id") or "")
    if msg_id.startswith("msg_"):
        msg_id = "chatcmpl-" + msg_id.removeprefix("msg_")
    return {
        "id": msg_id or "chatcmpl-edgeproxy",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model if model is not None else message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": out_message,
                "logprobs": None,
                "finish_reason": finish_reason_for(message.get("stop_reason")),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": details,
        },
    }


# -- errors -----------------------------------------------------------------------------------

_ANTHROPIC_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status (``api_error`` for other 5xx)."""
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def _message_of(body: bytes) -> tuple[str | None, str | None]:
    """(message, type/code) of an OpenAI or Anthropic error body, when it is one; scrubbed of
    credentials (an upstream may quote the key it was sent, escaped so the raw body hides it)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None
    message = err.get("message")
    kind = err.get("code") or err.get("type")
    return (
        redact(message) if isinstance(message, str) else None,
        redact(kind) if isinstance(kind, str) else None,
    )


def error_to_anthropic(status: int, body: bytes, request_id: str | None = None) -> bytes:
    """An upstream's (OpenAI-style) error body re-shaped for an Anthropic client."""
    message, code = _message_of(body)
    kind = anthropic_error_type(status)
    if code == "context_length_exceeded":
        kind = "invalid_request_error"
    out: dict[str, Any] = {
        "type": "error",
        "error": {"type": kind, "message": message or f"Upstream error {status}."},
    }
    if request_id is not None:
        out["request_id"] = request_id
    return orjson.dumps(out)


def error_to_openai(status: int, body: bytes, request_id: str | None = None) -> bytes:
    """An upstream's (Anthropic-style) error body re-shaped for an OpenAI client."""
    message, kind = _message_of(body)
    code: str | None = None
    if kind == "rate_limit_error":
        code = "rate_limit_exceeded"
    elif message is not None and "prompt is too long" in message:
        code = "context_length_exceeded"
    err: dict[str, Any] = {
        "message": message or f"Upstream error {status}.",
        "type": kind or ("server_error" if status >= 500 else "invalid_request_error"),
        "param": None,
        "code": code,
    }
    if request_id is not None:
        err["request_id"] = request_id
    return orjson.dumps({"error": err})

"""OpenAI Chat Completions wire objects (non-stream body, stream chunks, SSE framing)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Final

import orjson

SYSTEM_FINGERPRINT: Final = "fp_edgeproxy_sim"
SSE_DONE: Final = b"data: [DONE]\n\n"
# What a garbled upstream event looks like: the SSE framing is fine, the JSON is not.
SSE_MALFORMED: Final = b'data: {"choices": [ broken\n\n'
# An in-stream error as OpenAI-compatible servers send it (fault mode "overloaded").
SSE_OVERLOADED: Final = (
    b'data: {"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, '
    b'"code": null}}\n\n'
)
MALFORMED_BODY: Final = b'{"id": "chatcmpl-broken", "choices": [ broken'


# Seconds between the comments of fault mode "keepalive_only".
KEEPALIVE_INTERVAL: Final = 0.05
SSE_KEEPALIVE: Final = b": keep-alive\n\n"


def credential_of(headers: Mapping[str, str]) -> str:
    """The credential a request carried, as sent (fault mode "echo_key" quotes it back)."""
    for name in ("Authorization", "x-api-key", "api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value:
            return value
    return "(none)"


def echo_key_message(headers: Mapping[str, str]) -> str:
    """What a provider says about a key it rejects, quoting the key (some do)."""
    return f"Incorrect API key provided: {credential_of(headers)}."


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:29]


def sse(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def usage(
    prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0, cached_tokens: int = 0
) -> dict[str, object]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_object(
    *,
    completion_id: str,
    created: int,
    model: str,
    content: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    tool_calls: list[dict[str, object]] | None = None,
    reasoning_tokens: int = 0,
    cached_tokens: int = 0,
) -> dict[str, object]:
    message: dict[str, object] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["content"] = None
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def chunk_object(
    *,
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, object],
    finish_reason: str | None = None,
    include_usage: bool = False,
) -> dict[str, object]:
    chunk: dict[str, object] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:
        # OpenAI sends "usage": null on every chunk but the last when include_usage is set.
        chunk["usage"] = None
    return chunk


def usage_chunk(
    *,
    completion_id: str,
    created: int,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    reasoning_tokens: int = 0,
    cached_tokens: int = 0,
) -> dict[str, object]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens),
    }


def tool_call_object(call_id: str, name: str, arguments: str) -> dict[str, object]:
    return {
        "id": "call_" + call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }

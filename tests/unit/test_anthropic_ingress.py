"""Anthropic ingress pieces: validation, error bodies, count_tokens. (The Anthropic upstream
wire has its own tests: tests/unit/test_wire_anthropic.py and the contract suite.)"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edgeproxy._core import SseParser
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.ingress import ClientError
from edgeproxy.server.ingress.anthropic_messages import (
    TOKEN_COUNT_HEADER,
    anthropic_error_response,
    count_tokens_response,
    error_response,
    midstream_error,
    parse_messages_request,
    stream_error_event,
)

KEY = "sk-ant-secret-0123456789"
GOOD: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 16,
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "user", "content": [{"type": "text", "text": "again"}]},
    ],
    "stream": False,
}


def raw(**changes: Any) -> bytes:
    body = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_valid_request_passes() -> None:
    assert parse_messages_request(raw())["model"] == "claude-x"
    assert parse_messages_request(raw(system="plain", stream=...))["system"] == "plain"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "The request body is not valid JSON"),
        (b"[]", "The request body must be a JSON object."),
        (raw(model=...), "model: Field required"),
        (raw(model=""), "model: Input should be a non-empty string"),
        (raw(max_tokens=...), "max_tokens: Field required"),
        (raw(max_tokens=0), "max_tokens: Input should be an integer greater than or equal to 1"),
        (raw(max_tokens=True), "max_tokens: Input should be an integer"),
        (raw(messages=...), "messages: Field required"),
        (raw(messages={}), "messages: Input should be a valid list"),
        (raw(messages=[]), "messages: at least one message is required"),
        (raw(messages=["x"]), "messages.0: Input should be a valid dictionary"),
        (raw(messages=[{"content": "x"}]), "messages.0.role: Field required"),
        (
            raw(messages=[{"role": "system", "content": "x"}]),
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (raw(messages=[{"role": "user"}]), "messages.0.content: Field required"),
        (
            raw(messages=[{"role": "user", "content": 5}]),
            "messages.0.content: Input should be a valid string or a list",
        ),
        (
            raw(messages=[{"role": "user", "content": [{"text": "x"}]}]),
            "messages.0.content.0.type: Field required",
        ),
        (
            raw(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages.0.content.0.text: Input should be a valid string",
        ),
        (raw(system=5), "system: Input should be a valid string or a list of text blocks"),
        (raw(system=[{"type": "image"}]), "system.0: Input should be a text block"),
        (raw(stream="yes"), "stream: Input should be a valid boolean"),
    ],
)
def test_invalid_requests(body: bytes, message: str) -> None:
    with pytest.raises(ClientError) as info:
        parse_messages_request(body)
    err = info.value
    assert (err.status, err.type) == (400, "invalid_request_error")
    assert err.message.startswith(message)
    response = error_response(err, "req-9")
    assert response.status == 400
    assert response.headers["request-id"] == "req-9"
    assert response.body is not None
    assert orjson.loads(response.body) == {  # type: ignore[arg-type]
        "type": "error",
        "error": {"type": "invalid_request_error", "message": err.message},
        "request_id": "req-9",
    }


def _type_of(err: ClientError) -> str:
    return str(orjson.loads(error_response(err, "r").body)["error"]["type"])  # type: ignore[arg-type]


def test_error_types_follow_status() -> None:
    assert _type_of(ClientError(429, "slow")) == "rate_limit_error"
    assert _type_of(ClientError(529, "busy")) == "overloaded_error"
    assert _type_of(ClientError(401, "who")) == "authentication_error"
    assert _type_of(ClientError(502, "bad")) == "api_error"
    # An OpenAI type a raiser named gives way to the status's Anthropic type...
    assert _type_of(ClientError(503, "full", type="server_error")) == "api_error"
    # ... and the proxy's own overload is Anthropic's 529, which its SDK retries.
    overloaded = error_response(ClientError(503, "full", code="overloaded"), "r")
    assert overloaded.status == 529 and _type_of(ClientError(503, "x", code="overloaded")) == (
        "overloaded_error"
    )
    response = anthropic_error_response(
        529, "overloaded_error", "Overloaded", "r1", {"Retry-After": "3"}
    )
    assert response.status == 529 and response.headers["Retry-After"] == "3"


def test_stream_error_events() -> None:
    (event,) = SseParser().feed(stream_error_event("api_error", "it broke", "req-1"))
    assert event.event == "error"
    assert orjson.loads(event.data) == {
        "type": "error",
        "error": {"type": "api_error", "message": "it broke"},
        "request_id": "req-1",
    }
    overloaded = AttemptFailure(FailureClass.OVERLOADED, "in-stream overloaded_error")
    (event,) = SseParser().feed(midstream_error(overloaded, 4, "req-2"))
    data = orjson.loads(event.data)
    assert data["error"]["type"] == "overloaded_error"
    assert "after 4 events" in data["error"]["message"]
    (event,) = SseParser().feed(midstream_error(AttemptFailure(FailureClass.CUT, "x"), 1, "r"))
    assert orjson.loads(event.data)["error"]["type"] == "api_error"


async def test_count_tokens_is_a_labelled_estimate() -> None:
    body = orjson.dumps(
        {
            "model": "claude-x",
            "system": "Be brief.",
            "messages": GOOD["messages"],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
        }
    )
    response = await count_tokens_response(body, "req-3")
    assert response.status == 200
    assert response.headers[TOKEN_COUNT_HEADER] == "estimate"
    assert response.body is not None
    count = orjson.loads(response.body)  # type: ignore[arg-type]
    assert set(count) == {"input_tokens"} and count["input_tokens"] > 10
    short = await count_tokens_response(
        orjson.dumps({"model": "c", "messages": [GOOD["messages"][0]]}), None
    )
    assert short.body is not None
    assert orjson.loads(short.body)["input_tokens"] < count["input_tokens"]  # type: ignore[arg-type]
    bad = await count_tokens_response(b'{"model": "c"}', "req-4")
    assert bad.status == 400 and bad.body is not None
    assert orjson.loads(bad.body)["error"]["message"] == "messages: Field required"  # type: ignore[arg-type]

"""Anthropic ingress pieces (validation, error bodies, count_tokens) and the Anthropic upstream
adapter (request building, failure classification) against the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from edgeproxy._core import SseParser
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.anthropic_wire import (
    TOKEN_COUNT_HEADER,
    AnthropicIngressError,
    anthropic_error_response,
    count_tokens_response,
    error_response,
    midstream_error,
    parse_messages_request,
    stream_error_event,
)
from edgeproxy.sim import Fault, SimConfig, SimProvider
from edgeproxy.snapshot import Candidate
from edgeproxy.upstreams import anthropic as upstream
from edgeproxy.upstreams.http1 import Http1Pool

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
    with pytest.raises(AnthropicIngressError) as info:
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


def test_error_types_follow_status() -> None:
    assert AnthropicIngressError(429, "slow").type == "rate_limit_error"
    assert AnthropicIngressError(529, "busy").type == "overloaded_error"
    assert AnthropicIngressError(401, "who").type == "authentication_error"
    assert AnthropicIngressError(502, "bad").type == "api_error"
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


# -- the upstream adapter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "message", "expected"),
    [
        (529, "overloaded_error", "Overloaded", FailureClass.OVERLOADED),
        (529, None, None, FailureClass.OVERLOADED),
        (429, "rate_limit_error", "slow down", FailureClass.RATE_LIMITED),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 250000 tokens > 200000 maximum",
            FailureClass.CONTEXT_LENGTH,
        ),
        (400, "invalid_request_error", "messages: bad", FailureClass.CLIENT_ERROR),
        (401, "authentication_error", "invalid x-api-key", FailureClass.CLIENT_ERROR),
        (403, "permission_error", "no", FailureClass.CLIENT_ERROR),
        (404, "not_found_error", "model", FailureClass.CLIENT_ERROR),
        (402, "billing_error", "credit", FailureClass.QUOTA_EXHAUSTED),
        (500, "api_error", "oops", FailureClass.SERVER_ERROR),
        (504, "timeout_error", "slow", FailureClass.SERVER_ERROR),
        (503, None, None, FailureClass.SERVER_ERROR),
        (418, None, None, FailureClass.CLIENT_ERROR),
    ],
)
def test_classification(
    status: int, kind: str | None, message: str | None, expected: FailureClass
) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    failure = upstream.failure_from_status(status, body if kind else b"<html>", retry_after="4")
    assert failure.failure is expected
    assert failure.status == status and failure.code == kind
    assert failure.retry_after == 4.0
    assert failure.may_fail_over is (expected is not FailureClass.CLIENT_ERROR)


def test_stream_errors_are_never_client_errors() -> None:
    assert upstream.classify_stream_error("overloaded_error") is FailureClass.OVERLOADED
    assert upstream.classify_stream_error("rate_limit_error") is FailureClass.RATE_LIMITED
    assert upstream.classify_stream_error("api_error") is FailureClass.SERVER_ERROR
    assert upstream.classify_stream_error("invalid_request_error") is FailureClass.SERVER_ERROR
    assert upstream.classify_stream_error("brand_new_error") is FailureClass.SERVER_ERROR
    failure = upstream.stream_failure("overloaded_error", "Overloaded")
    assert failure.failure is FailureClass.OVERLOADED and failure.may_fail_over


def candidate(port: int, headers: dict[str, str]) -> Candidate:
    return Candidate(
        provider="anthropic",
        region="local",
        model="claude",
        upstream_model="claude-upstream",
        kind="openai",  # the lead widens the Literal to include "anthropic"
        base_url=f"http://127.0.0.1:{port}/v1",
        chat_url=f"http://127.0.0.1:{port}/v1/messages",
        context_window=200000,
        tags=MappingProxyType({}),
        headers=MappingProxyType(headers),
    )


def test_request_headers() -> None:
    headers = upstream.request_headers(
        candidate(1, {"Authorization": f"Bearer {KEY}"}), stream=True, request_id="r1"
    )
    assert headers["x-api-key"] == KEY
    assert "Authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["Accept"] == "text/event-stream"
    pinned = upstream.anthropic_headers(KEY, {"anthropic-beta": "x"}, version="2024-01-01")
    headers = upstream.request_headers(candidate(1, pinned), stream=False, request_id="r2")
    assert (headers["x-api-key"], headers["anthropic-version"]) == (KEY, "2024-01-01")
    assert headers["anthropic-beta"] == "x"
    assert upstream.messages_url("https://api.anthropic.com/v1/") == (
        "https://api.anthropic.com/v1/messages"
    )
    body = upstream.upstream_body({"model": "claude", "max_tokens": 1}, candidate(1, {}))
    assert orjson.loads(body)["model"] == "claude-upstream"


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    provider = SimProvider(
        SimConfig(name="claude", ttft=0, tokens_per_second=0, require_api_key=KEY)
    )
    await provider.start()
    yield provider
    await provider.stop()


async def test_send_against_the_sim(sim: SimProvider, make_pool: Callable[..., Http1Pool]) -> None:
    target = candidate(sim.port, upstream.anthropic_headers(KEY))
    body = upstream.upstream_body(
        {"model": "claude", "max_tokens": 8, "messages": GOOD["messages"]}, target
    )
    pool = make_pool()
    response = await upstream.send(
        pool, target, body, stream=False, connect_timeout=1, request_id="r"
    )
    message = upstream.check_message(orjson.loads(await response.read(1 << 20)))
    response.release()
    assert message["model"] == "claude-upstream"

    sim.set_fault(Fault(mode="status", status=529))
    with pytest.raises(AttemptFailure) as info:
        await upstream.send(pool, target, body, stream=False, connect_timeout=1, request_id="r")
    assert info.value.failure is FailureClass.OVERLOADED
    assert info.value.code == "overloaded_error"

    sim.set_fault(Fault(mode="status", status=429, retry_after=7))
    with pytest.raises(AttemptFailure) as info:
        await upstream.send(pool, target, body, stream=False, connect_timeout=1, request_id="r")
    assert (info.value.failure, info.value.retry_after) == (FailureClass.RATE_LIMITED, 7.0)

    sim.clear_fault()
    wrong = candidate(sim.port, upstream.anthropic_headers("wrong"))
    with pytest.raises(AttemptFailure) as info:
        await upstream.send(pool, wrong, body, stream=False, connect_timeout=1, request_id="r")
    assert info.value.failure is FailureClass.CLIENT_ERROR
    assert KEY not in str(info.value)

    sim.set_fault(Fault(mode="refuse"))
    pool = make_pool()  # a fresh pool: no kept-alive connection
    with pytest.raises(AttemptFailure) as info:
        await upstream.send(pool, target, body, stream=False, connect_timeout=1, request_id="r")
    assert info.value.failure is FailureClass.CONNECT_ERROR

    with pytest.raises(AttemptFailure) as info:
        upstream.check_message({"choices": []})
    assert info.value.failure is FailureClass.MALFORMED

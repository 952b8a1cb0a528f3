"""Apps on the official `anthropic` SDK, pointed at the proxy: served by Anthropic-wire and by
OpenAI-wire upstreams (translated), streamed and not, with tools, and errors in Anthropic's shape."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import pytest

from edgeproxy.sim import SimConfig
from harness import Stack

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 3s, idle: 2s, response: 5s, total: 10s}
providers:
  claude:
    kind: anthropic
    api_key: sk-ant
    regions: {main: {base_url: "$claude"}}
    models: {sonnet: {upstream_name: claude-sonnet-4-5}}
  oai:
    kind: openai
    api_key: sk-oai
    regions: {main: {base_url: "$oai"}}
    models: {gpt: {upstream_name: gpt-4o-mini}}
routes:
  claude-sonnet:
    chain: [claude/main/sonnet, oai/main/gpt]
  via-openai:
    chain: [oai/main/gpt]
"""

TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    sims = [
        SimConfig(
            name="claude",
            ttft=0.0,
            tokens_per_second=200,
            require_api_key="sk-ant",
            wire="anthropic",
        ),
        SimConfig(name="oai", ttft=0.0, tokens_per_second=200, require_api_key="sk-oai"),
    ]
    return make_stack(POLICY, sims)


def client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.proxy.url, api_key="app-key-not-forwarded", max_retries=0
    )


@pytest.mark.parametrize("model", ["claude-sonnet", "via-openai"])
def test_non_stream_message(stack: Stack, model: str) -> None:
    raw = client(stack).messages.with_raw_response.create(
        model=model,
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    assert raw.headers["x-edgeproxy-provider"] == ("claude" if model == "claude-sonnet" else "oai")


@pytest.mark.parametrize("model", ["claude-sonnet", "via-openai"])
def test_streamed_message(stack: Stack, model: str) -> None:
    with client(stack).messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["claude-sonnet", "via-openai"])
def test_tool_use_streamed(stack: Stack, model: str) -> None:
    with client(stack).messages.stream(
        model=model,
        max_tokens=128,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Rome? use tool"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (block,) = [b for b in final.content if b.type == "tool_use"]
    assert block.name == "get_weather" and isinstance(block.input, dict)


def test_anthropic_primary_down_openai_secondary_serves_the_stream(stack: Stack) -> None:
    stack.fault("claude", mode="status", status=529)
    with client(stack).messages.with_streaming_response.create(
        model="claude-sonnet",
        max_tokens=64,
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
    ) as response:
        assert response.headers["x-edgeproxy-provider"] == "oai"
        assert response.headers["x-edgeproxy-attempts"] == "2"
        events = [e.type for e in response.parse()]
    assert events[0] == "message_start" and events[-1] == "message_stop"


def test_errors_come_back_in_anthropics_shape(stack: Stack) -> None:
    c = client(stack)
    with pytest.raises(anthropic.NotFoundError):
        c.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as info:
        c.messages.create(
            model="claude-sonnet", max_tokens=8, messages=[{"role": "robot", "content": "x"}]
        )  # type: ignore[list-item]
    assert info.value.body["type"] == "error"  # type: ignore[index]
    stack.fault("claude", mode="status", status=503)
    stack.fault("oai", mode="status", status=503)
    with pytest.raises(anthropic.APIStatusError) as down:
        c.messages.create(
            model="claude-sonnet", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert down.value.status_code == 502
    assert down.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "claude/main/sonnet" in down.value.body["error"]["message"]  # type: ignore[index]


def test_a_cut_stream_raises_in_the_anthropic_sdk(stack: Stack) -> None:
    stack.fault("claude", mode="cut", after_tokens=3)
    with (
        pytest.raises(anthropic.APIStatusError),
        client(stack).messages.stream(
            model="claude-sonnet", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
        ) as stream,
    ):
        "".join(stream.text_stream)


def test_count_tokens_is_a_labelled_local_estimate(stack: Stack) -> None:
    raw = client(stack).messages.with_raw_response.count_tokens(
        model="claude-sonnet", messages=[{"role": "user", "content": "How many tokens is this?"}]
    )
    assert raw.parse().input_tokens > 0
    assert raw.headers["x-edgeproxy-token-count"] == "estimate"
    assert stack.requests_to("claude") == 0


def test_count_tokens_keeps_the_body_limit_and_answers_in_anthropic_shape(stack: Stack) -> None:
    big = "x" * (5 * 1024 * 1024)  # the default limit is 4 MiB
    with pytest.raises(anthropic.APIStatusError) as info:
        client(stack).messages.count_tokens(
            model="claude-sonnet", messages=[{"role": "user", "content": big}]
        )
    assert info.value.status_code == 413
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert "max_body_bytes" in info.value.body["error"]["message"]  # type: ignore[index]


def test_an_openai_client_error_reaches_the_anthropic_sdk_in_its_shape(stack: Stack) -> None:
    stack.fault("oai", mode="status", status=400)
    with pytest.raises(anthropic.BadRequestError) as info:
        client(stack).messages.create(
            model="via-openai", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_every_answer_carries_the_request_id_where_the_anthropic_sdk_reads_it(
    stack: Stack,
) -> None:
    ask = [{"role": "user", "content": "Hello"}]
    message = client(stack).messages.create(model="claude-sonnet", max_tokens=16, messages=ask)
    assert message._request_id and message._request_id.startswith("req_")
    with client(stack).messages.stream(model="claude-sonnet", max_tokens=16, messages=ask) as s:
        s.get_final_message()
        assert s.response.headers["request-id"] == s.response.headers["x-request-id"]
    # Every candidate failing: the 502 names its request id to the SDK as well.
    stack.fault("claude", mode="status", status=500)
    stack.fault("oai", mode="status", status=500)
    with pytest.raises(anthropic.InternalServerError) as err:
        client(stack).messages.create(model="claude-sonnet", max_tokens=16, messages=ask)
    assert err.value.request_id == err.value.response.headers["x-request-id"]
    assert err.value.request_id == err.value.body["request_id"]  # type: ignore[index]

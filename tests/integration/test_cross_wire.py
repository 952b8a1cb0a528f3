"""OpenAI-SDK apps served by Anthropic-wire upstreams: translated requests, answers and streams,
and a failover that crosses providers of different wires."""

from __future__ import annotations

import json
from collections.abc import Callable

import openai
import pytest

from edgeproxy.sim import SimConfig
from fixtures.tools import WEATHER
from harness import Stack

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 3s, idle: 2s, response: 5s, total: 10s}
providers:
  oai:
    kind: openai
    api_key: sk-oai
    regions: {main: {base_url: "$oai"}}
    models: {gpt: {}}
  claude:
    kind: anthropic
    api_key: sk-ant
    regions: {main: {base_url: "$claude"}}
    models:
      sonnet: {upstream_name: claude-sonnet-4-5, max_output_tokens: 512}
routes:
  chat:
    chain: [oai/main/gpt, claude/main/sonnet]
  claude-only:
    chain: [claude/main/sonnet]
"""


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    sims = [
        SimConfig(name="oai", ttft=0.0, tokens_per_second=200, require_api_key="sk-oai"),
        SimConfig(
            name="claude",
            ttft=0.0,
            tokens_per_second=200,
            require_api_key="sk-ant",
            wire="anthropic",
        ),
    ]
    return make_stack(POLICY, sims)


def test_non_stream_answer_from_an_anthropic_upstream(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="claude-only",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-edgeproxy-provider"] == "claude"


def test_streamed_answer_from_an_anthropic_upstream(stack: Stack) -> None:
    chunks = list(
        stack.client().chat.completions.create(
            model="claude-only",
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_streamed_tool_call_from_an_anthropic_upstream(stack: Stack) -> None:
    stream = stack.client().chat.completions.create(
        model="claude-only",
        messages=[{"role": "user", "content": "What is the weather in Paris? use tool"}],
        tools=[WEATHER],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            if call.function and call.function.name:
                entry["name"] = call.function.name
            if call.function and call.function.arguments:
                entry["arguments"] += call.function.arguments
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather"
    assert isinstance(json.loads(calls[0]["arguments"]), dict)


def test_openai_primary_down_anthropic_secondary_serves_a_streamed_tool_call(stack: Stack) -> None:
    stack.fault("oai", mode="status", status=503)
    with stack.client().chat.completions.with_streaming_response.create(
        model="chat",
        messages=[{"role": "user", "content": "Weather in Oslo? use tool"}],
        tools=[WEATHER],
        stream=True,
    ) as response:
        assert response.headers["x-edgeproxy-provider"] == "claude"
        assert response.headers["x-edgeproxy-attempts"] == "2"
        chunks = list(response.parse())
    args = "".join(
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in (c.choices[0].delta.tool_calls or [])
        if call.function
    )
    assert isinstance(json.loads(args), dict)
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["tool_calls"]


def test_an_anthropic_overload_mid_stream_fails_over_before_the_first_token(stack: Stack) -> None:
    stack.fault("claude", mode="overloaded", after_tokens=0)
    with pytest.raises(openai.APIStatusError) as info:
        stack.client().chat.completions.create(
            model="claude-only", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    assert "overloaded" in info.value.response.text


def test_a_request_anthropic_cannot_carry_skips_it_with_the_field_named(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "Hi"}], logprobs=True
    )
    assert raw.headers["x-edgeproxy-provider"] == "oai"
    assert raw.headers["x-edgeproxy-skipped"] == "claude/main/sonnet=wire"
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="claude-only", messages=[{"role": "user", "content": "Hi"}], n=2
        )
    assert info.value.param == "n"
    assert stack.requests_to("claude") == 0


def test_an_anthropic_client_error_reaches_the_openai_sdk_in_its_shape(stack: Stack) -> None:
    stack.fault("claude", mode="status", status=400)
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="claude-only", messages=[{"role": "user", "content": "Hi"}]
        )
    body = info.value.response.json()
    assert set(body["error"]) >= {"message", "type", "code"}  # OpenAI's error shape
    assert info.value.response.headers["x-edgeproxy-attempts"] == "1"

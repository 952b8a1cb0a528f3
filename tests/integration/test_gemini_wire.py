"""A Gemini-wire candidate serving both SDKs through the real proxy: the OpenAI SDK's chat
(answers, streams, tools and their results sent back) and the Anthropic SDK's messages; failover
onto and away from Gemini; its key only ever in ``x-goog-api-key``."""

from __future__ import annotations

import json
from collections.abc import Callable

import anthropic
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
  gem:
    kind: gemini
    api_key: sk-gem-secret-0123456789
    regions: {main: {base_url: "$gem"}}
    models: {flash: {upstream_name: gemini-2.5-flash, price: {input: 0.3, output: 2.5}}}
  oai:
    kind: openai
    api_key: sk-oai
    regions: {main: {base_url: "$oai"}}
    models: {gpt: {}}
routes:
  flash:
    chain: [gem/main/flash]
  gem-first:
    chain: [gem/main/flash, oai/main/gpt]
  gem-second:
    chain: [oai/main/gpt, gem/main/flash]
"""
KEY = "sk-gem-secret-0123456789"


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    sims = [
        SimConfig(name="gem", ttft=0.0, tokens_per_second=200, require_api_key=KEY),
        SimConfig(name="oai", ttft=0.0, tokens_per_second=0, require_api_key="sk-oai"),
    ]
    return make_stack(POLICY, sims)


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.proxy.url, api_key="sk-client-not-forwarded", max_retries=0, timeout=10
    )


def last_body(stack: Stack) -> dict[str, object]:
    async def read() -> bytes:
        return stack.cluster.sims["gem"].received[-1]

    parsed: dict[str, object] = json.loads(stack.loop.run(read()))
    return parsed


def test_the_openai_sdk_gets_a_gemini_answer(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="flash",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=50,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-edgeproxy-provider"] == "gem"
    assert float(raw.headers["x-edgeproxy-cost-usd"]) > 0
    sent = last_body(stack)
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["generationConfig"] == {"maxOutputTokens": 50}
    assert "model" not in sent  # the model is in the URL


def test_the_openai_sdk_streams_from_gemini_with_usage(stack: Stack) -> None:
    chunks = list(
        stack.client().chat.completions.create(
            model="flash",
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) > 3
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_tool_round_trip_through_gemini(stack: Stack) -> None:
    client = stack.client()
    first = client.chat.completions.create(
        model="flash",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    second = client.chat.completions.create(
        model="flash",
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 18}'},
        ],
    )
    assert second.choices[0].message.content
    sent = last_body(stack)
    contents = sent["contents"]
    assert isinstance(contents, list)
    assert contents[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    # Gemini's answer to a call names the function; the OpenAI shape only had the id.
    assert contents[2]["parts"][0]["functionResponse"] == {
        "id": call.id,
        "name": "get_weather",
        "response": {"celsius": 18},
    }


def test_a_streamed_tool_call_from_gemini(stack: Stack) -> None:
    calls: dict[int, dict[str, str]] = {}
    for chunk in stack.client().chat.completions.create(
        model="flash",
        messages=[{"role": "user", "content": "Weather in Oslo? use tool"}],
        tools=[WEATHER],
        stream=True,
    ):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            entry["name"] += (call.function.name or "") if call.function else ""
            entry["arguments"] += (call.function.arguments or "") if call.function else ""
    assert calls == {0: {"name": "get_weather", "arguments": '{"city":"sim-city"}'}}


def test_the_anthropic_sdk_gets_a_gemini_answer_and_stream(stack: Stack) -> None:
    client = anthropic_client(stack)
    message = client.messages.create(
        model="flash",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert message.type == "message" and message.content[0].type == "text"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    with client.messages.stream(
        model="flash", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason == "end_turn"


def test_the_anthropic_sdk_calls_a_tool_on_gemini(stack: Stack) -> None:
    tool = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
    }
    message = anthropic_client(stack).messages.create(
        model="flash",
        max_tokens=64,
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    )
    assert message.stop_reason == "tool_use"
    use = next(block for block in message.content if block.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "sim-city"}


def test_failover_away_from_a_rate_limited_gemini(stack: Stack) -> None:
    stack.fault("gem", mode="status", status=429, retry_after=30)
    raw = stack.client().chat.completions.with_raw_response.create(
        model="gem-first", messages=[{"role": "user", "content": "Hi"}]
    )
    assert raw.headers["x-edgeproxy-provider"] == "oai"
    assert raw.headers["x-edgeproxy-attempts"] == "2"


def test_failover_onto_gemini_streamed(stack: Stack) -> None:
    stack.fault("oai", mode="status", status=503)
    with stack.client().chat.completions.with_streaming_response.create(
        model="gem-second", messages=[{"role": "user", "content": "Hi"}], stream=True
    ) as raw:
        assert raw.headers["x-edgeproxy-provider"] == "gem"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text


def test_an_in_stream_overload_before_the_first_token_fails_over(stack: Stack) -> None:
    stack.fault("gem", mode="overloaded", after_tokens=0)
    with stack.client().chat.completions.with_streaming_response.create(
        model="gem-first", messages=[{"role": "user", "content": "Hi"}], stream=True
    ) as raw:
        assert raw.headers["x-edgeproxy-provider"] == "oai"


def test_the_key_never_reaches_the_client(stack: Stack) -> None:
    stack.fault("gem", mode="echo_key", status=400)
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="flash", messages=[{"role": "user", "content": "Hi"}]
        )
    assert KEY not in str(info.value.body) and KEY not in info.value.message
    assert "API key not valid" in info.value.message


def test_a_wrong_key_is_a_502_in_the_clients_own_wire(
    make_stack: Callable[..., Stack],
) -> None:
    # Gemini answers a key it does not know with a 400 INVALID_ARGUMENT (API_KEY_INVALID): the
    # proxy's key, not the client's request, so not handed back as the client's 400.
    sims = [
        SimConfig(name="gem", ttft=0.0, tokens_per_second=0, require_api_key="sk-other"),
        SimConfig(name="oai", ttft=0.0, tokens_per_second=0),
    ]
    stack = make_stack(POLICY, sims)
    with pytest.raises(anthropic.InternalServerError) as info:
        anthropic_client(stack).messages.create(
            model="flash", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
        )
    error = info.value.body["error"]  # type: ignore[index]
    assert info.value.status_code == 502 and error["type"] == "api_error"
    assert "rejected the proxy's credentials for gem/main/flash" in error["message"]
    assert KEY not in str(info.value.body)

"""A Responses-API candidate (``kind: openai_responses``) serving every ingress through the real
proxy: the OpenAI SDK's chat (answers, streams, tools and their results sent back), its
``responses.create`` (same wire: Responses -> inner -> Responses), the Anthropic SDK's messages;
failover onto and away from it; a request the Responses API cannot carry skips it by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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
  resp:
    kind: openai_responses
    api_key: sk-resp-secret-0123456789
    regions: {main: {base_url: "$resp"}}
    models: {pro: {upstream_name: o3-pro, price: {input: 20, output: 80}}}
  oai:
    kind: openai
    api_key: sk-oai
    regions: {main: {base_url: "$oai"}}
    models: {gpt: {}}
routes:
  pro:
    chain: [resp/main/pro]
  resp-first:
    chain: [resp/main/pro, oai/main/gpt]
  resp-second:
    chain: [oai/main/gpt, resp/main/pro]
"""
KEY = "sk-resp-secret-0123456789"

RESPONSES_WEATHER = {"type": "function", **WEATHER["function"]}  # type: ignore[dict-item]


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    sims = [
        SimConfig(name="resp", ttft=0.0, tokens_per_second=500, require_api_key=KEY),
        SimConfig(name="oai", ttft=0.0, tokens_per_second=0, require_api_key="sk-oai"),
    ]
    return make_stack(POLICY, sims)


def last_body(stack: Stack, sim: str = "resp") -> dict[str, Any]:
    async def read() -> bytes:
        return stack.cluster.sims[sim].received[-1]

    parsed: dict[str, Any] = json.loads(stack.loop.run(read()))
    return parsed


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.proxy.url, api_key="sk-client-not-forwarded", max_retries=0, timeout=10
    )


# -- Chat Completions clients -------------------------------------------------------------------


def test_the_openai_sdks_chat_gets_a_responses_answer(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="pro",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=50,
        reasoning_effort="high",
    )
    completion = raw.parse()
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-edgeproxy-provider"] == "resp"
    assert float(raw.headers["x-edgeproxy-cost-usd"]) > 0
    sent = last_body(stack)
    assert sent["model"] == "o3-pro" and sent["store"] is False
    assert sent["instructions"] == "Be brief."
    assert sent["input"] == [{"type": "message", "role": "user", "content": "Hi"}]
    assert (sent["max_output_tokens"], sent["reasoning"]) == (50, {"effort": "high"})


def test_the_openai_sdks_chat_streams_from_a_responses_upstream(stack: Stack) -> None:
    chunks = list(
        stack.client().chat.completions.create(
            model="pro",
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
    assert last_body(stack)["stream"] is True


def test_a_chat_tool_round_trip_through_the_responses_wire(stack: Stack) -> None:
    client = stack.client()
    first = client.chat.completions.create(
        model="pro",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "sim-city"}  # type: ignore[union-attr]
    second = client.chat.completions.create(
        model="pro",
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 18}'},
        ],
    )
    assert second.choices[0].message.content
    items = last_body(stack)["input"]
    assert items[1] == {
        "type": "function_call",
        "call_id": call.id,
        "name": "get_weather",
        "arguments": call.function.arguments,  # type: ignore[union-attr]
    }
    assert items[2] == {
        "type": "function_call_output",
        "call_id": call.id,
        "output": '{"celsius": 18}',
    }


def test_a_streamed_chat_tool_call(stack: Stack) -> None:
    calls: dict[int, dict[str, str]] = {}
    for chunk in stack.client().chat.completions.create(
        model="pro",
        messages=[{"role": "user", "content": "Weather in Oslo? use tool"}],
        tools=[WEATHER],  # type: ignore[list-item]
        stream=True,
    ):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            entry["name"] += (call.function.name or "") if call.function else ""
            entry["arguments"] += (call.function.arguments or "") if call.function else ""
    assert calls == {0: {"name": "get_weather", "arguments": '{"city":"sim-city"}'}}


# -- Responses clients (the same wire at both ends) ---------------------------------------------


def test_responses_create_with_a_tool_and_its_output_sent_back(stack: Stack) -> None:
    client = stack.client()
    first = client.responses.create(
        model="pro",
        instructions="Use the tool.",
        input="Weather in Rome?",
        tools=[RESPONSES_WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_output_tokens=200,
    )
    assert first.status == "completed"
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "sim-city"}
    sent = last_body(stack)
    assert sent["instructions"] == "Use the tool." and sent["tool_choice"] == "required"
    assert sent["tools"] == [{**RESPONSES_WEATHER, "strict": False}]
    second = client.responses.create(
        model="pro",
        input=[
            {"role": "user", "content": "Weather in Rome?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
        ],
        tools=[RESPONSES_WEATHER],  # type: ignore[list-item]
    )
    assert second.output_text and second.usage is not None and second.usage.output_tokens > 0
    assert [i["type"] for i in last_body(stack)["input"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]


def test_the_upstreams_response_id_reaches_a_responses_client(stack: Stack) -> None:
    response = stack.client().responses.create(model="pro", input="Hi")
    assert response.id.startswith("resp_") and response.output_text


def test_responses_create_streams_text_and_a_tool_call(stack: Stack) -> None:
    client = stack.client()
    events = list(client.responses.create(model="pro", input="Hello", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and events[-1].response.output_text == text  # type: ignore[union-attr]
    assert events[-1].response.usage.output_tokens > 0  # type: ignore[union-attr]
    events = list(
        client.responses.create(
            model="pro",
            input="Weather? use tool",
            tools=[RESPONSES_WEATHER],  # type: ignore[list-item]
            stream=True,
        )
    )
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert json.loads(arguments) == {"city": "sim-city"}
    final = events[-1].response  # type: ignore[union-attr]
    assert [i.type for i in final.output] == ["function_call"]


def test_a_responses_field_the_wire_cannot_carry_is_named_as_the_client_sent_it(
    stack: Stack,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().responses.create(model="pro", input="Hi", max_output_tokens=8)
    assert info.value.param == "max_output_tokens"  # type: ignore[attr-defined]
    assert "16" in info.value.message
    assert stack.requests_to("resp") == 0


# -- Anthropic clients --------------------------------------------------------------------------


def test_the_anthropic_sdk_gets_a_responses_answer_stream_and_tool(stack: Stack) -> None:
    client = anthropic_client(stack)
    message = client.messages.create(
        model="pro", max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].type == "text" and message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    with client.messages.stream(
        model="pro", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason == "end_turn"
    tool = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
    }
    used = client.messages.create(
        model="pro",
        max_tokens=64,
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    )
    assert used.stop_reason == "tool_use"
    block = next(b for b in used.content if b.type == "tool_use")
    assert block.name == "get_weather" and block.input == {"city": "sim-city"}


# -- failover -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_failover_from_a_failing_responses_primary_to_openai_chat(
    stack: Stack, stream: bool
) -> None:
    stack.fault("resp", mode="status", status=500)
    client = stack.client()
    if stream:
        with client.responses.with_streaming_response.create(
            model="resp-first", input="Hi", stream=True
        ) as raw:
            provider = raw.headers["x-edgeproxy-provider"]
            events = list(raw.parse())
        assert events[-1].type == "response.completed"
    else:
        raw = client.chat.completions.with_raw_response.create(
            model="resp-first", messages=[{"role": "user", "content": "Hi"}]
        )
        provider = raw.headers["x-edgeproxy-provider"]
        assert raw.parse().choices[0].message.content
    assert provider == "oai"
    assert stack.requests_to("resp") == 1 and stack.requests_to("oai") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_failover_from_openai_chat_onto_the_responses_wire(stack: Stack, stream: bool) -> None:
    stack.fault("oai", mode="status", status=500)
    client = stack.client()
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="resp-second", messages=[{"role": "user", "content": "Hi"}], stream=True
        ) as raw:
            provider = raw.headers["x-edgeproxy-provider"]
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        answer = client.responses.with_raw_response.create(model="resp-second", input="Hi")
        provider, text = answer.headers["x-edgeproxy-provider"], answer.parse().output_text
    assert provider == "resp" and text


def test_an_in_stream_error_before_the_first_token_fails_over(stack: Stack) -> None:
    stack.fault("resp", mode="overloaded", after_tokens=0)
    with stack.client().chat.completions.with_streaming_response.create(
        model="resp-first", messages=[{"role": "user", "content": "Hi"}], stream=True
    ) as raw:
        assert raw.headers["x-edgeproxy-provider"] == "oai"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)


def test_a_stream_without_response_completed_is_never_a_whole_answer(stack: Stack) -> None:
    """The text arrived (committed), the terminal event never did: the client is told."""
    stack.fault("resp", mode="no_done")
    with pytest.raises(openai.APIError) as info:
        list(
            stack.client().chat.completions.create(
                model="resp-first", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
        )
    assert "cut" in info.value.message and "incomplete" in info.value.message


def test_a_cut_before_the_first_token_fails_over(stack: Stack) -> None:
    stack.fault("resp", mode="cut", after_tokens=0)
    events = list(stack.client().responses.create(model="resp-first", input="Hi", stream=True))
    assert events[-1].type == "response.completed"
    assert stack.requests_to("oai") == 1


def test_a_chat_field_without_a_responses_equivalent_skips_the_candidate(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="resp-first", messages=[{"role": "user", "content": "Hi"}], stop=["\n\n"]
    )
    assert raw.headers["x-edgeproxy-provider"] == "oai"
    assert "resp/main/pro=wire" in raw.headers["x-edgeproxy-skipped"]
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="pro", messages=[{"role": "user", "content": "Hi"}], stop=["\n\n"]
        )
    assert info.value.param == "stop"  # type: ignore[attr-defined]


def test_the_key_never_reaches_the_client(stack: Stack) -> None:
    # A 400 invalid_api_key is the proxy's key (auth_rejected, as on the OpenAI chat wire): a
    # 502 that names what to fix, never the key the upstream quoted.
    stack.fault("resp", mode="echo_key", status=400)
    with pytest.raises(openai.InternalServerError) as info:
        stack.client().responses.create(model="pro", input="Hi")
    assert info.value.status_code == 502 and "credentials" in info.value.message
    assert KEY not in str(info.value.body) and KEY not in info.value.message

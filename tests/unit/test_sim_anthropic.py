"""The simulator's Anthropic Messages wire, driven by the official ``anthropic`` SDK, and tool use
on both wires."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from edgeproxy.sim import Fault, SimConfig, SimProvider

KEY = "sk-ant-sim"
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city.",
        "input_schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    }
]
HI: list[Any] = [{"role": "user", "content": "Say something about edge proxies."}]
USE_TOOL: list[Any] = [{"role": "user", "content": "Please use tool to check Paris."}]
EXPECTED_INPUT = {"city": "sim-city", "days": 42, "unit": "celsius"}
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def blocks(content: list[Any]) -> list[dict[str, Any]]:
    """Content blocks as plain data (stream helpers return Parsed* subclasses)."""
    return [b.model_dump(include={"type", "text", "id", "name", "input"}) for b in content]


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    provider = SimProvider(
        SimConfig(
            name="claude",
            ttft=0.0,
            tokens_per_second=0,
            default_completion_tokens=8,
            seed=3,
            require_api_key=KEY,
            wire="anthropic",
        )
    )
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
async def client(sim: SimProvider) -> AsyncIterator[AsyncAnthropic]:
    sdk = AsyncAnthropic(base_url=sim.base_url, api_key=KEY, max_retries=0, timeout=5)
    yield sdk
    await sdk.close()


async def test_non_stream_message(sim: SimProvider, client: AsyncAnthropic) -> None:
    message = await client.messages.create(model="claude-sim", max_tokens=100, messages=HI)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "claude-sim"
    assert message.stop_reason == "end_turn"
    block = message.content[0]
    assert block.type == "text" and block.text.endswith(".")
    assert message.usage.output_tokens == 8 and message.usage.input_tokens > 0
    again = await client.messages.create(model="claude-sim", max_tokens=100, messages=HI)
    assert again.content == message.content  # deterministic for seed + messages
    assert sim.stats.outcomes == {"ok": 2}


async def test_stream_matches_non_stream(client: AsyncAnthropic) -> None:
    whole = await client.messages.create(model="claude-sim", max_tokens=100, messages=HI)
    kinds: list[str] = []
    async with client.messages.stream(model="claude-sim", max_tokens=100, messages=HI) as stream:
        async for event in stream:
            kinds.append(event.type)
        final = await stream.get_final_message()
    assert blocks(final.content) == blocks(whole.content)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 8
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds


async def test_raw_event_sequence(sim: SimProvider) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            sim.base_url + "/v1/messages",
            json={"model": "c", "max_tokens": 3, "stream": True, "messages": HI},
            headers=HEADERS,
        )
        raw = await resp.read()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    names = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert b'"stop_reason":"max_tokens"' in raw


async def test_max_tokens_stop_reason(client: AsyncAnthropic) -> None:
    message = await client.messages.create(model="c", max_tokens=3, messages=HI)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


async def test_tool_use_non_stream_and_stream(client: AsyncAnthropic) -> None:
    message = await client.messages.create(
        model="c", max_tokens=100, messages=USE_TOOL, tools=TOOLS
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.id.startswith("toolu_")
    assert block.input == EXPECTED_INPUT

    deltas = 0
    async with client.messages.stream(
        model="c", max_tokens=100, messages=USE_TOOL, tools=TOOLS
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                deltas += 1
        final = await stream.get_final_message()
    assert deltas > 2  # the input arrives in pieces
    assert blocks(final.content) == blocks(message.content)
    assert final.stop_reason == "tool_use"

    # No trigger: text; a forced tool_choice: a tool call without the trigger; "none": text.
    plain = await client.messages.create(model="c", max_tokens=100, messages=HI, tools=TOOLS)
    assert plain.content[0].type == "text"
    forced = await client.messages.create(
        model="c", max_tokens=100, messages=HI, tools=TOOLS, tool_choice={"type": "any"}
    )
    assert forced.content[0].type == "tool_use"
    none = await client.messages.create(
        model="c", max_tokens=100, messages=USE_TOOL, tools=TOOLS, tool_choice={"type": "none"}
    )
    assert none.content[0].type == "text"


async def test_tool_result_turn_gets_text(client: AsyncAnthropic) -> None:
    first = await client.messages.create(model="c", max_tokens=50, messages=USE_TOOL, tools=TOOLS)
    call = first.content[0]
    assert call.type == "tool_use"
    messages: list[Any] = [
        *USE_TOOL,
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}],
        },
    ]
    answer = await client.messages.create(model="c", max_tokens=50, messages=messages, tools=TOOLS)
    assert answer.content[0].type == "text" and answer.stop_reason == "end_turn"


@pytest.fixture
async def openai_sim() -> AsyncIterator[SimProvider]:
    provider = SimProvider(
        SimConfig(name="gpt", ttft=0.0, tokens_per_second=0, seed=3, require_api_key=KEY)
    )
    await provider.start()
    yield provider
    await provider.stop()


async def test_openai_wire_tool_calls(openai_sim: SimProvider) -> None:
    sim = openai_sim
    openai_tools: list[Any] = [
        {
            "type": "function",
            "function": {"name": t["name"], "parameters": t["input_schema"]},
        }
        for t in TOOLS
    ]
    sdk = AsyncOpenAI(base_url=sim.url, api_key=KEY, max_retries=0, timeout=5)
    try:
        completion = await sdk.chat.completions.create(
            model="gpt-sim", messages=USE_TOOL, tools=openai_tools
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        (call,) = choice.message.tool_calls or []
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather"
        assert orjson.loads(call.function.arguments) == EXPECTED_INPUT
        assert completion.usage is not None and completion.usage.completion_tokens > 1

        args = ""
        finish = None
        stream = await sdk.chat.completions.create(
            model="gpt-sim",
            messages=HI,
            tools=openai_tools,
            tool_choice="required",
            stream=True,
        )
        async for chunk in stream:
            for c in chunk.choices:
                for tc in c.delta.tool_calls or []:
                    assert tc.index == 0
                    args += (tc.function.arguments or "") if tc.function else ""
                finish = c.finish_reason or finish
        assert orjson.loads(args) == EXPECTED_INPUT
        assert finish == "tool_calls"
    finally:
        await sdk.close()


async def test_auth_and_version(sim: SimProvider) -> None:
    bad = AsyncAnthropic(base_url=sim.base_url, api_key="wrong", max_retries=0, timeout=5)
    with pytest.raises(anthropic.AuthenticationError) as info:
        await bad.messages.create(model="c", max_tokens=5, messages=HI)
    await bad.close()
    assert info.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            sim.base_url + "/v1/messages",
            json={"model": "c", "max_tokens": 5, "messages": HI},
            headers={"x-api-key": KEY},
        )
        assert resp.status == 400
        assert (await resp.json())["error"]["message"] == "anthropic-version: header is required"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "c", "messages": HI}, "max_tokens: Field required"),
        ({"max_tokens": 5, "messages": HI}, "model: Field required"),
        ({"model": "c", "max_tokens": 5, "messages": []}, "messages: at least one message"),
        (
            {"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
    ],
)
async def test_bad_requests(sim: SimProvider, body: dict[str, Any], message: str) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(sim.base_url + "/v1/messages", json=body, headers=HEADERS)
        error = await resp.json()
    assert resp.status == 400
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(message)


async def test_status_faults_raise_sdk_errors(sim: SimProvider, client: AsyncAnthropic) -> None:
    sim.set_fault(Fault(mode="status", status=529))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await client.messages.create(model="c", max_tokens=5, messages=HI)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    sim.set_fault(Fault(mode="status", status=429, retry_after=2))
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model="c", max_tokens=5, messages=HI)
    assert limited.value.response.headers["retry-after"] == "2"
    sim.set_fault(Fault(mode="status", status=400, error_code="context_length_exceeded"))
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        await client.messages.create(model="c", max_tokens=5, messages=HI)
    sim.set_fault(Fault(mode="status", status=500))
    with pytest.raises(anthropic.InternalServerError):
        await client.messages.create(model="c", max_tokens=5, messages=HI)
    sim.set_fault(Fault(mode="overloaded"))
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.create(model="c", max_tokens=5, messages=HI)


async def test_overloaded_mid_stream(sim: SimProvider, client: AsyncAnthropic) -> None:
    sim.set_fault(Fault(mode="overloaded", after_tokens=2))
    text = ""
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model="c", max_tokens=100, messages=HI) as stream:
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text += event.delta.text
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert text and len(text.split()) == 2  # two deltas before the error
    assert sim.stats.outcomes == {"overloaded": 1}
    assert sim.stats.streams_completed == 0


async def test_stream_faults(sim: SimProvider, client: AsyncAnthropic) -> None:
    sim.set_fault(Fault(mode="cut", after_tokens=1))
    with pytest.raises((anthropic.APIError, httpx2.TransportError)):
        async with client.messages.stream(model="c", max_tokens=100, messages=HI) as stream:
            await stream.get_final_message()
    sim.set_fault(Fault(mode="no_done"))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            sim.base_url + "/v1/messages",
            json={"model": "c", "max_tokens": 5, "stream": True, "messages": HI},
            headers=HEADERS,
        )
        raw = await resp.read()
    assert b"message_delta" in raw and b"message_stop" not in raw
    sim.set_fault(Fault(mode="malformed", after_tokens=0))
    with pytest.raises(ValueError):  # the SDK cannot decode the broken event
        async with client.messages.stream(model="c", max_tokens=100, messages=HI) as stream:
            await stream.get_final_message()
    sim.set_fault(Fault(mode="malformed"))
    with pytest.raises(ValueError):
        await client.messages.create(model="c", max_tokens=5, messages=HI)


async def test_a_sim_speaks_one_wire(sim: SimProvider, client: AsyncAnthropic) -> None:
    """Each simulator speaks its own wire, as a provider's endpoint does: a request in the other
    wire is a 404, so a proxy that sent the wrong shape could not pass by accident."""
    sdk = AsyncOpenAI(base_url=sim.url, api_key=KEY, max_retries=0, timeout=5)
    try:
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(model="gpt-sim", messages=HI)
    finally:
        await sdk.close()
    done = await client.messages.create(model="c", max_tokens=5, messages=HI)
    assert done.content and done.stop_reason in ("end_turn", "max_tokens")
    assert sim.stats.requests_total == 1

"""The translators' output consumed by the official SDKs over real loopback HTTP.

A tiny translating server stands in for the proxy: an Anthropic client in front of an OpenAI-wire
simulated upstream, and an OpenAI client in front of an Anthropic-wire one (request translation in
Python, the stream per network chunk in Rust, errors in the client's wire). It also replays the
golden transcripts, translated, in small network chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from aiohttp import web
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from edgeproxy._core import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from edgeproxy.server.ingress.anthropic_messages import stream_error_event
from edgeproxy.sim import Fault, SimConfig, SimProvider
from edgeproxy.translate import (
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)
from wirekit import fixture

HI: list[Any] = [{"role": "user", "content": "Say something about edge proxies."}]
USE_TOOL: list[Any] = [{"role": "user", "content": "Please use tool for Paris."}]
TOOL_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
VERSION = {"anthropic-version": "2023-06-01"}


def openai_error_event(kind: str, message: str) -> bytes:
    return b"data: " + orjson.dumps({"error": {"message": message, "type": kind}}) + b"\n\n"


@dataclass
class Translating:
    sim: SimProvider  # speaks OpenAI's wire (behind the Anthropic ingress)
    claude: SimProvider  # speaks Anthropic's wire (behind the OpenAI ingress)
    http: aiohttp.ClientSession
    base_url: str = ""


STATE = web.AppKey("state", Translating)


async def anthropic_ingress(request: web.Request) -> web.StreamResponse:
    """Anthropic client -> OpenAI-wire upstream (the sim's /v1/chat/completions)."""
    state = request.app[STATE]
    body = await request.json()
    upstream = anthropic_to_openai_request(body)
    resp = await state.http.post(state.sim.url + "/chat/completions", json=upstream)
    if not body.get("stream"):
        answer = openai_to_anthropic_response(await resp.json())
        return web.json_response(answer)
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    translator = OpenAIToAnthropicStream(model=body["model"])
    async for chunk in resp.content.iter_any():
        await out.write(translator.feed(chunk))
        if translator.error is not None:
            break
    tail, complete = translator.finish()
    if complete:
        await out.write(tail)
    else:
        kind = "overloaded_error" if translator.error else "api_error"
        await out.write(stream_error_event(kind, "upstream stream failed", "req-test"))
    await out.write_eof()
    return out


async def openai_ingress(request: web.Request) -> web.StreamResponse:
    """OpenAI client -> Anthropic-wire upstream (the sim's /v1/messages)."""
    state = request.app[STATE]
    body = await request.json()
    upstream = openai_to_anthropic_request(body, default_max_tokens=256)
    resp = await state.http.post(
        state.claude.base_url + "/v1/messages", json=upstream, headers=VERSION
    )
    if not body.get("stream"):
        return web.json_response(anthropic_to_openai_response(await resp.json()))
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    translator = AnthropicToOpenAIStream(include_usage=include_usage, model=body["model"])
    async for chunk in resp.content.iter_any():
        await out.write(translator.feed(chunk))
        if translator.error is not None:
            break
    tail, complete = translator.finish()
    await out.write(tail)
    if not complete:
        kind, message = translator.error or ("upstream_error", "stream cut")
        await out.write(openai_error_event(kind, message))
    await out.write_eof()
    return out


async def golden_anthropic(request: web.Request) -> web.StreamResponse:
    """The OpenAI tool-call transcript, translated, written in 7-byte network chunks."""
    raw = fixture("openai_stream_tools.sse")
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    translator = OpenAIToAnthropicStream()
    for i in range(0, len(raw), 7):
        await out.write(translator.feed(raw[i : i + 7]))
    await out.write(translator.finish()[0])
    await out.write_eof()
    return out


async def golden_openai(request: web.Request) -> web.StreamResponse:
    raw = fixture("anthropic_stream_tools.sse")
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    translator = AnthropicToOpenAIStream(include_usage=True)
    for i in range(0, len(raw), 5):
        await out.write(translator.feed(raw[i : i + 5]))
    await out.write_eof()
    return out


@pytest.fixture
async def server() -> AsyncIterator[Translating]:
    sim, claude = (
        SimProvider(
            SimConfig(
                name="up",
                ttft=0,
                tokens_per_second=0,
                default_completion_tokens=6,
                seed=1,
                wire=wire,
            )
        )
        for wire in ("openai", "anthropic")
    )
    await sim.start()
    await claude.start()
    http = aiohttp.ClientSession()
    state = Translating(sim, claude, http)
    app = web.Application()
    app[STATE] = state
    app.router.add_post("/v1/messages", anthropic_ingress)
    app.router.add_post("/v1/chat/completions", openai_ingress)
    app.router.add_post("/golden/v1/messages", golden_anthropic)
    app.router.add_post("/golden/v1/chat/completions", golden_openai)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.base_url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()
    await http.close()
    await sim.stop()
    await claude.stop()


@pytest.fixture
async def claude(server: Translating) -> AsyncIterator[AsyncAnthropic]:
    sdk = AsyncAnthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=5)
    yield sdk
    await sdk.close()


@pytest.fixture
async def gpt(server: Translating) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=5)
    yield sdk
    await sdk.close()


async def test_anthropic_sdk_over_openai_upstream(claude: AsyncAnthropic) -> None:
    whole = await claude.messages.create(model="claude-x", max_tokens=50, messages=HI)
    assert whole.stop_reason == "end_turn" and whole.content[0].type == "text"
    async with claude.messages.stream(model="claude-x", max_tokens=50, messages=HI) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == whole.content[0].text
    assert final.model == "claude-x"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens == 6
    assert final.usage.input_tokens == whole.usage.input_tokens > 0


async def test_anthropic_sdk_tool_use_over_openai_upstream(claude: AsyncAnthropic) -> None:
    tools: list[Any] = [{"name": "lookup", "input_schema": TOOL_SCHEMA}]
    async with claude.messages.stream(
        model="claude-x", max_tokens=50, messages=USE_TOOL, tools=tools
    ) as stream:
        final = await stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("lookup", {"city": "sim-city"})
    assert final.stop_reason == "tool_use"


async def test_anthropic_sdk_sees_upstream_overload_as_error(
    server: Translating, claude: AsyncAnthropic
) -> None:
    server.sim.set_fault(Fault(mode="overloaded", after_tokens=2))
    with pytest.raises(anthropic.APIStatusError) as info:
        async with claude.messages.stream(model="c", max_tokens=50, messages=HI) as stream:
            await stream.get_final_message()
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_openai_sdk_over_anthropic_upstream(gpt: AsyncOpenAI) -> None:
    whole = await gpt.chat.completions.create(model="gpt-x", messages=HI)
    assert whole.choices[0].finish_reason == "stop"
    stream = await gpt.chat.completions.create(
        model="gpt-x", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    text, usage, finish = "", None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == whole.choices[0].message.content
    assert finish == "stop"
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens == 6


async def test_openai_sdk_tool_calls_over_anthropic_upstream(gpt: AsyncOpenAI) -> None:
    tools: list[Any] = [
        {"type": "function", "function": {"name": "lookup", "parameters": TOOL_SCHEMA}}
    ]
    async with gpt.chat.completions.stream(model="gpt-x", messages=USE_TOOL, tools=tools) as stream:
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "lookup" and call.id.startswith("toolu_")
    assert orjson.loads(call.function.arguments) == {"city": "sim-city"}


async def test_openai_sdk_sees_upstream_overload_as_error(
    server: Translating, gpt: AsyncOpenAI
) -> None:
    server.claude.set_fault(Fault(mode="overloaded", after_tokens=2))
    stream = await gpt.chat.completions.create(model="gpt-x", messages=HI, stream=True)
    with pytest.raises(openai.APIError, match="Overloaded"):
        async for _ in stream:
            pass


async def test_golden_openai_tools_through_anthropic_sdk(server: Translating) -> None:
    sdk = AsyncAnthropic(base_url=server.base_url + "/golden", api_key="x", max_retries=0)
    try:
        async with sdk.messages.stream(model="m", max_tokens=5, messages=HI) as stream:
            final = await stream.get_final_message()
    finally:
        await sdk.close()
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("tool_use", {"location": "Paris, France"}),
        ("tool_use", {"tz": "Europe/Paris"}),
    ]
    assert final.stop_reason == "tool_use"


async def test_golden_anthropic_tools_through_openai_sdk(server: Translating) -> None:
    sdk = AsyncOpenAI(base_url=server.base_url + "/golden/v1", api_key="x", max_retries=0)
    try:
        async with sdk.chat.completions.stream(model="m", messages=HI) as stream:
            final = await stream.get_final_completion()
    finally:
        await sdk.close()
    message = final.choices[0].message
    assert message.content == "Okay, let's check the weather for San Francisco, CA:"
    (call,) = message.tool_calls or []
    assert call.type == "function"
    assert orjson.loads(call.function.arguments) == {
        "location": "San Francisco, CA",
        "unit": "fahrenheit",
    }
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.total_tokens == 472 + 89

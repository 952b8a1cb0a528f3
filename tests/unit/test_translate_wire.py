"""Golden wire transcripts (from the public API docs) and the translators' output, pinned with the
official SDKs' own types."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from edgeproxy._core import AnthropicToOpenAIStream, OpenAIToAnthropicStream, TranslationError
from edgeproxy.translate import (
    anthropic_to_openai_response,
    finish_reason_for,
    openai_to_anthropic_response,
    stop_reason_for,
)
from wirekit import ANTHROPIC_STREAMS, OPENAI_STREAMS, events, fixture, fixture_json

ANTHROPIC_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def anthropic_events(raw: bytes) -> list[Any]:
    """Parse and check every event: SSE event name == data.type, and the SDK type accepts it
    (``ping`` is a keep-alive outside the SDK's event union)."""
    out = []
    for name, data in events(raw):
        assert name == data["type"]
        if name == "ping":
            continue
        out.append(ANTHROPIC_EVENT.validate_python(data))
    return out


def openai_chunks(raw: bytes) -> list[ChatCompletionChunk]:
    evs = events(raw)
    assert evs[-1] == ("message", "[DONE]")
    return [ChatCompletionChunk.model_validate(data) for _, data in evs[:-1]]


def accumulate_anthropic(evs: list[Any]) -> dict[str, Any]:
    """What a client assembles: the blocks (text, tool input JSON), stop reason and usage."""
    blocks: list[dict[str, Any]] = []
    stop_reason = None
    usage = None
    assert evs[0].type == "message_start" and evs[-1].type == "message_stop"
    for ev in evs:
        if ev.type == "content_block_start":
            assert ev.index == len(blocks)
            block = ev.content_block.model_dump()
            blocks.append({**block, "json": ""})
        elif ev.type == "content_block_delta":
            if ev.delta.type == "text_delta":
                blocks[ev.index]["text"] += ev.delta.text
            else:
                blocks[ev.index]["json"] += ev.delta.partial_json
        elif ev.type == "message_delta":
            stop_reason, usage = ev.delta.stop_reason, ev.usage
    for b in blocks:
        if b["type"] == "tool_use":
            b["input"] = orjson.loads(b["json"] or "{}")
    return {"blocks": blocks, "stop_reason": stop_reason, "usage": usage}


def accumulate_openai(chunks: list[ChatCompletionChunk]) -> dict[str, Any]:
    text = ""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage = None
    for c in chunks:
        if c.usage is not None:
            usage = c.usage
        for choice in c.choices:
            assert choice.index == 0
            text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += tc.id or ""
                if tc.function is not None:
                    call["name"] += tc.function.name or ""
                    call["arguments"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    return {"text": text, "calls": calls, "finish": finish, "usage": usage}


# -- the golden transcripts themselves ----------------------------------------------------------


@pytest.mark.parametrize("name", ANTHROPIC_STREAMS)
def test_anthropic_golden_streams_are_sdk_events(name: str) -> None:
    evs = anthropic_events(fixture(name))
    assert [e.type for e in evs[:2]] == ["message_start", "content_block_start"]


@pytest.mark.parametrize("name", OPENAI_STREAMS)
def test_openai_golden_streams_are_sdk_chunks(name: str) -> None:
    chunks = openai_chunks(fixture(name))
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_golden_bodies_are_sdk_objects() -> None:
    ChatCompletion.model_validate(fixture_json("openai_completion_tools.json"))
    Message.model_validate(fixture_json("anthropic_message_tools.json"))


# -- stream translation: OpenAI -> Anthropic ------------------------------------------------------


def test_openai_text_stream_to_anthropic() -> None:
    t = OpenAIToAnthropicStream(model="claude-via-gpt")
    out = t.feed(fixture("openai_stream_text.sse"))
    tail, complete = t.finish()
    assert complete and t.complete and tail == b""
    evs = anthropic_events(out)
    assert [e.type for e in evs] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = evs[0].message
    assert (start.id, start.model, start.role) == ("msg_123", "claude-via-gpt", "assistant")
    got = accumulate_anthropic(evs)
    assert got["blocks"][0]["text"] == "Hello! How can I help — today?"
    assert got["stop_reason"] == "end_turn"
    assert (got["usage"].input_tokens, got["usage"].output_tokens) == (19, 10)
    assert t.usage == (19, 10, 0, 0) and t.stop_reason == "end_turn"


def test_openai_tool_stream_to_anthropic() -> None:
    t = OpenAIToAnthropicStream()
    got = accumulate_anthropic(anthropic_events(t.feed(fixture("openai_stream_tools.sse"))))
    assert [(b["type"], b["id"], b["name"], b["input"]) for b in got["blocks"]] == [
        ("tool_use", "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", {"location": "Paris, France"}),
        ("tool_use", "call_nH0TfE5aXqf4sr2Q1k2mZ9Ut", "get_time", {"tz": "Europe/Paris"}),
    ]
    assert got["stop_reason"] == "tool_use"
    assert t.complete


# -- stream translation: Anthropic -> OpenAI ------------------------------------------------------


def test_anthropic_text_stream_to_openai() -> None:
    t = AnthropicToOpenAIStream(include_usage=True, created=1700000000)
    chunks = openai_chunks(t.feed(fixture("anthropic_stream_text.sse")))
    assert t.finish() == (b"", True)
    got = accumulate_openai(chunks)
    assert got["text"] == "Hello! How can I help — today?"
    assert got["finish"] == "stop"
    assert (got["usage"].prompt_tokens, got["usage"].completion_tokens) == (25, 15)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {"chatcmpl-1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert {c.created for c in chunks} == {1700000000}
    assert chunks[-1].choices == []  # the usage chunk


def test_anthropic_tool_stream_to_openai() -> None:
    t = AnthropicToOpenAIStream(model="gpt-alias")
    chunks = openai_chunks(t.feed(fixture("anthropic_stream_tools.sse")))
    got = accumulate_openai(chunks)
    assert got["text"] == "Okay, let's check the weather for San Francisco, CA:"
    assert got["calls"] == {
        0: {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "arguments": '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
        }
    }
    assert got["finish"] == "tool_calls"
    assert got["usage"] is None  # include_usage off: no usage chunk, no usage fields
    assert all("usage" not in orjson.loads(d) for d in _data(t, chunks))
    assert {c.model for c in chunks} == {"gpt-alias"}


def _data(t: AnthropicToOpenAIStream, chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.model_dump_json(exclude_unset=True) for c in chunks]


def test_anthropic_error_event_is_reported_not_forwarded() -> None:
    raw = fixture("anthropic_stream_text.sse")
    cut = raw.index(b"event: content_block_stop")
    error = (
        b"event: error\n"
        b'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    )
    t = AnthropicToOpenAIStream()
    out = t.feed(raw[:cut] + error + raw[cut:])
    assert t.error == ("overloaded_error", "Overloaded")
    assert b"[DONE]" not in out and b"error" not in out
    assert t.finish() == (b"", False) and not t.complete
    assert t.feed(b"event: ping\ndata: {}\n\n") == b""


def test_openai_error_chunk_is_reported_not_forwarded() -> None:
    raw = fixture("openai_stream_text.sse")
    cut = raw.index(b"data:", 10)
    t = OpenAIToAnthropicStream()
    out = t.feed(raw[:cut] + b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n')
    assert t.error == ("server_error", "boom")
    assert b"message_stop" not in out
    assert t.finish() == (b"", False)


def test_incomplete_streams_are_not_complete() -> None:
    raw = fixture("anthropic_stream_tools.sse")
    t = AnthropicToOpenAIStream()
    out = t.feed(raw[: raw.index(b"event: message_stop")])
    assert b"[DONE]" not in out and t.finish() == (b"", False)
    assert t.finish_reason == "tool_calls"  # message_delta came, message_stop did not

    raw = fixture("openai_stream_tools.sse")
    t2 = OpenAIToAnthropicStream()
    t2.feed(raw[: raw.index(b'"finish_reason":"tool_calls"') - 100])
    assert t2.finish() == (b"", False) and t2.started


def test_bad_upstream_events_raise_translation_error() -> None:
    with pytest.raises(TranslationError) as info:
        AnthropicToOpenAIStream().feed(b"event: message_start\ndata: {not json\n\n")
    assert info.value.param == "stream"
    interleaved = b"".join(
        b'data: {"id":"x","choices":[{"index":0,"delta":{"tool_calls":[%s]}}]}\n\n' % call
        for call in (
            b'{"index":0,"id":"a","function":{"name":"f","arguments":""}}',
            b'{"index":1,"id":"b","function":{"name":"g","arguments":""}}',
            b'{"index":0,"function":{"arguments":"{}"}}',
        )
    )
    with pytest.raises(TranslationError) as info:
        OpenAIToAnthropicStream().feed(interleaved)
    assert info.value.param == "tool_calls"
    two_choices = b'data: {"id":"x","choices":[{"index":1,"delta":{"content":"hi"}}]}\n\n'
    with pytest.raises(TranslationError, match=r"^n: "):
        OpenAIToAnthropicStream().feed(two_choices)


def test_big_chunk_translates_with_gil_released() -> None:
    text = "x" * 200_000
    chunk = orjson.dumps(
        {"id": "chatcmpl-big", "choices": [{"index": 0, "delta": {"content": text}}]}
    )
    t = OpenAIToAnthropicStream()
    evs = anthropic_events(t.feed(b"data: " + chunk + b"\n\n" + b"data: [DONE]\n\n"))
    assert accumulate_anthropic(evs)["blocks"][0]["text"] == text


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("function_call", "tool_use"),
        ("something_new", "end_turn"),
    ],
)
def test_rust_and_python_reason_tables_agree(finish: str, stop: str) -> None:
    chunk = {"id": "chatcmpl-r", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    t = OpenAIToAnthropicStream()
    t.feed(b"data: " + orjson.dumps(chunk) + b"\n\n")
    assert t.stop_reason == stop_reason_for(finish) == stop
    a = AnthropicToOpenAIStream()
    start = {"type": "message_start", "message": {"id": "msg_r", "model": "m", "usage": {}}}
    delta = {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 1}}
    a.feed(b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in (start, delta)))
    assert a.finish_reason == finish_reason_for(stop)
    for reason in ("stop_sequence", "pause_turn", "model_context_window_exceeded", "refusal"):
        a = AnthropicToOpenAIStream()
        d = {**delta, "delta": {"stop_reason": reason}}
        a.feed(b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in (start, d)))
        assert a.finish_reason == finish_reason_for(reason)


# -- whole responses --------------------------------------------------------------------------


def test_openai_completion_to_anthropic_message() -> None:
    out = openai_to_anthropic_response(fixture_json("openai_completion_tools.json"))
    message = Message.model_validate(out)
    assert message.id == "msg_abc123"
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == (
        "call_abc123",
        "get_current_weather",
        {"location": "Boston, MA"},
    )
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (18, 64)
    assert message.usage.output_tokens == 17


def test_anthropic_message_to_openai_completion() -> None:
    out = anthropic_to_openai_response(fixture_json("anthropic_message_tools.json"), created=5)
    completion = ChatCompletion.model_validate(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the current weather in San Francisco for you."
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].id == "toolu_01A09q90qw90lq917835lq9"
    assert orjson.loads(calls[0].function.arguments) == {
        "location": "San Francisco, CA",
        "unit": "celsius",
    }
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (484, 92)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100


def test_response_round_trip_keeps_text_and_tools() -> None:
    original = fixture_json("anthropic_message_tools.json")
    back = openai_to_anthropic_response(anthropic_to_openai_response(original))
    assert back["content"] == original["content"]
    assert back["stop_reason"] == original["stop_reason"]
    assert back["usage"]["output_tokens"] == original["usage"]["output_tokens"]

"""The Responses API translation without sockets: request items into chat messages (what is
carried, dropped and refused by name), a chat completion into a response object, and the chat
chunks of a stream into typed events (whatever way the relay's bytes are split)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy._core import SseParser, encode_sse
from edgeproxy.server.ingress import ClientError
from edgeproxy.server.ingress.openai_responses import INGRESS
from edgeproxy.translate import TranslationError
from edgeproxy.translate.responses_api import (
    ResponsesEvents,
    chat_to_response,
    responses_to_chat_request,
)


def test_items_become_chat_messages() -> None:
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "two"}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "See"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ],
            },
        ],
        "max_output_tokens": 50,
        "tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "stream": True,
        "user": "u",
    }
    out = responses_to_chat_request(body)
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": "Checking.",  # one assistant turn: its text and both calls
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "See"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            ],
        },
    ]
    assert out["max_tokens"] == 50 and out["reasoning_effort"] == "low" and out["user"] == "u"
    assert out["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "s", "schema": {"type": "object"}},
    }
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert "store" not in out and "include" not in out


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[0].type"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"include": ["file_search_call.results"]}, "include[0]"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"type": "web_search_call", "id": "ws"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": []}, "input"),
        ({"input": None}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_what_the_proxy_cannot_serve_is_refused_by_name(change: dict[str, Any], param: str) -> None:
    body = {"model": "m", "input": "hi", **change}
    with pytest.raises(TranslationError) as info:
        responses_to_chat_request({k: v for k, v in body.items() if v is not None or k != "input"})
    assert info.value.param == param


def test_tool_settings_without_tools_are_left_out_or_refused() -> None:
    plain = responses_to_chat_request(
        {"model": "m", "input": "hi", "tool_choice": "auto", "parallel_tool_calls": False}
    )
    assert "tool_choice" not in plain and "parallel_tool_calls" not in plain
    with pytest.raises(TranslationError) as info:
        responses_to_chat_request({"model": "m", "input": "hi", "tool_choice": "required"})
    assert info.value.param == "tool_choice"


def test_the_ingress_words_a_refusal_for_the_sdk() -> None:
    with pytest.raises(ClientError) as info:
        INGRESS.parse(orjson.dumps({"model": "m", "input": "hi", "previous_response_id": "r"}))
    err = info.value
    assert err.status == 400 and err.param == "previous_response_id"
    assert err.code == "unsupported_parameter" and "stateless" in err.message
    for raw in (b"[1]", b"{", orjson.dumps({"input": "hi"})):
        with pytest.raises(ClientError):
            INGRESS.parse(raw)
    request = INGRESS.parse(
        orjson.dumps({"model": "m", "input": "hi", "instructions": "x", "top_p": 1})
    )
    assert request.echo == {"instructions": "x", "top_p": 1} and request.model == "m"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"model": "m"}, "missing_required_parameter"),
        ({"model": "m", "input": []}, "invalid_value"),
        ({"model": "m", "input": [], "instructions": "only this"}, "invalid_value"),
        ({"model": "m", "input": 7}, "invalid_type"),
        ({"model": "m", "input": "hi", "background": True}, "unsupported_parameter"),
    ],
)
def test_each_refusal_has_the_code_openai_would_give(body: dict[str, Any], code: str) -> None:
    with pytest.raises(ClientError) as info:
        INGRESS.parse(orjson.dumps(body))
    assert info.value.code == code and info.value.status == 400
    assert info.value.param is not None and f"'{info.value.param}'" in info.value.message


def _completion(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 7,
        "model": "up",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": message.pop("finish", "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }


def test_a_completion_becomes_a_response_object() -> None:
    completion = _completion(
        content="Hi",
        refusal="No.",
        tool_calls=[
            {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    )
    out = chat_to_response(completion, {"instructions": "Be brief.", "temperature": 0}, "asked")
    assert out["id"] == "resp_abc" and out["object"] == "response" and out["status"] == "completed"
    assert out["model"] == "up" and out["created_at"] == 7 and out["store"] is False
    message, call = out["output"]
    assert message["content"] == [
        {"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []},
        {"type": "refusal", "refusal": "No."},
    ]
    assert call == {
        "type": "function_call",
        "id": "fc_9",
        "call_id": "call_9",
        "name": "f",
        "arguments": "{}",
        "status": "completed",
    }
    assert out["usage"] == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 8,
    }
    assert out["instructions"] == "Be brief." and out["temperature"] == 0


def test_a_length_stop_is_incomplete() -> None:
    completion = _completion(content="Hi")
    completion["choices"][0]["finish_reason"] = "length"
    out = chat_to_response(completion, {}, "m")
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}
    with pytest.raises(TranslationError):
        chat_to_response({**completion, "choices": []}, {}, "m")


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        data = {**data, "choices": [], "usage": usage}
    return encode_sse(orjson.dumps(data).decode())


RELAYED = (
    _chunk({"role": "assistant", "content": ""})
    + _chunk({"content": "Hel"})
    + b": edgeproxy resumed on a/b/c after cut\n\n"
    + _chunk({"content": "lo"})
    + _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        }
    )
    + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})
    + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]})
    + _chunk({}, "tool_calls")
    + _chunk({}, usage={"prompt_tokens": 4, "completion_tokens": 6})
    + encode_sse("[DONE]")
)


def _events(out: bytes) -> list[dict[str, Any]]:
    parsed = []
    for event in SseParser().feed(out):
        data = orjson.loads(event.data)
        assert event.event == data["type"]  # the SSE event name is the type, as OpenAI's
        parsed.append(data)
    return parsed


def test_a_stream_becomes_typed_events() -> None:
    events = ResponsesEvents("asked", {"instructions": "x"})
    out = _events(events.feed(RELAYED))
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert out[6]["text"] == "Hello" and out[12]["arguments"] == '{"a":1}'
    final = out[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][0]["content"] == [
        {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
    ]
    assert final["usage"]["total_tokens"] == 10 and final["instructions"] == "x"
    assert events.done and events.feed(_chunk({"content": "late"})) == b""


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(RELAYED)), max_size=10))
def test_any_split_of_the_relayed_bytes_gives_the_same_events(cuts: list[int]) -> None:
    expected = _events(ResponsesEvents("m", {}).feed(RELAYED))
    events = ResponsesEvents("m", {})
    out = b""
    bounds = sorted(set(cuts))
    for a, b in zip([0, *bounds], [*bounds, len(RELAYED)], strict=True):
        out += events.feed(RELAYED[a:b])
    assert _events(out) == expected


def test_a_stream_that_ends_early_says_so() -> None:
    request = INGRESS.parse(orjson.dumps({"model": "m", "input": "hi", "stream": True}))
    encoder = INGRESS.stream(request)
    encoder.encode(_chunk({"content": "Hel"}))
    tail = _events(encoder.close())
    assert tail[-1]["type"] == "error" and tail[-1]["error"]["code"] == "stream_interrupted"
    assert tail[-1]["message"] == tail[-1]["error"]["message"]  # flat and nested, the same

"""The Responses API upstream wire: the chat request it sends (and what it refuses by name),
answers and typed event streams back to chat (hostile ones included), and OpenAI's error table.
What every wire must do is in the contract suite (tests/integration/test_wire_contract.py)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy._core import ChatStreamScanner
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.snapshot import Candidate
from edgeproxy.translate.openai_responses import (
    ResponsesToChatStream,
)
from edgeproxy.wires.openai_chat import WIRE as CHAT
from edgeproxy.wires.openai_responses import WIRE
from wirekit import events, feed_chunks

KEY = "sk-proj-responses-secret-0123456789abcdef"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def candidate(base_url: str = "http://upstream.example/v1", **query: str) -> Candidate:
    return Candidate(
        provider="p",
        region="r",
        model="m",
        upstream_model="o3-pro",
        wire=WIRE,
        base_url=base_url,
        chat_url=WIRE.endpoint_url(base_url, query),
        context_window=None,
        tags=MappingProxyType({}),
        headers=MappingProxyType({"Authorization": f"Bearer {KEY}"}),
    )


def sent(body: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(WIRE.request_body(body, candidate()))
    return parsed


# -- requests -----------------------------------------------------------------------------------


def test_a_chat_request_translates_whole() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {
                "role": "user",
                "name": "ann",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 18}'},
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
        },
        "verbosity": "low",
        "reasoning_effort": "high",
        "max_completion_tokens": 300,
        "max_tokens": 100,  # the newer name wins, as at OpenAI
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"task": "x"},
        "user": "u1",
        "prompt_cache_key": "k",
        "stream": True,
        "stream_options": {"include_usage": True},
        "store": True,
        "n": 1,
        "stop": [],
    }
    assert sent(body) == {
        "model": "o3-pro",
        "instructions": "Be brief.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Use metric."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather here?"},
                    {"type": "input_image", "image_url": "https://x/i.png", "detail": "low"},
                ],
            },
            {"type": "message", "role": "assistant", "content": "Checking."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": '{"celsius": 18}'},
        ],
        "store": False,  # stateless, whatever the client asked
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER["function"]["parameters"],  # type: ignore[index]
                "strict": False,  # chat's default said out loud (the Responses API's is strict)
            }
        ],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "text": {
            "format": {
                "type": "json_schema",
                "name": "w",
                "schema": {"type": "object"},
                "strict": True,
            },
            "verbosity": "low",
        },
        "reasoning": {"effort": "high"},
        "max_output_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"task": "x"},
        "user": "u1",
        "prompt_cache_key": "k",
        "stream": True,
    }


def test_an_assistant_refusal_and_parts_are_output_parts() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}], "refusal": None},
            {"role": "assistant", "content": "b", "refusal": "no"},
            {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "r"}]},
        ],
    }
    items = sent(body)["input"]
    assert items[1]["content"] == [{"type": "output_text", "text": "a", "annotations": []}]
    assert items[2]["content"] == [
        {"type": "output_text", "text": "b", "annotations": []},
        {"type": "refusal", "refusal": "no"},
    ]
    assert items[3]["output"] == [{"type": "input_text", "text": "r"}]


def test_anthropic_cache_marks_are_left_out() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
    }
    assert b"cache_control" not in WIRE.request_body(body, candidate())
    assert WIRE.refusal(body) is None


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"stop": ["\n"]}, "stop"),
        ({"seed": 7}, "seed"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"max_tokens": 8}, "max_tokens"),  # below the Responses API's minimum of 16
        ({"max_completion_tokens": 15}, "max_completion_tokens"),
        ({"response_format": {"type": "grammar"}}, "response_format.type"),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"some_new_field": 1}, "some_new_field"),
        # An Anthropic client's extended thinking (the proxy's own carrier): named as it wrote it.
        ({"x_anthropic": {"thinking": {"type": "enabled", "budget_tokens": 1024}}}, "thinking"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": []}, "messages"),
    ],
)
def test_what_the_responses_api_cannot_carry_is_refused_by_name(
    change: dict[str, Any], param: str
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **change}
    refusal = WIRE.refusal(body)
    assert refusal is not None and refusal.param == param, refusal
    # neutral values change nothing: carried (by leaving them out)
    neutral = {"n": 1, "presence_penalty": 0, "logprobs": False, "stop": [], "logit_bias": {}}
    assert (
        WIRE.refusal({"model": "m", "messages": [{"role": "user", "content": "Hi"}], **neutral})
        is None
    )


def test_the_url_the_headers_and_the_probes_are_openais() -> None:
    target = candidate(**{"api-version": "2025-04-01"})
    assert (
        WIRE.url(target, stream=True)
        == "http://upstream.example/v1/responses?api-version=2025-04-01"
    )
    headers = WIRE.request_headers(target, stream=True, request_id="r1", extra={"traceparent": "t"})
    assert headers["Authorization"] == f"Bearer {KEY}" and headers["Accept"] == "text/event-stream"
    probe = WIRE.probe(target, "completion", None)
    assert probe.method == "POST" and probe.url == target.chat_url
    assert orjson.loads(probe.body) == {
        "model": "o3-pro",
        "input": "ping",
        "max_output_tokens": 16,
        "store": False,
    }
    models = WIRE.probe(target, "models", None)
    assert (models.method, models.url) == ("GET", "http://upstream.example/v1/models")
    assert WIRE.embeddings is CHAT.embeddings


# -- errors -------------------------------------------------------------------------------------


def error(status: int, code: str | None, kind: str = "invalid_request_error") -> bytes:
    return orjson.dumps({"error": {"message": "m", "type": kind, "param": None, "code": code}})


@pytest.mark.parametrize(
    ("status", "raw", "expected"),
    [
        (400, error(400, None), FailureClass.CLIENT_ERROR),
        (400, error(400, "context_length_exceeded"), FailureClass.CONTEXT_LENGTH),
        (400, error(400, "integer_below_min_value"), FailureClass.CLIENT_ERROR),
        (401, error(401, "invalid_api_key"), FailureClass.AUTH_REJECTED),
        (404, error(404, "model_not_found"), FailureClass.MODEL_NOT_FOUND),
        (429, error(429, "rate_limit_exceeded", "requests"), FailureClass.RATE_LIMITED),
        (429, error(429, "insufficient_quota", "insufficient_quota"), FailureClass.QUOTA_EXHAUSTED),
        (500, error(500, None, "server_error"), FailureClass.SERVER_ERROR),
        (302, b"", FailureClass.REDIRECT),
    ],
)
def test_errors_are_classified_by_the_openai_table(
    status: int, raw: bytes, expected: FailureClass
) -> None:
    failure = WIRE.failure(status, raw, {"retry-after": "3"}, "application/json")
    twin = CHAT.failure(status, raw, {"retry-after": "3"}, "application/json")
    assert failure.failure is expected is twin.failure
    assert (failure.code, failure.retry_after) == (twin.code, twin.retry_after)
    if expected is FailureClass.CLIENT_ERROR:
        assert WIRE.client_error_body(failure, "req") == (raw, "application/json")


# -- answers ------------------------------------------------------------------------------------


USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 12},
    "output_tokens": 50,
    "output_tokens_details": {"reasoning_tokens": 40},
    "total_tokens": 80,
}


def response(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "resp_abc",
        "object": "response",
        "created_at": 1700000000,
        "status": "completed",
        "model": "o3-pro-2025-06-10",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "Hello ", "annotations": []},
                    {"type": "output_text", "text": "there.", "annotations": []},
                ],
            },
        ],
        "usage": USAGE,
    }
    out.update(fields)
    return out


def answer(data: Any) -> dict[str, Any]:
    raw, parsed = WIRE.answer(orjson.dumps(data))
    assert orjson.loads(raw) == parsed
    return parsed


def test_an_answer_is_a_chat_completion_with_its_usage() -> None:
    completion = answer(response())
    assert completion["id"] == "chatcmpl-abc"  # the ingress maps it back to resp_abc
    assert (completion["created"], completion["model"]) == (1700000000, "o3-pro-2025-06-10")
    choice = completion["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello there.", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert completion["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 50,
        "total_tokens": 80,
        "prompt_tokens_details": {"cached_tokens": 12},
        "completion_tokens_details": {"reasoning_tokens": 40},
    }


def test_function_calls_are_tool_calls_and_unknown_items_are_skipped() -> None:
    output = [
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},  # a kind not asked for
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
            "status": "completed",
        },
    ]
    choice = answer(response(output=output))["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]


@pytest.mark.parametrize(
    ("details", "finish"),
    [
        ({"reason": "max_output_tokens"}, "length"),
        ({"reason": "content_filter"}, "content_filter"),
        ({"reason": "something_new"}, "length"),  # never handed on as a whole answer
        (None, "length"),
    ],
)
def test_an_incomplete_response_is_never_a_stop(details: Any, finish: str) -> None:
    choice = answer(response(status="incomplete", incomplete_details=details))["choices"][0]
    assert choice["finish_reason"] == finish


def test_a_refusal_is_the_messages_refusal() -> None:
    output = [
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": "I can't help with that."}],
        }
    ]
    message = answer(response(output=output))["choices"][0]["message"]
    assert message["refusal"] == "I can't help with that." and message["content"] is None


@pytest.mark.parametrize(
    "hostile",
    [
        {"status": "completed"},  # no output
        response(output=None),
        response(output={"type": "message"}),  # not a list
        response(output=["text"]),  # an item that is not an object
        response(output=[{"type": "message", "content": "not a list"}]),
        response(output=[{"type": "function_call", "name": "f"}]),  # no call_id
        response(status="in_progress"),  # not a finished response
        response(status=None),
        [1, 2],
    ],
)
def test_a_hostile_answer_is_malformed(hostile: Any) -> None:
    with pytest.raises(AttemptFailure) as info:
        WIRE.answer(orjson.dumps(hostile))
    assert info.value.failure is FailureClass.MALFORMED and info.value.may_fail_over


def test_a_body_that_is_not_json_is_malformed() -> None:
    with pytest.raises(AttemptFailure) as info:
        WIRE.answer(b'{"output": [')
    assert info.value.failure is FailureClass.MALFORMED


def test_a_failed_response_is_a_server_error_without_the_key() -> None:
    failed = response(
        status="failed",
        output=[],
        error={"code": "server_error", "message": f"boom with key {KEY}"},
    )
    with pytest.raises(AttemptFailure) as info:
        WIRE.answer(orjson.dumps(failed))
    assert info.value.failure is FailureClass.SERVER_ERROR and info.value.may_fail_over
    assert info.value.code == "server_error" and KEY not in str(info.value)


@pytest.mark.parametrize(
    "usage",
    [
        None,
        "lots",
        {},
        {"input_tokens": 10},  # no output count
        {"input_tokens": -1, "output_tokens": 5},
        {"input_tokens": "10", "output_tokens": 5},
        {"input_tokens": True, "output_tokens": 5},
        {"input_tokens": 10, "output_tokens": 2**60},
        {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"cached_tokens": -3}},
        {"input_tokens": 10, "output_tokens": 5, "output_tokens_details": "many"},
    ],
)
def test_a_missing_or_hostile_usage_is_left_out_so_the_proxy_counts(usage: Any) -> None:
    """Billed as 0 it would be free: with no usage the proxy counts the answer itself."""
    assert "usage" not in answer(response(usage=usage))


def test_details_may_be_absent_and_cannot_exceed_their_total() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "input_tokens_details": {"cached_tokens": 99},
    }
    counted = answer(response(usage=usage))["usage"]
    assert counted["prompt_tokens_details"] == {"cached_tokens": 10}
    assert counted["completion_tokens_details"] == {"reasoning_tokens": 0}


# -- streams ------------------------------------------------------------------------------------


def sse(kind: str, **fields: Any) -> bytes:
    data = {"type": kind, **fields}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


OPEN = {"id": "resp_s1", "created_at": 1700000001, "model": "o3-pro", "status": "in_progress"}
DONE = {**OPEN, "status": "completed", "output": [], "usage": USAGE}
TEXT_STREAM = b"".join(
    [
        sse("response.created", response=OPEN),
        sse("response.in_progress", response=OPEN),
        sse("response.output_item.added", output_index=0, item={"type": "reasoning", "id": "rs"}),
        sse("response.reasoning_summary_text.delta", item_id="rs", delta="thinking"),
        sse(
            "response.output_item.added",
            output_index=1,
            item={"type": "message", "id": "msg_1", "role": "assistant", "content": []},
        ),
        sse("response.content_part.added", item_id="msg_1", output_index=1, content_index=0),
        sse("response.output_text.delta", item_id="msg_1", output_index=1, delta="Hel"),
        sse("response.output_text.delta", item_id="msg_1", output_index=1, delta="lo é"),
        sse("response.output_text.annotation.added", item_id="msg_1", annotation={}),
        sse("response.output_text.done", item_id="msg_1", text="Hello é"),
        sse("response.output_item.done", output_index=1, item={"type": "message", "id": "msg_1"}),
        sse("response.completed", response=DONE),
    ]
)
CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather"}
TOOL_STREAM = b"".join(
    [
        sse("response.created", response=OPEN),
        sse("response.output_item.added", output_index=0, item={**CALL, "arguments": ""}),
        sse("response.function_call_arguments.delta", item_id="fc_1", delta='{"city":'),
        sse("response.function_call_arguments.delta", item_id="fc_1", delta='"Paris"}'),
        sse("response.function_call_arguments.done", item_id="fc_1", arguments='{"city":"Paris"}'),
        sse(
            "response.output_item.done",
            output_index=0,
            item={**CALL, "arguments": '{"city":"Paris"}'},
        ),
        # a second call whose arguments only arrive whole, in its done item
        sse(
            "response.output_item.added",
            output_index=1,
            item={**CALL, "id": "fc_2", "call_id": "call_2"},
        ),
        sse(
            "response.output_item.done",
            output_index=1,
            item={**CALL, "id": "fc_2", "call_id": "call_2", "arguments": '{"city":"Oslo"}'},
        ),
        sse("response.completed", response=DONE),
    ]
)


def translate(raw: bytes, *, include_usage: bool = True, cuts: list[int] | None = None) -> bytes:
    translator = WIRE.stream(include_usage=include_usage)
    assert translator is not None
    out = feed_chunks(translator.feed, raw, cuts or [])
    return out + translator.finish()


def chunks(out: bytes) -> list[Any]:
    return [data for _, data in events(out)]


def test_a_text_stream_becomes_chat_chunks() -> None:
    out = chunks(translate(TEXT_STREAM))
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert out[0]["id"] == "chatcmpl-s1" and out[0]["model"] == "o3-pro"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in out[1:-3])
    assert text == "Hello é"  # reasoning summaries and annotations are not the answer
    assert out[-3]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert out[-2]["choices"] == [] and out[-2]["usage"]["completion_tokens"] == 50
    assert out[-1] == "[DONE]"


def test_the_relays_scanner_sees_a_finished_answer() -> None:
    scan = ChatStreamScanner().feed(translate(TEXT_STREAM))
    assert scan.finished and scan.done and scan.malformed is None and scan.error_event is None


def test_a_tool_stream_becomes_tool_call_deltas() -> None:
    translator = ResponsesToChatStream(include_usage=False)
    out = chunks(translator.feed(TOOL_STREAM) + translator.finish())
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in out[1:-2]]
    assert calls[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    by_index: dict[int, str] = {}
    for call in calls:
        by_index[call["index"]] = by_index.get(call["index"], "") + call["function"]["arguments"]
    assert by_index == {0: '{"city":"Paris"}', 1: '{"city":"Oslo"}'}
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert out[-1] == "[DONE]"  # no usage chunk unless asked ...
    assert translator.usage is not None and translator.usage["prompt_tokens"] == 30  # ... kept


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TEXT_STREAM)), max_size=8))
def test_any_split_of_a_text_stream_gives_the_same_chunks(cuts: list[int]) -> None:
    assert chunks(translate(TEXT_STREAM, cuts=cuts)) == chunks(translate(TEXT_STREAM))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TOOL_STREAM)), max_size=8))
def test_any_split_of_a_tool_stream_gives_the_same_chunks(cuts: list[int]) -> None:
    assert chunks(translate(TOOL_STREAM, cuts=cuts)) == chunks(translate(TOOL_STREAM))


def test_an_incomplete_stream_ends_with_length() -> None:
    ended = {**DONE, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    raw = TEXT_STREAM.replace(sse("response.completed", response=DONE), b"") + sse(
        "response.incomplete", response=ended
    )
    out = chunks(translate(raw))
    assert out[-3]["choices"][0]["finish_reason"] == "length"


def test_a_stream_without_response_completed_stays_cut() -> None:
    raw = TEXT_STREAM.replace(sse("response.completed", response=DONE), b"")
    out = translate(raw)
    assert b"[DONE]" not in out and b'finish_reason":"stop' not in out
    scan = ChatStreamScanner().feed(out)
    assert not scan.finished and not scan.done


@pytest.mark.parametrize(
    "ending",
    [
        sse(
            "response.failed",
            response={
                **OPEN,
                "status": "failed",
                "error": {"code": "server_error", "message": f"oops {KEY}"},
            },
        ),
        sse("error", error={"type": "server_error", "code": "server_error", "message": "oops"}),
        sse("error", code="rate_limit_exceeded", message="slow down", param=None),  # the flat form
        sse("response.failed", response={"status": "failed"}),  # no error object at all
    ],
)
def test_an_in_stream_failure_is_openais_in_band_error(ending: bytes) -> None:
    raw = TEXT_STREAM.replace(sse("response.completed", response=DONE), ending)
    out = translate(raw)
    scan = ChatStreamScanner().feed(out)
    assert scan.error_event is not None and not scan.done
    error = orjson.loads(scan.error_event)["error"]
    assert error["message"] and error["code"]
    assert b"[DONE]" not in out


@pytest.mark.parametrize(
    "hostile",
    [
        b"data: {not json\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"no_type": true}\n\n',
        sse("response.output_text.delta", delta=7),
        sse("response.function_call_arguments.delta", item_id="fc_unknown", delta="{}"),
        sse("response.output_item.added", item="not an object"),
        sse("response.completed", response="not an object"),
        sse("response.output_item.added", item={"type": "function_call", "id": "x", "name": "f"}),
    ],
)
def test_a_hostile_stream_is_malformed(hostile: bytes) -> None:
    translator = WIRE.stream(include_usage=True)
    assert translator is not None
    translator.feed(sse("response.created", response=OPEN))
    with pytest.raises(AttemptFailure) as info:
        translator.feed(hostile)
    assert info.value.failure is FailureClass.MALFORMED and info.value.may_fail_over


def test_a_done_item_that_contradicts_its_deltas_is_malformed() -> None:
    raw = b"".join(
        [
            sse("response.created", response=OPEN),
            sse("response.output_item.added", item={**CALL, "arguments": ""}),
            sse("response.function_call_arguments.delta", item_id="fc_1", delta='{"city":'),
            sse("response.output_item.done", item={**CALL, "arguments": '{"town":"Oslo"}'}),
        ]
    )
    with pytest.raises(AttemptFailure) as info:
        translate(raw)
    assert info.value.failure is FailureClass.MALFORMED


def test_nothing_after_the_end_is_part_of_the_answer() -> None:
    raw = TEXT_STREAM + sse("response.output_text.delta", item_id="msg_1", delta="extra")
    assert translate(raw) == translate(TEXT_STREAM)

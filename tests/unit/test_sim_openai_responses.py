"""The simulator's Responses API wire, on a real socket: the shapes it answers (a response
object, the typed event stream, a function call), what it refuses as OpenAI does (so a
translation that invents a field cannot pass), and its stream faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from edgeproxy._core import SseParser
from edgeproxy.sim import Fault, SimConfig, SimProvider

KEY = "sim-responses-key"
ASK: dict[str, Any] = {"model": "o3-pro", "input": "Hello", "store": False}
TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    provider = SimProvider(
        SimConfig(
            name="resp",
            ttft=0.0,
            tokens_per_second=0,
            default_completion_tokens=20,
            require_api_key=KEY,
            wire="openai_responses",
        )
    )
    await provider.start()
    yield provider
    await provider.stop()


async def post(sim: SimProvider, body: Any, key: str = KEY) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {key}"}
        async with session.post(sim.url + "/responses", json=body, headers=headers) as response:
            raw = await response.read()
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            return response.status, parsed, raw


def typed(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for event in SseParser().feed(raw):
        data = orjson.loads(event.data)
        assert event.event == data["type"]  # the event line names the data's type
        out.append(data)
    return out


async def test_an_answer_is_a_response_object(sim: SimProvider) -> None:
    status, answer, _ = await post(sim, ASK)
    assert status == 200 and answer["object"] == "response"
    assert answer["status"] == "completed" and answer["id"].startswith("resp_")
    [item] = answer["output"]
    assert item["type"] == "message" and len(item["content"][0]["text"].split()) == 20
    assert answer["usage"]["output_tokens"] == 20 and answer["usage"]["input_tokens"] > 0


async def test_a_length_stop_is_incomplete(sim: SimProvider) -> None:
    status, answer, _ = await post(sim, {**ASK, "max_output_tokens": 16})
    assert status == 200 and answer["status"] == "incomplete"
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_a_stream_is_typed_events_ending_in_completed(sim: SimProvider) -> None:
    status, _, raw = await post(sim, {**ASK, "stream": True})
    events = typed(raw)
    kinds = [e["type"] for e in events]
    assert status == 200 and kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_text.delta") == 20
    assert kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["response"]["usage"]["output_tokens"] == 20


async def test_a_forced_function_call_streams_its_arguments(sim: SimProvider) -> None:
    body = {**ASK, "tools": [TOOL], "tool_choice": "required", "stream": True}
    _, _, raw = await post(sim, body)
    events = typed(raw)
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "function_call" and added["item"]["name"] == "get_weather"
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert orjson.loads("".join(deltas)) == {"city": "sim-city"}
    assert events[-1]["response"]["output"][0]["arguments"] == "".join(deltas)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**ASK, "messages": []}, "unknown_parameter"),
        ({**ASK, "max_output_tokens": 8}, "integer_below_min_value"),
        ({**ASK, "tools": [{**TOOL, "function": {}}]}, "unknown_parameter"),
        (
            {**ASK, "input": [{"type": "message", "role": "user", "content": "x", "name": "a"}]},
            "unknown_parameter",
        ),
        (
            {
                **ASK,
                "input": [{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}],
            },
            "invalid_value",
        ),
        (
            {**ASK, "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
            None,
        ),
        ({**ASK, "previous_response_id": "resp_1"}, "previous_response_not_found"),
        ({**ASK, "input": [{"type": "item_reference", "id": "x"}]}, "invalid_value"),
    ],
    ids=[
        "field",
        "min-tokens",
        "tool",
        "item-field",
        "assistant-part",
        "orphan-output",
        "state",
        "ref",
    ],
)
async def test_what_openai_refuses_is_a_400(
    sim: SimProvider, body: dict[str, Any], code: str | None
) -> None:
    status, error, _ = await post(sim, body)
    assert status == 400 and error["error"]["code"] == code and error["error"]["message"]


async def test_a_wrong_key_is_a_401(sim: SimProvider) -> None:
    status, error, _ = await post(sim, ASK, key="wrong")
    assert status == 401 and error["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("fault", "last"),
    [
        (Fault(mode="overloaded", after_tokens=2), "error"),
        (Fault(mode="no_done"), "response.output_item.done"),
    ],
)
async def test_stream_faults(sim: SimProvider, fault: Fault, last: str) -> None:
    sim.set_fault(fault)
    _, _, raw = await post(sim, {**ASK, "stream": True})
    events = typed(raw)
    assert events[-1]["type"] == last
    assert "response.completed" not in [e["type"] for e in events]
    if last == "error":
        assert events[-1]["error"]["code"] == "server_error"
        assert [e["type"] for e in events].count("response.output_text.delta") == 2

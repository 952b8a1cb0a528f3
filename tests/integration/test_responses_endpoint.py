"""The Responses API (``POST /v1/responses``) through the real proxy, driven by the official
``openai`` SDK's ``client.responses.create``: answers, typed stream events, function tools and a
second turn that sends their output back, failover across wires (OpenAI, Anthropic, Gemini),
the commit point's in-band error, the cache, and what the stateless proxy refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from edgeproxy.sim import SimConfig
from fixtures.tools import WEATHER_RESPONSES as WEATHER
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
    models: {gpt: {upstream_name: gpt-4o-mini}}
  claude:
    kind: anthropic
    api_key: sk-ant
    regions: {main: {base_url: "$claude"}}
    models: {sonnet: {upstream_name: claude-sonnet-4-5, max_output_tokens: 512}}
  gem:
    kind: gemini
    api_key: sk-gem
    regions: {main: {base_url: "$gem"}}
    models: {flash: {upstream_name: gemini-2.5-flash}}
routes:
  chat:
    chain: [oai/main/gpt, claude/main/sonnet, gem/main/flash]
  oai-only:
    chain: [oai/main/gpt]
  claude-only:
    chain: [claude/main/sonnet]
  cached:
    chain: [oai/main/gpt]
    cache: {enabled: true}
"""


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    sims = [
        # Paced, so that a stream's first event reaches the client before a fault strikes.
        SimConfig(name="oai", ttft=0.0, tokens_per_second=200, require_api_key="sk-oai"),
        SimConfig(name="claude", ttft=0.0, tokens_per_second=0, require_api_key="sk-ant"),
        SimConfig(name="gem", ttft=0.0, tokens_per_second=0, require_api_key="sk-gem"),
    ]
    return make_stack(POLICY, sims)


def events_of(stream: Any) -> list[Any]:
    return list(stream)


def test_a_non_stream_response(stack: Stack) -> None:
    raw = stack.client().responses.with_raw_response.create(
        model="chat", input="Hello there", instructions="Be brief.", max_output_tokens=100
    )
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.output_text  # the SDK joins the message's output_text parts
    assert [item.type for item in response.output] == ["message"]
    assert response.instructions == "Be brief." and response.max_output_tokens == 100
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert raw.headers["x-edgeproxy-provider"] == "oai"
    # The instructions became the system message the upstream got.
    sent = json.loads(stack.loop.run(_last_body(stack, "oai")))
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


async def _last_body(stack: Stack, sim: str) -> bytes:
    return stack.cluster.sims[sim].received[-1]


def test_a_function_call_and_its_output_sent_back(stack: Stack) -> None:
    client = stack.client()
    first = client.responses.create(
        model="chat", input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required"
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "sim-city"}
    assert calls[0].call_id and calls[0].status == "completed"
    # Stateless: the app sends the conversation's items itself (as the Agents SDK does).
    second = client.responses.create(
        model="chat",
        store=False,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C, sunny"},
        ],
    )
    assert second.output_text and second.output[0].type == "message"
    sent = json.loads(stack.loop.run(_last_body(stack, "oai")))
    assert sent["messages"][1]["tool_calls"][0]["id"] == calls[0].call_id
    assert sent["messages"][2] == {
        "role": "tool",
        "tool_call_id": calls[0].call_id,
        "content": "18C, sunny",
    }


def test_a_stream_of_typed_events(stack: Stack) -> None:
    events = events_of(stack.client().responses.create(model="chat", input="Hello", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response
    assert deltas and done.output_text == deltas
    assert done.status == "completed" and done.usage is not None and done.usage.output_tokens > 0
    assert events[0].response.status == "in_progress" and events[0].response.output == []


def test_a_streamed_function_call(stack: Stack) -> None:
    events = events_of(
        stack.client().responses.create(
            model="chat", input="Weather in Oslo? use tool", tools=[WEATHER], stream=True
        )
    )
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(pieces) > 1  # streamed in pieces, as the upstream sent them
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == "".join(pieces) and done.name == "get_weather"
    item = next(e.item for e in events if e.type == "response.output_item.done")
    assert item.type == "function_call" and json.loads(item.arguments) == {"city": "sim-city"}
    assert events[-1].type == "response.completed"
    assert [i.type for i in events[-1].response.output] == ["function_call"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("down", "serves"),
    [(["oai"], "claude"), (["oai", "claude"], "gem")],
    ids=["anthropic", "gemini"],
)
def test_failover_across_wires_with_a_tool(
    stack: Stack, stream: bool, down: list[str], serves: str
) -> None:
    for sim in down:
        stack.fault(sim, mode="status", status=503)
    client = stack.client()
    question = "Weather in Rome? use tool"
    if stream:
        with client.responses.with_streaming_response.create(
            model="chat", input=question, tools=[WEATHER], stream=True
        ) as raw:
            provider = raw.headers["x-edgeproxy-provider"]
            events = list(raw.parse())
        final = events[-1].response
    else:
        raw = client.responses.with_raw_response.create(
            model="chat", input=question, tools=[WEATHER]
        )
        provider, final = raw.headers["x-edgeproxy-provider"], raw.parse()
    assert provider == serves
    calls = [item for item in final.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == {"city": "sim-city"}
    assert stack.requests_to(serves) == 1


def test_a_cut_after_the_commit_point_raises_in_the_sdk(stack: Stack) -> None:
    stack.fault("oai", mode="cut", after_tokens=3)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for event in stack.client().responses.create(model="oai-only", input="Hi", stream=True):
            seen.append(event.type)
    assert "response.output_text.delta" in seen  # committed: text had reached the client
    assert "response.completed" not in seen  # never ended as if complete
    assert "incomplete" in info.value.message
    assert info.value.code == "stream_interrupted"


def test_an_upstream_in_band_error_reaches_the_sdk(stack: Stack) -> None:
    stack.fault("oai", mode="overloaded", after_tokens=2)
    with pytest.raises(openai.APIError) as info:
        events_of(stack.client().responses.create(model="oai-only", input="Hi", stream=True))
    assert "Overloaded" in info.value.message


def test_previous_response_id_is_refused_in_words(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().responses.create(model="chat", input="Hi", previous_response_id="resp_1")
    err = info.value
    assert err.status_code == 400 and err.param == "previous_response_id"
    assert "stateless" in err.message and "input" in err.message
    assert err.request_id and err.body["request_id"] == err.request_id  # type: ignore[index]
    assert stack.requests_to("oai") == 0


def test_a_hosted_tool_is_refused(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().responses.create(model="chat", input="Hi", tools=[{"type": "web_search"}])
    assert info.value.param == "tools[0].type" and "function tools" in info.value.message


def test_every_candidate_down_is_an_openai_error(stack: Stack) -> None:
    for sim in ("oai", "claude", "gem"):
        stack.fault(sim, mode="status", status=500)
    with pytest.raises(openai.APIStatusError) as info:
        stack.client().responses.create(model="chat", input="Hi")
    assert info.value.status_code == 502 and info.value.request_id
    assert "No candidate" in info.value.message


def test_a_length_stop_is_an_incomplete_response(stack: Stack) -> None:
    client = stack.client()
    response = client.responses.create(model="oai-only", input="Hi", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    events = events_of(
        client.responses.create(model="oai-only", input="Hi", max_output_tokens=3, stream=True)
    )
    assert events[-1].type == "response.incomplete"


def test_a_cached_stream_replays_as_events(stack: Stack) -> None:
    client = stack.client()
    # A deterministic request (temperature 0) is cacheable under the route's defaults.
    first = events_of(
        client.responses.create(model="cached", input="Same", temperature=0, stream=True)
    )
    with client.responses.with_streaming_response.create(
        model="cached", input="Same", temperature=0, stream=True
    ) as raw:
        assert raw.headers["x-edgeproxy-cache"] == "hit"
        again = list(raw.parse())
    assert stack.requests_to("oai") == 1
    assert [e.type for e in again] == [e.type for e in first]
    assert again[-1].response.output_text == first[-1].response.output_text


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"reasoning": {"effort": "low"}}, "reasoning.effort"),
        (
            {
                "text": {
                    "format": {"type": "json_schema", "name": "p", "schema": {"type": "object"}}
                }
            },
            "text.format",
        ),
    ],
)
def test_a_field_no_candidate_can_carry_is_named_as_the_client_sent_it(
    stack: Stack, fields: dict[str, Any], param: str
) -> None:
    """An Anthropic-only chain cannot carry these: the 400 names the Responses field, not the
    inner Chat Completions one (reasoning_effort, response_format) the client never sent."""
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().responses.create(model="claude-only", input="Hi", **fields)
    assert info.value.param == param and info.value.request_id
    assert stack.requests_to("claude") == 0
    # A Chat Completions field sent to the Responses API is refused under its own name.
    with pytest.raises(openai.BadRequestError) as sent:
        stack.client().responses.create(model="chat", input="Hi", extra_body={"max_tokens": 5})
    assert sent.value.param == "max_tokens"

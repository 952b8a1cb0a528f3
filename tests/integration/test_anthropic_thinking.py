"""Extended thinking for apps on the official `anthropic` SDK, served by Anthropic-wire upstreams
through the proxy's inner shape: signed thinking blocks intact (answers, streams, the cache), a
tool loop whose follow-up turn the simulator refuses unless its thinking blocks come back
unchanged, failover between Anthropic candidates, other wires skipped, a cut mid-thinking, and
hostile signatures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import orjson
import pytest

from edgeproxy.sim import SimConfig
from harness import Stack

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 3s, idle: 2s, response: 5s, total: 10s}
providers:
  claude:
    kind: anthropic
    api_key: sk-ant
    regions: {main: {base_url: "$claude"}}
    models: {sonnet: {upstream_name: claude-sonnet-4-5, assistant_prefill: true}}
  backup:
    kind: anthropic
    api_key: sk-ant
    regions: {main: {base_url: "$backup"}}
    models: {sonnet: {upstream_name: claude-sonnet-4-5, assistant_prefill: true}}
  oai:
    kind: openai
    api_key: sk-oai
    regions: {main: {base_url: "$oai"}}
    models: {gpt: {upstream_name: gpt-4o-mini}}
routes:
  claude:
    chain: [claude/main/sonnet, backup/main/sonnet]
    on_midstream_failure: resume
  openai-first:
    chain: [oai/main/gpt, claude/main/sonnet]
  openai-only:
    chain: [oai/main/gpt]
  cached:
    chain: [claude/main/sonnet]
    cache: {ttl: 60s, cacheable: all}
"""

THINKING = {"type": "enabled", "budget_tokens": 1024}
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    sims = [
        SimConfig(name=name, ttft=0.0, tokens_per_second=0, require_api_key="sk-ant")
        for name in ("claude", "backup")
    ]
    sims.append(SimConfig(name="oai", ttft=0.0, tokens_per_second=0, require_api_key="sk-oai"))
    return make_stack(POLICY, sims)


def client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.proxy.url, api_key="app-key", max_retries=0)


def sent_to(stack: Stack, sim: str) -> dict[str, Any]:
    """The last request body the simulator received."""
    body: dict[str, Any] = orjson.loads(stack.cluster.sims[sim].received[-1])
    return body


def dumped(content: list[Any]) -> list[dict[str, Any]]:
    """Blocks as JSON (a streamed text block is the SDK's ParsedTextBlock)."""
    return [b.model_dump(exclude={"parsed_output", "citations"}) for b in content]


def assert_signed_thinking_first(content: list[Any]) -> None:
    assert content[0].type == "thinking"
    assert content[0].thinking.startswith("The user wrote:")
    assert isinstance(content[0].signature, str) and len(content[0].signature) > 20
    assert content[-1].type in ("text", "tool_use")


def test_a_message_with_thinking_carries_signed_blocks_first(stack: Stack) -> None:
    raw = client(stack).messages.with_raw_response.create(
        model="claude",
        max_tokens=2048,
        thinking=THINKING,
        messages=[{"role": "user", "content": "Why is the sky blue? redact"}],
    )
    message = raw.parse()
    assert [b.type for b in message.content] == ["thinking", "redacted_thinking", "text"]
    assert_signed_thinking_first(message.content)
    assert message.content[1].data  # the sealed thinking, as the upstream sent it
    assert raw.headers["x-edgeproxy-provider"] == "claude"
    # The upstream got the client's thinking parameter as the client wrote it.
    assert sent_to(stack, "claude")["thinking"] == THINKING
    # Usage is the upstream's: its output tokens include the thinking.
    assert message.usage.output_tokens > 0


def test_a_streamed_message_with_thinking(stack: Stack) -> None:
    with client(stack).messages.stream(
        model="claude",
        max_tokens=2048,
        thinking=THINKING,
        messages=[{"role": "user", "content": "Why is the sky blue? redact"}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "redacted_thinking", "text"]
    assert_signed_thinking_first(final.content)
    assert final.content[2].text
    kinds = [
        (e.type, getattr(e, "index", None), getattr(getattr(e, "delta", None), "type", None))
        for e in events
        if e.type.startswith("content_block_") and e.type != "content_block"
    ]
    # Block 0 (thinking) streams thinking deltas then its signature, blocks 1 and 2 follow.
    assert kinds[0] == ("content_block_start", 0, None)
    assert ("content_block_delta", 0, "thinking_delta") in kinds
    assert kinds.index(("content_block_delta", 0, "signature_delta")) > kinds.index(
        ("content_block_delta", 0, "thinking_delta")
    )
    starts = [k[1] for k in kinds if k[0] == "content_block_start"]
    assert starts == [0, 1, 2]
    # The stream and a non-stream answer sign the same thinking alike (the upstream's blocks,
    # not the proxy's).
    again = client(stack).messages.create(
        model="claude",
        max_tokens=2048,
        thinking=THINKING,
        messages=[{"role": "user", "content": "Why is the sky blue? redact"}],
    )
    assert again.content[0].signature == final.content[0].signature


def _tool_turn(stack: Stack, stream: bool) -> tuple[Any, list[dict[str, Any]]]:
    question = {"role": "user", "content": "What is the weather in Oslo? use tool"}
    kwargs: dict[str, Any] = {
        "model": "claude",
        "max_tokens": 2048,
        "thinking": THINKING,
        "tools": TOOLS,
        "messages": [question],
    }
    if stream:
        with client(stack).messages.stream(**kwargs) as s:
            first = s.get_final_message()
    else:
        first = client(stack).messages.create(**kwargs)
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    use = first.content[1]
    messages = [
        question,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21C"}],
        },
    ]
    return first, messages


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_with_thinking_sends_the_blocks_back_unchanged(
    stack: Stack, stream: bool
) -> None:
    first, messages = _tool_turn(stack, stream)
    second = client(stack).messages.create(
        model="claude", max_tokens=2048, thinking=THINKING, tools=TOOLS, messages=messages
    )
    assert second.stop_reason == "end_turn"
    assert_signed_thinking_first(second.content)
    # The assistant turn reached the upstream with its thinking block first, byte for byte.
    assistant = sent_to(stack, "claude")["messages"][1]
    assert assistant["content"][0] == first.content[0].model_dump()
    assert assistant["content"][1]["type"] == "tool_use"


def test_the_simulator_refuses_a_tool_loop_whose_thinking_was_altered_or_dropped(
    stack: Stack,
) -> None:
    """The check the previous test relies on: a proxy that changes the blocks fails it."""
    _, messages = _tool_turn(stack, False)
    altered = orjson.loads(orjson.dumps(messages))
    altered[1]["content"][0]["thinking"] += " (edited)"
    dropped = orjson.loads(orjson.dumps(messages))
    dropped[1]["content"] = dropped[1]["content"][1:]
    for conversation, words in ((altered, "Invalid `signature`"), (dropped, "Expected `thinking`")):
        with pytest.raises(anthropic.BadRequestError) as info:
            client(stack).messages.create(
                model="claude",
                max_tokens=2048,
                thinking=THINKING,
                tools=TOOLS,
                messages=conversation,
            )
        assert words in info.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_failover_from_a_failing_anthropic_primary_keeps_thinking(
    stack: Stack, stream: bool
) -> None:
    stack.fault("claude", mode="status", status=500)
    kwargs: dict[str, Any] = {
        "model": "claude",
        "max_tokens": 2048,
        "thinking": THINKING,
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    if stream:
        with client(stack).messages.with_streaming_response.create(
            **kwargs, stream=True
        ) as response:
            assert response.headers["x-edgeproxy-provider"] == "backup"
            assert response.headers["x-edgeproxy-attempts"] == "2"
        with client(stack).messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        raw = client(stack).messages.with_raw_response.create(**kwargs)
        assert raw.headers["x-edgeproxy-provider"] == "backup"
        message = raw.parse()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert_signed_thinking_first(message.content)
    assert sent_to(stack, "backup")["thinking"] == THINKING


def test_a_candidate_whose_wire_cannot_think_is_skipped(stack: Stack) -> None:
    raw = client(stack).messages.with_raw_response.create(
        model="openai-first",
        max_tokens=2048,
        thinking=THINKING,
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert raw.headers["x-edgeproxy-provider"] == "claude"
    assert raw.headers["x-edgeproxy-skipped"] == "oai/main/gpt=wire"
    assert raw.parse().content[0].type == "thinking"
    assert stack.requests_to("oai") == 0
    # No candidate can take it: a 400 in Anthropic's shape naming the field, nothing sent.
    with pytest.raises(anthropic.BadRequestError) as info:
        client(stack).messages.create(
            model="openai-only",
            max_tokens=2048,
            thinking=THINKING,
            messages=[{"role": "user", "content": "Hello"}],
        )
    assert "thinking" in info.value.message
    assert stack.requests_to("oai") == 0
    # Without thinking the same chain serves from its first candidate, as before.
    plain = client(stack).messages.with_raw_response.create(
        model="openai-first", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
    )
    assert plain.headers["x-edgeproxy-provider"] == "oai"


def test_a_cut_mid_thinking_ends_the_stream_with_an_error_not_a_resume(stack: Stack) -> None:
    """After the commit point a thinking stream is never resumed (Anthropic takes no prefill
    with thinking on): the client gets the in-band error, and the backup is not called."""
    stack.fault("claude", mode="cut", after_tokens=2)
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client(stack).messages.stream(
            model="claude",
            max_tokens=2048,
            thinking=THINKING,
            messages=[{"role": "user", "content": "Tell me a long story"}],
        ) as s,
    ):
        for _ in s:
            pass
    assert "incomplete" in str(info.value.body)
    assert stack.requests_to("backup") == 0


def test_a_cut_after_the_thinking_is_not_resumed_either(stack: Stack) -> None:
    # 12-char pieces of the sim's thinking, its signature and stop, then the text: cut in the text.
    stack.fault("claude", mode="cut", after_tokens=12)
    kinds: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError),
        client(stack).messages.stream(
            model="claude",
            max_tokens=2048,
            thinking=THINKING,
            messages=[{"role": "user", "content": "Tell me a long story"}],
        ) as s,
    ):
        for e in s:
            if e.type == "content_block_delta":
                kinds.append(e.delta.type)
    # The client had the whole thinking and part of the text: the plain-text resume a stream
    # without thinking would get is not tried.
    assert "signature_delta" in kinds and kinds[-1] == "text_delta"
    assert stack.requests_to("backup") == 0


def test_a_cut_before_any_thinking_fails_over(stack: Stack) -> None:
    stack.fault("claude", mode="cut", after_tokens=0)
    with client(stack).messages.stream(
        model="claude",
        max_tokens=2048,
        thinking=THINKING,
        messages=[{"role": "user", "content": "Hello"}],
    ) as s:
        message = s.get_final_message()
    assert_signed_thinking_first(message.content)
    assert stack.requests_to("backup") == 1


@pytest.mark.parametrize("mode", ["bad_signature", "huge_signature"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_hostile_signature_is_a_malformed_answer_never_relayed(
    stack: Stack, mode: str, stream: bool
) -> None:
    """A signature that is not a string, or 1 MiB of one, is not Anthropic's: the primary's
    answer is malformed. Before the commit point it fails over; a stream whose thinking the
    client already has ends with the in-band error. Either way the client never gets the
    block (one it could not send back)."""
    stack.fault("claude", mode=mode)
    kwargs: dict[str, Any] = {
        "model": "claude",
        "max_tokens": 2048,
        "thinking": THINKING,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    if not stream:
        raw = client(stack).messages.with_raw_response.create(**kwargs)
        assert raw.headers["x-edgeproxy-provider"] == "backup"
        assert_signed_thinking_first(raw.parse().content)
        return
    with client(stack).messages.with_streaming_response.create(**kwargs, stream=True) as response:
        provider = response.headers["x-edgeproxy-provider"]
        body = response.read().decode()
    assert "signature_delta" not in body or provider == "backup"
    assert "AAAAAAAAAAAA" not in body and "12345" not in body
    if provider == "claude":  # committed on the primary's thinking: ended in-band
        assert "event: error" in body and "message_stop" not in body
    else:  # the whole bad stream came in one read, before the commit point: failed over
        assert body.rstrip().endswith('data: {"type":"message_stop"}')


def test_a_committed_stream_with_a_hostile_signature_ends_in_band(
    make_stack: Callable[..., Stack],
) -> None:
    """The primary paces its events (one read each, in practice): the client has the thinking
    when the bad signature comes, so the stream ends with Anthropic's error event."""
    sims = [
        SimConfig(name="claude", ttft=0.0, tokens_per_second=50, require_api_key="sk-ant"),
        SimConfig(name="backup", ttft=0.0, tokens_per_second=0, require_api_key="sk-ant"),
        SimConfig(name="oai", ttft=0.0, tokens_per_second=0, require_api_key="sk-oai"),
    ]
    stack = make_stack(POLICY, sims)
    stack.fault("claude", mode="bad_signature")
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client(stack).messages.stream(
            model="claude",
            max_tokens=2048,
            thinking=THINKING,
            messages=[{"role": "user", "content": "Hello"}],
        ) as s,
    ):
        for _ in s:
            pass
    assert "incomplete" in str(info.value.body)
    assert "signature" in str(info.value.body)
    assert stack.requests_to("backup") == 0


def test_a_thinking_request_is_cached_and_replays_its_blocks(stack: Stack) -> None:
    kwargs: dict[str, Any] = {
        "model": "cached",
        "max_tokens": 2048,
        "thinking": THINKING,
        "messages": [{"role": "user", "content": "Cache me"}],
    }
    with client(stack).messages.stream(**kwargs) as s:
        streamed = s.get_final_message()
    raw = client(stack).messages.with_raw_response.create(**kwargs)  # the stream, as JSON
    assert raw.headers["x-edgeproxy-cache"] == "hit"
    assert dumped(raw.parse().content) == dumped(streamed.content)
    with client(stack).messages.stream(**kwargs) as s:
        replayed = s.get_final_message()
    assert dumped(replayed.content) == dumped(streamed.content)
    assert stack.requests_to("claude") == 1
    # The thinking parameter is part of the key: another budget is another answer.
    other = client(stack).messages.with_raw_response.create(
        **{**kwargs, "thinking": {"type": "enabled", "budget_tokens": 1500}}
    )
    assert other.headers["x-edgeproxy-cache"] == "miss"
    assert stack.requests_to("claude") == 2

"""Anthropic's ``cache_control`` in the proxy's inner shape: translated both ways, left out for
the OpenAI wire, placed automatically on a long stable prefix; cached and written tokens parsed
from both wires' usage and priced; the simulator's prompt cache."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson
import pytest

from edgeproxy.context.breakpoints import with_breakpoints
from edgeproxy.cost import Usage, cost_usd
from edgeproxy.sim.prompt_cache import (
    PromptCacheModel,
    anthropic_segments,
    openai_segments,
)
from edgeproxy.snapshot import Candidate, Price
from edgeproxy.translate import (
    TranslationError,
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)
from edgeproxy.translate.cache_markers import (
    count_cache_control,
    has_cache_control,
    without_cache_control,
)
from edgeproxy.wires import upstream_wire

CC = {"type": "ephemeral"}
ANTHROPIC = {
    "model": "claude",
    "max_tokens": 10,
    "system": [{"type": "text", "text": "sys", "cache_control": CC}],
    "tools": [
        {"name": "t", "input_schema": {"type": "object"}, "cache_control": {**CC, "ttl": "1h"}}
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "doc", "cache_control": CC}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "I look.", "cache_control": CC},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "t",
                    "input": {},
                    "cache_control": CC,
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "r",
                    "cache_control": CC,
                },
                {"type": "text", "text": "and?"},
            ],
        },
    ],
}


def test_cache_control_survives_the_round_trip_through_the_inner_shape() -> None:
    inner = anthropic_to_openai_request(ANTHROPIC)
    assert count_cache_control(inner) == 6
    back = openai_to_anthropic_request(inner, default_max_tokens=10)
    assert back["system"] == ANTHROPIC["system"]
    assert back["tools"][0]["cache_control"] == {**CC, "ttl": "1h"}
    assert back["messages"][0] == ANTHROPIC["messages"][0]
    assert back["messages"][1]["content"] == ANTHROPIC["messages"][1]["content"]
    assert back["messages"][2]["content"][0]["cache_control"] == CC


def test_a_marker_that_is_not_an_object_is_refused_naming_it() -> None:
    body = {**ANTHROPIC, "system": [{"type": "text", "text": "s", "cache_control": "yes"}]}
    with pytest.raises(TranslationError) as info:
        anthropic_to_openai_request(body)
    assert info.value.param == "system[0].cache_control"


def _candidate(kind: str) -> Candidate:
    wire = upstream_wire(kind)
    return Candidate(
        provider="p",
        region="r",
        model="m",
        upstream_model="up",
        wire=wire,
        base_url="http://p",
        chat_url=wire.endpoint_url("http://p", {}),
        context_window=None,
        tags=MappingProxyType({}),
        headers=MappingProxyType({}),
    )


def test_the_openai_wire_never_sends_a_marker_and_the_anthropic_wire_does() -> None:
    inner = anthropic_to_openai_request(ANTHROPIC)
    plain = without_cache_control(inner)
    assert not has_cache_control(plain) and b"cache_control" not in orjson.dumps(plain)
    assert has_cache_control(inner)  # the input is not changed
    untouched = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert without_cache_control(untouched) is untouched
    sent = _candidate("openai").wire.request_body(inner, _candidate("openai"))
    assert b"cache_control" not in sent and orjson.loads(sent)["model"] == "up"
    to_claude = orjson.loads(
        _candidate("anthropic").wire.request_body(inner, _candidate("anthropic"))
    )
    assert to_claude["system"][0]["cache_control"] == CC


def long_chat(system: str = "S " * 3000) -> dict[str, Any]:
    return {
        "model": "m",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": [{"type": "text", "text": "q2"}]},
        ],
    }


def test_breakpoints_go_on_tools_system_and_the_last_message() -> None:
    body = long_chat()
    marked = with_breakpoints(body, 3000, 1024)
    assert count_cache_control(marked) == 3
    assert marked["tools"][0]["cache_control"] == CC
    assert marked["messages"][0]["content"][0] == {
        "type": "text",
        "text": body["messages"][0]["content"],
        "cache_control": CC,
    }
    assert marked["messages"][3]["content"][0]["cache_control"] == CC
    assert marked["messages"][1:3] == body["messages"][1:3]
    assert count_cache_control(body) == 0  # a copy


def test_breakpoints_leave_a_short_a_marked_or_an_empty_prompt_alone() -> None:
    body = long_chat()
    assert with_breakpoints(body, 100, 1024) is body
    own = anthropic_to_openai_request(ANTHROPIC)
    assert with_breakpoints(own, 5000, 0) is own
    empty_last = long_chat()
    empty_last["messages"][-1] = {"role": "user", "content": ""}
    marked = with_breakpoints(empty_last, 5000, 0)
    assert marked["messages"][-1] == {"role": "user", "content": ""}  # never on empty text
    tool_last = long_chat()
    tool_last["messages"].append({"role": "tool", "tool_call_id": "c", "content": "r"})
    assert with_breakpoints(tool_last, 5000, 0)["messages"][-1]["cache_control"] == CC


def test_cached_and_written_tokens_are_read_from_both_wires_and_priced_apart() -> None:
    anthropic_usage = {
        "input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 500,
        "output_tokens": 10,
    }
    message = {"id": "msg_1", "type": "message", "content": [], "usage": anthropic_usage}
    completion = anthropic_to_openai_response(message)
    usage = completion["usage"]
    assert usage["prompt_tokens"] == 1600
    assert usage["prompt_tokens_details"] == {"cached_tokens": 1000, "cache_write_tokens": 500}
    parsed = Usage.parse(usage)
    assert parsed == Usage.parse(anthropic_usage) == Usage(100, 10, 1000, 500)
    back = openai_to_anthropic_response(completion)["usage"]
    assert (back["input_tokens"], back["cache_read_input_tokens"]) == (100, 1000)
    assert back["cache_creation_input_tokens"] == 500
    price = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)
    assert cost_usd(price, parsed) == pytest.approx(
        (100 * 3 + 1000 * 0.3 + 500 * 3.75 + 10 * 15) / 1e6
    )
    # Hostile counts: more cached or written than the prompt holds are clamped, never negative.
    odd = Usage.parse(
        {
            "prompt_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 50},
        }
    )
    assert odd == Usage(0, 0, 8, 2)


def test_the_simulated_openai_cache_reads_prefixes_in_128_token_steps() -> None:
    now = [0.0]
    cache = PromptCacheModel(300, clock=lambda: now[0])
    first = long_chat()
    assert cache.automatic("m", openai_segments(first)).read == 0
    again = cache.automatic("m", openai_segments(first))
    assert again.read > 1024 and again.read % 128 == 0 and again.read <= again.prompt_tokens
    # Another model or a changed system prompt shares nothing.
    assert cache.automatic("other", openai_segments(first)).read == 0
    assert cache.automatic("m", openai_segments(long_chat("T " * 3000))).read == 0
    # Entries expire after the TTL unless read.
    now[0] = 301
    assert cache.automatic("m", openai_segments(first)).read == 0


def test_the_simulated_anthropic_cache_needs_marks_and_writes_up_to_the_last() -> None:
    cache = PromptCacheModel(300)
    plain = openai_to_anthropic_request(long_chat(), default_max_tokens=5)
    assert cache.explicit("m", anthropic_segments(plain)).written == 0
    marked = openai_to_anthropic_request(
        with_breakpoints(long_chat(), 5000, 0), default_max_tokens=5
    )
    first = cache.explicit("m", anthropic_segments(marked))
    assert first.read == 0 and first.written > 1024 and first.uncached >= 0
    second = cache.explicit("m", anthropic_segments(marked))
    assert second.read == first.written and second.written == 0
    # A next turn reads the earlier prefix (within the lookback) and writes its new part.
    longer = long_chat()
    longer["messages"] += [
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "q3"},
    ]
    turn = openai_to_anthropic_request(with_breakpoints(longer, 5000, 0), default_max_tokens=5)
    third = cache.explicit("m", anthropic_segments(turn))
    assert 0 < third.read < third.prompt_tokens and third.written > 0

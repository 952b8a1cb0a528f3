"""Extended thinking through the inner shape (``translate.thinking``): request and answer
translation, the wires that refuse it, the Anthropic wire's stream and the ingress's numbering,
and the cache's two shapes of an answer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edgeproxy._core import SseParser
from edgeproxy.cache.answers import chunks_to_completion, completion_to_chunks
from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.ingress.anthropic_messages import INGRESS, ThinkingAnthropicStream
from edgeproxy.server.ingress.base import ClientError
from edgeproxy.server.ingress.openai_chat import parse_chat_request
from edgeproxy.sim.anthropic_wire import (
    block_start,
    block_stop,
    event,
    message_delta,
    signature_delta,
    text_delta,
    thinking_delta,
)
from edgeproxy.translate import (
    TranslationError,
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)
from edgeproxy.translate.thinking import MAX_SIGNATURE_CHARS
from edgeproxy.wires.anthropic_messages import WIRE as ANTHROPIC
from edgeproxy.wires.gemini import WIRE as GEMINI
from edgeproxy.wires.openai_chat import WIRE as OPENAI

THINKING = {"type": "enabled", "budget_tokens": 2000}
BLOCK = {"type": "thinking", "thinking": "Let me see.", "signature": "c2lnbmVk"}
REDACTED = {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"}
USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}


def conversation(assistant: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 4000,
        "thinking": THINKING,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": assistant},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
            },
        ],
    }


def test_thinking_and_its_blocks_travel_to_an_anthropic_upstream_verbatim() -> None:
    body = conversation([BLOCK, REDACTED, {"type": "text", "text": "Calling."}, USE])
    inner = anthropic_to_openai_request(body, carry_thinking=True)
    assert inner["x_anthropic"] == {"thinking": THINKING}
    assert inner["messages"][1]["x_anthropic"] == {"thinking_blocks": [BLOCK, REDACTED]}
    assert OPENAI.refusal(inner) is not None and OPENAI.refusal(inner).param == "thinking"  # type: ignore[union-attr]
    refusal = GEMINI.refusal(inner)
    assert refusal is not None and refusal.param == "thinking"
    assert ANTHROPIC.refusal(inner) is None
    upstream = openai_to_anthropic_request(inner, default_max_tokens=1)
    assert upstream["thinking"] == THINKING
    assert upstream["messages"][1]["content"] == [
        BLOCK,
        REDACTED,
        {"type": "text", "text": "Calling."},
        USE,
    ]


def test_without_thinking_on_the_blocks_are_dropped_as_before() -> None:
    body = conversation([BLOCK, USE])
    body["thinking"] = {"type": "disabled"}
    inner = anthropic_to_openai_request(body, carry_thinking=True)
    assert "x_anthropic" not in inner and "x_anthropic" not in inner["messages"][1]
    assert OPENAI.refusal(inner) is None
    with pytest.raises(TranslationError) as info:  # other callers: refused, as before
        anthropic_to_openai_request(conversation([BLOCK, USE]))
    assert info.value.param == "thinking"


@pytest.mark.parametrize(
    ("block", "param"),
    [
        ({**BLOCK, "signature": 7}, "messages[1].content[0].signature"),
        (
            {**BLOCK, "signature": "A" * (MAX_SIGNATURE_CHARS + 1)},
            "messages[1].content[0].signature",
        ),
        ({**BLOCK, "thinking": None}, "messages[1].content[0].thinking"),
        ({"type": "redacted_thinking", "data": {}}, "messages[1].content[0].data"),
    ],
)
def test_a_client_block_that_is_not_anthropic_s_is_refused(block: Any, param: str) -> None:
    with pytest.raises(TranslationError) as info:
        anthropic_to_openai_request(conversation([block, USE]), carry_thinking=True)
    assert info.value.param == param


def test_thinking_after_the_text_of_a_turn_is_refused_not_moved() -> None:
    with pytest.raises(TranslationError) as info:
        anthropic_to_openai_request(
            conversation([{"type": "text", "text": "x"}, BLOCK, USE]), carry_thinking=True
        )
    assert info.value.param == "messages[1].content[1]"


def test_an_answer_s_blocks_come_back_first_and_hostile_ones_are_refused() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "model": "claude",
        "content": [BLOCK, REDACTED, {"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 9},
    }
    inner = anthropic_to_openai_response(message)
    back = openai_to_anthropic_response(inner)
    assert back["content"] == message["content"]
    assert back["usage"]["output_tokens"] == 9
    for content in (
        [{"type": "text", "text": "Hello"}, BLOCK],  # interleaved: the inner shape cannot keep it
        [{**BLOCK, "signature": None}],
        [{**BLOCK, "signature": "A" * (MAX_SIGNATURE_CHARS + 1)}],
    ):
        with pytest.raises(TranslationError):
            anthropic_to_openai_response({**message, "content": content})
    with pytest.raises(AttemptFailure) as failed:  # at the wire: a malformed answer, failed over
        ANTHROPIC.answer(orjson.dumps({**message, "content": [{**BLOCK, "signature": 1}]}))
    assert failed.value.failure is FailureClass.MALFORMED


def upstream_stream(blocks: list[bytes]) -> bytes:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    }
    return (
        event("message_start", start)
        + b"".join(blocks)
        + message_delta("end_turn", 20)
        + event("message_stop", {"type": "message_stop"})
    )


THOUGHT = [
    block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    thinking_delta(0, "Let me "),
    thinking_delta(0, "see."),
    signature_delta(0, "c2lnbmVk"),
    block_stop(0),
    block_start(1, REDACTED),
    block_stop(1),
    block_start(2, {"type": "text", "text": ""}),
    text_delta(2, "Hel"),
    text_delta(2, "lo"),
    block_stop(2),
]


def relay(data: bytes, split: int | None = None) -> bytes:
    """The Anthropic wire's inner stream for ``data`` (fed in two reads at ``split``)."""
    stream = ANTHROPIC.stream(include_usage=True, request={"x_anthropic": {"thinking": THINKING}})
    assert stream is not None
    parts = [data] if split is None else [data[:split], data[split:]]
    return b"".join(stream.feed(p) for p in parts) + stream.finish()


def client_events(inner: bytes) -> list[dict[str, Any]]:
    encoder = INGRESS.stream(
        INGRESS.parse(
            orjson.dumps(
                {
                    "model": "claude",
                    "max_tokens": 4000,
                    "thinking": THINKING,
                    "messages": [{"role": "user", "content": "Hi"}],
                    "stream": True,
                }
            )
        )
    )
    assert isinstance(encoder, ThinkingAnthropicStream)
    out = encoder.encode(inner) + encoder.close()
    return [orjson.loads(e.data) for e in SseParser().feed(out)]


def test_a_thinking_stream_reaches_the_client_in_order_with_its_own_indexes() -> None:
    events = client_events(relay(upstream_stream(THOUGHT)))
    assert events[0]["type"] == "message_start"
    blocks = [(e["index"], e["content_block"]["type"]) for e in events if "content_block" in e]
    assert blocks == [(0, "thinking"), (1, "redacted_thinking"), (2, "text")]
    deltas = [
        (e["index"], e["delta"]["type"]) for e in events if e["type"] == "content_block_delta"
    ]
    assert deltas == [
        (0, "thinking_delta"),
        (0, "thinking_delta"),
        (0, "signature_delta"),
        (2, "text_delta"),
        (2, "text_delta"),
    ]
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert events[-1]["type"] == "message_stop"


def test_any_split_of_the_upstream_stream_gives_the_same_inner_stream() -> None:
    data = upstream_stream(THOUGHT)
    whole = relay(data)
    for split in range(0, len(data), 7):
        assert relay(data, split) == whole, split


@pytest.mark.parametrize(
    ("blocks", "words"),
    [
        (THOUGHT[7:9] + THOUGHT[:5], "after the answer began"),  # thinking after the text
        ([thinking_delta(0, "x")], "outside an open thinking block"),
        ([*THOUGHT[:3], signature_delta(0, 12345)], "must be a string"),
        ([*THOUGHT[:3], signature_delta(0, "A" * (MAX_SIGNATURE_CHARS + 1))], "signature over"),
        ([THOUGHT[0], thinking_delta(0, None)], "not a string"),  # type: ignore[arg-type]
    ],
)
def test_a_hostile_thinking_stream_is_malformed(blocks: list[bytes], words: str) -> None:
    with pytest.raises(AttemptFailure) as info:
        relay(upstream_stream(blocks))
    assert info.value.failure is FailureClass.MALFORMED
    assert words in info.value.detail


def test_a_thinking_block_before_message_start_is_malformed() -> None:
    with pytest.raises(AttemptFailure) as info:
        relay(THOUGHT[0] + upstream_stream([]))
    assert info.value.failure is FailureClass.MALFORMED


def test_the_cache_keeps_the_blocks_in_both_shapes() -> None:
    inner = relay(upstream_stream(THOUGHT))
    events = [e.data for e in SseParser().feed(inner) if e.data != "[DONE]"]
    completion = chunks_to_completion(events)
    message = orjson.loads(completion)["choices"][0]["message"]
    assert message["x_anthropic"] == {"thinking_blocks": [BLOCK, REDACTED]}
    assert message["content"] == "Hello"
    # A stream synthesised from the JSON answer delivers the same blocks to the client.
    replayed = client_events(b"".join(completion_to_chunks(completion, include_usage=True)))
    blocks = [e["content_block"] for e in replayed if "content_block" in e]
    assert [b["type"] for b in blocks] == ["thinking", "redacted_thinking", "text"]
    deltas = [e["delta"] for e in replayed if e["type"] == "content_block_delta"]
    assert {"type": "signature_delta", "signature": "c2lnbmVk"} in deltas


def test_an_openai_client_cannot_set_the_carrier() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "x_anthropic": {}}
    with pytest.raises(ClientError) as info:
        parse_chat_request(orjson.dumps(body))
    assert info.value.param == "x_anthropic"


def test_thinking_an_upstream_sent_unasked_never_reaches_an_openai_client() -> None:
    from aiohttp import web

    from edgeproxy.server.ingress.base import IngressRequest
    from edgeproxy.server.ingress.openai_chat import INGRESS as OPENAI_INGRESS

    # An Anthropic upstream answering a plain request with a thinking block (misbehaving): the
    # wire carries it in the inner answer; the OpenAI client gets the answer without it.
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "c",
        "content": [
            {"type": "thinking", "thinking": "secret plan", "signature": "sig"},
            {"type": "text", "text": "Hello."},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 5},
    }
    inner, _ = ANTHROPIC.answer(orjson.dumps(message))
    assert b"x_anthropic" in inner  # what the Anthropic ingress reads
    response = web.Response(
        status=200, body=inner, content_type="application/json", headers={"x-edgeproxy-x": "1"}
    )
    body = {"model": "c", "messages": [{"role": "user", "content": "hi"}]}
    request = IngressRequest(body, orjson.dumps(body), "c")
    out = OPENAI_INGRESS.answer(response, request, "req_1")
    assert isinstance(out.body, bytes)
    answer = orjson.loads(out.body)
    assert "x_anthropic" not in answer["choices"][0]["message"]
    assert b"secret plan" not in out.body
    assert answer["choices"][0]["message"]["content"] == "Hello."
    assert out.headers["x-edgeproxy-x"] == "1"

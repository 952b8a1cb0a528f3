"""After the first byte has reached the client the answer is committed: a failure ends the stream
with an in-band error the SDK raises on, never with a clean ``[DONE]``."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from edgeproxy.sim import SimConfig
from harness import THREE_WAY, Stack

MESSAGES = [{"role": "user", "content": "Write a long story."}]


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    # Paced at 200 tokens/s so the events arrive in separate reads: the fault then lands after
    # the proxy has committed (a fault inside the very first read may still fail over).
    sims = [
        SimConfig(name=n, ttft=0.0, tokens_per_second=200, require_api_key=key)
        for n, key in (
            ("alpha_one", "sk-alpha-secret"),
            ("alpha_two", "sk-alpha-secret"),
            ("beta", "sk-beta-secret"),
        )
    ]
    return make_stack(THREE_WAY, sims)


def _stream_text(stack: Stack) -> str:
    stream = stack.client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


@pytest.mark.parametrize(
    "fault",
    [
        {"mode": "cut", "after_tokens": 3},
        {
            "mode": "stall",
            "after_tokens": 3,
        },  # the idle timeout (1s) turns the stall into a failure
    ],
    # (One malformed event after the first byte is skipped, not fatal: test_hostile_upstream.py.)
    ids=["cut", "stall"],
)
def test_failure_after_first_byte_raises_in_the_sdk(stack: Stack, fault: dict[str, object]) -> None:
    stack.fault("alpha_one", **fault)
    with pytest.raises(openai.APIError) as info:
        _stream_text(stack)
    assert "incomplete" in str(info.value)
    # Committed to alpha_one: no other candidate was asked.
    assert stack.requests_to("alpha_two") == 0
    assert stack.requests_to("beta") == 0


def test_cut_stream_never_ends_with_done(stack: Stack) -> None:
    stack.fault("alpha_one", mode="cut", after_tokens=2)
    response = stack.http.post(
        "/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}
    )
    assert response.status_code == 200
    body = response.text
    assert "[DONE]" not in body
    assert '"code":"stream_interrupted"' in body
    assert response.headers["x-request-id"] in body


def test_missing_done_after_a_finished_answer_is_completed(stack: Stack) -> None:
    # The upstream sent every choice's finish_reason but no [DONE]: the answer is whole.
    stack.fault("alpha_one", mode="no_done")
    whole = (
        stack.client()
        .chat.completions.create(model="m", messages=MESSAGES)
        .choices[0]
        .message.content
    )
    stack.fault("alpha_one", mode="no_done")
    assert _stream_text(stack) == whole

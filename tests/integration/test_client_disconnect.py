"""A client that goes away cancels its upstream request: nobody pays for answers nobody reads."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from edgeproxy.sim import SimConfig
from harness import THREE_WAY, Stack

MESSAGES = [{"role": "user", "content": "A long answer, please."}]


def _wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_disconnect_during_a_hung_non_stream_request_cancels_upstream(stack: Stack) -> None:
    stack.fault("alpha_one", mode="hang")
    with httpx.Client(timeout=0.3) as client:
        try:
            client.post(
                f"{stack.proxy.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
            )
        except httpx.ReadTimeout:
            pass
        else:
            raise AssertionError("the hung request should not have completed")
    # The sim would hang forever: its handler ending proves the proxy closed the upstream request.
    _wait_until(lambda: stack.stats("alpha_one")["in_flight"] == 0)
    assert stack.requests_to("alpha_one") == 1
    assert stack.requests_to("alpha_two") == 0  # the proxy did not go on to the next candidate


def test_disconnect_mid_stream_cancels_upstream(make_stack) -> None:  # type: ignore[no-untyped-def]
    sims = [
        SimConfig(name=n, ttft=0.0, tokens_per_second=20, default_completion_tokens=400)
        for n in ("alpha_one", "alpha_two", "beta")
    ]
    stack = make_stack(
        THREE_WAY.replace("api_key: sk-alpha-secret", "").replace("api_key: sk-beta-secret", ""),
        sims,
    )
    with (
        httpx.Client(timeout=5) as client,
        client.stream(
            "POST",
            f"{stack.proxy.url}/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        for _ in response.iter_bytes():
            break  # read the first token, then hang up
    # The whole answer takes 20 s at 20 tokens/s: the upstream stream ending within the wait,
    # incomplete, proves the proxy dropped it when the client left.
    _wait_until(lambda: stack.stats("alpha_one")["in_flight"] == 0)
    stats = stack.stats("alpha_one")
    assert stats["streams_started"] == 1
    assert stats["streams_completed"] == 0

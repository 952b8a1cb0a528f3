"""The prompt-hash cache on the live path: hits, replayed streams, tenants, Cache-Control,
single-flight, and never a cut answer stored."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from edgeproxy.sim import SimConfig
from harness import Stack

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 3s, idle: 2s, response: 5s, total: 10s}
providers:
  alpha:
    kind: openai
    regions: {one: {base_url: "$alpha"}}
    models: {m: {}}
  beta:
    kind: openai
    regions: {main: {base_url: "$beta"}}
    models: {m: {}}
routes:
  m:
    chain: [alpha/one/m, beta/main/m]
    cache: {ttl: 60s}
  sampled:
    chain: [alpha/one/m, beta/main/m]
    cache: {cacheable: all}
  uncached:
    chain: [alpha/one/m, beta/main/m]
"""

MESSAGES = [{"role": "user", "content": "What is a circuit breaker?"}]


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    sims = [SimConfig(name=n, ttft=0.0, tokens_per_second=0) for n in ("alpha", "beta")]
    return make_stack(POLICY, sims)


def _post(stack: Stack, body: dict[str, object], **headers: str) -> httpx.Response:
    return stack.http.post("/v1/chat/completions", json=body, headers=headers)


def test_a_deterministic_request_is_answered_from_the_cache(stack: Stack) -> None:
    body = {"model": "m", "messages": MESSAGES, "temperature": 0}
    first, second = _post(stack, body), _post(stack, body)
    assert first.headers["x-edgeproxy-cache"] == "miss"
    assert second.headers["x-edgeproxy-cache"] == "hit"
    assert second.content == first.content
    assert second.headers["x-edgeproxy-provider"] == "alpha"  # who served it originally
    assert second.headers["x-edgeproxy-attempts"] == "0"
    assert stack.requests_to("alpha") == 1
    # Key order and whitespace do not matter; a different value does.
    reordered = stack.http.post(
        "/v1/chat/completions",
        content=b'{"temperature":0.0, "messages":[{"content":"What is a circuit breaker?","role":"user"}],"model":"m"}',
        headers={"content-type": "application/json"},
    )
    assert reordered.headers["x-edgeproxy-cache"] == "hit"
    other = _post(stack, {**body, "messages": [{"role": "user", "content": "Something else"}]})
    assert other.headers["x-edgeproxy-cache"] == "miss"


def test_sampled_requests_bypass_unless_the_route_caches_everything(stack: Stack) -> None:
    body = {"model": "m", "messages": MESSAGES, "temperature": 0.7}
    assert _post(stack, body).headers["x-edgeproxy-cache"] == "bypass"
    assert _post(stack, body).headers["x-edgeproxy-cache"] == "bypass"
    sampled = {**body, "model": "sampled"}
    assert _post(stack, sampled).headers["x-edgeproxy-cache"] == "miss"
    assert _post(stack, sampled).headers["x-edgeproxy-cache"] == "hit"
    uncached = {**body, "model": "uncached", "temperature": 0}
    assert _post(stack, uncached).headers["x-edgeproxy-cache"] == "bypass"


def test_stream_requests_replay_as_sse(stack: Stack) -> None:
    client = stack.client()
    whole = client.chat.completions.create(model="m", messages=MESSAGES, temperature=0)
    before = stack.requests_to("alpha")
    with client.chat.completions.with_streaming_response.create(
        model="m", messages=MESSAGES, temperature=0, stream=True
    ) as response:
        assert response.headers["x-edgeproxy-cache"] == "hit"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert stack.requests_to("alpha") == before


def test_a_recorded_stream_replays_byte_for_byte(stack: Stack) -> None:
    body = {"model": "m", "messages": MESSAGES, "temperature": 0, "stream": True}
    first = _post(stack, body)
    second = _post(stack, body)
    assert (first.headers["x-edgeproxy-cache"], second.headers["x-edgeproxy-cache"]) == (
        "miss",
        "hit",
    )
    assert second.text == first.text
    assert stack.requests_to("alpha") == 1


def test_tenants_never_share_answers(stack: Stack) -> None:
    body = {"model": "m", "messages": MESSAGES, "temperature": 0}
    assert _post(stack, body, authorization="Bearer key-a").headers["x-edgeproxy-cache"] == "miss"
    assert _post(stack, body, authorization="Bearer key-a").headers["x-edgeproxy-cache"] == "hit"
    assert _post(stack, body, authorization="Bearer key-b").headers["x-edgeproxy-cache"] == "miss"


def test_cache_control_no_cache_and_no_store(stack: Stack) -> None:
    body = {"model": "m", "messages": MESSAGES, "temperature": 0}
    assert (
        _post(stack, body, **{"cache-control": "no-store"}).headers["x-edgeproxy-cache"] == "miss"
    )
    assert _post(stack, body).headers["x-edgeproxy-cache"] == "miss"  # nothing was stored
    assert _post(stack, body).headers["x-edgeproxy-cache"] == "hit"
    refreshed = _post(stack, body, **{"cache-control": "no-cache"})
    assert refreshed.headers["x-edgeproxy-cache"] == "miss"  # looked past the entry, refreshed it
    assert stack.requests_to("alpha") == 3


def test_a_cut_stream_is_never_stored(make_stack: Callable[..., Stack]) -> None:
    sims = [SimConfig(name=n, ttft=0.0, tokens_per_second=200) for n in ("alpha", "beta")]
    stack = make_stack(POLICY, sims)
    stack.fault("alpha", mode="cut", after_tokens=3, count=1)
    with pytest.raises(openai.APIError):
        list(
            stack.client().chat.completions.create(
                model="m", messages=MESSAGES, temperature=0, stream=True
            )
        )
    again = _post(stack, {"model": "m", "messages": MESSAGES, "temperature": 0, "stream": True})
    assert again.headers["x-edgeproxy-cache"] == "miss"
    assert again.text.rstrip().endswith("[DONE]")


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_identical_concurrent_misses_make_one_upstream_call(
    make_stack: Callable[..., Stack], stream: bool
) -> None:
    sims = [SimConfig(name=n, ttft=0.5, tokens_per_second=100) for n in ("alpha", "beta")]
    stack = make_stack(POLICY, sims)
    body = {"model": "m", "messages": MESSAGES, "temperature": 0, "stream": stream}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: _post(stack, body), range(8)))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.text for r in responses}) == 1  # everyone got the same answer
    assert stack.requests_to("alpha") == 1
    assert sorted(r.headers["x-edgeproxy-cache"] for r in responses).count("miss") == 1

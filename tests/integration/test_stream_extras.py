"""Hedging, resuming a cut stream on another candidate, and usage the upstream did not send."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import openai
import pytest

from edgeproxy import tokens
from edgeproxy.sim import SimConfig
from harness import Stack

MESSAGES = [{"role": "user", "content": "Tell me a story about a lighthouse."}]

TWO = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 3s, idle: 1s, response: 5s, total: 10s}
limits: {max_hedge_percent: 100}
providers:
  alpha:
    kind: openai
    regions: {one: {base_url: "$alpha_one"}}
    models: {m: {}}
  beta:
    kind: openai
    regions: {main: {base_url: "$beta"}}
    models: {m-small: {assistant_prefill: true}}
routes:
  m:
    chain: [alpha/one/m, beta/main/m-small]
"""


def _sims(**overrides: object) -> list[SimConfig]:
    base = {"ttft": 0.0, "tokens_per_second": 200, **overrides}
    return [SimConfig(name=n, **base) for n in ("alpha_one", "beta")]  # type: ignore[arg-type]


def _wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_hedge_wins_over_a_slow_first_token(make_stack: Callable[..., Stack]) -> None:
    policy = TWO.replace(
        "    chain: [alpha/one/m, beta/main/m-small]",
        "    chain: [alpha/one/m, beta/main/m-small]\n    hedge: {delay: 200ms}",
    )
    stack = make_stack(policy, _sims())
    stack.fault("alpha_one", mode="slow_first_token", ttft=3)
    with stack.client().chat.completions.with_streaming_response.create(
        model="m", messages=MESSAGES, stream=True
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        assert (
            response.headers["x-edgeproxy-provider"],
            response.headers["x-edgeproxy-attempts"],
        ) == ("beta", "2")
    assert text
    # The loser was cancelled at once, not left to finish its slow answer.
    _wait_until(lambda: stack.stats("alpha_one")["in_flight"] == 0, seconds=1.5)
    assert stack.stats("alpha_one")["streams_completed"] == 0


def test_no_hedge_without_the_route_opting_in(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(TWO.replace("first_token: 3s", "first_token: 5s"), _sims())
    stack.fault("alpha_one", mode="slow_first_token", ttft=0.6)
    with stack.client().chat.completions.with_streaming_response.create(
        model="m", messages=MESSAGES, stream=True
    ) as response:
        list(response.parse())
        assert (
            response.headers["x-edgeproxy-provider"],
            response.headers["x-edgeproxy-attempts"],
        ) == ("alpha", "1")
    assert stack.requests_to("beta") == 0


def test_resume_continues_a_cut_stream_on_a_prefill_candidate(
    make_stack: Callable[..., Stack],
) -> None:
    policy = TWO.replace(
        "    chain: [alpha/one/m, beta/main/m-small]",
        "    chain: [alpha/one/m, beta/main/m-small]\n    on_midstream_failure: resume",
    )
    stack = make_stack(policy, _sims())
    stack.fault("alpha_one", mode="cut", after_tokens=3)
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    raw = stack.http.post("/v1/chat/completions", json=body).text
    before, note, after = raw.partition(": edgeproxy resumed on beta/main/m-small after cut")
    assert note, raw
    assert raw.rstrip().endswith("data: [DONE]") and "stream_interrupted" not in raw

    def chunks(part: str) -> list[dict]:  # type: ignore[type-arg]
        import orjson

        return [orjson.loads(line[6:]) for line in part.splitlines() if line.startswith("data: {")]

    first, rest = chunks(before), chunks(after)
    prefix = "".join(c["choices"][0]["delta"].get("content") or "" for c in first if c["choices"])
    continuation = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in rest if c["choices"]
    )
    assert prefix and continuation
    assert {c["id"] for c in first + rest} == {first[0]["id"]}  # one answer, one id
    assert all("role" not in c["choices"][0]["delta"] for c in rest if c["choices"])
    # beta was asked to continue the text the client had already received.
    direct = openai.OpenAI(base_url=stack.cluster.sims["beta"].url, api_key="x", max_retries=0)
    expected = direct.chat.completions.create(
        model="m-small",
        messages=[*MESSAGES, {"role": "assistant", "content": prefix}],
        stream=True,
        stream_options={"include_usage": True},
    )
    expected_chunks = list(expected)
    assert continuation == "".join(
        c.choices[0].delta.content or "" for c in expected_chunks if c.choices
    )
    # Usage covers both legs: beta's own plus what alpha's cut leg consumed (counted by the proxy).
    usage = rest[-1]["usage"]
    beta_usage = expected_chunks[-1].usage
    assert beta_usage is not None
    prompt = tokens.count_chat(orjson_dumps(body), "cl100k_base").tokens
    assert usage["completion_tokens"] == beta_usage.completion_tokens + tokens.count(
        prefix, "cl100k_base"
    )
    assert usage["prompt_tokens"] == beta_usage.prompt_tokens + prompt


def test_resume_is_not_attempted_without_a_prefill_candidate(
    make_stack: Callable[..., Stack],
) -> None:
    policy = TWO.replace("{assistant_prefill: true}", "{}").replace(
        "    chain: [alpha/one/m, beta/main/m-small]",
        "    chain: [alpha/one/m, beta/main/m-small]\n    on_midstream_failure: resume",
    )
    stack = make_stack(policy, _sims())
    stack.fault("alpha_one", mode="cut", after_tokens=3)
    with __import__("pytest").raises(openai.APIError):
        list(stack.client().chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert stack.requests_to("beta") == 0


def test_usage_is_filled_when_the_upstream_sends_none(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(TWO, _sims(reports_usage=False))
    client = stack.client()
    completion = client.chat.completions.create(model="m", messages=MESSAGES)
    content = completion.choices[0].message.content or ""
    prompt = tokens.count_chat(
        orjson_dumps({"model": "m", "messages": MESSAGES}), "cl100k_base"
    ).tokens
    assert completion.usage is not None
    assert completion.usage.completion_tokens == tokens.count(content, "cl100k_base")
    assert completion.usage.prompt_tokens == prompt
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == tokens.count(streamed, "cl100k_base")
    # Without include_usage the client gets no usage chunk (as from OpenAI).
    plain = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in plain)


def test_usage_of_a_large_prompt_is_counted_off_the_event_loop(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt of 64 KiB or more is counted in a worker thread when the proxy fills in usage
    (non-stream, stream with a usage chunk, and the telemetry count of a plain stream, whose
    count starts when the stream opens), so a huge prompt never holds the loop that serves
    everyone else; the counts stay exact."""
    # Streams of ~0.5 s, as from a real model: the count started at the stream's opening is
    # done long before its end.
    stack = make_stack(TWO, _sims(reports_usage=False, tokens_per_second=50.0))
    counted_on: list[str] = []
    real = tokens.count_chat_tokens

    def recording(body: bytes, encoding: str) -> tokens.TokenCount:
        counted_on.append(threading.current_thread().name)
        return real(body, encoding)

    monkeypatch.setattr(tokens, "count_chat_tokens", recording)
    messages = [{"role": "user", "content": "word " * 20_000}]  # ~100 KB
    prompt = real(orjson_dumps({"model": "m", "messages": messages}), "cl100k_base").tokens
    client = stack.client()
    completion = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert completion.usage is not None and completion.usage.prompt_tokens == prompt
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == prompt
    list(client.chat.completions.create(model="m", messages=messages, stream=True))  # type: ignore[arg-type]
    # One count per request (each request counts its prompt once), none on the servers' loop.
    assert len(counted_on) == 3
    assert "servers" not in counted_on, counted_on


def test_usage_of_a_body_the_counter_refuses_is_estimated(
    make_stack: Callable[..., Stack],
) -> None:
    """JSON nested deeper than the counter allows (here in a tool schema) is still a valid
    request: when the upstream sends no usage, the proxy estimates the prompt (~4 bytes a
    token) instead of failing an answer the upstream gave, in all three paths."""
    stack = make_stack(TWO, _sims(reports_usage=False))
    schema: dict[str, object] = {"type": "string"}
    for _ in range(70):  # two levels each: ~145 in the request, over the counter's 128
        schema = {"type": "object", "properties": {"x": schema}}
    tools = [{"type": "function", "function": {"name": "deep", "parameters": schema}}]
    body = orjson_dumps({"model": "m", "messages": MESSAGES, "tools": tools})
    with pytest.raises(tokens.TokenizerError):
        tokens.count_chat(body, "cl100k_base")
    client = stack.client()
    completion = client.chat.completions.create(model="m", messages=MESSAGES, tools=tools)  # type: ignore[arg-type]
    assert completion.usage is not None and completion.usage.prompt_tokens >= len(body) // 5
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            tools=tools,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens >= len(body) // 5
    plain = list(
        client.chat.completions.create(model="m", messages=MESSAGES, tools=tools, stream=True)  # type: ignore[arg-type]
    )
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices)


def orjson_dumps(body: object) -> bytes:
    import orjson

    return orjson.dumps(body)


def test_breaker_state_survives_a_reload(make_stack: Callable[..., Stack], tmp_path) -> None:  # type: ignore[no-untyped-def]
    del tmp_path
    stack = make_stack(TWO, _sims())
    stack.fault("alpha_one", mode="status", status=503)
    for _ in range(5):
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    # A new policy with the same candidates (only a timeout changed) keeps alpha_one ejected.
    from edgeproxy.policy import load_policy_text

    new = load_policy_text(stack.policy_text.replace("idle: 1s", "idle: 2s"), "v2.yaml", {})
    stack.loop.run(_swap(stack, new))
    raw = stack.client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.headers["x-edgeproxy-policy-version"] == new.version
    assert (
        raw.headers["x-edgeproxy-attempts"] == "1" and raw.headers["x-edgeproxy-provider"] == "beta"
    )
    assert stack.requests_to("alpha_one") == 5


async def _swap(stack: Stack, policy: object) -> None:
    stack.proxy.state.policy = policy  # type: ignore[assignment]
    stack.proxy.state.engine.policy_swapped(policy)  # type: ignore[arg-type]

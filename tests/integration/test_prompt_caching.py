"""Provider prompt caching as a cost lever, through the real proxy with the official SDKs:
cached tokens read from both wires (answers and streams) into usage, cost, the access log and
the metrics; Anthropic ``cache_control`` passed through, translated, and placed by the proxy
when the route opts in; never sent to an OpenAI-wire upstream. The simulated providers keep a
prompt cache of their own (``sim/prompt_cache.py``) and report it the way each provider does."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.sim import SimConfig
from edgeproxy.telemetry.metrics import metrics_from_env
from edgeproxy.telemetry.process import Telemetry
from harness import Stack

# USD per million tokens: reads at a tenth, writes at 1.25x (Anthropic's ratios).
POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 2s, response: 5s, total: 10s}
providers:
  oa:
    kind: openai
    regions: {main: {base_url: "$oa"}}
    models: {gpt: {price: {input: 2, output: 8, cached_input: 0.5}}}
  claude:
    kind: anthropic
    regions: {main: {base_url: "$claude"}}
    models: {sonnet: {price: {input: 3, output: 15, cached_input: 0.3, cache_write: 3.75}}}
routes:
  openai-route:
    chain: [oa/main/gpt]
  claude-auto:
    chain: [claude/main/sonnet]
    prompt_cache: {breakpoints: auto}
  claude-plain:
    chain: [claude/main/sonnet]
  mixed:
    chain: [oa/main/gpt, claude/main/sonnet]
"""
SIMS = [
    SimConfig(name=n, ttft=0.0, tokens_per_second=0, prompt_cache_ttl=300.0)
    for n in ("oa", "claude")
]
SYSTEM = "You are the support agent of a large product. " + "Policy clause. " * 900
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a customer up.",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
    }
]


def turns(n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for i in range(n):
        messages.append({"role": "user", "content": f"Question {i}: " + "details " * 200})
        if i < n - 1:
            messages.append({"role": "assistant", "content": f"Answer {i}."})
    return messages


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    found: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "request":
                found.append(record)

    handler = Collect()
    logger = logging.getLogger("edgeproxy.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield found
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(POLICY, SIMS, telemetry=Telemetry(metrics=metrics_from_env({})))


def received(stack: Stack, sim: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(stack.cluster.sims[sim].received[-1])
    return body


def marks(value: Any) -> list[str]:
    """Where ``cache_control`` sits in a body (JSON paths, sorted)."""
    return sorted(_marks(value))


def _marks(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        here = [path] if "cache_control" in value else []
        return here + [p for k, v in value.items() for p in _marks(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _marks(v, f"{path}[{i}]")]
    return []


def test_openai_cached_tokens_are_counted_priced_and_logged(
    stack: Stack, records: list[logging.LogRecord]
) -> None:
    client = stack.client()
    ask = client.chat.completions.with_raw_response.create
    first = ask(model="openai-route", messages=turns(1), max_tokens=16)
    second = ask(model="openai-route", messages=turns(2), max_tokens=16)
    u1, u2 = first.parse().usage, second.parse().usage
    assert u1.prompt_tokens_details.cached_tokens == 0
    cached = u2.prompt_tokens_details.cached_tokens
    assert cached > 1024 and cached % 128 == 0 and cached < u2.prompt_tokens
    # Cost: the cached part at cached_input, the rest at input.
    expected = ((u2.prompt_tokens - cached) * 2 + cached * 0.5 + u2.completion_tokens * 8) / 1e6
    assert float(second.headers["x-edgeproxy-cost-usd"]) == pytest.approx(expected, rel=1e-6)
    assert [r.cached_tokens for r in records] == [0, cached]  # type: ignore[attr-defined]
    assert received(stack, "oa")["messages"] == turns(2)  # nothing added for an OpenAI upstream
    families = {f.name: f for f in text_string_to_metric_families(stack.http.get("/metrics").text)}
    by_kind = {
        s.labels["edgeproxy_prompt_cache_kind"]: s.value
        for s in families["edgeproxy_prompt_cache_tokens"].samples
        if s.name.endswith("_total")
    }
    assert by_kind["read"] == cached
    assert by_kind["uncached"] == u1.prompt_tokens + u2.prompt_tokens - cached


@pytest.mark.parametrize("stream", [False, True])
def test_auto_breakpoints_write_then_read_the_prefix_on_anthropic(
    stack: Stack, records: list[logging.LogRecord], stream: bool
) -> None:
    client = stack.client()
    for n in (1, 2):
        kwargs: dict[str, Any] = {"model": "claude-auto", "messages": turns(n), "tools": TOOLS}
        if stream:
            chunks = list(
                client.chat.completions.create(
                    **kwargs, max_tokens=16, stream=True, stream_options={"include_usage": True}
                )
            )
            usage = chunks[-1].usage
        else:
            usage = client.chat.completions.create(**kwargs, max_tokens=16).usage
        assert usage is not None
        got = received(stack, "claude")
        # The last tool, the system prompt and the last message are marked; nothing else.
        assert marks(got) == [f".messages[{2 * n - 2}].content[0]", ".system[0]", ".tools[0]"]
        details = usage.prompt_tokens_details
        assert details is not None
        if n == 1:
            written = getattr(details, "cache_write_tokens", None) or 0
            assert details.cached_tokens == 0 and written > 1024
        else:
            assert details.cached_tokens > 1024  # the first turn's prefix, read back
    first, second = records
    # The stream path carries cached and written tokens too, and prices them apart.
    assert first.cache_write_tokens > 0 and first.cached_tokens == 0  # type: ignore[attr-defined]
    assert second.cached_tokens > 0  # type: ignore[attr-defined]
    write_price = (first.input_tokens * 3.75 + first.output_tokens * 15) / 1e6  # type: ignore[attr-defined]
    assert first.cost_usd > (first.input_tokens * 3 + first.output_tokens * 15) / 1e6  # type: ignore[attr-defined]
    assert first.cost_usd <= write_price  # type: ignore[attr-defined]


def test_without_the_opt_in_nothing_is_marked_and_nothing_is_cached(stack: Stack) -> None:
    client = stack.client()
    for n in (1, 2):
        usage = client.chat.completions.create(
            model="claude-plain", messages=turns(n), max_tokens=16
        ).usage
        assert usage is not None and usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 0
    assert marks(received(stack, "claude")) == []


def test_an_anthropic_clients_own_cache_control_is_kept_and_left_out_for_openai(
    stack: Stack,
) -> None:
    client = anthropic.Anthropic(base_url=stack.proxy.url, api_key="unused", max_retries=0)
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "A long document. " * 300},
                {
                    "type": "text",
                    "text": "What does it say?",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        }
    ]
    tools = [
        {
            "name": "lookup",
            "input_schema": {"type": "object", "properties": {}},
            "cache_control": {"type": "ephemeral"},
        }
    ]
    for route in ("claude-auto", "claude-plain"):
        answer = client.messages.create(
            model=route, system=system, messages=messages, tools=tools, max_tokens=16
        )
        got = received(stack, "claude")
        # Exactly the client's marks, where it put them (auto adds none to a marked request).
        assert marks(got) == [".messages[0].content[1]", ".system[0]", ".tools[0]"]
        assert got["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert answer.usage.cache_read_input_tokens and answer.usage.cache_read_input_tokens > 1024
    # The same request to an OpenAI-wire upstream: translated, and no marker reaches it.
    stack.fault("claude", mode="status", status=503)
    client.messages.create(
        model="mixed", system=system, messages=messages, tools=tools, max_tokens=16
    )
    got = received(stack, "oa")
    assert marks(got) == [] and b"cache_control" not in stack.cluster.sims["oa"].received[-1]
    assert got["messages"][0]["content"][0]["text"] == SYSTEM


def test_a_short_prompt_gets_no_breakpoints(stack: Stack) -> None:
    stack.client().chat.completions.create(
        model="claude-auto", messages=[{"role": "user", "content": "hi"}], max_tokens=16
    )
    assert marks(received(stack, "claude")) == []

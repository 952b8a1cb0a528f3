"""A long conversation whose primary is down is served by a small-window fallback, compacted
for that fallback only; where nothing can make it fit, the client is told by how much.

Through the real proxy on loopback, the official SDKs as clients, simulated providers that
record what they were sent (so the test reads the compacted conversation the fallback got).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from edgeproxy import tokens
from edgeproxy.sim import SimConfig
from edgeproxy.telemetry.metrics import metrics_from_env
from edgeproxy.telemetry.process import Telemetry
from harness import Stack

WINDOW = 8192
MAX_TOKENS = 256
LIMIT = WINDOW - MAX_TOKENS

POLICY = f"""
version: 1
defaults:
  timeouts: {{connect: 1s, first_token: 2s, idle: 2s, response: 5s, total: 20s}}
providers:
  big:
    kind: openai
    regions: {{main: {{base_url: "$big"}}}}
    models: {{large: {{context_window: 200000, price: {{input: 3, output: 15}}}}}}
  small:
    kind: openai
    regions: {{main: {{base_url: "$small"}}}}
    models:
      llama: {{context_window: {WINDOW}, tokenizer: cl100k_base, price: {{input: 0.2, output: 0.2}}}}
  summ:
    kind: openai
    regions: {{main: {{base_url: "$summ"}}}}
    models: {{mini: {{context_window: 128000, price: {{input: 1, output: 2}}}}}}
routes:
  chat:
    chain: [big/main/large, small/main/llama]
    context:
      overflow: compact
      strategies: [trim_tool_results, drop_middle]
      keep_last: 2
      tool_result_max_tokens: 256
  summarised:
    chain: [big/main/large, small/main/llama]
    context:
      overflow: compact
      strategies: [summarize, drop_middle]
      keep_last: 2
      summarizer: summ/main/mini
      summary_max_tokens: 200
  strict:
    chain: [big/main/large, small/main/llama]
    context: {{overflow: error}}
  small-only:
    chain: [small/main/llama]
    context: {{overflow: compact, keep_last: 2}}
"""
SIMS = [SimConfig(name=n, ttft=0.0, tokens_per_second=0) for n in ("big", "small", "summ")]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the repository.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]
WORDS = [
    "the",
    "proxy",
    "keeps",
    "every",
    "request",
    "moving",
    "while",
    "providers",
    "wobble",
    "and",
    "tokens",
    "flow",
]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def conversation(rounds: int = 12, result_words: int = 1500, seed: int = 7) -> list[Any]:
    """An agent's conversation: a system prompt, a task, ``rounds`` tool calls each with a
    large result, and a last question."""
    rng = random.Random(seed)
    messages: list[Any] = [
        {"role": "system", "content": "You are a careful coding agent. " + _text(rng, 200)},
        {"role": "user", "content": "Find why the build fails. " + _text(rng, 30)},
    ]
    for i in range(rounds):
        call = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "read_file", "arguments": orjson.dumps({"path": f"f{i}.py"})},
        }
        call["function"]["arguments"] = call["function"]["arguments"].decode()
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append(
            {"role": "tool", "tool_call_id": f"call_{i}", "content": _text(rng, result_words)}
        )
    messages.append({"role": "user", "content": "So what is the fix?"})
    return messages


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(POLICY, SIMS)


def received(stack: Stack, sim: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(stack.cluster.sims[sim].received[-1])
    return body


def assert_well_formed(sent: list[Any], got: list[Any]) -> None:
    """What compaction promises: the system prompt, the first and last user message kept; every
    tool call followed by all its results, every result preceded by its call."""
    assert got[0] == sent[0]
    assert got[1]["role"] == "user" and got[1]["content"].startswith(sent[1]["content"])
    assert got[-1] == sent[-1]
    open_calls: set[str] = set()
    for message in got:
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_calls, message["tool_call_id"]
            open_calls.discard(message["tool_call_id"])
        else:
            assert not open_calls, f"results missing for {open_calls}"
            open_calls = {c["id"] for c in message.get("tool_calls") or []}
    roles = [m["role"] for m in got]
    assert all(not (a == b == "user") for a, b in itertools.pairwise(roles)), roles


def test_a_primary_outage_is_served_by_the_small_fallback_compacted(stack: Stack) -> None:
    messages = conversation()
    whole = tokens.count_chat({"messages": messages, "tools": TOOLS}, "cl100k_base").tokens
    assert whole > 2 * WINDOW  # the fallback could not take it whole
    stack.fault("big", mode="status", status=503)
    raw = stack.client().chat.completions.with_raw_response.create(
        model="chat", messages=messages, tools=TOOLS, max_tokens=MAX_TOKENS
    )
    assert raw.headers["x-edgeproxy-provider"] == "small"
    before, after = (int(n) for n in raw.headers["x-edgeproxy-compacted"].split("->"))
    assert before == whole and after <= LIMIT
    got = received(stack, "small")
    # What the fallback got is what the header says, counted exactly, and well formed.
    assert tokens.count_chat(orjson.dumps(got), "cl100k_base").tokens == after
    assert_well_formed(messages, got["messages"])
    assert got["tools"] == TOOLS
    cut = [m for m in got["messages"] if "edgeproxy cut" in str(m.get("content"))]
    assert cut, "trim_tool_results marks what it cut"
    assert raw.parse().choices[0].message.content


def test_the_primary_gets_the_whole_conversation_when_it_is_up(stack: Stack) -> None:
    messages = conversation()
    raw = stack.client().chat.completions.with_raw_response.create(
        model="chat", messages=messages, tools=TOOLS, max_tokens=MAX_TOKENS
    )
    assert raw.headers["x-edgeproxy-provider"] == "big"
    assert "x-edgeproxy-compacted" not in raw.headers
    assert received(stack, "big")["messages"] == messages
    assert stack.requests_to("small") == 0


def test_a_compacted_stream_says_so_and_streams_whole(stack: Stack) -> None:
    stack.fault("big", mode="status", status=503)
    with stack.client().chat.completions.with_streaming_response.create(
        model="chat",
        messages=conversation(),
        tools=TOOLS,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        chunks = list(response.parse())
        assert response.headers["x-edgeproxy-provider"] == "small"
        after = int(response.headers["x-edgeproxy-compacted"].split("->")[1])
    assert after <= LIMIT
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None


def test_when_nothing_can_fit_the_client_is_told_by_how_much(stack: Stack) -> None:
    rng = random.Random(3)
    # The last user message alone is larger than the small model's window: never dropped.
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": _text(rng, 12000)},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="small-only", messages=messages, max_tokens=MAX_TOKENS
        )
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "context_length_exceeded"
    assert "small/main/llama" in error["message"] and "too many" in error["message"]
    assert stack.requests_to("small") == 0
    # With the primary down, the outage's answer names why the fallback was not tried.
    stack.fault("big", mode="status", status=503)
    with pytest.raises(openai.APIStatusError) as failed:
        stack.client().chat.completions.create(model="chat", messages=messages, max_tokens=64)
    assert failed.value.status_code == 502
    assert "small/main/llama: skipped" in str(failed.value.body)
    assert failed.value.response.headers["x-edgeproxy-skipped"] == "small/main/llama=context_window"


def test_overflow_error_refuses_what_the_fallback_could_not_take(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="strict", messages=conversation(), tools=TOOLS, max_tokens=MAX_TOKENS
        )
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "context_length_exceeded"
    assert "context.overflow: error" in error["message"]
    assert stack.requests_to("big") == 0
    # A short conversation fits both: served as usual.
    short = stack.client().chat.completions.create(
        model="strict", messages=[{"role": "user", "content": "hi"}], max_tokens=16
    )
    assert short.choices[0].message.content


def test_summaries_are_made_once_per_history_and_paid_for(stack: Stack) -> None:
    stack.fault("big", mode="status", status=503)
    client = stack.client()
    messages = conversation(rounds=10, result_words=1000)

    def ask(msgs: list[Any]) -> Any:
        return client.chat.completions.with_raw_response.create(
            model="summarised", messages=msgs, tools=TOOLS, max_tokens=MAX_TOKENS
        )

    first = ask(messages)
    assert first.headers["x-edgeproxy-provider"] == "small"
    assert int(first.headers["x-edgeproxy-compacted"].split("->")[1]) <= LIMIT
    assert stack.requests_to("summ") == 1
    got = received(stack, "small")["messages"]
    assert_well_formed(messages, got)
    assert "a summary of" in got[1]["content"]
    # The summariser's call is part of what the answer cost (small alone costs far less).
    usage = first.parse().usage
    small_only = (usage.prompt_tokens * 0.2 + usage.completion_tokens * 0.2) / 1e6
    assert float(first.headers["x-edgeproxy-cost-usd"]) > small_only
    # The same history again: the summary comes from the cache.
    ask(messages)
    assert stack.requests_to("summ") == 1
    # One more turn: the summary covers whole steps (8 messages), so the same one serves.
    ask(conversation(rounds=11, result_words=1000))
    assert stack.requests_to("summ") == 1
    # A much longer history starts from the shorter one's summary (only the rest is sent).
    ask(conversation(rounds=20, result_words=1000))
    assert stack.requests_to("summ") == 2
    transcript = received(stack, "summ")["messages"][1]["content"]
    assert "Summary of what came before" in transcript


def test_an_anthropic_client_fails_over_to_an_anthropic_fallback_compacted(
    make_stack: Callable[..., Stack],
) -> None:
    policy = POLICY.replace("small:\n    kind: openai", "small:\n    kind: anthropic")
    stack = make_stack(policy, SIMS)
    stack.fault("big", mode="status", status=503)
    rng = random.Random(5)
    messages: list[Any] = [{"role": "user", "content": "Find why the build fails."}]
    for i in range(10):
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": f"toolu_{i}",
                        "name": "read_file",
                        "input": {"path": f"f{i}"},
                    }
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": f"toolu_{i}",
                        "content": _text(rng, 1500),
                    }
                ],
            }
        )
    messages.append({"role": "user", "content": "So what is the fix?"})
    client = anthropic.Anthropic(base_url=stack.proxy.url, api_key="unused", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="chat",
        system="You are a careful coding agent.",
        messages=messages,
        tools=[{"name": "read_file", "input_schema": {"type": "object", "properties": {}}}],
        max_tokens=MAX_TOKENS,
    )
    assert raw.headers["x-edgeproxy-provider"] == "small"
    assert int(raw.headers["x-edgeproxy-compacted"].split("->")[1]) <= LIMIT
    assert raw.parse().content
    got = received(stack, "small")
    assert got["system"] == "You are a careful coding agent."
    assert got["messages"][-1] == {"role": "user", "content": "So what is the fix?"}
    # Every tool_use the fallback got has its tool_result in the next turn, and none is orphaned.
    uses = [
        b["id"]
        for m in got["messages"]
        for b in m["content"]
        if isinstance(m["content"], list) and b["type"] == "tool_use"
    ]
    results = [
        b["tool_use_id"]
        for m in got["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert uses == results and uses


def test_hostile_tool_results_are_cut_safely(stack: Stack) -> None:
    """A result with no spaces (one huge 'word'), emoji and escapes, and a result given as
    content parts: cut to head and tail, still valid JSON, still under the window."""
    stack.fault("big", mode="status", status=503)
    messages = conversation(rounds=3, result_words=10)
    messages[3]["content"] = "a" * 60_000
    messages[5]["content"] = '🚀"\\\n\u0000' * 8_000
    messages[7]["content"] = [{"type": "text", "text": "x1 " * 9_000}]
    raw = stack.client().chat.completions.with_raw_response.create(
        model="chat", messages=messages, tools=TOOLS, max_tokens=MAX_TOKENS
    )
    assert int(raw.headers["x-edgeproxy-compacted"].split("->")[1]) <= LIMIT
    got = received(stack, "small")["messages"]
    assert_well_formed(messages, got)
    for index in (3, 5, 7):
        assert "edgeproxy cut" in got[index]["content"]


def test_compaction_and_its_summary_reach_the_trace_the_log_and_the_metrics(
    make_stack: Callable[..., Stack],
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer_provider=provider, metrics=metrics_from_env({}))
    stack = make_stack(POLICY, SIMS, telemetry=telemetry)
    stack.fault("big", mode="status", status=503)
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "request":
                records.append(record)

    handler, logger = Collect(), logging.getLogger("edgeproxy.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        raw = stack.client().chat.completions.with_raw_response.create(
            model="summarised",
            messages=conversation(rounds=10, result_words=1000),
            tools=TOOLS,
            max_tokens=MAX_TOKENS,
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    compacted = raw.headers["x-edgeproxy-compacted"]
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert server.attributes is not None
    assert server.attributes["edgeproxy.context.compacted"] == compacted
    assert server.attributes["edgeproxy.context.strategies"] == ("summarize",)
    served = [a for a in attempts if a.attributes and "edgeproxy.context.compacted" in a.attributes]
    assert len(served) == 1 and served[0].attributes["edgeproxy.candidate"] == "small/main/llama"
    (summary,) = [e for e in server.events if e.name == "edgeproxy.summary"]
    assert summary.attributes is not None
    assert summary.attributes["edgeproxy.candidate"] == "summ/main/mini"
    assert summary.attributes["edgeproxy.outcome"] == "ok"
    (line,) = records
    assert line.compacted == compacted and line.compaction == "summarize"  # type: ignore[attr-defined]
    # The request's cost is the failed primary (nothing), the fallback and the summary.
    assert line.cost_usd == pytest.approx(float(raw.headers["x-edgeproxy-cost-usd"]))  # type: ignore[attr-defined]
    assert line.cost_usd > summary.attributes["edgeproxy.cost_usd"] > 0  # type: ignore[attr-defined]
    metrics = stack.http.get("/metrics").text
    assert 'edgeproxy_context_summaries_total{edgeproxy_candidate="summ/main/mini"' in metrics
    assert 'edgeproxy_context_strategies="summarize"' in metrics
    # Another tenant (another key) with the same history gets its own summary.
    other = openai.OpenAI(base_url=stack.base_url, api_key="sk-another-tenant", max_retries=0)
    other.chat.completions.create(
        model="summarised",
        messages=conversation(rounds=10, result_words=1000),
        tools=TOOLS,
        max_tokens=MAX_TOKENS,
    )
    assert stack.requests_to("summ") == 2

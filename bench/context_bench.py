"""What the context levers buy on a realistic agent workload (docs/benchmarks.md, "Context
levers"; docs/context.md).

Run: .venv/bin/python bench/context_bench.py [--conversations 8] [--turns 24] [--markdown]

Not a test (not in ``make test``). One in-process proxy in front of simulated providers that
keep prompt caches of their own (``sim/prompt_cache.py``) and charge prefill time per uncached
prompt token, driven by a simulated agent:

- **The trace** (seeded, the same for every configuration): ``--conversations`` agents run at
  once, each for ``--turns`` turns. Every agent has the same long system prompt (~4k tokens,
  one product feature) and six tool definitions, its own task, and each turn appends the
  assistant's tool call and the tool's result (200 to 8,000 tokens, median ~1,500): the
  conversation grows past 32k tokens half way through.
- **The route**: ``[oss/*/llama, claude/*/sonnet]``: an open-weight 70B model on two replicas
  (32k window, $0.90/M in and out, cached input $0.45/M, automatic prefix caching as OpenAI-
  compatible servers do), then a frontier model in two regions (200k window, Anthropic wire,
  $3/M in, $15/M out, cache reads $0.30/M, writes $3.75/M, explicit breakpoints).
- **The levers**, each off and on:
  - *compaction*: ``context.overflow: skip`` (a conversation too long for the 32k model goes to
    the frontier model) vs ``compact`` (trim tool results, then drop middle turns, for the 32k
    model only);
  - *caching*: ``prompt_cache.breakpoints: off`` vs ``auto`` (the proxy marks the stable prefix
    for the Anthropic-wire candidates; the open-weight replicas cache by themselves either way);
  - *affinity*: ``affinity.spread: random`` (load spread evenly over replicas and regions, as a
    load balancer would) vs ``prefix`` (rendezvous hashing on the conversation's prefix, with
    bounded load).

Per configuration: USD per conversation (the proxy's own cost header: tokens x the policy's
prices, cache reads and writes priced apart), input tokens per conversation (as billed:
compaction's cut shows here), the cached share of them (read from the providers' caches), p50
latency per request (wall time through the proxy; the simulated prefill makes cached and short
prompts faster), and the share of requests the open-weight model served. "compaction +
caching" is all on but affinity (what affinity adds on top); the last line is the ratio of all
levers on to all off.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import string
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from edgeproxy.policy import load_policy_text
from edgeproxy.server.runner import ProxyServer
from edgeproxy.sim import SimCluster, SimConfig
from edgeproxy.telemetry.process import Telemetry

POLICY = """
version: 1
defaults:
  timeouts: {connect: 2s, first_token: 30s, idle: 30s, response: 60s, total: 120s}
health_check: {enabled: false}
providers:
  oss:
    kind: openai
    regions: {r1: {base_url: "$oss_r1"}, r2: {base_url: "$oss_r2"}}
    models:
      llama:
        context_window: 32768
        tokenizer: cl100k_base
        price: {input: 0.9, output: 0.9, cached_input: 0.45}
  claude:
    kind: anthropic
    regions: {us: {base_url: "$claude_us"}, eu: {base_url: "$claude_eu"}}
    models:
      sonnet:
        context_window: 200000
        price: {input: 3, output: 15, cached_input: 0.3, cache_write: 3.75}
routes:
  agent:
    chain: [oss/*/llama, claude/*/sonnet]
    context:
      overflow: $overflow
      strategies: [trim_tool_results, drop_middle]
      keep_last: 6
      tool_result_max_tokens: 1500
    prompt_cache: {breakpoints: $breakpoints}
    affinity: {spread: $spread}
"""

CONFIGS: dict[str, tuple[bool, bool, bool]] = {  # compaction, caching, affinity
    "all off": (False, False, False),
    "compaction": (True, False, False),
    "caching": (False, True, False),
    "affinity": (False, False, True),
    "compaction + caching": (True, True, False),
    "all on": (True, True, True),
}

WORDS = [
    "the",
    "service",
    "reads",
    "configuration",
    "files",
    "and",
    "retries",
    "failed",
    "requests",
    "while",
    "the",
    "scheduler",
    "queues",
    "jobs",
    "for",
    "workers",
    "that",
    "report",
    "status",
    "metrics",
    "latency",
    "errors",
    "and",
    "logs",
    "to",
    "storage",
    "buckets",
    "where",
    "an",
    "index",
    "maps",
    "keys",
    "to",
    "values",
    "cached",
    "in",
    "memory",
    "for",
    "fast",
    "lookups",
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ').capitalize()} in the repository. " * 6,
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "A path in the repository."},
                    "query": {"type": "string", "description": "What to look for."},
                },
            },
        },
    }
    for name in ("read_file", "search_code", "list_dir", "run_tests", "git_log", "edit_file")
]


def _text(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


@dataclass
class Agent:
    """One simulated agent: its conversation so far and what it paid."""

    index: int
    messages: list[dict[str, Any]]
    rng: random.Random
    cost: float = 0.0
    input_tokens: int = 0
    cached_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    by_model: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    def grow(self, turn: int) -> None:
        """The assistant's tool call and the tool's result (the request's new tail)."""
        call_id = f"call_{self.index}_{turn}"
        tool = self.rng.choice(TOOLS)["function"]["name"]
        arguments = orjson.dumps({"path": f"src/mod{self.rng.randrange(40)}.py"}).decode()
        self.messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": tool, "arguments": arguments},
                    }
                ],
            }
        )
        size = int(min(max(self.rng.lognormvariate(7.3, 0.8), 200), 8000))
        self.messages.append(
            {"role": "tool", "tool_call_id": call_id, "content": _text(self.rng, size)}
        )


def new_agents(n: int, seed: int) -> list[Agent]:
    shared = random.Random(seed)
    system = "You are a careful coding agent working in a large repository. " + _text(shared, 4000)
    agents = []
    for i in range(n):
        rng = random.Random(seed * 1000 + i)
        task = f"Task {i}: find why the nightly build fails and fix it. " + _text(rng, 150)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": task}]
        agents.append(Agent(i, messages, rng))
    return agents


def sims() -> list[SimConfig]:
    def sim(name: str, wire: Any, ttft: float, prefill: float) -> SimConfig:
        return SimConfig(
            name=name,
            wire=wire,
            ttft=ttft,
            tokens_per_second=2000,
            default_completion_tokens=40,
            prompt_cache_ttl=300.0,
            prefill_tokens_per_second=prefill,
        )

    return [
        sim("oss_r1", "openai", 0.05, 40_000),
        sim("oss_r2", "openai", 0.05, 40_000),
        sim("claude_us", "anthropic", 0.1, 60_000),
        sim("claude_eu", "anthropic", 0.1, 60_000),
    ]


async def one_turn(session: aiohttp.ClientSession, url: str, agent: Agent) -> None:
    body = {"model": "agent", "messages": agent.messages, "tools": TOOLS, "max_tokens": 512}
    started = time.perf_counter()
    headers = {"Content-Type": "application/json"}
    async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
        data = await response.read()
        agent.latencies.append(time.perf_counter() - started)
        if response.status != 200:
            agent.failed += 1
            return
        agent.cost += float(response.headers.get("x-edgeproxy-cost-usd", "0"))
        provider = response.headers.get("x-edgeproxy-provider", "?")
        agent.by_model[provider] = agent.by_model.get(provider, 0) + 1
    usage = orjson.loads(data).get("usage") or {}
    agent.input_tokens += int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    agent.cached_tokens += int(details.get("cached_tokens") or 0)


async def run_config(
    name: str, levers: tuple[bool, bool, bool], conversations: int, turns: int, seed: int
) -> dict[str, Any]:
    compaction, caching, affinity = levers
    cluster = SimCluster(sims(), control_port=0)
    await cluster.start()
    urls = {n: s.url for n, s in cluster.sims.items()}
    text = string.Template(POLICY).substitute(
        urls,
        overflow="compact" if compaction else "skip",
        breakpoints="auto" if caching else "off",
        spread="prefix" if affinity else "random",
    )
    policy = load_policy_text(text, f"context-bench-{name}.yaml", {})
    proxy = ProxyServer(policy, port=0, telemetry=Telemetry())
    await proxy.start()
    agents = new_agents(conversations, seed)
    url = f"{proxy.url}/v1/chat/completions"
    try:
        timeout = aiohttp.ClientTimeout(total=180)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for turn in range(turns):
                for agent in agents:
                    agent.grow(turn)
                await asyncio.gather(*(one_turn(session, url, a) for a in agents))
    finally:
        await proxy.stop()
        await cluster.stop()
    served = sum(sum(a.by_model.values()) for a in agents)
    input_tokens = sum(a.input_tokens for a in agents)
    return {
        "config": name,
        "usd": sum(a.cost for a in agents) / conversations,
        "input_tokens": input_tokens / conversations,
        "cached_share": sum(a.cached_tokens for a in agents) / max(input_tokens, 1),
        "p50_ms": statistics.median(t for a in agents for t in a.latencies) * 1000,
        "open_weight_share": sum(a.by_model.get("oss", 0) for a in agents) / max(served, 1),
        "failed": sum(a.failed for a in agents),
    }


def render(rows: list[dict[str, Any]], markdown: bool) -> str:
    header = (
        "| levers on | USD / conversation | input tokens / conversation | cached share "
        "| p50 latency | served by the 32k model | failed |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"] if markdown else [header]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['usd']:.4f} | {r['input_tokens']:,.0f} | "
            f"{r['cached_share']:.0%} | {r['p50_ms']:.0f} ms | {r['open_weight_share']:.0%} | "
            f"{r['failed']} |"
        )
    off, on = rows[0], rows[-1]
    lines.append("")
    lines.append(
        f"all on / all off: cost {on['usd'] / off['usd']:.2f}x, input tokens "
        f"{on['input_tokens'] / off['input_tokens']:.2f}x, p50 latency "
        f"{on['p50_ms'] / off['p50_ms']:.2f}x"
    )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    for name, levers in CONFIGS.items():
        rows.append(await run_config(name, levers, args.conversations, args.turns, args.seed))
        print(f"  {name}: done", flush=True)
    print(render(rows, args.markdown))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=24)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

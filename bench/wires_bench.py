"""What each wire adds: a request through the proxy vs the same request sent straight to the
simulator (docs/benchmarks.md, "Wires: added latency"; docs/responses.md, docs/embeddings.md,
docs/gemini.md).

Run: PYTHONPATH=python .venv/bin/python bench/wires_bench.py [--requests 300] [--rounds 3]

Not a test (not in ``make test``). One process, one uvloop event loop: unpaced simulators (no
time to first token, every token at once, 24 tokens an answer), an in-process proxy, and one
keep-alive client sending one request at a time, so nothing queues and the difference between
the two paths is the proxy's own work (parse, route, translate both ways, relay) plus its extra
loopback hop. Per case: the median wall time of ``--requests`` requests after a warm-up, direct
and through the proxy, in interleaved rounds (the machine is shared; each round's pair sees the
same load), then the median over ``--rounds`` of each figure. A stream is timed to its last byte.

Cases (each proxied request and its direct twin ask the upstream for the same work):

- ``chat -> openai``: Chat Completions, the proxy's own shape (the reference row);
- ``responses -> openai``: the Responses API translated to chat and back (JSON, stream);
- ``chat -> gemini``: the Gemini wire, request and answer translated (JSON, stream), against a
  direct ``generateContent`` / ``streamGenerateContent?alt=sse``;
- ``messages -> gemini``: an Anthropic-SDK request to a Gemini candidate (both translations);
- ``chat -> openai_responses`` / ``responses -> openai_responses``: the Responses API upstream
  wire (JSON, stream), against a direct ``POST /responses`` asking the same;
- ``embeddings -> openai`` / ``-> gemini``: 16 texts (base64 out of the proxy; floats from
  Gemini, encoded by the proxy), against a direct call with the same batch.
"""

from __future__ import annotations

import argparse
import statistics
import string
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import uvloop

from edgeproxy.policy import load_policy_text
from edgeproxy.server.runner import ProxyServer
from edgeproxy.sim import SimCluster, SimConfig
from edgeproxy.telemetry.process import Telemetry

POLICY = """
version: 1
defaults:
  timeouts: {connect: 2s, first_token: 10s, idle: 10s, response: 10s, total: 30s}
health_check: {enabled: false}
providers:
  oai:
    kind: openai
    api_key: sk-bench
    regions: {main: {base_url: "$oai"}}
    models:
      gpt: {}
      emb: {upstream_name: text-embedding-3-small, dimensions: 256}
  gem:
    kind: gemini
    api_key: sk-bench
    regions: {main: {base_url: "$gem"}}
    models:
      flash: {upstream_name: gemini-2.5-flash}
      gemb: {upstream_name: gemini-embedding-001, dimensions: 256}
  resp:
    kind: openai_responses
    api_key: sk-bench
    regions: {main: {base_url: "$resp"}}
    models:
      pro: {upstream_name: o3-pro}
routes:
  gpt: {chain: [oai/main/gpt]}
  pro: {chain: [resp/main/pro]}
  flash: {chain: [gem/main/flash]}
  emb: {chain: [oai/main/emb]}
  gemb: {chain: [gem/main/gemb]}
"""
HI = "Say something about edge proxies."
TEXTS = [f"document {i}: the edge proxy keeps every request moving" for i in range(16)]
KEY = {"Authorization": "Bearer sk-bench"}
GKEY = {"x-goog-api-key": "sk-bench"}
ANTHROPIC = {"anthropic-version": "2023-06-01"}
GEMINI_ASK = {"contents": [{"role": "user", "parts": [{"text": HI}]}]}


@dataclass(frozen=True)
class Call:
    path: str  # under the proxy's or the sim's base URL
    body: dict[str, Any]
    headers: dict[str, str]
    stream: bool = False


def cases() -> dict[str, tuple[Call, Call]]:
    """Case -> (through the proxy, straight to the simulator)."""
    chat = {"model": "gpt", "messages": [{"role": "user", "content": HI}]}
    chat_stream = {**chat, "stream": True}
    flash = {"model": "flash", "messages": [{"role": "user", "content": HI}]}
    pro = {"model": "pro", "messages": [{"role": "user", "content": HI}]}
    pro_direct = {
        "model": "o3-pro",
        "input": [{"type": "message", "role": "user", "content": HI}],
        "store": False,
    }
    return {
        "chat -> openai (json)": (
            Call("proxy/v1/chat/completions", chat, {}),
            Call("oai/chat/completions", chat, KEY),
        ),
        "chat -> openai (stream)": (
            Call("proxy/v1/chat/completions", chat_stream, {}, True),
            Call("oai/chat/completions", chat_stream, KEY, True),
        ),
        "responses -> openai (json)": (
            Call("proxy/v1/responses", {"model": "gpt", "input": HI}, {}),
            Call("oai/chat/completions", chat, KEY),
        ),
        "responses -> openai (stream)": (
            Call("proxy/v1/responses", {"model": "gpt", "input": HI, "stream": True}, {}, True),
            Call(
                "oai/chat/completions",
                {**chat_stream, "stream_options": {"include_usage": True}},
                KEY,
                True,
            ),
        ),
        "chat -> gemini (json)": (
            Call("proxy/v1/chat/completions", flash, {}),
            Call("gem/models/gemini-2.5-flash:generateContent", GEMINI_ASK, GKEY),
        ),
        "chat -> gemini (stream)": (
            Call("proxy/v1/chat/completions", {**flash, "stream": True}, {}, True),
            Call(
                "gem/models/gemini-2.5-flash:streamGenerateContent?alt=sse", GEMINI_ASK, GKEY, True
            ),
        ),
        "messages -> gemini (stream)": (
            Call(
                "proxy/v1/messages",
                {
                    "model": "flash",
                    "max_tokens": 64,
                    "stream": True,
                    "messages": [{"role": "user", "content": HI}],
                },
                ANTHROPIC,
                True,
            ),
            Call(
                "gem/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                {**GEMINI_ASK, "generationConfig": {"maxOutputTokens": 64}},
                GKEY,
                True,
            ),
        ),
        "chat -> openai_responses (json)": (
            Call("proxy/v1/chat/completions", pro, {}),
            Call("resp/responses", pro_direct, KEY),
        ),
        "chat -> openai_responses (stream)": (
            Call("proxy/v1/chat/completions", {**pro, "stream": True}, {}, True),
            Call("resp/responses", {**pro_direct, "stream": True}, KEY, True),
        ),
        "responses -> openai_responses (json)": (
            Call("proxy/v1/responses", {"model": "pro", "input": HI}, {}),
            Call("resp/responses", pro_direct, KEY),
        ),
        "responses -> openai_responses (stream)": (
            Call("proxy/v1/responses", {"model": "pro", "input": HI, "stream": True}, {}, True),
            Call("resp/responses", {**pro_direct, "stream": True}, KEY, True),
        ),
        "embeddings -> openai (16 texts)": (
            Call(
                "proxy/v1/embeddings",
                {"model": "emb", "input": TEXTS, "encoding_format": "base64"},
                {},
            ),
            Call(
                "oai/embeddings",
                {
                    "model": "text-embedding-3-small",
                    "input": TEXTS,
                    "encoding_format": "base64",
                    "dimensions": 256,
                },
                KEY,
            ),
        ),
        "embeddings -> gemini (16 texts)": (
            Call(
                "proxy/v1/embeddings",
                {"model": "gemb", "input": TEXTS, "encoding_format": "base64"},
                {},
            ),
            Call(
                "gem/models/gemini-embedding-001:batchEmbedContents",
                {
                    "requests": [
                        {
                            "model": "models/gemini-embedding-001",
                            "content": {"parts": [{"text": t}]},
                            "outputDimensionality": 256,
                        }
                        for t in TEXTS
                    ]
                },
                GKEY,
            ),
        ),
    }


async def timed(session: aiohttp.ClientSession, bases: dict[str, str], call: Call) -> float:
    where, _, rest = call.path.partition("/")
    url = f"{bases[where]}/{rest}"
    start = time.perf_counter()
    async with session.post(
        url,
        data=orjson.dumps(call.body),
        headers={"Content-Type": "application/json", **call.headers},
    ) as response:
        await response.read()  # a stream: to its last byte
        if response.status != 200:
            raise RuntimeError(f"{call.path}: HTTP {response.status}")
    return time.perf_counter() - start


async def median_ms(
    session: aiohttp.ClientSession, bases: dict[str, str], call: Call, requests: int
) -> float:
    for _ in range(min(20, requests)):
        await timed(session, bases, call)  # warm-up: connections, encodings, caches
    return statistics.median([await timed(session, bases, call) for _ in range(requests)]) * 1000


async def main_async(args: argparse.Namespace) -> None:
    sims = [
        SimConfig(name="oai", ttft=0, tokens_per_second=0, embedding_dimensions=256),
        SimConfig(name="gem", ttft=0, tokens_per_second=0, wire="gemini", embedding_dimensions=256),
        SimConfig(name="resp", ttft=0, tokens_per_second=0, wire="openai_responses"),
    ]
    cluster = SimCluster(sims, control_port=0)
    await cluster.start()
    text = string.Template(POLICY).substitute({n: s.url for n, s in cluster.sims.items()})
    proxy = ProxyServer(
        load_policy_text(text, "wires-bench.yaml", {}), port=0, telemetry=Telemetry()
    )
    await proxy.start()
    bases = {"proxy": proxy.url, **{n: s.url for n, s in cluster.sims.items()}}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in cases()}
    try:
        connector = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(args.rounds):
                for name, (proxied, direct) in cases().items():
                    figures[name].append(
                        (
                            await median_ms(session, bases, direct, args.requests),
                            await median_ms(session, bases, proxied, args.requests),
                        )
                    )
    finally:
        await proxy.stop()
        await cluster.stop()
    print("| case | direct p50 | through the proxy p50 | added |")
    print("|---|---:|---:|---:|")
    for name, rows in figures.items():
        direct = statistics.median(r[0] for r in rows)
        proxied = statistics.median(r[1] for r in rows)
        print(f"| {name} | {direct:.2f} ms | {proxied:.2f} ms | +{proxied - direct:.2f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    uvloop.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

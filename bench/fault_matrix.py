"""The fault matrix: how the proxy behaves as its primary fails more and more often.

For each failure rate of the primary (1 %, 5 %, 20 %, 50 % of its answers are HTTP 503 or a
connection reset), a few thousand requests (half streamed) go through the real proxy to simulated
providers on loopback; the secondary is healthy. Reported per rate:

- success seen by the client, and the number of failed requests;
- amplification: upstream attempts per client request (sum of every simulator's requests);
- truncated successes: answers the client took as complete whose text differs from the full
  answer (must be 0), and duplicates: answers with text repeated (must be 0);
- latency p50/p99 of the requests that needed a failover.

A last row measures failover when the primary refuses connections outright (p99 of the added
time). Run: ``.venv/bin/python bench/fault_matrix.py [--requests N] [--concurrency C]``
(``make fault-matrix``). Not part of ``make test``: it is a measurement, not an assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
import uvloop

from edgeproxy.policy import load_policy_text
from edgeproxy.server.runner import ProxyServer
from edgeproxy.sim import Fault, SimCluster, SimConfig

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 5s, idle: 5s, response: 10s, total: 20s}
  max_attempts: 3
providers:
  primary:
    kind: openai
    regions: {a: {base_url: "%(primary)s"}}
    models: {m: {}}
  secondary:
    kind: openai
    regions: {b: {base_url: "%(secondary)s"}}
    models: {m: {}}
routes:
  m:
    chain: [primary/a/m, secondary/b/m]
"""

MESSAGES = [{"role": "user", "content": "Explain failover in one paragraph."}]


@dataclass
class Row:
    label: str
    requests: int = 0
    ok: int = 0
    truncated: int = 0
    duplicates: int = 0
    upstream_calls: int = 0
    failover_latencies: list[float] = field(default_factory=list)
    all_latencies: list[float] = field(default_factory=list)

    def line(self) -> str:
        success = 100.0 * self.ok / max(1, self.requests)
        amp = self.upstream_calls / max(1, self.requests)
        fl = sorted(self.failover_latencies)
        p50 = f"{1000 * statistics.median(fl):.1f}" if fl else "-"
        p99 = f"{1000 * fl[int(0.99 * (len(fl) - 1))]:.1f}" if fl else "-"
        every = f"{1000 * statistics.median(self.all_latencies):.1f}" if self.all_latencies else "-"
        return (
            f"| {self.label} | {self.requests} | {success:.2f} % | {self.requests - self.ok} | "
            f"{amp:.3f} | {self.truncated} | {self.duplicates} | {every} | {p50} | {p99} |"
        )


async def one_request(
    session: aiohttp.ClientSession, url: str, stream: bool, expected: str, row: Row
) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": stream}
    started = time.perf_counter()
    try:
        async with session.post(url, json=body) as response:
            raw = await response.read()
            attempts = int(response.headers.get("x-edgeproxy-attempts", "0"))
            status = response.status
    except aiohttp.ClientError:
        return
    elapsed = time.perf_counter() - started
    row.all_latencies.append(elapsed)
    if attempts > 1:
        row.failover_latencies.append(elapsed)
    if status != 200:
        return
    text, complete = _text_of(raw, stream)
    if not complete:
        return  # the client was told the answer is incomplete: not a success, not a lie
    row.ok += 1
    if text != expected:
        if expected and expected in text:
            row.duplicates += 1
        else:
            row.truncated += 1


def _text_of(raw: bytes, stream: bool) -> tuple[str, bool]:
    if not stream:
        return orjson.loads(raw)["choices"][0]["message"]["content"], True
    parts: list[str] = []
    done = False
    for line in raw.decode().splitlines():
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            continue
        chunk = orjson.loads(data)
        if "error" in chunk:
            return "".join(parts), False
        for choice in chunk.get("choices", []):
            parts.append(choice.get("delta", {}).get("content") or "")
    return "".join(parts), done


async def run_level(label: str, fault: Fault | None, requests: int, concurrency: int) -> Row:
    sims = [
        SimConfig(name="primary", ttft=0.0, tokens_per_second=0),
        SimConfig(name="secondary", ttft=0.0, tokens_per_second=0),
    ]
    async with SimCluster(sims, control_port=0) as cluster:
        urls = {n: s.url for n, s in cluster.sims.items()}
        policy = load_policy_text(POLICY % urls, "fault-matrix.yaml", {})
        proxy = ProxyServer(policy, port=0)
        await proxy.start()
        try:
            url = f"{proxy.url}/v1/chat/completions"
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.post(url, json={"model": "m", "messages": MESSAGES}) as r:
                    expected = (await r.json())["choices"][0]["message"]["content"]
                baseline = sum(s.stats.requests_total for s in cluster.sims.values())
                if fault is not None:
                    cluster.sims["primary"].set_fault(fault)
                row = Row(label)
                queue: asyncio.Queue[int] = asyncio.Queue()
                for i in range(requests):
                    queue.put_nowait(i)

                async def worker() -> None:
                    while not queue.empty():
                        i = queue.get_nowait()
                        row.requests += 1
                        await one_request(session, url, i % 2 == 1, expected, row)

                await asyncio.gather(*(worker() for _ in range(concurrency)))
                total = sum(s.stats.requests_total for s in cluster.sims.values())
                row.upstream_calls = total - baseline
                return row
        finally:
            await proxy.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    levels: list[tuple[str, Fault | None]] = [("healthy", None)]
    for rate in (0.01, 0.05, 0.20, 0.50):
        levels.append((f"{rate:.0%} HTTP 503", Fault(mode="status", status=503, rate=rate)))
        levels.append((f"{rate:.0%} reset", Fault(mode="reset", rate=rate)))
    levels.append(("primary refuses", Fault(mode="refuse")))
    print(
        "| primary fault | requests | client success | failed | upstream attempts/request | "
        "truncated successes | duplicates | all p50 ms | failover p50 ms | failover p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, fault in levels:
        row = await run_level(label, fault, args.requests, args.concurrency)
        print(row.line(), flush=True)


if __name__ == "__main__":
    uvloop.run(main())

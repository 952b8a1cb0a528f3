"""The fault matrix: how the proxy behaves as its primary fails more and more often.

The sweep: the primary answers a share of its requests (0, 10, ..., 100 %) with HTTP 503 while
the secondary is healthy; requests (half of them streamed) go through the real proxy, on its
default resilience settings, to simulated providers on loopback. Then a few more rows: the
primary resetting connections, refusing them, and every candidate down (once with the default
breakers, once with the breakers held closed so the retry budget alone bounds the load).
Reported per row:

- requests served to the client, and the ones that failed;
- upstream attempts per client request (the simulators' own request counts) against its bound:
  1 + failure rate + 0.05 with a healthy fallback; with everything down, what the retry budget
  allows over the run, 1 + ratio + (floor x (run time + window) + concurrency) / requests (the
  concurrency term: the requests already in flight when the outage starts may each fail over
  once, for free, before the fallback has failed once and so counts as failing);
- truncated successes (an answer the client took as complete whose text differs from the full
  answer: must be 0) and duplicates (text repeated: must be 0);
- latency p50 of every request, p99 of the requests that needed more than one attempt.

Run: ``.venv/bin/python bench/fault_matrix.py [--requests N] [--concurrency C] [--step P]``
(``make fault-matrix``). A measurement, not a test: not part of ``make test``, and the latencies
depend on the machine (the client, the proxy and the simulators share one process).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
import uvloop

from edgeproxy.policy import load_policy_text
from edgeproxy.server.runner import ProxyServer
from edgeproxy.sim import Fault, SimCluster, SimConfig
from edgeproxy.snapshot import RetryBudgetSettings

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 5s, idle: 5s, response: 10s, total: 20s}
%(extra)s
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

# Breakers that never open: the retry budget alone stands between an outage and a storm.
BREAKERS_HELD_CLOSED = (
    "outlier_detection: {consecutive_failures: 1000000, failure_percentage_threshold: 100, "
    "failure_percentage_request_volume: 1000000}"
)

MESSAGES = [{"role": "user", "content": "Explain failover in one paragraph."}]


@dataclass
class Level:
    label: str
    primary: Fault | None = None
    secondary: Fault | None = None
    extra: str = ""  # policy lines
    failure_rate: float | None = None  # the primary's, when a healthy fallback bounds attempts


@dataclass
class Row:
    level: Level
    concurrency: int
    requests: int = 0
    ok: int = 0
    truncated: int = 0
    duplicates: int = 0
    upstream_calls: int = 0
    seconds: float = 0.0
    failover_latencies: list[float] = field(default_factory=list)
    all_latencies: list[float] = field(default_factory=list)

    def bound(self) -> float:
        if self.level.failure_rate is not None:
            return 1 + self.level.failure_rate + 0.05
        b = RetryBudgetSettings()
        floor = b.min_retries_per_second * (self.seconds + b.window)
        return 1 + b.ratio + (floor + self.concurrency) / max(1, self.requests)

    def line(self) -> str:
        amp = self.upstream_calls / max(1, self.requests)
        bound = self.bound()
        fl = sorted(self.failover_latencies)
        p99 = f"{1000 * fl[int(0.99 * (len(fl) - 1))]:.1f}" if fl else "-"
        every = f"{1000 * statistics.median(self.all_latencies):.1f}" if self.all_latencies else "-"
        return (
            f"| {self.level.label} | {self.requests} | {self.ok} | {self.requests - self.ok} | "
            f"{amp:.3f} | {bound:.3f} {'yes' if amp <= bound else '**no**'} | "
            f"{self.truncated} | {self.duplicates} | {every} | {p99} |"
        )


HEADER = (
    "| primary fault | requests | served | failed | upstream attempts/request | "
    "bound, within? | truncated successes | duplicates | all p50 ms | failover p99 ms |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
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


async def run_level(level: Level, requests: int, concurrency: int) -> Row:
    sims = [
        SimConfig(name="primary", ttft=0.0, tokens_per_second=0),
        SimConfig(name="secondary", ttft=0.0, tokens_per_second=0),
    ]
    async with SimCluster(sims, control_port=0) as cluster:
        urls = {n: s.url for n, s in cluster.sims.items()}
        policy = load_policy_text(POLICY % {**urls, "extra": level.extra}, "fault-matrix.yaml", {})
        proxy = ProxyServer(policy, port=0)
        await proxy.start()
        try:
            url = f"{proxy.url}/v1/chat/completions"
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.post(url, json={"model": "m", "messages": MESSAGES}) as r:
                    expected = (await r.json())["choices"][0]["message"]["content"]
                baseline = sum(s.stats.requests_total for s in cluster.sims.values())
                if level.primary is not None:
                    cluster.sims["primary"].set_fault(level.primary)
                if level.secondary is not None:
                    cluster.sims["secondary"].set_fault(level.secondary)
                row = Row(level, concurrency)
                queue: asyncio.Queue[int] = asyncio.Queue()
                for i in range(requests):
                    queue.put_nowait(i)

                async def worker() -> None:
                    while not queue.empty():
                        i = queue.get_nowait()
                        row.requests += 1
                        await one_request(session, url, i % 2 == 1, expected, row)

                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                row.seconds = time.perf_counter() - started
                total = sum(s.stats.requests_total for s in cluster.sims.values())
                row.upstream_calls = total - baseline
                return row
        finally:
            await proxy.stop()


def levels(step: int) -> list[Level]:
    sweep = [
        Level(
            f"{pct}% HTTP 503",
            Fault(mode="status", status=503, rate=pct / 100) if pct else None,
            failure_rate=pct / 100,
        )
        for pct in range(0, 101, step)
    ]
    down = Fault(mode="status", status=503)
    return [
        *sweep,
        Level("30% reset", Fault(mode="reset", rate=0.3), failure_rate=0.3),
        Level("70% reset", Fault(mode="reset", rate=0.7), failure_rate=0.7),
        Level("primary refuses", Fault(mode="refuse"), failure_rate=1.0),
        Level("both down (default breakers)", down, down),
        Level("both down, breakers held closed", down, down, extra=BREAKERS_HELD_CLOSED),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--step", type=int, default=10, help="percent between sweep levels")
    args = parser.parse_args()
    # The table is the output. The proxy's own warnings (a breaker opening, many times a run)
    # are what its rows count; unconfigured, Python would print each bare between the rows.
    logging.getLogger("edgeproxy").setLevel(logging.ERROR)
    print(HEADER)
    for level in levels(args.step):
        row = await run_level(level, args.requests, args.concurrency)
        print(row.line(), flush=True)


if __name__ == "__main__":
    uvloop.run(main())

"""The fleet tier's benchmark (docs/fleet.md): what Redis costs a request, and what it buys when a
region dies.

1. **Added latency**, one run: three ``edgeproxy serve`` processes in front of the same instant
   simulator, each with key auth, a key RPM and a key USD budget: ``off`` (no keys, no limits:
   the baseline), ``local`` (the SQLite store, counters in the process) and ``fleet`` (Redis:
   the key's counters and budget in Lua on a local redis-server, the shared cache level on).
   Requests go round-robin to the three, one at a time, so the machine's noise hits all alike;
   the client's latency is measured per request (p50, p90, p99).
2. **A dead region**: three sidecars under uneven load (a busy pod, a quiet one, an idle one:
   20, 2 and 0.5 requests a second), probes every 10 s as by default; the primary region dies.
   Measured: when each sidecar stops sending to it (its breaker opens: polled every 20 ms on
   ``/admin/status``) and how many requests reached the dead region, with the fleet tier on and
   off (each sidecar on its own).

    python bench/fleet_bench.py [--requests 600] [--seconds 25]

Needs Debian's redis-server (``make fleet-bench`` installs it). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the same fleet helpers the tests use

from edgeproxy.sim import SimCluster, SimConfig  # noqa: E402
from fixtures.fleetkit import ServeProcess, keys_cli  # noqa: E402
from fixtures.redis import RedisServer  # noqa: E402
from harness import LoopThread  # noqa: E402

LATENCY_POLICY = """
version: 1
KEYS
FLEET
providers:
  alpha:
    kind: openai
    api_key: sk-bench
    regions:
      one: {base_url: "URL"}
    models:
      m: {price: {input: 0.15, output: 0.6}}
routes:
  m: {chain: [alpha/one/m]}
"""

OUTAGE_POLICY = """
version: 1
FLEET
health_check: {interval: 10s}
providers:
  alpha:
    kind: openai
    api_key: sk-bench
    regions:
      one: {base_url: "ONE"}
      two: {base_url: "TWO"}
    models:
      m: {}
routes:
  m: {chain: [alpha/one/m, alpha/two/m]}
"""
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello bench"}], "max_tokens": 16}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def latency(loop: LoopThread, work: Path, redis: RedisServer, requests: int) -> list[str]:
    cluster = SimCluster([SimConfig(name="one", ttft=0.0, tokens_per_second=0)], control_port=0)
    loop.run(cluster.start())
    url = cluster.sims["one"].url
    variants = {
        "off": ("", ""),
        "local": (f'keys: {{auth: true, store: "{work}/keys.sqlite"}}', ""),
        "fleet": ("keys: {auth: true}", f'fleet: {{redis: "{redis.url}"}}'),
    }
    sidecars: dict[str, ServeProcess] = {}
    keys: dict[str, str] = {}
    try:
        for name, (keys_block, fleet_block) in variants.items():
            policy = work / f"latency-{name}.yaml"
            text = LATENCY_POLICY.replace("KEYS", keys_block).replace("FLEET", fleet_block)
            policy.write_text(text.replace("URL", url))
            if keys_block:
                made = keys_cli(
                    policy, "create", "--name", f"bench-{name}", "--rpm", "1000000",
                    "--budget", "1000000usd/day",
                )  # fmt: skip
                keys[name] = made["key"]
            sidecars[name] = ServeProcess(policy)
        clients = {
            name: httpx.Client(
                base_url=s.url,
                headers={"Authorization": f"Bearer {keys.get(name, 'sk-none')}"},
                timeout=10,
            )
            for name, s in sidecars.items()
        }
        for name, client in clients.items():  # warm up: connections, tokenizers, scripts
            for _ in range(30):
                response = client.post("/v1/chat/completions", json=BODY)
                assert response.status_code == 200, (name, response.text)
        times: dict[str, list[float]] = {name: [] for name in clients}
        for _, name in zip(range(requests * len(clients)), itertools.cycle(clients), strict=False):
            start = time.perf_counter()
            clients[name].post("/v1/chat/completions", json=BODY).raise_for_status()
            times[name].append((time.perf_counter() - start) * 1000)
        base = statistics.median(times["off"])
        rows = [
            "| sidecar | p50 ms | p90 ms | p99 ms | added p50 vs off |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, values in times.items():
            rows.append(
                f"| {name} | {statistics.median(values):.2f} | {percentile(values, 90):.2f} | "
                f"{percentile(values, 99):.2f} | {statistics.median(values) - base:+.2f} |"
            )
        added = statistics.median(times["fleet"]) - statistics.median(times["local"])
        rows.append("")
        rows.append(f"fleet vs local (Redis on vs off), p50: {added:+.2f} ms per request")
        for client in clients.values():
            client.close()
        return rows
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()
        loop.run(cluster.stop())


class Load:
    """One client thread per sidecar, each at its own rate, until stopped."""

    def __init__(self, sidecars: list[ServeProcess], rates: list[float]) -> None:
        self.stop = threading.Event()
        self.failed = 0
        self.threads = [
            threading.Thread(target=self._run, args=(s.url, r), daemon=True)
            for s, r in zip(sidecars, rates, strict=True)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, url: str, rate: float) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                response = client.post("/v1/chat/completions", json=BODY)
                if response.status_code != 200:
                    self.failed += 1
                next_at += 1 / rate
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


def outage(
    loop: LoopThread, work: Path, redis: RedisServer | None, seconds: float
) -> dict[str, Any]:
    cluster = SimCluster(
        [SimConfig(name=n, ttft=0.0, tokens_per_second=0) for n in ("one", "two")], control_port=0
    )
    loop.run(cluster.start())
    control = httpx.Client(base_url=cluster.control_url, timeout=10)
    fleet = f'fleet: {{redis: "{redis.url}", prefix: "bench-{time.time_ns()}"}}' if redis else ""
    policy = work / f"outage-{'fleet' if redis else 'alone'}.yaml"
    policy.write_text(
        OUTAGE_POLICY.replace("FLEET", fleet)
        .replace("ONE", cluster.sims["one"].url)
        .replace("TWO", cluster.sims["two"].url)
    )
    sidecars = [ServeProcess(policy) for _ in range(3)]
    load: Load | None = None
    try:
        load = Load(sidecars, [20.0, 2.0, 0.5])
        time.sleep(2.0)  # steady state
        before = int(control.get("/sims/one").json()["stats"]["requests_total"])
        dead_at = time.monotonic()
        control.put("/sims/one/fault", json={"mode": "status", "status": 500}).raise_for_status()
        opened: list[float | None] = [None, None, None]
        while time.monotonic() - dead_at < seconds and None in opened:
            for i, sidecar in enumerate(sidecars):
                if opened[i] is None and sidecar.breaker("alpha/one/m")["state"] == "open":
                    opened[i] = time.monotonic() - dead_at
            time.sleep(0.02)
        after = int(control.get("/sims/one").json()["stats"]["requests_total"])
        load.end()
        return {"opened": opened, "dead_requests": after - before, "failed": load.failed}
    finally:
        if load is not None:
            load.end()
        for sidecar in sidecars:
            sidecar.stop()
        control.close()
        loop.run(cluster.stop())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="per sidecar, latency run")
    parser.add_argument("--seconds", type=float, default=25.0, help="longest outage watched")
    args = parser.parse_args()
    loop = LoopThread()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        redis = RedisServer(work / "redis" if (work / "redis").mkdir() is None else work)
        try:
            print("## Added latency per request (one run, round-robin, sequential)\n")
            print("\n".join(latency(loop, work, redis, args.requests)))
            print("\n## A dead region: when each sidecar stops sending to it\n")
            print("| fleet tier | busy (20/s) | quiet (2/s) | idle (0.5/s) | all stopped | "
                  "requests to the dead region | failed requests |")  # fmt: skip
            print("|---|---:|---:|---:|---:|---:|---:|")
            for label, server in (("off (each sidecar alone)", None), ("on (Redis)", redis)):
                found = outage(loop, work, server, args.seconds)
                cells = [
                    f"{t:.2f} s" if t is not None else f"> {args.seconds:g} s"
                    for t in found["opened"]
                ]
                known = [t for t in found["opened"] if t is not None]
                worst = f"{max(known):.2f} s" if len(known) == 3 else f"> {args.seconds:g} s"
                print(
                    f"| {label} | {' | '.join(cells)} | {worst} | {found['dead_requests']} | "
                    f"{found['failed']} |"
                )
        finally:
            redis.stop()
            loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak: a steady open-loop rate of mixed chat (70% streams) through the proxy for a long time,
with simulated faults rotating on the first two regions, watching the proxy for leaks.

    python -m loadtests.soak --minutes 30 [--rate 40]
    make soak SOAK_MINUTES=30

Every few seconds it samples the proxy process: RSS and threads (/proc/PID/stat), open fds
(/proc/PID/fd), CPU time, and the asyncio task count if the proxy exposes one (GET
/admin/debug/runtime with an ``asyncio_tasks`` field: proposed, not there yet). It reports the
RSS slope after warm-up (target <= 5 MiB/h) and whether the open fds come back to their
baseline once the load stops (after the upstream keep-alive timeout). Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from bench.procutil import REPO, fd_kinds, sample

from loadtests.stack import Stack, control, start_stack

RESULTS = Path(__file__).resolve().parent / "results"
FAULTS: list[dict[str, Any] | None] = [
    {"mode": "status", "status": 503, "rate": 0.3},
    None,
    {"mode": "status", "status": 429, "retry_after": 1, "rate": 0.3},
    {"mode": "reset", "rate": 0.2},
    None,
    {"mode": "cut", "after_tokens": 3, "rate": 0.1},
    {"mode": "slow_first_token", "ttft": 3, "rate": 0.1},
    {"mode": "malformed", "after_tokens": 2, "rate": 0.1},
]
TARGETS = ["alpha-us-east", "alpha-eu-west"]
# Tight timeouts so hung or slow upstreams are given up on quickly during the soak.
OVERRIDES = {
    "defaults": {
        "timeouts": {
            "connect": "1s",
            "first_token": "2s",
            "idle": "2s",
            "response": "5s",
            "total": "10s",
        }
    }
}


class Load:
    def __init__(self, url: str, rate: float) -> None:
        self.url = url + "/v1/chat/completions"
        self.rate = rate
        self.counts: dict[str, int] = {"ok": 0, "failed": 0, "stream_ok": 0, "stream_failed": 0}
        self.in_flight = 0
        self.stop = asyncio.Event()
        self.rng = random.Random(7)

    async def one(self, session: aiohttp.ClientSession) -> None:
        stream = self.rng.random() < 0.7
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "soak"}],
            "max_tokens": 12,
            "stream": stream,
        }
        self.in_flight += 1
        ok = False
        try:
            async with session.post(self.url, json=body) as resp:
                data = await resp.read()
                ok = resp.status == 200 and (not stream or data.endswith(b"data: [DONE]\n\n"))
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        finally:
            self.in_flight -= 1
        key = ("stream_" if stream else "") + ("ok" if ok else "failed")
        self.counts[key] += 1

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks: set[asyncio.Task[None]] = set()
            interval = 1.0 / self.rate
            next_at = time.monotonic()
            while not self.stop.is_set():
                if self.in_flight < 500:
                    t = asyncio.create_task(self.one(session))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if tasks:
                await asyncio.wait(tasks, timeout=30)


def task_count(url: str) -> int | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/admin/debug/runtime", timeout=2) as resp:
            value = json.loads(resp.read()).get("asyncio_tasks")
            return int(value) if value is not None else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


async def soak(
    stack: Stack, minutes: float, rate: float, every: float, out: Path
) -> dict[str, Any]:
    assert stack.proxy is not None
    pid = stack.proxy.pid
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def snap(phase: str) -> dict[str, Any]:
        s = sample(pid)
        row = {
            "t": round(time.monotonic() - t0, 1),
            "phase": phase,
            "rss_mib": round(s.rss_bytes / 2**20, 2),
            "fds": s.fds,
            "threads": s.threads,
            "cpu_s": round(s.cpu_seconds, 2),
            "asyncio_tasks": task_count(stack.proxy_url),
        }
        rows.append(row)
        return row

    baseline = snap("baseline")
    fds_before = fd_kinds(pid)
    load = Load(stack.proxy_url, rate)
    runner = asyncio.create_task(load.run())
    duration = minutes * 60
    fault_every = 20.0
    next_fault = 0.0
    step = 0
    faults_set: list[str] = []
    while time.monotonic() - t0 < duration:
        now = time.monotonic() - t0
        if now >= next_fault:
            for i, target in enumerate(TARGETS):
                fault = FAULTS[(step + 3 * i) % len(FAULTS)]
                if fault is None:
                    await asyncio.to_thread(
                        control, stack.control_url, "DELETE", f"/sims/{target}/fault"
                    )
                else:
                    await asyncio.to_thread(
                        control, stack.control_url, "PUT", f"/sims/{target}/fault", fault
                    )
                faults_set.append(f"t={now:.0f}s {target}: {fault['mode'] if fault else 'healed'}")
            step += 1
            next_fault += fault_every
        row = await asyncio.to_thread(snap, "load")
        print(
            f"soak t={row['t']:>6}s rss={row['rss_mib']} MiB fds={row['fds']} "
            f"in_flight={load.in_flight} {load.counts}",
            flush=True,
        )
        await asyncio.sleep(every)
    load.stop.set()
    await runner
    for target in TARGETS:
        await asyncio.to_thread(control, stack.control_url, "DELETE", f"/sims/{target}/fault")
    stopped = time.monotonic()
    # The pool keeps idle upstream connections for its keep-alive timeout (30 s): wait it out.
    while time.monotonic() - stopped < 40:
        await asyncio.sleep(every)
        await asyncio.to_thread(snap, "after")
    fds_after = fd_kinds(pid)
    return {
        "rows": rows,
        "baseline": baseline,
        "counts": load.counts,
        "faults": faults_set,
        "fds_before": fds_before,
        "fds_after": fds_after,
    }


def slope_mib_per_hour(rows: list[dict[str, Any]]) -> float:
    if len(rows) < 3:
        return float("nan")
    xs = [r["t"] for r in rows]
    ys = [r["rss_mib"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 3600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second (open loop)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds excluded from the slope"
    )
    args = parser.parse_args(argv)
    out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    stack = start_stack(out, ttft=0.05, tps=100.0, overrides=OVERRIDES)
    print(f"soak: {args.minutes} min at {args.rate} req/s; results in {out.relative_to(REPO)}")
    try:
        result = asyncio.run(soak(stack, args.minutes, args.rate, args.every, out))
    finally:
        stack.stop()
    rows = result["rows"]
    with open(out / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    warmup = args.warmup if args.warmup is not None else min(300.0, max(60.0, args.minutes * 6))
    load_rows = [r for r in rows if r["phase"] == "load"]
    steady = [r for r in load_rows if r["t"] >= warmup]
    slope = slope_mib_per_hour(steady)
    base, final = result["baseline"], rows[-1]
    fds_back = final["fds"] <= base["fds"] + 2
    tasks = [r["asyncio_tasks"] for r in rows if r["asyncio_tasks"] is not None]
    counts = result["counts"]
    total = sum(counts.values())
    _plot(rows, out / "soak.png")
    lines = [
        f"# Soak — {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"{args.minutes:g} min at {args.rate:g} req/s (open loop, 70% streams, max_tokens 12), "
        f"faults rotating every 20 s on {', '.join(TARGETS)} (503, 429, reset, cut, slow first "
        "token, malformed, healthy). The machine is shared and noisy.",
        f"Results: `{out.relative_to(REPO)}/` (samples.csv, soak.png, proxy.log, sim.log).",
        "",
        f"- requests: {total} ({counts}); failure ratio "
        f"{(counts['failed'] + counts['stream_failed']) / max(total, 1):.2%} (cut and malformed "
        "streams after the first token are expected to fail: the commit point)",
        f"- RSS: {base['rss_mib']} MiB at start, {max(r['rss_mib'] for r in rows)} MiB peak, "
        f"{final['rss_mib']} MiB at the end",
        f"- RSS slope after {warmup:.0f} s of warm-up: **{slope:+.2f} MiB/h** over {len(steady)} "
        f"samples (target <= 5 MiB/h){'' if len(steady) >= 10 else ' — too few samples to mean much; run longer'}",
        f"- open fds: {base['fds']} before load, {max(r['fds'] for r in rows)} peak, "
        f"{final['fds']} 40 s after the load stopped: "
        + ("**back to baseline**" if fds_back else "**NOT back to baseline**"),
        "- fds that stayed open (kind: before -> after): "
        + (
            ", ".join(
                f"{k}: {result['fds_before'].get(k, 0)} -> {v}"
                for k, v in sorted(result["fds_after"].items())
                if v != result["fds_before"].get(k, 0)
            )
            or "none"
        ),
        f"- threads: {base['threads']} -> {final['threads']}",
        "- asyncio tasks: "
        + (
            f"{tasks[0]} -> {tasks[-1]} (peak {max(tasks)})"
            if tasks
            else "n/a (the proxy has no task-count endpoint yet; proposed: GET "
            '/admin/debug/runtime -> {"asyncio_tasks": len(asyncio.all_tasks())})'
        ),
        "",
        "Checks:",
        "",
        f"- [{'x' if slope <= 5 else ' '}] RSS slope <= 5 MiB/h",
        f"- [{'x' if fds_back else ' '}] fds back to baseline after load",
        "",
        "![soak](soak.png)",
        "",
    ]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text)
    (RESULTS / "latest.md").write_text(text.replace("](soak.png)", f"]({out.name}/soak.png)"))
    (RESULTS / "latest-soak.md").write_text(text.replace("](soak.png)", f"]({out.name}/soak.png)"))
    print(text)
    return 0 if slope <= 5 and fds_back else 1


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ts = [r["t"] for r in rows]
    ax.plot(ts, [r["rss_mib"] for r in rows], color="tab:blue", label="RSS (MiB)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax2 = ax.twinx()
    ax2.plot(ts, [r["fds"] for r in rows], color="tab:orange", label="open fds")
    ax2.set_ylabel("open fds")
    fig.legend(loc="upper left", fontsize=8)
    ax.set_title("Proxy under soak")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

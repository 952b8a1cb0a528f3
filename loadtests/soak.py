"""Soak: a steady open-loop rate of mixed chat (70% streams) through the proxy for a long time,
with simulated faults rotating on the first two regions, watching the proxy for leaks.

    python -m loadtests.soak --minutes 30 [--rate 40] [--warmup 180] [--tracemalloc]
    make soak SOAK_MINUTES=30

Phases:

1. **idle**: the proxy has started and answered nothing yet. Its open fds (by kind) and asyncio
   tasks (by coroutine) here are the baseline the end of the run is compared with.
2. **warm-up** (``--warmup``; default 10% of the run, at least 60 s, at most 300 s): the load and
   the faults are on, but the samples are not used for the slope. The first requests allocate
   for good (token rank tables, compiled policy paths, connection buffers, the bounded cache and
   rolling windows filling up): RSS jumps by tens of MiB there, which is not a leak.
3. **load** (the rest of ``--minutes``): the RSS slope is the least-squares fit over these samples
   alone, in MiB/h (target <= 5). A window shorter than 10 minutes cannot resolve 5 MiB/h from
   allocator noise, so the check is reported *inconclusive* there instead of failed.
4. **drain**: the load stops and the faults are healed. The soak samples until the fds and tasks
   are back at the idle baseline, or ``--drain`` seconds pass (default 90: the upstream pool,
   ``Http1Pool``, keeps idle keep-alive connections for 30 s, and its reaper runs every 30 s and
   closes those idle longer than that, so one can live up to ~60 s). Whatever is still open above the baseline is shown by kind; idle
   keep-alive connections to the upstreams are allowed only up to the count the proxy's own pool
   reports idle (``upstream_pool.idle``): those are the pool working, not a leak. Anything else
   (CLOSE_WAIT sockets, files, pipes, ingress sockets) above the baseline fails the check. Tasks
   must be back at the baseline count; the proxy's fixed background tasks (prober, reload
   watcher) are running at idle already and are part of the baseline.

Every ``--every`` seconds it samples the proxy process: RSS, threads and CPU time
(/proc/PID/stat), open fds (/proc/PID/fd), and from ``GET /admin/debug/runtime`` the asyncio task
count (``asyncio_tasks``), ``allocated_blocks`` (Python's live memory blocks: a leak of Python
objects climbs there too, without the allocator's fragmentation noise) and the pool's idle
connections. With ``--tracemalloc`` the proxy runs with ``PYTHONTRACEMALLOC=1`` and the summary
lists the allocation sites that grew most between the end of the warm-up and the end of the drain
(the RSS then includes tracemalloc's own bookkeeping: use it to find a leak, not to measure one).
Exit status: 1 if a check fails, else 0 (also when the slope is inconclusive). Not part of
`make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
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
FAULT_EVERY = 20.0
SLOPE_TARGET = 5.0  # MiB/h
MIN_SLOPE_WINDOW = 600.0  # seconds of post-warm-up samples for a conclusive slope
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
        self.errors: collections.Counter[str] = collections.Counter()
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
        error: str | None = None
        try:
            async with session.post(self.url, json=body) as resp:
                data = await resp.read()
                error = classify(resp.status, data, stream)
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"client {type(exc).__name__}"
        finally:
            self.in_flight -= 1
        key = ("stream_" if stream else "") + ("ok" if error is None else "failed")
        self.counts[key] += 1
        if error is not None:
            self.errors[error] += 1

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


def classify(status: int, data: bytes, stream: bool) -> str | None:
    """None for a good answer, else the kind of error (status and error code, or stream end)."""
    if status != 200:
        return f"http {status} {_error_code(data)}"
    if not stream or data.endswith(b"data: [DONE]\n\n"):
        return None
    # A committed stream that failed ends with an in-band error event instead of [DONE].
    last = data.rstrip().rsplit(b"\n\n", 1)[-1].strip()
    if last.startswith(b"data: "):
        return f"stream error event {_error_code(last[6:])}"
    return "stream ended without [DONE]"


def _error_code(data: bytes) -> str:
    try:
        err = json.loads(data).get("error") or {}
        return str(err.get("code") or err.get("type") or "?")
    except (ValueError, AttributeError):
        return "?"


def runtime(url: str, query: str = "", timeout: float = 10.0) -> dict[str, Any] | None:
    req = urllib.request.Request(url + "/admin/debug/runtime" + query)
    token = os.environ.get("EDGEPROXY_ADMIN_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read())
            return data if isinstance(data, dict) else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


async def soak(
    stack: Stack,
    *,
    minutes: float,
    warmup: float,
    rate: float,
    every: float,
    drain: float,
    tracemalloc: bool,
) -> dict[str, Any]:
    assert stack.proxy is not None
    pid = stack.proxy.pid
    url = stack.proxy_url
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    last_runtime: dict[str, Any] = {}

    def snap(phase: str) -> dict[str, Any]:
        s = sample(pid)
        rt = runtime(url) or {}
        last_runtime.clear()
        last_runtime.update(rt)
        pool = rt.get("upstream_pool") or {}
        row = {
            "t": round(time.monotonic() - t0, 1),
            "phase": phase,
            "rss_mib": round(s.rss_bytes / 2**20, 2),
            "fds": s.fds,
            "threads": s.threads,
            "cpu_s": round(s.cpu_seconds, 2),
            "asyncio_tasks": rt.get("asyncio_tasks"),
            "allocated_blocks": rt.get("allocated_blocks"),
            "pool_idle": pool.get("idle"),
            "pool_in_use": pool.get("in_use"),
        }
        rows.append(row)
        return row

    # Idle baseline: let the proxy finish starting (first probes), then sample.
    await asyncio.sleep(every)
    idle = await asyncio.to_thread(snap, "idle")
    fds_before = fd_kinds(pid)
    tasks_before = dict(last_runtime.get("asyncio_tasks_by_coroutine") or {})
    print(f"soak idle: {idle}", flush=True)

    load = Load(url, rate)
    runner = asyncio.create_task(load.run())
    started = time.monotonic()
    duration = minutes * 60
    next_fault = 0.0
    step = 0
    faults_set: list[str] = []
    growth: list[dict[str, Any]] | None = None
    marked = False
    while (now := time.monotonic() - started) < duration:
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
            next_fault += FAULT_EVERY
        phase = "warmup" if now < warmup else "load"
        if tracemalloc and phase == "load" and not marked:
            # Reference snapshot at the end of the warm-up; compared with at the end of the load.
            # (A snapshot of a traced heap takes seconds: a long timeout.)
            await asyncio.to_thread(runtime, url, "?tracemalloc=top", 120.0)
            marked = True
        row = await asyncio.to_thread(snap, phase)
        print(
            f"soak t={row['t']:>7}s {phase:<6} rss={row['rss_mib']} MiB fds={row['fds']} "
            f"tasks={row['asyncio_tasks']} blocks={row['allocated_blocks']} "
            f"in_flight={load.in_flight} {load.counts}",
            flush=True,
        )
        await asyncio.sleep(every)
    load.stop.set()
    load_seconds = time.monotonic() - started
    await runner
    for target in TARGETS:
        await asyncio.to_thread(control, stack.control_url, "DELETE", f"/sims/{target}/fault")
    stopped = time.monotonic()
    drained_after: float | None = None
    while time.monotonic() - stopped < drain:
        await asyncio.sleep(every)
        row = await asyncio.to_thread(snap, "drain")
        print(
            f"soak drain +{time.monotonic() - stopped:.0f}s fds={row['fds']} "
            f"tasks={row['asyncio_tasks']} pool_idle={row['pool_idle']}",
            flush=True,
        )
        tasks_back = row["asyncio_tasks"] is None or row["asyncio_tasks"] <= (
            idle["asyncio_tasks"] or 0
        )
        if row["fds"] <= idle["fds"] and tasks_back:
            drained_after = time.monotonic() - stopped
            break
    fds_after = fd_kinds(pid)
    if tracemalloc and marked:
        # After the drain, so objects of requests in flight do not count as growth.
        growth = (
            ((await asyncio.to_thread(runtime, url, "?tracemalloc=top", 120.0)) or {})
            .get("tracemalloc", {})
            .get("top_growth")
        )
    return {
        "rows": rows,
        "idle": idle,
        "load_seconds": load_seconds,
        "counts": load.counts,
        "errors": dict(load.errors.most_common()),
        "faults": faults_set,
        "fds_before": fds_before,
        "fds_after": fds_after,
        "tasks_before": tasks_before,
        "tasks_after": dict(last_runtime.get("asyncio_tasks_by_coroutine") or {}),
        "pool_after": last_runtime.get("upstream_pool"),
        "drained_after": drained_after,
        "tracemalloc_growth": growth,
    }


def slope_per_hour(rows: list[dict[str, Any]], field: str) -> float:
    """Least-squares slope of ``field`` over the rows' times, per hour."""
    points = [(r["t"], r[field]) for r in rows if r.get(field) is not None]
    if len(points) < 3:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / var * 3600


def fd_verdict(
    before: dict[str, int], after: dict[str, int], pool_idle: int | None, upstream_ports: set[int]
) -> tuple[bool, list[str]]:
    """Whether the fds above the idle baseline are all idle upstream keep-alive connections the
    pool reports, and a line per kind that changed."""
    lines: list[str] = []
    upstream_extra = 0
    other_extra = 0
    for kind in sorted(set(before) | set(after)):
        b, a = before.get(kind, 0), after.get(kind, 0)
        if a == b:
            continue
        lines.append(f"{kind}: {b} -> {a}")
        if a < b:
            continue
        port = kind.rsplit("remote:", 1)[-1] if kind.startswith("tcp established") else ""
        if port.isdigit() and int(port) in upstream_ports:
            upstream_extra += a - b
        else:
            other_extra += a - b
    ok = other_extra == 0 and upstream_extra <= (pool_idle or 0)
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="load duration, warm-up incl.")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second (open loop)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of load excluded from the slope (default 10%% of the run, 60..300)",
    )
    parser.add_argument(
        "--drain", type=float, default=90.0, help="max seconds to wait for fds/tasks after load"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the proxy with PYTHONTRACEMALLOC=1 and report the top allocation growth",
    )
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(300.0, max(60.0, args.minutes * 6))
    out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    proxy_env = {"PYTHONTRACEMALLOC": "1"} if args.tracemalloc else {}
    stack = start_stack(out, ttft=0.05, tps=100.0, overrides=OVERRIDES, proxy_env=proxy_env)
    print(
        f"soak: {args.minutes:g} min at {args.rate:g} req/s, {warmup:g} s warm-up; "
        f"results in {out.relative_to(REPO)}",
        flush=True,
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    upstream_ports = set(stack.sim_ports)
    try:
        result = asyncio.run(
            soak(
                stack,
                minutes=args.minutes,
                warmup=warmup,
                rate=args.rate,
                every=args.every,
                drain=args.drain,
                tracemalloc=args.tracemalloc,
            )
        )
    finally:
        stack.stop()
    rows = result["rows"]
    with open(out / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _plot(rows, warmup, out / "soak.png")
    text, ok = summarize(args, warmup, started, out, result, upstream_ports)
    (out / "summary.md").write_text(text)
    linked = text.replace("](soak.png)", f"]({out.name}/soak.png)")
    (RESULTS / "latest-soak.md").write_text(linked)
    print(text)
    return 0 if ok else 1


def summarize(
    args: argparse.Namespace,
    warmup: float,
    started: str,
    out: Path,
    result: dict[str, Any],
    upstream_ports: set[int],
) -> tuple[str, bool]:
    rows = result["rows"]
    idle = result["idle"]
    warm = [r for r in rows if r["phase"] == "warmup"]
    steady = [r for r in rows if r["phase"] == "load"]
    under_load = warm + steady
    window = steady[-1]["t"] - steady[0]["t"] if len(steady) > 1 else 0.0
    slope = slope_per_hour(steady, "rss_mib")
    blocks_slope = slope_per_hour(steady, "allocated_blocks")
    conclusive = window >= MIN_SLOPE_WINDOW
    slope_ok = slope <= SLOPE_TARGET
    final = rows[-1]
    fds_ok, fd_lines = fd_verdict(
        result["fds_before"], result["fds_after"], final["pool_idle"], upstream_ports
    )
    tasks_ok = final["asyncio_tasks"] is not None and final["asyncio_tasks"] <= (
        idle["asyncio_tasks"] or 0
    )
    task_lines = [
        f"{kind}: {result['tasks_before'].get(kind, 0)} -> {n}"
        for kind in sorted(set(result["tasks_before"]) | set(result["tasks_after"]))
        if (n := result["tasks_after"].get(kind, 0)) != result["tasks_before"].get(kind, 0)
    ]
    counts = result["counts"]
    total = sum(counts.values())
    failed = counts["failed"] + counts["stream_failed"]
    seconds = result["load_seconds"]
    drained = result["drained_after"]

    def peak(field: str, rs: list[dict[str, Any]]) -> Any:
        vals = [r[field] for r in rs if r[field] is not None]
        return max(vals) if vals else None

    if conclusive:
        slope_check, slope_note = ("x" if slope_ok else " "), ""
    else:
        # Neither a pass nor a fail: the window is too short to tell either way.
        slope_check = "~"
        slope_note = (
            f" — inconclusive: {window:.0f} s of post-warm-up samples cannot resolve "
            f"{SLOPE_TARGET:g} MiB/h ({SLOPE_TARGET * window / 3600:.2f} MiB over the window) "
            "from allocator noise; run at least "
            f"{(MIN_SLOPE_WINDOW + warmup) / 60:.0f} minutes"
        )
    lines = [
        f"# Soak — {started}",
        "",
        f"`python -m loadtests.soak --minutes {args.minutes:g} --rate {args.rate:g}"
        f"{' --tracemalloc' if args.tracemalloc else ''}`: {seconds / 60:.1f} min of load at "
        f"{args.rate:g} req/s (open loop, 70% streams, max_tokens 12), the first {warmup:g} s "
        f"of it warm-up; faults rotating every {FAULT_EVERY:g} s on {', '.join(TARGETS)} (503, "
        "429, reset, cut, slow first token, malformed, healthy). The machine is shared and noisy.",
        f"Results: `{out.relative_to(REPO)}/` (samples.csv, soak.png, proxy.log, sim.log).",
        "",
        f"- requests: {total} ({total / max(seconds, 1):.1f}/s; {counts}); failure ratio "
        f"{failed / max(total, 1):.2%} (cut and malformed streams after the first token are "
        "expected to fail: the commit point)",
        "- errors by kind: "
        + (", ".join(f"{k}: {v}" for k, v in result["errors"].items()) or "none"),
        f"- RSS: {idle['rss_mib']} MiB idle, {warm[-1]['rss_mib'] if warm else '?'} MiB at the "
        f"end of the warm-up, {peak('rss_mib', steady)} MiB peak after it, "
        f"{steady[-1]['rss_mib'] if steady else '?'} MiB at the end of the load, "
        f"{final['rss_mib']} MiB after the drain",
        f"- RSS slope after the warm-up (least squares over {len(steady)} samples, "
        f"{window / 60:.1f} min): **{slope:+.2f} MiB/h** (target <= {SLOPE_TARGET:g})" + slope_note,
        f"- Python allocated blocks: {idle['allocated_blocks']} idle, "
        f"{steady[0]['allocated_blocks'] if steady else '?'} -> "
        f"{steady[-1]['allocated_blocks'] if steady else '?'} over the slope window "
        f"(slope {blocks_slope:+.0f} blocks/h), {final['allocated_blocks']} after the drain",
        f"- open fds: {idle['fds']} idle, {peak('fds', under_load)} peak under load, "
        f"{final['fds']} at the end of the drain "
        + (
            f"({drained:.0f} s after the load stopped: back to the baseline)"
            if drained is not None
            else f"({args.drain:g} s after the load stopped; the pool reports "
            f"{final['pool_idle']} idle upstream keep-alive connections)"
        ),
        "- fds by kind, idle -> after the drain: " + ("; ".join(fd_lines) or "no change"),
        f"- asyncio tasks: {idle['asyncio_tasks']} idle, {peak('asyncio_tasks', under_load)} "
        f"peak under load, {final['asyncio_tasks']} after the drain"
        + (f" (changed: {'; '.join(task_lines)})" if task_lines else ""),
        f"- threads: {idle['threads']} -> {final['threads']}",
    ]
    if result["tracemalloc_growth"]:
        lines += [
            "",
            "Allocation sites that grew most from the end of the warm-up to the end of the drain "
            "(tracemalloc):",
            "",
        ]
        lines += [
            f"- {g['site']}: {g['size_diff'] / 1024:+.1f} KiB ({g['count_diff']:+d} blocks)"
            for g in result["tracemalloc_growth"]
        ]
    lines += [
        "",
        "Checks:",
        "",
        f"- [{slope_check}] RSS slope after warm-up <= {SLOPE_TARGET:g} MiB/h",
        f"- [{'x' if fds_ok else ' '}] open fds back to the idle baseline (idle upstream "
        "keep-alive connections allowed up to what the pool reports idle)",
        f"- [{'x' if tasks_ok else ' '}] asyncio tasks back to the idle baseline",
        "",
        "![soak](soak.png)",
        "",
    ]
    ok = fds_ok and tasks_ok and (slope_ok or not conclusive)
    return "\n".join(lines), ok


def _plot(rows: list[dict[str, Any]], warmup: float, path: Path) -> None:
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
    load = [r["t"] for r in rows if r["phase"] in ("warmup", "load")]
    if load:
        ax.axvspan(load[0], load[0] + warmup, color="0.9", label="warm-up")
    ax2 = ax.twinx()
    ax2.plot(ts, [r["fds"] for r in rows], color="tab:orange", label="open fds")
    tasks = [(r["t"], r["asyncio_tasks"]) for r in rows if r["asyncio_tasks"] is not None]
    if tasks:
        ax2.plot(*zip(*tasks, strict=True), color="tab:green", label="asyncio tasks")
    ax2.set_ylabel("fds, tasks")
    fig.legend(loc="upper left", fontsize=8)
    ax.set_title("Proxy under soak")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

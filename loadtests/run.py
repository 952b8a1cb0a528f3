"""Run one locust scenario headless against the proxy in front of the simulated providers.

    python -m loadtests.run steady-chat [--seconds 60] [--users 20]
    make loadtest SCENARIO=steady-chat          # the same, installing locust first

Starts ``edgeproxy sim`` and ``edgeproxy serve`` on free loopback ports (from a copy of
policies/default.yaml), runs locust with ``--csv`` and ``--html`` into
loadtests/results/<scenario>-<timestamp>/, samples the proxy's RSS, fds and CPU every second,
writes summary.md there and copies it to loadtests/results/latest.md, then stops everything.
Exits 1 when a check of the scenario fails, 0 otherwise (also when a scenario is skipped).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procutil import REPO, catches_signal, sample

from loadtests.stack import Stack, start_stack

HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("EDGEPROXY_LOADTEST_RESULTS", HERE / "results"))


@dataclass(frozen=True)
class Scenario:
    file: str
    users: int
    seconds: int
    about: str
    max_failure_ratio: float = 0.005


SCENARIOS: dict[str, Scenario] = {
    "steady-chat": Scenario(
        "steady_chat.py", 20, 60, "non-stream chat at a constant rate (users x 2 req/s)"
    ),
    "steady-stream": Scenario(
        "steady_stream.py", 20, 60, "streaming chat at a constant rate, with TTFT and tokens/s"
    ),
    "spike": Scenario("spike.py", 10, 60, "baseline, x5 users for 30% of the run, baseline"),
    "failover": Scenario(
        "failover.py",
        20,
        60,
        "alpha/us-east broken live (503, then refused), then healed",
        # Streams already committed when the region starts refusing are cut (in-band error);
        # everything else must fail over invisibly.
        max_failure_ratio=0.02,
    ),
    "reload": Scenario("reload.py", 20, 60, "policy rewritten and reloaded twice mid-run"),
    "mixed-api": Scenario(
        "mixed_api.py",
        20,
        60,
        "every endpoint at once: chat, Responses (and streamed), Anthropic Messages streamed, "
        "embeddings; each answer's shape checked",
    ),
}


class Sampler(threading.Thread):
    def __init__(self, pid: int, out: Path, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.out, self.every = pid, out, every
        self.rows: list[dict[str, float]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop_flag.is_set():
            s = sample(self.pid)
            self.rows.append(
                {
                    "t": round(time.monotonic() - t0, 2),
                    "rss_mib": round(s.rss_bytes / 2**20, 2),
                    "fds": s.fds,
                    "cpu_s": round(s.cpu_seconds, 2),
                }
            )
            self.stop_flag.wait(self.every)

    def finish(self) -> None:
        self.stop_flag.set()
        self.join(5)
        if self.rows:
            with open(self.out, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                w.writeheader()
                w.writerows(self.rows)


def reload_support(stack: Stack) -> str | None:
    """How the proxy can be told to reload (None if it cannot)."""
    assert stack.proxy is not None
    req = urllib.request.Request(f"{stack.proxy_url}/admin/reload", data=b"", method="POST")
    token = os.environ.get("EDGEPROXY_ADMIN_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10):
            return "POST /admin/reload"
    except urllib.error.HTTPError as exc:
        if exc.code not in (404, 405):
            return f"POST /admin/reload (answered {exc.code})"
    except OSError:
        pass
    if catches_signal(stack.proxy.pid, signal.SIGHUP):
        return "SIGHUP"
    return None


def run(name: str, seconds: int, users: int, user_rate: float) -> int:
    scenario = SCENARIOS[name]
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"loadtest {name}: {scenario.about}; results in {_rel(out)}", flush=True)
    stack = start_stack(out)
    assert stack.proxy is not None
    sampler: Sampler | None = None
    try:
        reload_how = None
        if name == "reload":
            reload_how = reload_support(stack)
            if reload_how is None:
                message = (
                    "SKIPPED: this proxy has no hot reload yet (POST /admin/reload answers 404 "
                    "and SIGHUP is not caught); the reload scenario runs once either exists."
                )
                print(f"loadtest reload: {message}", flush=True)
                _write_summary(out, name, scenario, seconds, users, user_rate, skipped=message)
                return 0
            print(f"loadtest reload: the proxy reloads via {reload_how}", flush=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "EDGEPROXY_LOADTEST_OUT": str(out),
            "EDGEPROXY_LOADTEST_SECONDS": str(seconds),
            "EDGEPROXY_LOADTEST_USERS": str(users),
            "EDGEPROXY_LOADTEST_USER_RATE": str(user_rate),
            "EDGEPROXY_SIM_CONTROL": stack.control_url,
            "EDGEPROXY_POLICY_PATH": str(stack.policy),
            "EDGEPROXY_PROXY_URL": stack.proxy_url,
            "EDGEPROXY_PROXY_PID": str(stack.proxy.pid),
        }
        locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
        argv = [
            locust,
            "-f",
            str(HERE / scenario.file),
            "--headless",
            "--host",
            stack.proxy_url,
            "--users",
            str(users),
            "--spawn-rate",
            str(max(users, 1)),
            "--run-time",
            f"{seconds}s",
            "--stop-timeout",
            "10",
            "--csv",
            str(out / "locust"),
            "--html",
            str(out / "report.html"),
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
        ]
        sampler = Sampler(stack.proxy.pid, out / "proxy_samples.csv")
        sampler.start()
        with open(out / "locust.log", "w") as log:
            code = subprocess.run(
                argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False
            ).returncode
        sampler.finish()
        if code != 0:
            print((out / "locust.log").read_text()[-3000:], file=sys.stderr)
            print(f"loadtest {name}: locust exited with {code}", file=sys.stderr)
            return code
        time.sleep(1.0)
        after = sample(stack.proxy.pid)
        ok = _write_summary(
            out,
            name,
            scenario,
            seconds,
            users,
            user_rate,
            samples=sampler.rows,
            after_rss=after.rss_bytes,
            after_fds=after.fds,
            reload_how=reload_how,
        )
        return 0 if ok else 1
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.finish()
        stack.stop()


def _read_stats(out: Path) -> list[dict[str, str]]:
    path = out / "locust_stats.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_summary(
    out: Path,
    name: str,
    scenario: Scenario,
    seconds: int,
    users: int,
    user_rate: float,
    *,
    skipped: str | None = None,
    samples: list[dict[str, float]] | None = None,
    after_rss: int = 0,
    after_fds: int = 0,
    reload_how: str | None = None,
) -> bool:
    lines = [
        f"# Load test `{name}` — {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"{scenario.about}. {users} users, {seconds} s"
        + ("" if name == "spike" else f", {user_rate:g} req/s per user")
        + f". Results: `{_rel(out)}/` (report.html, locust_*.csv, events.json, "
        "proxy_samples.csv, proxy.log, sim.log). The machine is shared and noisy: compare ratios "
        "and failure counts, not absolute latencies across runs.",
        "",
    ]
    checks: list[tuple[str, bool]] = []
    if skipped:
        lines += [f"**{skipped}**", ""]
    else:
        stats = _read_stats(out)
        record: dict[str, Any] = {}
        events_path = out / "events.json"
        if events_path.exists():
            record = json.loads(events_path.read_text())
        # Counts from the scenario's record of locust's request events: locust's CSV is written
        # once a second and leaves the last second out, so its counts disagreed with the
        # timeline below. Latencies stay locust's.
        counts = record.get("counts") or {}
        for row in stats:
            key = f"{row['Type']} {row['Name']}"
            if key in counts:
                row["Request Count"] = str(counts[key])
                row["Failure Count"] = str(counts.get(f"{key} failed", 0))
        lines += [
            "| type | name | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        total_req = total_fail = 0
        http_rate = 0.0
        for row in stats:
            if row["Name"] == "Aggregated":
                # locust's total adds the SSE measurements (ttft, tokens_per_s, stream) to the
                # HTTP requests, so it disagreed with every other count here: the HTTP total is
                # written below instead.
                continue
            lines.append(
                "| {} | {} | {} | {} | {:.1f} | {} | {} | {} | {:.0f} |".format(
                    row["Type"],
                    row["Name"],
                    row["Request Count"],
                    row["Failure Count"],
                    float(row["Requests/s"]),
                    row["50%"],
                    row["95%"],
                    row["99%"],
                    float(row["Max Response Time"]),
                )
            )
            if row["Type"] == "SSE":
                continue
            total_req += int(row["Request Count"])
            total_fail += int(row["Failure Count"])
            http_rate += float(row["Requests/s"])
        # A stream whose HTTP answer was a 200 but that ended without [DONE] failed too.
        stream_fail = sum(
            int(r["Failure Count"]) for r in stats if r["Type"] == "SSE" and r["Name"] == "stream"
        )
        total_fail += stream_fail
        lines += [
            f"| all | HTTP requests (streams cut after a 200 count as failed) | {total_req} | "
            f"{total_fail} | {http_rate:.1f} | | | | |",
            "",
            "`SSE ttft` is the time to the first content event and `SSE tokens_per_s` holds "
            "tokens per second in its time columns (read ms as tokens/s); `SSE stream` is the "
            "whole stream, failed if it ended without `[DONE]`. Counts are every request the "
            "scenario made; latencies are locust's (its CSV leaves out the last second).",
            "",
        ]
        ratio = total_fail / total_req if total_req else 1.0
        checks.append((f"requests were made ({total_req})", total_req > 0))
        checks.append(
            (
                f"failure ratio {ratio:.2%} <= {scenario.max_failure_ratio:.1%}",
                ratio <= scenario.max_failure_ratio,
            )
        )
        if record:
            lines += ["Served by: " + _counts(record.get("served_by", {})), ""]
            lines += ["Policy versions seen: " + _counts(record.get("policy_versions", {})), ""]
            if record.get("marks"):
                lines += ["Timeline of actions:", ""]
                lines += [
                    f"- t={m['t']}s {m['what']} "
                    + ", ".join(f"{k}={v}" for k, v in m.items() if k not in ("t", "what"))
                    for m in record["marks"]
                ]
                lines.append("")
            lines += [
                "| t (s) | ok | failed | served by | policy version |",
                "|---|---:|---:|---|---|",
            ]
            for t, slot in record.get("timeline", {}).items():
                lines.append(
                    f"| {t} | {slot['ok']} | {slot['failed']} | {_counts(slot['served'])} | "
                    f"{_counts(slot['versions'])} |"
                )
            lines.append("")
            served = record.get("served_by", {})
            if name == "failover":
                others = sum(v for k, v in served.items() if k not in ("alpha/us-east", "-/-"))
                checks.append((f"traffic moved off alpha/us-east ({others} answers)", others > 0))
                marks = [m["what"] for m in record.get("marks", [])]
                checks.append(("fault set and healed", "break" in marks and "heal" in marks))
            if name == "reload":
                versions = [v for v in record.get("policy_versions", {}) if v != "-"]
                checks.append((f"policy versions seen: {len(versions)} (>= 2)", len(versions) >= 2))
                checks.append(
                    (
                        "traffic served from alpha/eu-west after the reload",
                        served.get("alpha/eu-west", 0) > 0,
                    )
                )
                lines += [f"Reload via: {reload_how}", ""]
        if samples:
            rss = [s["rss_mib"] for s in samples]
            lines += [
                "Proxy process: RSS {:.1f} MiB at start, {:.1f} MiB peak, {:.1f} MiB after; "
                "fds {} at start, {} peak, {} after; {:.1f} CPU-seconds over the run.".format(
                    rss[0],
                    max(rss),
                    after_rss / 2**20,
                    int(samples[0]["fds"]),
                    int(max(s["fds"] for s in samples)),
                    after_fds,
                    samples[-1]["cpu_s"] - samples[0]["cpu_s"],
                ),
                "",
            ]
        lines += ["Checks:", ""]
        lines += [f"- [{'x' if ok else ' '}] {what}" for what, ok in checks]
        lines.append("")
    text = "\n".join(lines)
    (out / "summary.md").write_text(text)
    (RESULTS / "latest.md").write_text(text)
    (RESULTS / f"latest-{name}.md").write_text(text)
    print(text, flush=True)
    return all(ok for _, ok in checks)


def _rel(path: Path) -> Path:
    try:
        return path.relative_to(REPO)
    except ValueError:
        return path


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])) or "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--seconds", type=int, default=None, help="run time (default per scenario)")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--user-rate", type=float, default=2.0, help="requests/s per user")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    worst = 0
    for name in names:
        sc = SCENARIOS[name]
        code = run(name, args.seconds or sc.seconds, args.users or sc.users, args.user_rate)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())

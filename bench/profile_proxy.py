"""Where the proxy's time goes under load: py-spy samples `edgeproxy serve` while wrk drives it
against the nginx upstream of the benchmark.

    python -m bench.profile_proxy [--stream] [--seconds 15] [--conns 32]

Writes bench-results/profile-<timestamp>/ with the collapsed stacks (``profile.txt``, loadable in
speedscope or flamegraph.pl) and prints the top frames by self and inclusive share of samples.
py-spy comes from PyPI (installed into .bench-venv when missing).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procutil import REPO, Proc, free_port, sample, serve_argv, wait_port
from bench.run_bench import (
    BENCH_VENV,
    JSON_BODY,
    Server,
    Wrk,
    proxy_policy,
    stream_body,
)
from bench.upstream import start_nginx


def py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(BENCH_VENV / "bin"))
    if found:
        return found
    subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "--quiet", "py-spy"], check=True)
    return str(BENCH_VENV / "bin" / "py-spy")


def top(collapsed: Path, n: int = 25) -> str:
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        k = int(count)
        total += k
        frames = stack.split(";")
        self_c[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    out = [f"{total} samples", "", "self %  frame"]
    out += [f"{100 * c / total:5.1f}  {f}" for f, c in self_c.most_common(n)]
    out += ["", "incl %  frame"]
    out += [f"{100 * c / total:5.1f}  {f}" for f, c in incl.most_common(n)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", action="store_true", help="profile the 200-event stream")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--perf", action="store_true", help="also perf record (on-CPU, by DSO)")
    args = parser.parse_args(argv)
    out = REPO / "bench-results" / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="edgeproxy-profile-"))
    procs: list[Proc] = []
    try:
        up = free_port()
        procs.append(start_nginx(tmp / "nginx", up, shutil.which("nginx") or "nginx"))
        policy = tmp / "policy.yaml"
        proxy_policy(policy, up)
        port = free_port()
        proxy = Proc(
            "proxy",
            serve_argv(policy, port),
            out / "proxy.log",
        )
        procs.append(proxy)
        wait_port(port, 30, proxy.popen)
        server = Server("edgeproxy", port, *(["/v1/chat/completions"] * 3), {}, proxy)
        wrk = Wrk(shutil.which("wrk") or "wrk", tmp)
        body = stream_body("bench-sselong") if args.stream else JSON_BODY
        wrk.run(server, server.json_path, body, args.conns, 2)  # warm-up
        collapsed = out / "profile.txt"
        spy = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(proxy.pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(collapsed),
                "--duration",
                str(args.seconds),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        perf = None
        perf_bin = shutil.which("perf")
        if args.perf and perf_bin:
            # On-CPU samples by shared object (kernel vs libpython vs aiohttp's C parts vs
            # _core): py-spy samples wall time, which a busy shared machine inflates.
            perf = subprocess.Popen(
                [
                    perf_bin,
                    "record",
                    "-F",
                    "999",
                    "-p",
                    str(proxy.pid),
                    "-o",
                    str(out / "perf.data"),
                    "--",
                    "sleep",
                    str(args.seconds),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        before = sample(proxy.pid)
        res = wrk.run(server, server.json_path, body, args.conns, args.seconds)
        after = sample(proxy.pid)
        spy.wait(60)
        summary = top(collapsed)
        cpu = (after.cpu_seconds - before.cpu_seconds) / max(res["requests"], 1) * 1e6
        utime, stime = after.utime - before.utime, after.stime - before.stime
        text = (
            f"wrk: {res['rps']:.0f} req/s, p99 {res['p99'] / 1000:.2f} ms; proxy CPU "
            f"{cpu:.0f} us per request ({utime:.2f} s user, {stime:.2f} s system)\n\n{summary}\n"
        )
        if perf is not None and perf_bin:
            perf.wait(args.seconds + 30)
            rep = subprocess.run(
                [perf_bin, "report", "-i", str(out / "perf.data"), "--sort", "dso", "--stdio"],
                capture_output=True,
                text=True,
            )
            dsos = [ln for ln in rep.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
            text += "\non-CPU samples by shared object (perf):\n" + "\n".join(dsos[:15]) + "\n"
        (out / "top.txt").write_text(text)
        print(text)
        print(f"profile: {out.relative_to(REPO)}")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

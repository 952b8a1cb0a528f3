"""A/B: this checkout's proxy vs another revision's, side by side in one run.

    python -m bench.ab_proxy --base HEAD~1 [--rounds 7] [--seconds 4] [--conns 32]
    python -m bench.ab_proxy --base f0e619a --build-base    # a base whose Rust differs

For changes to the Python side: the base revision's ``python/`` tree (a temporary git worktree)
runs on this checkout's compiled extension, so a base whose Rust differs is refused unless
``--build-base`` builds the base's own extension (``cargo build --release``, into
``target/ab-base`` so a second run reuses it: a few minutes the first time). Both
proxies sit in front of the same nginx upstream (bench/upstream.py); wrk rounds alternate
between them (the first round is a discarded warm-up) and the medians of requests per second and
of the proxy's own CPU time per request are reported, with their ratio. On a shared, noisy
machine the ratio is the figure to trust.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.procutil import REPO, Proc, free_port, sample, serve_argv, wait_port
from bench.run_bench import (
    JSON_BODY,
    Server,
    Wrk,
    ensure_tools,
    proxy_policy,
    stream_body,
)
from bench.upstream import start_nginx


def add_base_tree(rev: str, tree: Path, *, build: bool = False) -> None:
    """``rev`` checked out at ``tree`` (a git worktree: the caller removes it) with this
    checkout's built extension, which is the same when ``rust/`` is; with ``build``, a base
    whose Rust differs gets its own."""
    changed = subprocess.run(
        ["git", "diff", "--quiet", rev, "--", "rust", "Cargo.toml", "Cargo.lock"], cwd=REPO
    )
    if changed.returncode != 0 and not build:
        sys.exit(f"ab_proxy: {rev} differs from this checkout in rust/: add --build-base")
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(tree), rev], cwd=REPO, check=True
    )
    if changed.returncode == 0:
        for ext in (REPO / "python" / "edgeproxy").glob("_core*.so"):
            shutil.copy(ext, tree / "python" / "edgeproxy" / ext.name)
        return
    target = REPO / "target" / "ab-base"
    print(f"building {rev}'s extension (cargo build --release, into {target}) ...", flush=True)
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "edgeproxy-py"],
        cwd=tree,
        env={**os.environ, "CARGO_TARGET_DIR": str(target)},
        check=True,
    )
    shutil.copy(target / "release" / "lib_core.so", tree / "python" / "edgeproxy" / "_core.abi3.so")


def start_proxy(name: str, policy: Path, tmp: Path, pythonpath: Path) -> tuple[Proc, Server]:
    port = free_port()
    proc = Proc(
        name,
        serve_argv(policy, port),
        tmp / f"{name}.log",
        env={"PYTHONPATH": str(pythonpath)},
    )
    wait_port(port, 30, proc.popen)
    path = "/v1/chat/completions"
    return proc, Server(name, port, path, path, path, {"Authorization": "Bearer unused"}, proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument(
        "--build-base", action="store_true", help="build the base's extension when its Rust differs"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1 (round 0 is a discarded warm-up)")

    nginx_bin, wrk_bin = ensure_tools([])
    tmp = Path(tempfile.mkdtemp(prefix="edgeproxy-ab-"))
    procs: list[Proc] = []
    tree = tmp / "base"
    try:
        add_base_tree(args.base, tree, build=args.build_base)
        up_port = free_port()
        procs.append(start_nginx(tmp / "nginx", up_port, nginx_bin))
        policy = tmp / "policy.yaml"
        proxy_policy(policy, up_port)
        servers = []
        for name, path in (("base", tree / "python"), ("head", REPO / "python")):
            proc, server = start_proxy(name, policy, tmp, path)
            procs.append(proc)
            servers.append(server)
        wrk = Wrk(wrk_bin, tmp)
        loads = {"json": JSON_BODY, "sse": stream_body("bench-sse")}
        rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_no in range(args.rounds + 1):
            for load, body in loads.items():
                for server in servers:
                    assert server.proc is not None
                    before = sample(server.proc.pid).cpu_seconds
                    result = wrk.run(server, server.json_path, body, args.conns, args.seconds)
                    cpu = sample(server.proc.pid).cpu_seconds - before
                    if result["errors"]:
                        print(f"  {server.name} {load}: {result['errors']} errors", flush=True)
                    if round_no == 0:
                        continue  # warm-up
                    us = cpu / max(1, result["requests"]) * 1e6
                    rows.setdefault((load, server.name), []).append((result["rps"], us))
            print(f"round {round_no}/{args.rounds} done", flush=True)
        print(f"\nA/B at c={args.conns}, {args.rounds} rounds x {args.seconds:g}s, medians")
        print(
            f"{'load':6} {'base req/s':>11} {'head req/s':>11} {'ratio':>6}  "
            f"{'base CPU us/req':>15} {'head CPU us/req':>15} {'ratio':>6}"
        )
        for load in loads:
            base, head = rows[(load, "base")], rows[(load, "head")]
            b_rps, h_rps = (statistics.median(r for r, _ in x) for x in (base, head))
            b_cpu, h_cpu = (statistics.median(c for _, c in x) for x in (base, head))
            print(
                f"{load:6} {b_rps:11.0f} {h_rps:11.0f} {h_rps / b_rps:6.2f}  "
                f"{b_cpu:15.1f} {h_cpu:15.1f} {h_cpu / b_cpu:6.2f}"
            )
    finally:
        for proc in reversed(procs):
            proc.stop()
        if tree.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

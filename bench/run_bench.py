"""Overhead harness: the proxy vs a direct call to the same upstream vs LiteLLM, in one run.

    make bench                                  # full run (~10 min)
    python -m bench.run_bench --quick           # short rounds, to check the harness works
    python -m bench.run_bench --no-litellm      # skip the peer

Upstream: nginx with fixed answers (bench/upstream.py). Load: wrk (a separate process) for
throughput and the concurrency sweep; bench/client.py (this process, blocking sockets) for the
concurrency-1 latency and time to first token, requests interleaved one by one across targets.
Rounds are interleaved across targets, the first (warm-up) is discarded, medians are reported.

Writes bench-results/<timestamp>/ (results.json, report.md, plots, logs), copies the plots to
docs/img/ and replaces the generated block of docs/benchmarks.md between its markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import client
from bench.procutil import (
    EDGEPROXY,
    REPO,
    Proc,
    free_port,
    machine_description,
    sample,
    serve_argv,
    wait_port,
)
from bench.upstream import LONG_EVENTS, SHORT_EVENTS, start_nginx

BENCH_VENV = REPO / ".bench-venv"
LITELLM_SPEC = "litellm[proxy]==1.82.6"
LITELLM_MASTER_KEY = "sk-bench-master-key"
DOCS = REPO / "docs" / "benchmarks.md"
MARK_START = "<!-- bench:generated:start -->"
MARK_END = "<!-- bench:generated:end -->"

JSON_BODY = json.dumps(
    {"model": "bench-json", "messages": [{"role": "user", "content": "Say hello."}]}
).encode()


# Cache hit vs miss: the same deterministic request (temperature 0) to a route with a cache
# (every request after the first is a hit) and to the plain bench-json route (always a miss).
CACHE_HIT_BODY = json.dumps(
    {
        "model": "bench-cached",
        "messages": [{"role": "user", "content": "Say hello."}],
        "temperature": 0,
    }
).encode()
CACHE_MISS_BODY = json.dumps(
    {
        "model": "bench-json",
        "messages": [{"role": "user", "content": "Say hello."}],
        "temperature": 0,
    }
).encode()


def stream_body(model: str) -> bytes:
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "stream": True}
    ).encode()


# --------------------------------------------------------------------------------------------
# tools


def ensure_tools(log: list[str]) -> tuple[str, str]:
    missing = [t for t in ("nginx", "wrk") if shutil.which(t) is None]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"bench: {missing} missing; install nginx-light and wrk (Debian) first")
        print("bench: installing nginx-light and wrk from Debian ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "nginx-light", "wrk"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    nginx, wrk = shutil.which("nginx"), shutil.which("wrk")
    assert nginx and wrk
    v = subprocess.run([nginx, "-v"], capture_output=True, text=True)
    log.append(f"nginx: {(v.stderr or v.stdout).strip()}")
    v = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    log.append(f"wrk: {(v.stdout or v.stderr).splitlines()[0].strip()}")
    return nginx, wrk


def ensure_litellm() -> tuple[Path | None, str]:
    """The LiteLLM proxy in its own venv; (path to the litellm script, version or why not)."""
    exe = BENCH_VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"bench: installing {LITELLM_SPEC} into {BENCH_VENV} ...", flush=True)
        try:
            if not (BENCH_VENV / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
            r = subprocess.run(
                [str(BENCH_VENV / "bin" / "pip"), "install", "--quiet", LITELLM_SPEC],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                return None, f"pip install {LITELLM_SPEC} failed: {r.stderr.strip()[-800:]}"
        except (OSError, subprocess.CalledProcessError) as exc:
            return None, f"could not create {BENCH_VENV}: {exc}"
    r = subprocess.run(
        [
            str(BENCH_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m;print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
    )
    return (exe, r.stdout.strip()) if r.returncode == 0 else (None, r.stderr.strip()[-800:])


# --------------------------------------------------------------------------------------------
# servers


@dataclass
class Server:
    name: str
    port: int
    json_path: str
    sse_path: str
    sselong_path: str
    headers: dict[str, str]
    proc: Proc | None = None  # None for nginx itself (it is the upstream, sampled separately)
    pid_tree: bool = False
    samples: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def proxy_policy(path: Path, upstream_port: int, *, limits: bool = True) -> None:
    """The proxy's policy: one route per nginx location, one candidate each, no retries.

    The proxy's load shedding (limits.max_in_flight, default 512) is raised so the
    1,000-stream test measures holding streams, not the shedding; a proxy whose schema has no
    such limit gets the policy without it (see ensure_valid_policy).
    """
    providers = []
    routes = []
    for model, prefix in (
        ("bench-json", "json"),
        ("bench-sse", "sse"),
        ("bench-sselong", "sselong"),
        ("bench-slow", "slow"),
    ):
        providers.append(
            f"""  up-{prefix}:
    kind: openai
    api_key: bench-upstream-key
    regions:
      local: {{base_url: "http://127.0.0.1:{upstream_port}/{prefix}/v1"}}
    models:
      {model}: {{context_window: 128000}}"""
        )
        routes.append(f"  {model}:\n    chain: [up-{prefix}/local/{model}]")
    routes.append("  bench-cached:\n    chain: [up-json/local/bench-json]\n    cache: {ttl: 60s}")
    path.write_text(
        "version: 1\n"
        + ("limits: {max_in_flight: 4096, max_queued: 1024}\n" if limits else "")
        + "defaults:\n  max_attempts: 1\n  timeouts: {first_token: 60s, idle: 60s, response: 60s, total: 120s}\n"
        "providers:\n" + "\n".join(providers) + "\nroutes:\n" + "\n".join(routes) + "\n"
    )


def litellm_config(path: Path, upstream_port: int) -> None:
    models = []
    for model, prefix in (
        ("bench-json", "json"),
        ("bench-sse", "sse"),
        ("bench-sselong", "sselong"),
    ):
        models.append(
            f"""  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: http://127.0.0.1:{upstream_port}/{prefix}/v1
      api_key: bench-upstream-key"""
        )
    path.write_text(
        "model_list:\n"
        + "\n".join(models)
        + f"""
litellm_settings:
  telemetry: false
  drop_params: true
  set_verbose: false
general_settings:
  master_key: {LITELLM_MASTER_KEY}
"""
    )


# --------------------------------------------------------------------------------------------
# wrk

LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


class Wrk:
    def __init__(self, wrk: str, tmp: Path) -> None:
        self.wrk = wrk
        self.tmp = tmp
        self.scripts: dict[tuple[str, bytes], Path] = {}

    def script(self, server: Server, body: bytes) -> Path:
        key = (server.name, body)
        if key not in self.scripts:
            headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in server.headers.items())
            path = self.tmp / f"wrk-{server.name}-{len(self.scripts)}.lua"
            path.write_text(LUA.format(body=body.decode(), headers=headers))
            self.scripts[key] = path
        return self.scripts[key]

    def run(
        self, server: Server, path: str, body: bytes, conns: int, seconds: float, timeout: int = 10
    ) -> dict[str, Any]:
        argv = [
            self.wrk,
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout}s",
            "-s",
            str(self.script(server, body)),
            server.url(path),
        ]
        r = subprocess.run(argv, capture_output=True, text=True, check=False)
        for line in r.stdout.splitlines():
            if line.startswith("WRKJSON "):
                data: dict[str, Any] = json.loads(line[8:])
                data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
                data["errors"] = sum(
                    data[k] for k in ("connect", "read", "write", "status", "timeout")
                )
                return data
        raise RuntimeError(f"wrk gave no result: {r.stdout[-500:]} {r.stderr[-500:]}")


# --------------------------------------------------------------------------------------------
# measurement


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[int], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] / 1e6  # ns -> ms


class PeakSampler(threading.Thread):
    def __init__(self, pids: dict[str, tuple[int, bool]], every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.every = every
        self.peak_rss: dict[str, int] = dict.fromkeys(pids, 0)
        self.peak_fds: dict[str, int] = dict.fromkeys(pids, 0)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for name, (pid, tree) in self.pids.items():
                s = sample(pid, tree=tree)
                self.peak_rss[name] = max(self.peak_rss[name], s.rss_bytes)
                self.peak_fds[name] = max(self.peak_fds[name], s.fds)
            self.halt.wait(self.every)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


def measure(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    notes: list[str] = []
    nginx_bin, wrk_bin = ensure_tools(notes)
    tmp = Path(tempfile.mkdtemp(prefix="edgeproxy-bench-"))
    procs: list[Proc] = []
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_description(),
        "tools": notes,
        "settings": vars(args),
    }
    try:
        up_port = free_port()
        nginx = start_nginx(tmp / "nginx", up_port, nginx_bin)
        procs.append(nginx)
        direct = Server(
            "direct",
            up_port,
            "/json/v1/chat/completions",
            "/sse/v1/chat/completions",
            "/sselong/v1/chat/completions",
            {"Authorization": "Bearer bench-upstream-key"},
        )
        policy = tmp / "policy.yaml"
        proxy_policy(policy, up_port)
        check = [*EDGEPROXY, "policy", "check", str(policy)]
        if subprocess.run(check, capture_output=True, check=False).returncode != 0:
            proxy_policy(policy, up_port, limits=False)
        results["proxy_policy"] = policy.read_text().replace(str(up_port), "$NGINX_PORT")
        pport = free_port()
        edgeproxy = Proc(
            "proxy",
            serve_argv(policy, pport),
            out / "proxy.log",
        )
        procs.append(edgeproxy)
        wait_port(pport, 30, edgeproxy.popen)
        # The same proxy with tracing on: the real OTLP/HTTP exporter behind the
        # BatchSpanProcessor, exporting to nginx's /v1/traces sink (reads the body, answers 200).
        tport = free_port()
        traced = Proc(
            "proxy-traced",
            serve_argv(policy, tport),
            out / "proxy-traced.log",
            env={
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{up_port}",
            },
        )
        procs.append(traced)
        wait_port(tport, 30, traced.popen)
        # The same proxy with its access log on (`--log-level info`: one line per request, to
        # its log file), against the default proxy's `--log-level warning`.
        aport = free_port()
        logged = Proc(
            "proxy-accesslog",
            serve_argv(policy, aport, log_level="info"),
            out / "proxy-accesslog.log",
        )
        procs.append(logged)
        wait_port(aport, 30, logged.popen)
        proxy = Server(
            "edgeproxy",
            pport,
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions",
            {"Authorization": "Bearer unused"},
            edgeproxy,
        )
        servers = [direct, proxy]
        # Pairs measured in the same rounds: (label, base, variant, base body, variant body).
        pairs: list[tuple[str, Server, Server, bytes, bytes]] = [
            (
                "tracing",
                proxy,
                Server("edgeproxy-traced", tport, *[proxy.json_path] * 3, proxy.headers, traced),
                JSON_BODY,
                JSON_BODY,
            ),
            (
                "access_log",
                proxy,
                Server("edgeproxy-logged", aport, *[proxy.json_path] * 3, proxy.headers, logged),
                JSON_BODY,
                JSON_BODY,
            ),
            (
                "cache",
                Server("cache-miss", pport, *[proxy.json_path] * 3, proxy.headers, edgeproxy),
                Server("cache-hit", pport, *[proxy.json_path] * 3, proxy.headers, edgeproxy),
                CACHE_MISS_BODY,
                CACHE_HIT_BODY,
            ),
        ]
        results["edgeproxy_version"] = subprocess.run(
            [*EDGEPROXY, "--version"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        litellm: Server | None = None
        if args.litellm and not args.pairs_only:
            exe, version = ensure_litellm()
            results["litellm"] = {"spec": LITELLM_SPEC, "version": version}
            if exe is not None:
                cfg = tmp / "litellm.yaml"
                litellm_config(cfg, up_port)
                lport = free_port()
                argv = [
                    str(exe),
                    "--config",
                    str(cfg),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(lport),
                    "--num_workers",
                    "1",
                ]
                env = {
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "LITELLM_LOG": "ERROR",
                    "LITELLM_MODE": "PRODUCTION",
                    "NO_DOCS": "True",
                    "DISABLE_ADMIN_UI": "True",
                }
                results["litellm"].update(
                    {
                        "argv": " ".join(argv[1:]).replace(str(tmp), "$TMP"),
                        "env": env,
                        "config": cfg.read_text(),
                    }
                )
                lproc = Proc("litellm", argv, out / "litellm.log", env=env)
                procs.append(lproc)
                try:
                    wait_port(lport, 180, lproc.popen)
                    litellm = Server(
                        "litellm",
                        lport,
                        "/v1/chat/completions",
                        "/v1/chat/completions",
                        "/v1/chat/completions",
                        {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
                        lproc,
                        pid_tree=True,
                    )
                    # A first request (LiteLLM initialises lazily) proves the configuration.
                    probe_litellm(litellm)
                    servers.append(litellm)
                except (RuntimeError, TimeoutError) as exc:
                    results["litellm"]["failed"] = f"{exc}; log tail: {lproc.tail(15)}"
                    lproc.stop()
                    litellm = None
            else:
                results["litellm"]["failed"] = version
        return run_measurements(args, results, servers, nginx, wrk_bin, tmp, out, pairs)
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def probe_litellm(server: Server) -> None:
    import urllib.error
    import urllib.request

    for path, body in ((server.json_path, JSON_BODY), (server.sse_path, stream_body("bench-sse"))):
        req = urllib.request.Request(
            server.url(path),
            data=body,
            headers={**server.headers, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                text = resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"LiteLLM answered {exc.code}: {exc.read()[:500].decode(errors='replace')}"
            ) from None
        except OSError as exc:
            raise RuntimeError(f"LiteLLM did not answer: {exc}") from None
        if "content" not in text:
            raise RuntimeError(f"LiteLLM answered something unexpected: {text[:300]}")


def run_measurements(
    args: argparse.Namespace,
    results: dict[str, Any],
    servers: list[Server],
    nginx: Proc,
    wrk_bin: str,
    tmp: Path,
    out: Path,
    pairs: list[tuple[str, Server, Server, bytes, bytes]] | None = None,
) -> dict[str, Any]:
    wrk = Wrk(wrk_bin, tmp)
    pairs = pairs or []
    secs = args.seconds
    by_name = {s.name: s for s in servers}
    direct_server = by_name["direct"]
    proxied = [s for s in servers if s.proc is not None]
    for s in proxied:
        assert s.proc is not None
        idle = sample(s.proc.pid, tree=s.pid_tree)
        s.samples["rss_idle"] = idle.rss_bytes
        s.samples["fds_idle"] = idle.fds
    peaks = PeakSampler(
        {s.name: (s.proc.pid, s.pid_tree) for s in proxied if s.proc is not None}
        | {"nginx": (nginx.pid, False)}
    )
    peaks.start()

    print("bench: warm-up (discarded) ...", flush=True)
    for s in [] if args.pairs_only else servers:
        wrk.run(s, s.json_path, JSON_BODY, 32, max(1.0, secs / 2))
        wrk.run(s, s.sse_path, stream_body("bench-sse"), 8, 1)
    for _, base_srv, var_srv, base_body, var_body in pairs:
        wrk.run(base_srv, base_srv.json_path, base_body, 32, max(1.0, secs / 2))
        wrk.run(var_srv, var_srv.json_path, var_body, 32, max(1.0, secs / 2))

    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        print(f"bench: round {r + 1}/{args.rounds} ...", flush=True)
        row: dict[str, Any] = {}
        order = servers[r % len(servers) :] + servers[: r % len(servers)]
        if args.pairs_only:
            order = []
        # throughput at c=32 (wrk), and proxy CPU per request
        for s in order:
            before = sample(s.proc.pid, tree=s.pid_tree).cpu_seconds if s.proc else 0.0
            res = wrk.run(s, s.json_path, JSON_BODY, 32, secs)
            after = sample(s.proc.pid, tree=s.pid_tree).cpu_seconds if s.proc else 0.0
            res["cpu_s_per_1000"] = (after - before) / max(res["requests"], 1) * 1000
            row[f"{s.name}/c32"] = res
        # stream throughput on the long stream: CPU per relayed event
        for s in order:
            before = sample(s.proc.pid, tree=s.pid_tree).cpu_seconds if s.proc else 0.0
            res = wrk.run(s, s.sselong_path, stream_body("bench-sselong"), 32, secs)
            after = sample(s.proc.pid, tree=s.pid_tree).cpu_seconds if s.proc else 0.0
            res["cpu_us_per_event"] = (
                (after - before) / (res["requests"] * (LONG_EVENTS + 3)) * 1e6
                if res["requests"]
                else float("nan")
            )
            row[f"{s.name}/sselong_c32"] = res

        # concurrency 1: latency and TTFT, interleaved request by request
        def targets(path_attr: str, srv: list[Server]) -> list[client.Target]:
            return [client.Target(s.name, s.port, getattr(s, path_attr), s.headers) for s in srv]

        # Each peer is interleaved with its own direct baseline, request by request. Peers are
        # not interleaved with each other: LiteLLM keeps working for milliseconds after it has
        # answered (logging callbacks), which would land on the next peer's request.
        n = args.c1_requests
        for peer in [] if args.pairs_only else proxied:
            base = "direct" if peer.name == "edgeproxy" else f"direct-for-{peer.name}"
            pair = [direct_server, peer] if r % 2 == 0 else [peer, direct_server]
            for kind, attr, body in (
                ("json", "json_path", JSON_BODY),
                ("sse", "sse_path", stream_body("bench-sse")),
                ("sselong", "sselong_path", stream_body("bench-sselong")),
            ):
                count = n if kind != "sselong" else max(30, n // 10)
                got = client.interleaved(targets(attr, pair), body, count)
                for name, (ttfts, totals, errs) in got.items():
                    key = base if name == "direct" else name
                    row[f"{key}/c1_{kind}"] = {
                        "p50": pct(totals, 50),
                        "p99": pct(totals, 99),
                        "ttft_p50": pct(ttfts, 50),
                        "ttft_p99": pct(ttfts, 99),
                        "n": len(totals),
                        "errors": errs,
                    }
        # Tracing on vs off, cache hit vs miss: c=32 throughput and CPU, then c=1 latency with
        # the two sides interleaved request by request; same nginx, same round.
        for label, base_srv, var_srv, base_body, var_body in pairs:
            sides = [("base", base_srv, base_body), ("variant", var_srv, var_body)]
            for side, srv, body in sides if r % 2 == 0 else sides[::-1]:
                assert srv.proc is not None
                before = sample(srv.proc.pid).cpu_seconds
                res = wrk.run(srv, srv.json_path, body, 32, secs)
                after = sample(srv.proc.pid).cpu_seconds
                res["cpu_s_per_1000"] = (after - before) / max(res["requests"], 1) * 1000
                row[f"{label}:{side}/c32"] = res
            got = client.interleaved(
                targets("json_path", [base_srv, var_srv]),
                base_body,
                n,
                bodies={var_srv.name: var_body},
            )
            for side, srv, _ in sides:
                _, totals, errs = got[srv.name]
                row[f"{label}:{side}/c1"] = {
                    "p50": pct(totals, 50),
                    "p99": pct(totals, 99),
                    "n": len(totals),
                    "errors": errs,
                }
        rounds.append(row)
    results["rounds"] = rounds
    if args.pairs_only:
        peaks.stop()
        return results

    print("bench: concurrency sweep ...", flush=True)
    sweep: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
    for c in args.sweep:
        for rep in range(args.sweep_reps):
            order = servers if rep % 2 == 0 else list(reversed(servers))
            for s in order:
                res = wrk.run(s, s.json_path, JSON_BODY, c, args.sweep_seconds)
                res["c"] = c
                sweep[s.name].append(res)
    results["sweep"] = sweep

    print("bench: 1,000 concurrent streams through the proxy ...", flush=True)
    results["streams_1000"] = hold_streams(wrk, by_name["edgeproxy"], args.hold_streams)

    time.sleep(3)
    for s in proxied:
        assert s.proc is not None
        after = sample(s.proc.pid, tree=s.pid_tree)
        s.samples["rss_after"] = after.rss_bytes
        s.samples["fds_after"] = after.fds
    peaks.stop()
    for s in proxied:
        s.samples["rss_peak"] = peaks.peak_rss[s.name]
        s.samples["fds_peak"] = peaks.peak_fds[s.name]
    results["process"] = {s.name: s.samples for s in proxied}
    results["nginx_peak_rss"] = peaks.peak_rss["nginx"]
    return results


def hold_streams(wrk: Wrk, proxy: Server, conns: int) -> dict[str, Any]:
    """wrk holds `conns` streams open through the proxy to nginx's slow location (~20 s each)."""
    assert proxy.proc is not None
    pid = proxy.proc.pid
    peak = {"rss": 0, "fds": 0}
    halt = threading.Event()

    def watch() -> None:
        while not halt.is_set():
            s = sample(pid)
            peak["rss"] = max(peak["rss"], s.rss_bytes)
            peak["fds"] = max(peak["fds"], s.fds)
            halt.wait(0.5)

    before = sample(pid)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    res = wrk.run(proxy, proxy.json_path, stream_body("bench-slow"), conns, 30, timeout=60)
    halt.set()
    t.join()
    after = sample(pid)
    return {
        "connections": conns,
        "completed_streams": res["requests"],
        "errors": res["errors"],
        "stream_p50_ms": res["p50"] / 1000,
        "rss_before": before.rss_bytes,
        "fds_before": before.fds,
        "rss_peak": peak["rss"],
        "fds_peak": peak["fds"],
        "cpu_s": after.cpu_seconds - before.cpu_seconds,
        "rss_after": after.rss_bytes,
    }


# --------------------------------------------------------------------------------------------
# summary, report and plots


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    rounds = results["rounds"]
    known = ["direct", "edgeproxy", "litellm"]
    names = sorted({k.split("/")[0] for r in rounds for k in r} & set(known), key=known.index)

    def m(name: str, key: str, field_: str) -> float:
        return med([r[f"{name}/{key}"][field_] for r in rounds if f"{name}/{key}" in r])

    def added(name: str, key: str, field_: str) -> float:
        base = (
            "direct"
            if name == "edgeproxy" or key.startswith(("c32", "sselong_c32"))
            else f"direct-for-{name}"
        )
        return med(
            [
                r[f"{name}/{key}"][field_] - r[f"{base}/{key}"][field_]
                for r in rounds
                if f"{name}/{key}" in r and f"{base}/{key}" in r
            ]
        )

    s: dict[str, Any] = {"targets": names}
    for n in names:
        s[n] = {
            "rps_c32": m(n, "c32", "rps"),
            "rps_c32_errors": sum(r[f"{n}/c32"]["errors"] for r in rounds),
            "c32_p99_ms": m(n, "c32", "p99") / 1000,
            "c1_p50_ms": m(n, "c1_json", "p50"),
            "c1_p99_ms": m(n, "c1_json", "p99"),
            "ttft_p50_ms": m(n, "c1_sse", "ttft_p50"),
            "ttft_p99_ms": m(n, "c1_sse", "ttft_p99"),
            "sse_total_p50_ms": m(n, "c1_sse", "p50"),
            "sselong_total_p50_ms": m(n, "c1_sselong", "p50"),
            "sselong_rps_c32": m(n, "sselong_c32", "rps"),
        }
        if n != "direct":
            s[n] |= {
                "added_c1_p50_ms": added(n, "c1_json", "p50"),
                "added_c1_p99_ms": added(n, "c1_json", "p99"),
                "added_ttft_p50_ms": added(n, "c1_sse", "ttft_p50"),
                "added_ttft_p99_ms": added(n, "c1_sse", "ttft_p99"),
                "cpu_s_per_1000": m(n, "c32", "cpu_s_per_1000"),
                "cpu_us_per_event": m(n, "sselong_c32", "cpu_us_per_event"),
                # extra wall time per relayed event at c=1: (long - short) / extra events
                "added_us_per_event_c1": (added(n, "c1_sselong", "p50") - added(n, "c1_sse", "p50"))
                * 1000
                / (LONG_EVENTS - SHORT_EVENTS),
            }
        sweep = results["sweep"].get(n, [])
        by_c: dict[int, list[dict[str, Any]]] = {}
        for row in sweep:
            by_c.setdefault(row["c"], []).append(row)
        points = [
            {
                "c": c,
                "rps": med([x["rps"] for x in rows]),
                "p50_ms": med([x["p50"] for x in rows]) / 1000,
                "p99_ms": med([x["p99"] for x in rows]) / 1000,
                "errors": sum(x["errors"] for x in rows),
            }
            for c, rows in sorted(by_c.items())
        ]
        s[n]["sweep"] = points
        if n != "direct" and points and s["direct"]["sweep"]:
            d1 = next((x for x in s["direct"]["sweep"] if x["c"] == 1), None)
            p1 = next((x for x in points if x["c"] == 1), None)
            if d1 and p1:
                s[n]["added_c1_p50_ms_wrk"] = p1["p50_ms"] - d1["p50_ms"]
                s[n]["added_c1_p99_ms_wrk"] = p1["p99_ms"] - d1["p99_ms"]
        for bound in (5, 50):
            ok = [p["rps"] for p in points if p["p99_ms"] < bound and p["errors"] == 0]
            s[n][f"max_rps_p99_under_{bound}ms"] = max(ok) if ok else 0.0
    pairs: dict[str, dict[str, dict[str, float]]] = {}
    for label in sorted({k.split(":")[0] for r in rounds for k in r if ":" in k}):
        pairs[label] = {
            side: {
                "rps_c32": m(f"{label}:{side}", "c32", "rps"),
                "c32_errors": sum(
                    r[f"{label}:{side}/c32"]["errors"] for r in rounds if f"{label}:{side}/c32" in r
                ),
                "cpu_s_per_1000": m(f"{label}:{side}", "c32", "cpu_s_per_1000"),
                "c1_p50_ms": m(f"{label}:{side}", "c1", "p50"),
                "c1_p99_ms": m(f"{label}:{side}", "c1", "p99"),
            }
            for side in ("base", "variant")
        }
    s["pairs"] = pairs
    return s


def fmt(x: float, digits: int = 2) -> str:
    if x != x:  # nan
        return "n/a"
    return f"{x:,.{digits}f}"


PAIR_ROWS = {
    "tracing": (
        "tracing off (default)",
        "tracing on (OTLP/HTTP, batch processor, to a loopback sink)",
        "on / off",
    ),
    "access_log": (
        "access log off (`--log-level warning`)",
        "access log on (`--log-level info`, JSON lines, to a file)",
        "on / off",
    ),
    "cache": (
        "cache miss (route without cache)",
        "cache hit (`cache: {ttl: 60s}`, temperature 0)",
        "hit / miss",
    ),
}


def pairs_table(s: dict[str, Any]) -> list[str]:
    """The on/off pairs, each measured side by side in the same rounds, with their ratios."""
    if not s.get("pairs"):
        return []
    lines = [
        "Tracing on vs off (a second proxy process with `OTEL_TRACES_EXPORTER=otlp` exporting "
        "every span through the SDK's BatchSpanProcessor and OTLP/HTTP exporter to an nginx "
        "location that reads the body and answers 200), access log on vs off (a third proxy "
        "process at `--log-level info`, its log going to a file) and cache hit vs miss (the same "
        "proxy, a cached route vs the plain one, both on nginx's JSON location), non-stream, in "
        "the same rounds; c=1 latency interleaves the two sides request by request:",
        "",
        "| comparison | req/s, c=32 | CPU-s per 1,000 req | p50 ms, c=1 | p99 ms, c=1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, sides in s["pairs"].items():
        names_ = PAIR_ROWS.get(label, (f"{label} base", f"{label} variant", "variant / base"))
        b, v = sides["base"], sides["variant"]
        for name_, x in ((names_[0], b), (names_[1], v)):
            errs = f" ({x['c32_errors']} errors)" if x["c32_errors"] else ""
            lines.append(
                f"| {name_} | {fmt(x['rps_c32'], 0)}{errs} | {fmt(x['cpu_s_per_1000'], 3)} "
                f"| {fmt(x['c1_p50_ms'], 3)} | {fmt(x['c1_p99_ms'], 3)} |"
            )
        ratios = [
            v[k] / b[k] if b[k] == b[k] and v[k] == v[k] and b[k] else float("nan")
            for k in ("rps_c32", "cpu_s_per_1000", "c1_p50_ms", "c1_p99_ms")
        ]
        lines.append(f"| *{names_[2]}* | " + " | ".join(f"{fmt(x, 2)}x" for x in ratios) + " |")
    lines.append("")
    return lines


def report(results: dict[str, Any], s: dict[str, Any], img_prefix: str) -> str:
    d, p = s["direct"], s["edgeproxy"]
    li = s.get("litellm")
    proc = results["process"]
    held = results["streams_1000"]
    mib = 2**20
    lines: list[str] = []
    a = lines.append
    a(
        f"Run: {results['started']}, {results['edgeproxy_version']}, "
        f"{results['settings']['rounds']} measured rounds after a discarded warm-up, "
        f"{results['settings']['seconds']} s per wrk run, {results['settings']['c1_requests']} "
        "requests per target per round at concurrency 1 (interleaved one by one). "
        f"Machine: {results['machine'].get('cpu', '?')}, {results['machine']['cores']} cores, "
        f"{results['machine'].get('memory', '?')}, {results['machine'].get('os', '')} "
        f"(kernel {results['machine'].get('kernel', '?')}); load average at start "
        f"{results['machine'].get('loadavg_at_start', '?')}. The machine is shared with other "
        "work and noisy: ratios within one run hold, absolute numbers drift between runs."
    )
    a("")
    upstream_ok = d["rps_c32"] >= 10 * p["rps_c32"]
    a(
        f"Upstream check: nginx answers {fmt(d['rps_c32'], 0)} req/s directly at c=32, "
        f"{fmt(d['rps_c32'] / p['rps_c32'], 1)}x the proxy's {fmt(p['rps_c32'], 0)} req/s "
        f"({'meets' if upstream_ok else 'MISSES'} the >= 10x needed for it not to be the bottleneck)."
    )
    a("")
    a("| metric | direct (nginx) | edgeproxy | LiteLLM | edgeproxy / LiteLLM |")
    a("|---|---:|---:|---:|---:|")

    def row(
        label: str, key: str, digits: int = 2, ratio: bool = False, inverse: bool = False
    ) -> None:
        dv = d.get(key, float("nan"))
        pv = p.get(key, float("nan"))
        lv = li.get(key, float("nan")) if li else float("nan")
        r = ""
        if ratio and li and lv == lv and lv:
            r = f"{(lv / pv if inverse else pv / lv):,.1f}x"
        a(f"| {label} | {fmt(dv, digits)} | {fmt(pv, digits)} | {fmt(lv, digits)} | {r} |")

    row("req/s, non-stream, c=32", "rps_c32", 0, ratio=True)
    row("p99 ms at c=32", "c32_p99_ms", 2)
    row("p50 ms, c=1", "c1_p50_ms", 3)
    row("p99 ms, c=1", "c1_p99_ms", 3)
    row("**added** p50 ms, c=1", "added_c1_p50_ms", 3, ratio=True, inverse=True)
    row("**added** p99 ms, c=1", "added_c1_p99_ms", 3, ratio=True, inverse=True)
    row("added p50 ms, c=1 (wrk, sweep point)", "added_c1_p50_ms_wrk", 3, ratio=True, inverse=True)
    row("added p99 ms, c=1 (wrk, sweep point)", "added_c1_p99_ms_wrk", 3)
    row("max req/s with p99 < 5 ms (sweep)", "max_rps_p99_under_5ms", 0, ratio=True)
    row("max req/s with p99 < 50 ms (sweep)", "max_rps_p99_under_50ms", 0, ratio=True)
    row(f"stream TTFT p50 ms, c=1 ({SHORT_EVENTS}-event stream)", "ttft_p50_ms", 3)
    row("**added** TTFT p50 ms, c=1", "added_ttft_p50_ms", 3, ratio=True, inverse=True)
    row("**added** TTFT p99 ms, c=1", "added_ttft_p99_ms", 3)
    row(f"streams/s, {LONG_EVENTS}-event stream, c=32", "sselong_rps_c32", 0, ratio=True)
    row(
        "CPU us per relayed event (c=32, batched reads)",
        "cpu_us_per_event",
        2,
        ratio=True,
        inverse=True,
    )
    row("added wall us per event, c=1", "added_us_per_event_c1", 2)
    row("CPU-seconds per 1,000 requests (c=32)", "cpu_s_per_1000", 3, ratio=True, inverse=True)
    a("")
    a("| process memory | edgeproxy | LiteLLM |")
    a("|---|---:|---:|")
    for label, key in (
        ("RSS idle (MiB)", "rss_idle"),
        ("RSS peak under load (MiB)", "rss_peak"),
        ("RSS after load (MiB)", "rss_after"),
    ):
        lv = proc.get("litellm", {}).get(key)
        a(
            f"| {label} | {proc['edgeproxy'][key] / mib:.1f} | {'n/a' if lv is None else f'{lv / mib:.1f}'} |"
        )
    a("")
    held_est = max(0, (held["fds_peak"] - held["fds_before"]) // 2)
    a(
        f"1,000 concurrent streams (wrk -c{held['connections']} for 30 s through the proxy to an nginx "
        f"location that trickles a {SHORT_EVENTS}-event stream at 256 B/s, ~20 s each): peak RSS "
        f"{held['rss_peak'] / mib:.1f} MiB (from {held['rss_before'] / mib:.1f} MiB), peak open fds "
        f"{held['fds_peak']} (~{held_est} streams held open at once: one client and one upstream "
        f"socket each), {held['completed_streams']} streams completed, {held['errors']} errors, "
        f"{held['cpu_s']:.1f} CPU-seconds."
    )
    a("")
    lines += pairs_table(s)
    if li is None:
        a(
            f"LiteLLM: not measured: {results.get('litellm', {}).get('failed', 'disabled (--no-litellm)')}"
        )
    else:
        lt = results["litellm"]
        a(
            f"LiteLLM {lt['version']} (`{lt['spec']}` in .bench-venv), started as `litellm "
            f"{lt['argv']}` with {', '.join(f'{k}={v}' for k, v in lt['env'].items())}; config: "
            "three `openai/` models pointing at the same nginx locations, `master_key` set, "
            "no database, telemetry off."
        )
    a("")
    a(f"![latency vs concurrency]({img_prefix}bench-latency.png)")
    a(f"![throughput vs concurrency]({img_prefix}bench-throughput.png)")
    a("")
    targets = {
        "non-stream req/s at c=32 >= 3,000": p["rps_c32"] >= 3000,
        ">= 50x LiteLLM's req/s at c=32": bool(li) and p["rps_c32"] >= 50 * li["rps_c32"],
        "added p50 at c=1 <= 0.4 ms": p["added_c1_p50_ms"] <= 0.4,
        "added p99 at c=1 <= 1.5 ms": p["added_c1_p99_ms"] <= 1.5,
        "added TTFT <= 1 ms": p["added_ttft_p50_ms"] <= 1.0,
        "1,000 concurrent streams with RSS <= 300 MB": held["rss_peak"] <= 300e6
        and held["errors"] == 0,
    }
    a("Targets:")
    a("")
    for what, ok in targets.items():
        a(f"- [{'x' if ok else ' '}] {what}")
    s["targets_met"] = targets
    return "\n".join(lines) + "\n"


def plots(s: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError:  # the `load` extra is missing: the figures and results.json still stand
        print("bench: matplotlib is not installed (the `load` extra): no plots", flush=True)
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"direct": "tab:green", "edgeproxy": "tab:blue", "litellm": "tab:red"}
    made = []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for n in s["targets"]:
        pts = s[n]["sweep"]
        cs = [p_["c"] for p_ in pts]
        ax.plot(cs, [p_["p50_ms"] for p_ in pts], "o-", color=colors[n], label=f"{n} p50")
        ax.plot(cs, [p_["p99_ms"] for p_ in pts], "s--", color=colors[n], label=f"{n} p99")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent connections (wrk, closed loop)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Non-stream chat completion latency vs concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "bench-latency.png"
    fig.savefig(path, dpi=110)
    made.append(path)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for n in s["targets"]:
        pts = s[n]["sweep"]
        ax.plot([p_["c"] for p_ in pts], [p_["rps"] for p_ in pts], "o-", color=colors[n], label=n)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent connections (wrk, closed loop)")
    ax.set_ylabel("requests per second")
    ax.set_title("Non-stream throughput vs concurrency (2 shared cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "bench-throughput.png"
    fig.savefig(path, dpi=110)
    made.append(path)
    plt.close(fig)
    return made


def update_docs(text: str) -> None:
    if not DOCS.exists():
        return
    doc = DOCS.read_text()
    if MARK_START not in doc or MARK_END not in doc:
        print(f"bench: {DOCS} has no generated-results markers; not updated", flush=True)
        return
    head, rest = doc.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    DOCS.write_text(f"{head}{MARK_START}\n{text}{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="per wrk run in the rounds")
    parser.add_argument("--c1-requests", type=int, default=500)
    parser.add_argument(
        "--sweep",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 2, 4, 8, 16, 32, 64, 128, 256],
    )
    parser.add_argument("--sweep-seconds", type=float, default=3.0)
    parser.add_argument("--sweep-reps", type=int, default=2)
    parser.add_argument("--hold-streams", type=int, default=1000)
    parser.add_argument("--no-litellm", dest="litellm", action="store_false")
    parser.add_argument(
        "--pairs-only",
        action="store_true",
        help="only the on/off pairs (tracing, access log, cache): no sweep, no peer, docs untouched",
    )
    parser.add_argument("--quick", action="store_true", help="short runs: checks the harness")
    parser.add_argument(
        "--no-docs",
        dest="docs",
        action="store_false",
        help="do not touch docs/ (the default with --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.c1_requests = 2, 1.0, 100
        args.sweep, args.sweep_seconds, args.sweep_reps = [1, 32], 1.0, 1
        args.hold_streams = min(args.hold_streams, 200)
        args.docs = False
    if args.pairs_only:
        args.docs = False
    out = REPO / "bench-results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results = measure(args, out)
    s = summarize(results)
    results["summary"] = s
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if args.pairs_only:
        text = "\n".join(pairs_table(s)) + "\n"
        (out / "report.md").write_text(text)
        print(text)
        print(f"bench: results in {out.relative_to(REPO)}", flush=True)
        return 0
    made = plots(s, out)
    text = report(results, s, "img/" if args.docs else "")
    (out / "report.md").write_text(text)
    if args.docs:
        img = REPO / "docs" / "img"
        img.mkdir(exist_ok=True)
        for path in made:
            shutil.copy(path, img / path.name)
        update_docs(text)
    print(text)
    print(f"bench: results in {out.relative_to(REPO)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

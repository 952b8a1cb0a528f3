"""The ``edgeproxy`` command: serve, demo, sim, policy check/explain/diff/schema, eval, auto."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from edgeproxy import __version__
from edgeproxy.errors import PolicyError
from edgeproxy.evals.cli import add_eval_commands
from edgeproxy.policy import load_policy
from edgeproxy.policy.tool import add_policy_commands
from edgeproxy.snapshot import Policy
from edgeproxy.tasks_cli import add_tasks_commands
from edgeproxy.telemetry.logs import configure_logging

DEFAULT_POLICY = "policies/default.yaml"
DEFAULT_PORT = 8787
DEFAULT_SIM_CONTROL_PORT = 18100


def _run(coro: Coroutine[Any, Any, int]) -> int:
    import uvloop

    return uvloop.run(coro)


def _load_or_explain(path: str) -> Policy | None:
    try:
        return load_policy(path)
    except PolicyError as exc:
        print(f"edgeproxy: the policy {path} is not valid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    policy = _load_or_explain(args.policy)
    if policy is None:
        return 2

    async def main() -> int:
        from edgeproxy.policy.reload import ReloadOptions
        from edgeproxy.server.admin import ADMIN_TOKEN_ENV, METRICS_TOKEN_ENV
        from edgeproxy.server.connections import ConnectionSettings
        from edgeproxy.server.hosts import ALLOWED_HOSTS_ENV, is_loopback
        from edgeproxy.server.runner import ProxyServer

        token = os.environ.get(ADMIN_TOKEN_ENV) or None
        reload = ReloadOptions(
            Path(args.policy), watch=not args.no_watch, debounce=args.reload_debounce
        )
        try:
            given = {
                "keepalive_timeout": args.keepalive_timeout,
                "header_timeout": args.header_timeout,
                "max_connections": args.max_connections,
            }
            connections = ConnectionSettings(**{k: v for k, v in given.items() if v is not None})
        except ValueError as exc:
            print(f"edgeproxy: {exc}", file=sys.stderr)
            return 2
        proxy = ProxyServer(
            policy,
            host=args.host,
            port=args.port,
            reload=reload,
            admin_token=token,
            metrics_token=os.environ.get(METRICS_TOKEN_ENV) or None,
            connections=connections,
            allowed_hosts=args.allowed_hosts or os.environ.get(ALLOWED_HOSTS_ENV) or None,
        )
        try:
            await proxy.start()
        except OSError as exc:
            print(f"edgeproxy: {exc}", file=sys.stderr)
            return 2
        print(
            f"edgeproxy {__version__} serving on {proxy.url} "
            f"(policy {policy.source}, version {policy.version})",
            file=sys.stderr,
            flush=True,
        )
        if token is None and not is_loopback(args.host) and args.host != "localhost":
            print(
                f"edgeproxy: {ADMIN_TOKEN_ENV} is not set: /admin/* answers loopback clients only",
                file=sys.stderr,
                flush=True,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        reloader = proxy.reloader
        if reloader is not None:
            loop.add_signal_handler(signal.SIGHUP, reloader.trigger, "sighup")
        await stop.wait()
        print("edgeproxy: stopping (finishing in-flight requests)", file=sys.stderr, flush=True)
        await proxy.stop()
        return 0

    return _run(main())


def cmd_demo(args: argparse.Namespace) -> int:
    # The tour is the demo's output; the per-request access log would drown it (--log-level info
    # shows it).
    configure_logging(args.log_level if args.log_level != "info" else "warning", "text")
    policy = _load_or_explain(args.policy)
    if policy is None:
        return 2
    from edgeproxy.demo import DemoOptions, run_demo

    options = DemoOptions(
        host=args.host,
        port=args.port,
        control_port=args.control_port,
        ttft=args.ttft,
        tokens_per_second=args.tps,
        check_only=args.check,
    )
    return _run(run_demo(policy, options))


def cmd_sim(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, "text")
    if args.market:
        return _run(_serve_market(args.time_scale))
    policy = _load_or_explain(args.policy)
    if policy is None:
        return 2
    from edgeproxy.sim import SimCluster, parse_fault_spec, run_forever
    from edgeproxy.sim_from_policy import plan_sims

    plan = plan_sims(policy, ttft=args.ttft, tokens_per_second=args.tps)
    faults = {}
    for spec in args.fault:
        name, sep, fault_spec = spec.partition("=")
        if not sep or name not in plan.ports:
            print(
                f"edgeproxy sim: --fault takes NAME=SPEC with NAME one of {', '.join(plan.ports)}",
                file=sys.stderr,
            )
            return 2
        try:
            faults[name] = parse_fault_spec(fault_spec)
        except ValueError as exc:
            print(f"edgeproxy sim: bad fault {fault_spec!r}: {exc}", file=sys.stderr)
            return 2

    def started(cluster: SimCluster) -> None:
        for name, fault in faults.items():
            cluster.sims[name].set_fault(fault)
        for name, sim in cluster.sims.items():
            print(f"{name:<24} {sim.url}  fault={sim.fault.mode}", flush=True)
        print(f"control: {cluster.control_url}/sims", flush=True)

    async def main() -> int:
        cluster = SimCluster(plan.configs, ports=plan.ports, control_port=args.control_port)
        try:
            await run_forever(cluster, on_start=started)
        except OSError as exc:
            print(f"edgeproxy sim: {exc}", file=sys.stderr)
            return 2
        return 0

    return _run(main())


async def _serve_market(time_scale: float) -> int:
    """The simulated market on the ports of policies/examples/auto-market.yaml."""
    from edgeproxy.sim import run_forever
    from edgeproxy.sim.market import Market

    market = Market(fixed_ports=True, time_scale=time_scale)

    def started(cluster: object) -> None:
        for name, sim in market.cluster.sims.items():
            print(f"{name:<12} {sim.url}  models={', '.join(sim.player.profiles)}", flush=True)
        print(f"control: {market.control_url}/sims", flush=True)

    try:
        await run_forever(market.cluster, on_start=started)
    except OSError as exc:
        print(f"edgeproxy sim: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_auto_status(args: argparse.Namespace) -> int:
    from edgeproxy.auto.status import status_command
    from edgeproxy.server.admin import ADMIN_TOKEN_ENV

    return status_command(
        args.url, as_json=args.json, token=os.environ.get(ADMIN_TOKEN_ENV) or None
    )


def cmd_status(args: argparse.Namespace) -> int:
    from edgeproxy.telemetry.status import status_command

    return status_command(args.url, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeproxy", description="An LLM edge proxy sidecar.")
    parser.add_argument("--version", action="version", version=f"edgeproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, *, policy_default: str | None = DEFAULT_POLICY) -> None:
        p.add_argument(
            "--policy", default=policy_default, help=f"policy file (default: {policy_default})"
        )
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    serve = sub.add_parser("serve", help="run the proxy")
    common(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--log-format", default="json", choices=["json", "text"])
    serve.add_argument(
        "--no-watch",
        action="store_true",
        help="do not watch the policy file (SIGHUP and POST /admin/reload still reload it)",
    )
    serve.add_argument(
        "--reload-debounce",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="quiet time after the last change to the policy file before reloading (default 0.2)",
    )
    serve.add_argument(
        "--keepalive-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="close a client connection idle this long between requests (default 75)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="close a client connection that has not sent a whole request head this long after "
        "it opened, or after the first byte of its next request (default 10)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="refuse client connections beyond N with a 503 (default: half the open-file limit)",
    )
    serve.add_argument(
        "--allowed-hosts",
        default=None,
        metavar="LIST",
        help="Host header values to answer, comma-separated, '*' for any (default: "
        "$EDGEPROXY_ALLOWED_HOSTS, else loopback names when bound to loopback, any otherwise)",
    )
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="run the proxy in front of simulated providers")
    common(demo)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT)
    demo.add_argument("--control-port", type=int, default=DEFAULT_SIM_CONTROL_PORT)
    demo.add_argument("--ttft", type=float, default=0.2, help="simulated time to first token (s)")
    demo.add_argument("--tps", type=float, default=60.0, help="simulated tokens per second")
    demo.add_argument(
        "--check", action="store_true", help="run the tour, then exit (0 if it passed)"
    )
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("sim", help="run the simulated providers a policy points at")
    common(sim)
    sim.add_argument("--control-port", type=int, default=DEFAULT_SIM_CONTROL_PORT)
    sim.add_argument("--ttft", type=float, default=0.2)
    sim.add_argument("--tps", type=float, default=60.0)
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="start a sim with a fault, e.g. alpha-us-east=status:503 or alpha-eu-west=cut:after_tokens=5",
    )
    sim.add_argument(
        "--market",
        action="store_true",
        help="serve the simulated model market of policies/examples/auto-market.yaml instead",
    )
    sim.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="--market: multiply every simulated delay by this (0.1 runs 10x faster)",
    )
    sim.set_defaults(func=cmd_sim)

    policy = sub.add_parser("policy", help="work with policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    add_policy_commands(policy_sub)

    tasks = sub.add_parser("tasks", help="train and evaluate the task classifier")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    add_tasks_commands(tasks_sub)
    add_eval_commands(sub)

    auto = sub.add_parser("auto", help="the auto routes' decisions (docs/auto.md)")
    auto_sub = auto.add_subparsers(dest="auto_command", required=True)
    auto_status = auto_sub.add_parser(
        "status", help="per route x task: incumbent, challenger, ramp, objective values, why"
    )
    auto_status.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help="the proxy")
    auto_status.add_argument("--json", action="store_true", help="print the raw /admin/auto JSON")
    auto_status.set_defaults(func=cmd_auto_status)

    status = sub.add_parser("status", help="show a running proxy's candidates, breakers, health")
    status.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help="the proxy")
    status.add_argument("--json", action="store_true", help="print the raw /admin/status JSON")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (
        getattr(args, "policy", None) is not None
        and not getattr(args, "market", False)
        and not Path(args.policy).exists()
        and args.policy == DEFAULT_POLICY
    ):
        print(
            f"edgeproxy: {DEFAULT_POLICY} not found: run from the repository root or pass --policy",
            file=sys.stderr,
        )
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The ``edgeproxy`` command: serve, demo, sim, policy check/explain/diff/schema/docs, status.

Each command is one ``add_*`` function that builds its parser and names the function it runs;
``COMMANDS`` lists them in the order ``--help`` shows them. Settings a container sets by
environment are declared with ``cli_options.add_setting`` (flag, variable, default, all shown
in ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from edgeproxy import __version__
from edgeproxy.builtin import default_policy_path
from edgeproxy.cli_options import (
    add_setting,
    one_of,
    port,
    positive_int,
    resolve_settings,
    seconds,
    text,
)
from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy
from edgeproxy.policy.tool import add_policy_commands
from edgeproxy.snapshot import Policy
from edgeproxy.telemetry.logs import configure_logging

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_SIM_CONTROL_PORT = 18100
DEFAULT_DRAIN_DELAY = 5.0
DEFAULT_DRAIN_TIMEOUT = 30.0
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
BUILTIN_POLICY = "the built-in policy (its upstreams are the simulators of `edgeproxy sim`)"

Subparsers = Any  # argparse's _SubParsersAction, which argparse does not export


def _run(coro: Coroutine[Any, Any, int]) -> int:
    import uvloop

    try:
        return uvloop.run(coro)
    except asyncio.CancelledError:  # a second SIGTERM / Ctrl-C during a graceful stop
        return 1


def _policy_path(given: str | None) -> Path:
    return Path(given) if given else default_policy_path()


def _load_or_explain(path: Path) -> Policy | None:
    try:
        return load_policy(path)
    except PolicyError as exc:
        print(f"edgeproxy: the policy {path} is not valid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _command(
    sub: Subparsers,
    name: str,
    summary: str,
    examples: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)
    return parser


def _log_level(parser: argparse.ArgumentParser, env: str | None = "EDGEPROXY_LOG_LEVEL") -> None:
    add_setting(
        parser,
        "--log-level",
        env=env,
        default="info",
        parse=one_of(LOG_LEVELS),
        metavar="{" + ",".join(LOG_LEVELS) + "}",
        help="log level; info and below include the per-request access log",
    )


# -- serve -----------------------------------------------------------------------------------------

SERVE_EXAMPLES = """\
examples:
  edgeproxy serve --policy policies/default.yaml
  edgeproxy serve --policy /etc/edgeproxy/policy.yaml --host 0.0.0.0 --port 8787
  EDGEPROXY_POLICY=/etc/edgeproxy/policy.yaml EDGEPROXY_PORT=9000 edgeproxy serve

environment (never flags: they would show in `ps`):
  EDGEPROXY_ADMIN_TOKEN    bearer token for /admin/* (and /metrics) from any address; unset:
                           /admin/* answers loopback clients only
  EDGEPROXY_METRICS_TOKEN  bearer token for /metrics alone; unset (and no admin token): open
  OTEL_*                   OpenTelemetry exporters and sampling (docs/observability.md)
  provider keys            whatever the policy's ${VARIABLES} name (e.g. OPENAI_API_KEY)

signals: SIGHUP reloads the policy; SIGTERM drains (/readyz fails at once, new connections
are refused after --drain-delay, in-flight requests and streams get --drain-timeout), then
exits 0; SIGINT (Ctrl-C) drains without the delay; a second SIGTERM or SIGINT stops at once.
"""


def add_serve(sub: Subparsers) -> None:
    serve = _command(
        sub,
        "serve",
        "run the proxy (foreground; for containers and services)",
        SERVE_EXAMPLES,
        cmd_serve,
    )
    add_setting(
        serve,
        "--policy",
        env="EDGEPROXY_POLICY",
        default=None,
        parse=text,
        shown=BUILTIN_POLICY,
        metavar="FILE",
        help="the policy file, watched and reloaded when it changes",
    )
    add_setting(
        serve,
        "--host",
        env="EDGEPROXY_HOST",
        default=DEFAULT_HOST,
        parse=text,
        help="address to bind; 0.0.0.0 or :: to take traffic from outside the host or pod",
    )
    add_setting(
        serve,
        "--port",
        env="EDGEPROXY_PORT",
        default=DEFAULT_PORT,
        parse=port,
        help="port to bind; 0 for any free port",
    )
    _log_level(serve)
    add_setting(
        serve,
        "--log-format",
        env="EDGEPROXY_LOG_FORMAT",
        default="json",
        parse=one_of(LOG_FORMATS),
        metavar="{" + ",".join(LOG_FORMATS) + "}",
        help="log lines as JSON (for machines) or text (for people)",
    )
    serve.add_argument(
        "--no-watch",
        action="store_true",
        help="do not watch the policy file (SIGHUP and POST /admin/reload still reload it)",
    )
    add_setting(
        serve,
        "--reload-debounce",
        env="EDGEPROXY_RELOAD_DEBOUNCE",
        default=0.2,
        parse=seconds,
        metavar="SECONDS",
        help="quiet time after the last change to the policy file before reloading",
    )
    add_setting(
        serve,
        "--keepalive-timeout",
        env="EDGEPROXY_KEEPALIVE_TIMEOUT",
        default=None,
        parse=seconds,
        shown="75",
        metavar="SECONDS",
        help="close a client connection idle this long between requests",
    )
    add_setting(
        serve,
        "--header-timeout",
        env="EDGEPROXY_HEADER_TIMEOUT",
        default=None,
        parse=seconds,
        shown="10",
        metavar="SECONDS",
        help="close a client connection that has not sent a whole request head this long after "
        "it opened, or after the first byte of its next request",
    )
    add_setting(
        serve,
        "--max-connections",
        env="EDGEPROXY_MAX_CONNECTIONS",
        default=None,
        parse=positive_int,
        shown="half the open-file limit",
        metavar="N",
        help="client connections at most: at the cap the longest-waiting idle or slow one is "
        "closed, and a new one is refused with a 503 only when all are busy",
    )
    add_setting(
        serve,
        "--allowed-hosts",
        env="EDGEPROXY_ALLOWED_HOSTS",
        default=None,
        parse=text,
        shown="loopback names when bound to loopback, any otherwise",
        metavar="LIST",
        help="extra Host header values to answer, comma-separated (e.g. a Kubernetes service "
        "name), '*' for any",
    )
    add_setting(
        serve,
        "--drain-delay",
        env="EDGEPROXY_DRAIN_DELAY",
        default=DEFAULT_DRAIN_DELAY,
        parse=seconds,
        metavar="SECONDS",
        help="on SIGTERM, keep accepting connections this long after /readyz starts failing "
        "(time for a load balancer to stop sending)",
    )
    add_setting(
        serve,
        "--drain-timeout",
        env="EDGEPROXY_DRAIN_TIMEOUT",
        default=DEFAULT_DRAIN_TIMEOUT,
        parse=seconds,
        metavar="SECONDS",
        help="on SIGTERM or SIGINT, how long requests and streams in flight may take to finish "
        "once the listener is closed; what is left is then cut",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    path = _policy_path(args.policy)
    policy = _load_or_explain(path)
    if policy is None:
        return 2
    return _run(_serve(args, path, policy))


async def _serve(args: argparse.Namespace, path: Path, policy: Policy) -> int:
    from edgeproxy.policy.reload import ReloadOptions
    from edgeproxy.server.admin import ADMIN_TOKEN_ENV, METRICS_TOKEN_ENV
    from edgeproxy.server.connections import ConnectionSettings
    from edgeproxy.server.hosts import is_loopback
    from edgeproxy.server.runner import ProxyServer

    token = os.environ.get(ADMIN_TOKEN_ENV) or None
    reload = ReloadOptions(path, watch=not args.no_watch, debounce=args.reload_debounce)
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
        allowed_hosts=args.allowed_hosts,
        shutdown_timeout=args.drain_timeout,
    )
    try:
        await proxy.start()
    except OSError as exc:
        print(
            f"edgeproxy: {exc.strerror or exc} (another process holds it? pass --port N or "
            "EDGEPROXY_PORT=N, "
            "or --port 0 for any free port)",
            file=sys.stderr,
        )
        return 2
    print(
        f"edgeproxy {__version__} serving on {proxy.url} "
        f"(policy {policy.source}, version {policy.version})",
        file=sys.stderr,
        flush=True,
    )
    if args.policy is None:
        print(f"edgeproxy: serving {BUILTIN_POLICY}; pass --policy FILE", file=sys.stderr)
    if token is None and not is_loopback(args.host) and args.host != "localhost":
        print(
            f"edgeproxy: {ADMIN_TOKEN_ENV} is not set: /admin/* answers loopback clients only",
            file=sys.stderr,
            flush=True,
        )
    loop = asyncio.get_running_loop()
    if proxy.reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, proxy.reloader.trigger, "sighup")
    received = await _first_signal((signal.SIGINT, signal.SIGTERM))
    # A second SIGTERM / Ctrl-C stops at once: cancelling this task cuts what is in flight.
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stop_now, main_task)
    delay = args.drain_delay if received == signal.SIGTERM else 0.0
    print(
        f"edgeproxy: {signal.Signals(received).name}: draining (new connections refused in "
        f"{delay:g} s, requests in flight get up to {args.drain_timeout:g} s)",
        file=sys.stderr,
        flush=True,
    )
    await proxy.drain(delay)
    print("edgeproxy: stopped", file=sys.stderr, flush=True)
    return 0


async def _first_signal(signals: Sequence[signal.Signals]) -> int:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def got(sig: int) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in signals:
        loop.add_signal_handler(sig, got, sig)
    return await received


def _stop_now(task: asyncio.Task[Any]) -> None:
    print("edgeproxy: stopping now (requests in flight are cut)", file=sys.stderr, flush=True)
    task.cancel()


# -- demo ------------------------------------------------------------------------------------------

DEMO_EXAMPLES = """\
examples:
  edgeproxy demo                        # the tour, then the proxy keeps serving on :8787
  edgeproxy demo --check                # the tour on free ports, exit 0 if every request passed
  edgeproxy demo --port 0 --control-port 0 --sim-ports free   # beside another demo
"""


def add_demo(sub: Subparsers) -> None:
    demo = _command(
        sub,
        "demo",
        "run the proxy in front of simulated providers, with a live failover tour",
        DEMO_EXAMPLES,
        cmd_demo,
    )
    add_setting(
        demo,
        "--policy",
        env=None,
        default=None,
        parse=text,
        shown="the built-in policy",
        metavar="FILE",
        help="the policy to serve; its loopback upstreams are simulated",
    )
    add_setting(demo, "--host", env=None, default=DEFAULT_HOST, parse=text, help="address to bind")
    demo.add_argument(
        "--port",
        type=port,
        default=None,
        help=f"the proxy's port; 0 for any free port (default: {DEFAULT_PORT}; 0 with --check)",
    )
    demo.add_argument(
        "--control-port",
        type=port,
        default=None,
        help="the simulator control API's port; 0 for any free port (default: "
        f"{DEFAULT_SIM_CONTROL_PORT}; 0 with --check)",
    )
    demo.add_argument(
        "--sim-ports",
        choices=["policy", "free"],
        default=None,
        help="where the simulators listen: on the ports the policy names, or on free ports "
        "with the demo serving a copy of the policy that points there (default: policy; free "
        "with --check)",
    )
    add_setting(
        demo,
        "--ttft",
        env=None,
        default=0.2,
        parse=seconds,
        metavar="SECONDS",
        help="simulated time to first token",
    )
    add_setting(
        demo,
        "--tps",
        env=None,
        default=60.0,
        parse=seconds,
        metavar="N",
        help="simulated tokens per second (0: unpaced)",
    )
    demo.add_argument(
        "--check",
        action="store_true",
        help="run the tour once (on free ports unless given), then exit: 0 if every request "
        "was served and streamed complete, 1 if not",
    )
    _log_level(demo, env=None)


def cmd_demo(args: argparse.Namespace) -> int:
    # The tour is the demo's output; the per-request access log would drown it (--log-level info
    # shows it).
    configure_logging(args.log_level if args.log_level != "info" else "warning", "text")
    path = _policy_path(args.policy)
    policy = _load_or_explain(path)
    if policy is None:
        return 2
    from edgeproxy.demo import DemoOptions, run_demo
    from edgeproxy.policy.load import read_policy_text

    free = 0 if args.check else None
    options = DemoOptions(
        host=args.host,
        port=args.port if args.port is not None else (free if free is not None else DEFAULT_PORT),
        control_port=args.control_port
        if args.control_port is not None
        else (free if free is not None else DEFAULT_SIM_CONTROL_PORT),
        ttft=args.ttft,
        tokens_per_second=args.tps,
        check_only=args.check,
        free_sim_ports=(args.sim_ports or ("free" if args.check else "policy")) == "free",
    )
    return _run(run_demo(policy, options, read_policy_text(path)))


# -- sim -------------------------------------------------------------------------------------------

SIM_EXAMPLES = """\
examples:
  edgeproxy sim                                   # the built-in policy's simulators
  edgeproxy sim --policy my-policy.yaml --fault alpha-us-east=status:503
  curl -X PUT http://127.0.0.1:18100/sims/alpha-us-east/fault -d '{"mode": "cut", "after_tokens": 5}'
"""


def add_sim(sub: Subparsers) -> None:
    sim = _command(
        sub, "sim", "run the simulated providers a policy points at", SIM_EXAMPLES, cmd_sim
    )
    add_setting(
        sim,
        "--policy",
        env=None,
        default=None,
        parse=text,
        shown="the built-in policy",
        metavar="FILE",
        help="one simulator per loopback region of this policy, on the port it names",
    )
    add_setting(
        sim,
        "--control-port",
        env=None,
        default=DEFAULT_SIM_CONTROL_PORT,
        parse=port,
        help="the control API's port (faults, stats); 0 for any free port",
    )
    add_setting(
        sim,
        "--ttft",
        env=None,
        default=0.2,
        parse=seconds,
        metavar="SECONDS",
        help="time to first token",
    )
    add_setting(
        sim, "--tps", env=None, default=60.0, parse=seconds, metavar="N", help="tokens per second"
    )
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="start a sim with a fault, e.g. alpha-us-east=status:503 or "
        "alpha-eu-west=cut:after_tokens=5 (repeatable)",
    )
    _log_level(sim, env=None)


def cmd_sim(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, "text")
    policy = _load_or_explain(_policy_path(args.policy))
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
            print(
                f"edgeproxy sim: {exc.strerror or exc} (another `edgeproxy sim` or demo?)",
                file=sys.stderr,
            )
            return 2
        return 0

    return _run(main())


# -- policy, status ----------------------------------------------------------------------------------

POLICY_EXAMPLES = """\
examples:
  edgeproxy policy check policies/default.yaml policies/examples/
  edgeproxy policy explain policies/default.yaml --request req.json --down alpha/us-east
  edgeproxy policy diff old.yaml new.yaml
  edgeproxy policy schema > policies/schema.json
  edgeproxy policy docs --update docs/policies.md
"""


def add_policy(sub: Subparsers) -> None:
    policy = _command(sub, "policy", "work with policy files", POLICY_EXAMPLES, _no_run)
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    add_policy_commands(policy_sub)


def _no_run(args: argparse.Namespace) -> int:  # argparse requires a policy subcommand
    return 2


STATUS_EXAMPLES = """\
examples:
  edgeproxy status                                  # the proxy on 127.0.0.1:8787
  edgeproxy status --watch 2                        # redraw every 2 s until Ctrl-C
  EDGEPROXY_ADMIN_TOKEN=... edgeproxy status --url http://edgeproxy.internal:8787 --json
"""


def add_status(sub: Subparsers) -> None:
    status = _command(
        sub,
        "status",
        "show a running proxy's candidates, breakers, probes and last reload",
        STATUS_EXAMPLES,
        cmd_status,
    )
    add_setting(
        status,
        "--url",
        env="EDGEPROXY_URL",
        default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
        parse=text,
        help="the proxy (sends EDGEPROXY_ADMIN_TOKEN as a bearer token when set)",
    )
    status.add_argument("--json", action="store_true", help="print the raw /admin/status JSON")
    status.add_argument(
        "--watch",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS until Ctrl-C (default: draw once)",
    )


def cmd_status(args: argparse.Namespace) -> int:
    from edgeproxy.telemetry.status import status_command

    return status_command(args.url, as_json=args.json, watch=args.watch)


# -- the command -------------------------------------------------------------------------------------

# Every subcommand, in --help order: add one by writing its add_* function and listing it here.
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    add_serve,
    add_demo,
    add_sim,
    add_policy,
    add_status,
)

MAIN_EXAMPLES = """\
examples:
  edgeproxy demo                                   # try it: simulated providers and a tour
  edgeproxy serve --policy policy.yaml             # the sidecar (EDGEPROXY_* variables work too)
  edgeproxy policy check policy.yaml               # lint a policy in CI

`edgeproxy COMMAND --help` lists each command's settings, defaults and variables.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeproxy",
        description="An LLM edge proxy sidecar.",
        epilog=MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgeproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = resolve_settings(args, os.environ)
    if problem is not None:
        print(f"edgeproxy {args.command}: {problem}", file=sys.stderr)
        return 2
    given = getattr(args, "policy", None)
    if isinstance(given, str) and not Path(given).exists():
        print(f"edgeproxy {args.command}: the policy file {given} does not exist", file=sys.stderr)
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

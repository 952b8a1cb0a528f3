"""``edgeproxy demo``: its options; the demo itself is ``edgeproxy.demo``."""

from __future__ import annotations

import argparse

from edgeproxy.commands.common import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_SIM_CONTROL_PORT,
    Subparsers,
    command,
    load_or_explain,
    log_level_setting,
    policy_path,
    run_async,
)
from edgeproxy.commands.options import add_setting, port, seconds, text
from edgeproxy.telemetry.logs import configure_logging

DEMO_EXAMPLES = """\
examples:
  edgeproxy demo                        # the tour, then the proxy keeps serving on :8787
  edgeproxy demo --check                # the tour on free ports, exit 0 if every request passed
  edgeproxy demo --port 0 --control-port 0 --sim-ports free   # beside another demo
"""


def add_demo(sub: Subparsers) -> None:
    demo = command(
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
    log_level_setting(demo, env=None)


def cmd_demo(args: argparse.Namespace) -> int:
    # The tour is the demo's output; the per-request access log would drown it (--log-level info
    # shows it).
    configure_logging(args.log_level if args.log_level != "info" else "warning", "text")
    path = policy_path(args.policy)
    policy = load_or_explain(path)
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
    return run_async(run_demo(policy, options, read_policy_text(path)))

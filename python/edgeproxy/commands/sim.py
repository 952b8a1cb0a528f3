"""``edgeproxy sim``: the simulated providers a policy points at, on the ports it names."""

from __future__ import annotations

import argparse
import sys

from edgeproxy.commands.common import (
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

SIM_EXAMPLES = """\
examples:
  edgeproxy sim                                   # the built-in policy's simulators
  edgeproxy sim --policy my-policy.yaml --fault alpha-us-east=status:503
  curl -X PUT http://127.0.0.1:18100/sims/alpha-us-east/fault -d '{"mode": "cut", "after_tokens": 5}'
"""


def add_sim(sub: Subparsers) -> None:
    sim = command(
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
    log_level_setting(sim, env=None)


def cmd_sim(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, "text")
    policy = load_or_explain(policy_path(args.policy))
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

    return run_async(main())

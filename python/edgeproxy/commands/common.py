"""What the ``edgeproxy`` subcommands share: defaults, the built-in policy, loading a policy with
its problems printed, declaring a command with its examples, and running a coroutine on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from edgeproxy.builtin import default_policy_path
from edgeproxy.commands.options import add_setting, one_of
from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy
from edgeproxy.snapshot import Policy

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_SIM_CONTROL_PORT = 18100
DEFAULT_DRAIN_DELAY = 5.0
DEFAULT_DRAIN_TIMEOUT = 30.0
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
BUILTIN_POLICY = "the built-in policy (its upstreams are the simulators of `edgeproxy sim`)"

Subparsers = Any  # argparse's _SubParsersAction, which argparse does not export


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    import uvloop

    try:
        return uvloop.run(coro)
    except asyncio.CancelledError:  # a second SIGTERM / Ctrl-C during a graceful stop
        return 1


def policy_path(given: str | None) -> Path:
    return Path(given) if given else default_policy_path()


def load_or_explain(path: Path) -> Policy | None:
    try:
        return load_policy(path)
    except PolicyError as exc:
        print(f"edgeproxy: the policy {path} is not valid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def command(
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


def log_level_setting(
    parser: argparse.ArgumentParser, env: str | None = "EDGEPROXY_LOG_LEVEL"
) -> None:
    add_setting(
        parser,
        "--log-level",
        env=env,
        default="info",
        parse=one_of(LOG_LEVELS),
        metavar="{" + ",".join(LOG_LEVELS) + "}",
        help="log level; info and below include the per-request access log",
    )

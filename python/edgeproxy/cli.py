"""The ``edgeproxy`` command: serve, demo, sim, policy check/explain/diff/schema/docs, status,
tasks train/eval/corpus, eval run/compare/show/schedule, auto status, keys
create/list/revoke/usage.

Each subcommand lives in ``edgeproxy.commands.<name>``: an ``add_<name>`` function builds its
parser (settings a container sets by environment are declared with
``commands.options.add_setting``: flag, variable, default, all shown in ``--help``) and names the
function it runs. ``COMMANDS`` below registers them, in the order ``--help`` shows them: adding a
command is a module and one line here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edgeproxy import __version__
from edgeproxy.commands.auto import add_auto
from edgeproxy.commands.common import DEFAULT_PORT, Subparsers
from edgeproxy.commands.demo import add_demo
from edgeproxy.commands.keys import add_keys
from edgeproxy.commands.options import resolve_settings
from edgeproxy.commands.policy import add_policy
from edgeproxy.commands.serve import add_serve
from edgeproxy.commands.sim import add_sim
from edgeproxy.commands.status import add_status
from edgeproxy.evals.cli import add_eval_commands
from edgeproxy.tasks_cli import add_tasks

__all__ = ["COMMANDS", "DEFAULT_PORT", "build_parser", "main"]

# Every subcommand, in --help order: add one by writing its add_* function and listing it here.
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    add_serve,
    add_demo,
    add_sim,
    add_policy,
    add_status,
    add_tasks,
    add_eval_commands,
    add_auto,
    add_keys,
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

"""``edgeproxy policy``: the group; its subcommands are ``policy/tool.py``'s."""

from __future__ import annotations

import argparse

from edgeproxy.commands.common import Subparsers, command
from edgeproxy.policy.tool import add_policy_commands

POLICY_EXAMPLES = """\
examples:
  edgeproxy policy check policies/default.yaml policies/examples/
  edgeproxy policy explain policies/default.yaml --request req.json --down alpha/us-east
  edgeproxy policy diff old.yaml new.yaml
  edgeproxy policy schema > policies/schema.json
  edgeproxy policy docs --update docs/policies.md
"""


def add_policy(sub: Subparsers) -> None:
    policy = command(sub, "policy", "work with policy files", POLICY_EXAMPLES, _no_run)
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    add_policy_commands(policy_sub)


def _no_run(args: argparse.Namespace) -> int:  # argparse requires a policy subcommand
    return 2

"""``edgeproxy auto status``: the auto routes' decisions of a running proxy (``GET /admin/auto``,
drawn by ``auto/status.py``)."""

from __future__ import annotations

import argparse
import os

from edgeproxy.commands.common import DEFAULT_HOST, DEFAULT_PORT, Subparsers, command
from edgeproxy.commands.options import add_setting, text

AUTO_EXAMPLES = """\
examples:
  edgeproxy auto status                             # the proxy on 127.0.0.1:8787
  EDGEPROXY_ADMIN_TOKEN=... edgeproxy auto status --url http://edgeproxy.internal:8787 --json
"""


def add_auto(sub: Subparsers) -> None:
    # A subcommand is required: the parent's own function never runs.
    auto = command(
        sub, "auto", "the auto routes' decisions (docs/auto.md)", AUTO_EXAMPLES, cmd_auto_status
    )
    auto_sub = auto.add_subparsers(dest="auto_command", required=True, metavar="SUBCOMMAND")
    status = auto_sub.add_parser(
        "status",
        help="per route x task: incumbent, challenger, ramp, objective values, why",
        epilog=AUTO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_setting(
        status,
        "--url",
        env="EDGEPROXY_URL",
        default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
        parse=text,
        help="the proxy (sends EDGEPROXY_ADMIN_TOKEN as a bearer token when set)",
    )
    status.add_argument("--json", action="store_true", help="print the raw /admin/auto JSON")
    status.set_defaults(func=cmd_auto_status)


def cmd_auto_status(args: argparse.Namespace) -> int:
    from edgeproxy.auto.status import status_command
    from edgeproxy.server.admin import ADMIN_TOKEN_ENV

    return status_command(
        args.url, as_json=args.json, token=os.environ.get(ADMIN_TOKEN_ENV) or None
    )

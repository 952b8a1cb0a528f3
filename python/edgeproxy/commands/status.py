"""``edgeproxy status``: a running proxy's ``/admin/status`` in a terminal
(``telemetry/status.py`` draws it)."""

from __future__ import annotations

import argparse

from edgeproxy.commands.common import DEFAULT_HOST, DEFAULT_PORT, Subparsers, command
from edgeproxy.commands.options import add_setting, seconds, text

STATUS_EXAMPLES = """\
examples:
  edgeproxy status                                  # the proxy on 127.0.0.1:8787
  edgeproxy status --watch 2                        # redraw every 2 s until Ctrl-C
  EDGEPROXY_ADMIN_TOKEN=... edgeproxy status --url http://edgeproxy.internal:8787 --json
"""


def add_status(sub: Subparsers) -> None:
    status = command(
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

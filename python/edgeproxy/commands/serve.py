"""``edgeproxy serve``: the proxy in the foreground, configured by flags or EDGEPROXY_* variables;
SIGHUP reloads the policy, SIGTERM drains (``runner.ProxyServer.drain``), a second signal stops
at once."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeproxy import __version__
from edgeproxy.commands.common import (
    BUILTIN_POLICY,
    DEFAULT_DRAIN_DELAY,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LOG_FORMATS,
    Subparsers,
    command,
    load_or_explain,
    log_level_setting,
    policy_path,
    run_async,
)
from edgeproxy.commands.options import add_setting, one_of, port, positive_int, seconds, text
from edgeproxy.snapshot import Policy
from edgeproxy.telemetry.logs import configure_logging

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
  EDGEPROXY_FLEET_REDIS    the fleet's Redis URL when the policy's fleet.redis is unset
                           (docs/fleet.md)
  provider keys            whatever the policy's ${VARIABLES} name (e.g. OPENAI_API_KEY)

signals: SIGHUP reloads the policy; SIGTERM drains (/readyz fails at once, new connections
are refused after --drain-delay, in-flight requests and streams get --drain-timeout), then
exits 0; SIGINT (Ctrl-C) drains without the delay; a second SIGTERM or SIGINT stops at once.
"""


def add_serve(sub: Subparsers) -> None:
    serve = command(
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
    log_level_setting(serve)
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
    path = policy_path(args.policy)
    policy = load_or_explain(path)
    if policy is None:
        return 2
    return run_async(_serve(args, path, policy))


async def _serve(args: argparse.Namespace, path: Path, policy: Policy) -> int:
    from edgeproxy.policy.reload import ReloadOptions
    from edgeproxy.server.admin import ADMIN_TOKEN_ENV, METRICS_TOKEN_ENV
    from edgeproxy.server.connections import ConnectionSettings
    from edgeproxy.server.hosts import is_loopback
    from edgeproxy.server.limiter import FLEET_ENV, LimitsMisconfigured
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
    try:
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
            fleet_redis=os.environ.get(FLEET_ENV) or None,
        )
    except LimitsMisconfigured as exc:
        print(f"edgeproxy: {exc}", file=sys.stderr)
        return 2
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

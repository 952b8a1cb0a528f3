"""``edgeproxy keys``: create, list, revoke virtual keys and read their usage (docs/keys.md).

The store is the policy's: Redis when it names a fleet (``fleet.redis``, else
``EDGEPROXY_FLEET_REDIS``), else its SQLite file (``keys.store``). A key is printed once, by
``create``, and never stored: the store keeps its digest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from edgeproxy.commands.common import Subparsers, command, load_or_explain, policy_path
from edgeproxy.commands.options import add_setting, text
from edgeproxy.keys import SqliteStore, VirtualKey, make_key, parse_expiry
from edgeproxy.limits.asks import UsageRow
from edgeproxy.limits.periods import period_bounds
from edgeproxy.snapshot import PERIODS, Budget, Limits, Policy

KEYS_EXAMPLES = """\
examples:
  edgeproxy keys create --policy policy.yaml --name ci-bot --team search --budget 50usd/month \\
      --rpm 60 --tpm 100000 --routes gpt-4o-mini,claude --expires 2026-12-31
  edgeproxy keys list --policy policy.yaml
  edgeproxy keys revoke --policy policy.yaml ci-bot
  edgeproxy keys usage --policy policy.yaml --period month --by team

the store is the policy's: Redis when it names a fleet (fleet.redis, else the variable
EDGEPROXY_FLEET_REDIS), else its SQLite file (keys.store). A key is shown once, by create.
"""
CREATE_EXAMPLES = """\
  edgeproxy keys create --policy policy.yaml --name ci-bot
  edgeproxy keys create --policy policy.yaml --name ci-bot --team search --budget 50usd/month \\
      --rpm 60 --tpm 100000 --routes gpt-4o-mini,claude --expires 2026-12-31
  edgeproxy keys create --policy policy.yaml --name demo --expires 2026-06-30T18:00:00+02:00

--budget is <amount>usd/<day|week|month> (UTC periods); --expires a date (the key stops at
00:00 UTC that day) or an ISO date-time in the future. The key is printed once, on stdout.
"""
FLEET_ENV = "EDGEPROXY_FLEET_REDIS"
GROUPS = ("key", "team", "route", "model")


def add_keys(sub: Subparsers) -> None:
    keys = command(
        sub, "keys", "create, list and revoke virtual keys; their usage", KEYS_EXAMPLES, _no_run
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    def with_policy(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_setting(
            parser,
            "--policy",
            env="EDGEPROXY_POLICY",
            default=None,
            parse=text,
            shown="the built-in policy",
            metavar="FILE",
            help="the policy whose key store is used (keys.store or fleet.redis)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON")
        return parser

    def sub_parser(name: str, summary: str, examples: str) -> argparse.ArgumentParser:
        return keys_sub.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog="examples:\n" + examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    create = with_policy(
        sub_parser("create", "make a key (printed once) with its limits", CREATE_EXAMPLES)
    )
    create.add_argument("--name", required=True, help="what the key is for (shown in logs)")
    create.add_argument("--team", default=None, help="the team (its limits: the policy's teams)")
    create.add_argument("--budget", default=None, metavar="USD/PERIOD", help="e.g. 50usd/month")
    create.add_argument("--rpm", type=int, default=None, help="requests per minute")
    create.add_argument("--tpm", type=int, default=None, help="tokens per minute")
    create.add_argument(
        "--routes", default=None, metavar="A,B", help="the routes it may use (default: all)"
    )
    create.add_argument(
        "--expires",
        default=None,
        metavar="DATE",
        help="2026-12-31: it stops working that day (UTC)",
    )
    create.set_defaults(func=cmd_create)
    listing = with_policy(
        sub_parser(
            "list",
            "the keys (never the keys themselves)",
            "  edgeproxy keys list --policy policy.yaml\n"
            "  edgeproxy keys list --policy policy.yaml --json\n",
        )
    )
    listing.set_defaults(func=cmd_list)
    revoke = with_policy(
        sub_parser(
            "revoke",
            "revoke a key by id or name",
            "  edgeproxy keys revoke --policy policy.yaml ci-bot\n"
            "  edgeproxy keys revoke --policy policy.yaml key_1a2b3c4d5e6f\n",
        )
    )
    revoke.add_argument("key", help="the key's id (key_…) or name")
    revoke.set_defaults(func=cmd_revoke)
    usage = with_policy(
        sub_parser(
            "usage",
            "spend and tokens per key, team, route, model",
            "  edgeproxy keys usage --policy policy.yaml --period month --by team,model\n"
            "  edgeproxy keys usage --policy policy.yaml --period day --by key --json\n",
        )
    )
    usage.add_argument("--period", choices=PERIODS, default="month", help="this UTC day/week/month")
    usage.add_argument(
        "--by", default="key", help=f"group by one or more of {','.join(GROUPS)} (comma-separated)"
    )
    usage.set_defaults(func=cmd_usage)


def _no_run(args: argparse.Namespace) -> int:
    return 2


class Store(Protocol):
    async def create(self, key: VirtualKey) -> None: ...

    async def fetch_all(self) -> tuple[int, list[VirtualKey]]: ...

    async def revoke(self, which: str, now: float) -> list[VirtualKey]: ...

    async def usage(self, start: float, end: float) -> list[UsageRow]: ...

    async def close(self) -> None: ...


class _Sqlite:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def create(self, key: VirtualKey) -> None:
        self.store.create(key)

    async def fetch_all(self) -> tuple[int, list[VirtualKey]]:
        return self.store.load()

    async def revoke(self, which: str, now: float) -> list[VirtualKey]:
        return self.store.revoke(which, now)

    async def usage(self, start: float, end: float) -> list[UsageRow]:
        return self.store.usage(start, end)

    async def close(self) -> None:
        return None


class _Redis:
    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as aioredis

        from edgeproxy.fleet.keystore import RedisKeyStore

        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        self.keystore = RedisKeyStore(self.client, prefix)

    async def create(self, key: VirtualKey) -> None:
        await self.keystore.create(key)

    async def fetch_all(self) -> tuple[int, list[VirtualKey]]:
        return await self.keystore.fetch_all()

    async def revoke(self, which: str, now: float) -> list[VirtualKey]:
        return await self.keystore.revoke(which, now)

    async def usage(self, start: float, end: float) -> list[UsageRow]:
        return await self.keystore.usage(start, end)

    async def close(self) -> None:
        await self.client.aclose()


def _store(policy: Policy) -> Store | None:
    url = policy.fleet.redis or os.environ.get(FLEET_ENV)
    if url:
        try:
            return _Redis(url, policy.fleet.prefix)
        except ValueError as exc:  # redis-py's URL parser: a port that is not a number, ...
            where = "fleet.redis" if policy.fleet.redis else FLEET_ENV
            print(f"edgeproxy keys: {where} is not a valid Redis URL: {exc}", file=sys.stderr)
            return None
    if policy.keys.store is not None:
        path = Path(policy.keys.store)
        if not path.is_absolute():
            path = Path(policy.source).resolve().parent / path
        return _Sqlite(SqliteStore(path))
    print(
        "edgeproxy keys: the policy has no key store: set keys.store (a SQLite file) or "
        f"fleet.redis (or {FLEET_ENV})",
        file=sys.stderr,
    )
    return None


def _run(args: argparse.Namespace, work: Any) -> int:
    policy = load_or_explain(policy_path(args.policy))
    if policy is None:
        return 2
    store = _store(policy)
    if store is None:
        return 2

    async def go() -> int:
        try:
            code: int = await work(args, policy, store)
            return code
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except (OSError, ValueError) as exc:
        print(f"edgeproxy keys: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the store could not be reached (a RedisError, a locked file)
        print(f"edgeproxy keys: the key store failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


# -- create -------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    return _run(args, _create)


async def _create(args: argparse.Namespace, policy: Policy, store: Store) -> int:
    try:
        budget = Budget.parse(args.budget) if args.budget else None
        limits = Limits(rpm=args.rpm, tpm=args.tpm, budget=budget)
        expires = parse_expiry(args.expires) if args.expires else None
        if expires is not None and expires <= time.time():
            raise ValueError(
                f"--expires {args.expires} is in the past: the key would never work "
                "(a date means 00:00 UTC that day)"
            )
    except ValueError as exc:
        print(f"edgeproxy keys create: {exc}", file=sys.stderr)
        return 2
    routes = tuple(r.strip() for r in (args.routes or "").split(",") if r.strip())
    unknown = [r for r in routes if r not in policy.route_names]
    if unknown:
        print(
            f"edgeproxy keys create: no route {', '.join(unknown)} in the policy "
            f"(routes: {', '.join(policy.route_names)})",
            file=sys.stderr,
        )
        return 2
    key, record = make_key(
        args.name, now=time.time(), team=args.team, limits=limits, routes=routes, expires=expires
    )
    await store.create(record)
    if args.json:
        print(orjson.dumps({"key": key, **_shown(record)}).decode())
    else:
        print(key)
        print(
            f"created {record.id} ({record.name}); the key above is shown once: store it now",
            file=sys.stderr,
        )
    if args.team is not None and args.team not in policy.teams:
        print(f"note: team {args.team!r} has no limits in this policy (teams:)", file=sys.stderr)
    return 0


# -- list and revoke ----------------------------------------------------------------------


def _shown(key: VirtualKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "hint": key.hint,
        "team": key.team,
        "rpm": key.limits.rpm,
        "tpm": key.limits.tpm,
        "budget": str(key.limits.budget) if key.limits.budget is not None else None,
        "routes": list(key.routes),
        "created": _date(key.created),
        "expires": _date(key.expires),
        "revoked": _date(key.revoked),
        "state": key.refusal(time.time()) or "active",
    }


def _date(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def cmd_list(args: argparse.Namespace) -> int:
    return _run(args, _list)


async def _list(args: argparse.Namespace, policy: Policy, store: Store) -> int:
    _, keys = await store.fetch_all()
    rows = [_shown(k) for k in keys]
    if args.json:
        print(orjson.dumps(rows).decode())
        return 0
    header = ("id", "name", "hint", "team", "limits", "routes", "expires", "state")
    table = [
        (
            r["id"],
            r["name"],
            r["hint"],
            r["team"] or "-",
            Limits(k.limits.rpm, k.limits.tpm, k.limits.budget).describe(),
            ",".join(r["routes"]) or "all",
            r["expires"] or "-",
            r["state"],
        )
        for r, k in zip(rows, keys, strict=True)
    ]
    _print_table(header, table)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    return _run(args, _revoke)


async def _revoke(args: argparse.Namespace, policy: Policy, store: Store) -> int:
    done = await store.revoke(args.key, time.time())
    if not done:
        print(f"edgeproxy keys revoke: no key with the id or name {args.key!r}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps([_shown(k) for k in done]).decode())
    else:
        for key in done:
            print(f"revoked {key.id} ({key.name})")
    return 0


# -- usage --------------------------------------------------------------------------------


def cmd_usage(args: argparse.Namespace) -> int:
    return _run(args, _usage)


async def _usage(args: argparse.Namespace, policy: Policy, store: Store) -> int:
    groups = [g.strip() for g in args.by.split(",") if g.strip()]
    if not groups or any(g not in GROUPS for g in groups):
        print(f"edgeproxy keys usage: --by takes {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    start, end, name = period_bounds(args.period, time.time())
    rows = await store.usage(start, end)
    _, keys = await store.fetch_all()
    names = {k.id: k.name for k in keys}
    totals = summarize(rows, groups, names)
    if args.json:
        print(orjson.dumps({"period": name, "by": groups, "rows": totals}).decode())
        return 0
    print(f"usage in {name} (UTC), by {', '.join(groups)}")
    header = (*groups, "requests", "input_tokens", "output_tokens", "usd")
    _print_table(
        header,
        [
            (
                *(str(t[g]) for g in groups),
                str(t["requests"]),
                str(t["input_tokens"]),
                str(t["output_tokens"]),
                f"{t['usd']:.6f}",
            )
            for t in totals
        ],
    )
    return 0


def summarize(
    rows: Sequence[UsageRow], groups: Sequence[str], names: dict[str, str]
) -> list[dict[str, Any]]:
    """Usage rows added up by ``groups`` (key, team, route, model), dearest first."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        who = {
            "key": names.get(row.key_id, row.key_id) if row.key_id else "-",
            "team": row.team or "-",
            "route": row.route,
            "model": row.model or "-",
        }
        group = tuple(who[g] for g in groups)
        total = out.setdefault(
            group,
            {
                **{g: who[g] for g in groups},
                "requests": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "usd": 0.0,
            },
        )
        total["requests"] += row.requests
        total["input_tokens"] += row.input_tokens
        total["output_tokens"] += row.output_tokens
        total["usd"] += row.usd
    return sorted(out.values(), key=lambda t: -float(t["usd"]))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, row, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

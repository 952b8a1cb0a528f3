"""``edgeproxy policy check | explain | diff | schema``: the SRE's tools for policy files.

Exit codes, for CI:

- ``check``: 0 every file valid (warnings allowed unless ``--strict``), 1 a file is invalid.
- ``explain``: 0 some candidate would be tried, 1 the request would fail (no route, or nothing
  eligible: fails closed), 2 the policy or the request file is unusable.
- ``diff``: 0 no change for traffic, 1 changes (like diff(1)), 2 a policy is invalid.
- ``schema``: 0.
- ``docs``: 0; with ``--update FILE``, 1 when FILE lacks a generated block's markers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from edgeproxy.errors import PolicyError
from edgeproxy.policy.load import load_policy
from edgeproxy.policy.reload import problem_dict
from edgeproxy.snapshot import Policy


def _out(text: str) -> None:
    sys.stdout.write(text)


def _json(data: Any) -> None:
    _out(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given; directories become the ``*.yaml`` / ``*.yml`` files under them."""
    out: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                str(p) for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
            )
            out.extend(found)
        else:
            out.append(raw)
    return out


def cmd_check(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    failed = False
    paths = expand_paths(args.paths)
    if not paths:
        print("edgeproxy policy check: no policy files found", file=sys.stderr)
        return 1
    for path in paths:
        try:
            policy = load_policy(path, missing_secrets="warn")
        except PolicyError as exc:
            failed = True
            results.append(
                {
                    "path": path,
                    "ok": False,
                    "errors": [str(p) for p in exc.problems],
                    "problems": [problem_dict(p) for p in exc.problems],
                    "warnings": [],
                }
            )
            continue
        if args.strict and policy.warnings:
            failed = True
        candidates = {c.key for name in policy.route_names for c in policy.routes[name].candidates}
        results.append(
            {
                "path": path,
                "ok": not (args.strict and policy.warnings),
                "version": policy.version,
                "routes": len(policy.route_names),
                "candidates": len(candidates),
                "errors": [],
                "problems": [],
                "warnings": list(policy.warnings),
            }
        )
    if args.format == "json":
        _json(results)
    else:
        for r in results:
            for line in r["errors"]:
                print(f"error: {line}")
            for line in r["warnings"]:
                print(f"warning: {line}")
            if "version" in r:
                verdict = "ok" if r["ok"] else "warnings are errors (--strict)"
                print(
                    f"{r['path']}: {verdict} (version {r['version']}, {r['routes']} routes, "
                    f"{r['candidates']} candidates)"
                )
            else:
                print(f"{r['path']}: {len(r['errors'])} problem(s)")
    return 1 if failed else 0


def _load_for_tool(path: str, command: str) -> Policy | None:
    try:
        return load_policy(path, missing_secrets="warn")
    except PolicyError as exc:
        print(f"edgeproxy policy {command}: {path} is not a valid policy:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def cmd_explain(args: argparse.Namespace) -> int:
    from edgeproxy.policy.explain import explain, render_text, unknown_down

    policy = _load_for_tool(args.path, "explain")
    if policy is None:
        return 2
    try:
        raw = sys.stdin.buffer.read() if args.request == "-" else Path(args.request).read_bytes()
        body = orjson.loads(raw)
    except OSError as exc:
        print(
            f"edgeproxy policy explain: cannot read {args.request}: {exc.strerror}", file=sys.stderr
        )
        return 2
    except orjson.JSONDecodeError as exc:
        print(f"edgeproxy policy explain: {args.request} is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        print(
            "edgeproxy policy explain: the request must be a chat completion body with a "
            '"model" (and "messages"), e.g. {"model": "gpt-4o-mini", "messages": [...]}',
            file=sys.stderr,
        )
        return 2
    for typo in unknown_down(policy, args.down):
        print(
            f"edgeproxy policy explain: warning: --down {typo} matches no candidate "
            "(write provider, provider/region or provider/region/model)",
            file=sys.stderr,
        )
    headers = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            print(
                f"edgeproxy policy explain: --header {header!r}: write NAME: VALUE",
                file=sys.stderr,
            )
            return 2
        headers[name.strip().lower()] = value.strip()
    explanation = explain(policy, body, args.down, headers)
    if args.format == "json":
        _json(explanation.as_dict())
    else:
        _out(render_text(explanation))
    return 0 if explanation.tried else 1


def cmd_diff(args: argparse.Namespace) -> int:
    from edgeproxy.policy.diff import diff_policies, render_text

    old = _load_for_tool(args.old, "diff")
    new = _load_for_tool(args.new, "diff")
    if old is None or new is None:
        return 2
    changes = diff_policies(old, new)
    if args.format == "json":
        _json(
            {
                "old": {"source": old.source, "version": old.version},
                "new": {"source": new.source, "version": new.version},
                "changes": [c.as_dict() for c in changes],
            }
        )
    else:
        _out(render_text(old, new, changes))
    return 1 if changes else 0


def schema_text() -> str:
    from edgeproxy.policy.schema import policy_json_schema

    return orjson.dumps(policy_json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    _out(schema_text())
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from edgeproxy.policy.reference import render_all, update

    if args.update is None:
        _out(render_all())
        return 0
    path = Path(args.update)
    try:
        path.write_text(update(path.read_text(encoding="utf-8")), encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"edgeproxy policy docs: {path}: {exc}", file=sys.stderr)
        return 1
    return 0


def _examples(*lines: str) -> dict[str, Any]:
    """``--help`` ends with these example command lines."""
    return {
        "epilog": "examples:\n" + "".join(f"  {line}\n" for line in lines),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def add_policy_commands(sub: Any) -> None:
    """Register the ``policy`` subcommands on ``sub`` (an argparse subparsers object)."""
    check = sub.add_parser(
        "check",
        help="validate policy files or directories (exit 1 if any is invalid)",
        **_examples(
            "edgeproxy policy check policies/default.yaml policies/examples/",
            "edgeproxy policy check --strict --format json policy.yaml",
        ),
    )
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.add_argument("--format", default="text", choices=["text", "json"])
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser(
        "explain",
        help="dry-run routing for one request: which candidates, in what order, why",
        **_examples(
            "edgeproxy policy explain policy.yaml --request req.json --down alpha/us-east",
            """echo '{"model": "gpt-4o-mini", "messages": []}' | """
            "edgeproxy policy explain policy.yaml --request -",
        ),
    )
    explain.add_argument("path", metavar="PATH", help="policy file")
    explain.add_argument(
        "--request",
        required=True,
        metavar="REQ.json",
        help="a chat completion request body ('-' reads stdin)",
    )
    explain.add_argument(
        "--down",
        action="append",
        default=[],
        metavar="PROVIDER[/REGION[/MODEL]]",
        help="treat this provider, region or candidate as down (repeatable)",
    )
    explain.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header, e.g. 'x-edgeproxy-task: qa' (repeatable)",
    )
    explain.add_argument("--format", default="text", choices=["text", "json"])
    explain.set_defaults(func=cmd_explain)

    diff = sub.add_parser(
        "diff",
        help="what changes for traffic between two policies (exit 1 if anything does)",
        **_examples("edgeproxy policy diff <(git show HEAD:policy.yaml) policy.yaml"),
    )
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")
    diff.add_argument("--format", default="text", choices=["text", "json"])
    diff.set_defaults(func=cmd_diff)

    schema = sub.add_parser(
        "schema",
        help="print the policy's JSON Schema (policies/schema.json)",
        **_examples("edgeproxy policy schema > policies/schema.json"),
    )
    schema.set_defaults(func=cmd_schema)

    docs = sub.add_parser(
        "docs",
        help="print the key reference tables of docs/policies.md, generated from the spec",
        **_examples("edgeproxy policy docs --update docs/policies.md"),
    )
    docs.add_argument(
        "--update",
        metavar="FILE",
        help="rewrite the generated blocks of FILE (docs/policies.md) in place",
    )
    docs.set_defaults(func=cmd_docs)

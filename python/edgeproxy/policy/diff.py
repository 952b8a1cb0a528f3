"""``edgeproxy policy diff OLD NEW``: what a policy change does to traffic, not to text.

Both files are compiled first, so the diff is between what the proxy would serve: ``*`` regions
expanded, defaults applied, aliases resolved. A reordered YAML map with the same effect shows no
change; a changed default timeout shows on every route that inherits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeproxy.policy.describe import describe_policy
from edgeproxy.policy.units import format_duration
from edgeproxy.snapshot import Policy


@dataclass(frozen=True)
class Change:
    scope: str  # "policy", "route NAME", "model NAME", "candidate KEY"
    what: str
    old: str
    new: str

    def as_dict(self) -> dict[str, str]:
        return {"scope": self.scope, "what": self.what, "old": self.old, "new": self.new}


def _chain(route: dict[str, Any]) -> str:
    return " > ".join(c["key"] for c in route["chain"]) or "(empty)"


def _tags(tags: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in tags.items()) or "-"


def _chain_note(old: list[str], new: list[str]) -> str:
    added = [k for k in new if k not in old]
    removed = [k for k in old if k not in new]
    parts = []
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    common_old = [k for k in old if k in new]
    common_new = [k for k in new if k in old]
    if common_old != common_new:
        parts.append("order changed")
    if old and new and old[0] != new[0]:
        parts.append(f"primary {old[0]} -> {new[0]}")
    return "; ".join(parts)


def diff_policies(old: Policy, new: Policy) -> list[Change]:
    a, b = describe_policy(old), describe_policy(new)
    changes: list[Change] = []
    if a["max_body_bytes"] != b["max_body_bytes"]:
        changes.append(
            Change(
                "policy",
                "limits.max_body_bytes",
                str(a["max_body_bytes"]),
                str(b["max_body_bytes"]),
            )
        )
    old_routes: dict[str, Any] = a["routes"]
    new_routes: dict[str, Any] = b["routes"]
    for name in old_routes:
        if name not in new_routes:
            changes.append(Change(f"route {name}", "removed", _chain(old_routes[name]), "-"))
    for name, route in new_routes.items():
        if name not in old_routes:
            changes.append(Change(f"route {name}", "added", "-", _chain(route)))
            continue
        changes.extend(_route_changes(name, old_routes[name], route))
    # Which route answers each model name the app may send (aliases moving between routes).
    old_names = {n: r.name for n, r in old.routes.items()}
    new_names = {n: r.name for n, r in new.routes.items()}
    for model in sorted(old_names.keys() | new_names.keys()):
        before, after = old_names.get(model), new_names.get(model)
        # A route added or removed under its own name is already a row above.
        trivial = (before is None and after == model) or (after is None and before == model)
        if before != after and not trivial:
            changes.append(
                Change(
                    f"model {model}",
                    "served by",
                    f"route {before}" if before else "404",
                    f"route {after}" if after else "404",
                )
            )
    changes.extend(_candidate_changes(old_routes, new_routes))
    return changes


def _route_changes(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    scope = f"route {name}"
    out: list[Change] = []
    old_keys = [c["key"] for c in old["chain"]]
    new_keys = [c["key"] for c in new["chain"]]
    if old_keys != new_keys:
        out.append(Change(scope, "chain", _chain(old), _chain(new)))
        out.append(Change(scope, "chain (summary)", "", _chain_note(old_keys, new_keys)))
    if old["aliases"] != new["aliases"]:
        out.append(
            Change(
                scope, "aliases", ", ".join(old["aliases"]) or "-", ", ".join(new["aliases"]) or "-"
            )
        )
    if old["max_attempts"] != new["max_attempts"]:
        out.append(
            Change(scope, "max_attempts", str(old["max_attempts"]), str(new["max_attempts"]))
        )
    for key, value in old["timeouts"].items():
        if new["timeouts"][key] != value:
            out.append(
                Change(
                    scope,
                    f"timeouts.{key}",
                    format_duration(value),
                    format_duration(new["timeouts"][key]),
                )
            )
    if old["on_midstream_failure"] != new["on_midstream_failure"]:
        out.append(
            Change(
                scope,
                "on_midstream_failure",
                old["on_midstream_failure"],
                new["on_midstream_failure"],
            )
        )
    if old["require_tags"] != new["require_tags"]:
        out.append(
            Change(scope, "require_tags", _tags(old["require_tags"]), _tags(new["require_tags"]))
        )
    if old["min_context_window"] != new["min_context_window"]:
        out.append(
            Change(
                scope,
                "min_context_window",
                str(old["min_context_window"] or "-"),
                str(new["min_context_window"] or "-"),
            )
        )
    return out


_CANDIDATE_FIELDS = ("base_url", "upstream_model", "context_window", "tags", "header_names")


def _candidate_changes(old_routes: dict[str, Any], new_routes: dict[str, Any]) -> list[Change]:
    """Candidates in both versions whose endpoint or model changed under the same key."""
    old_c = {c["key"]: c for r in old_routes.values() for c in r["chain"]}
    new_c = {c["key"]: c for r in new_routes.values() for c in r["chain"]}
    out = []
    for key in old_c.keys() & new_c.keys():
        for f in _CANDIDATE_FIELDS:
            before, after = old_c[key][f], new_c[key][f]
            if before != after:
                show = (
                    _tags
                    if f == "tags"
                    else (lambda v: ", ".join(v) if isinstance(v, list) else str(v))
                )
                out.append(Change(f"candidate {key}", f, show(before), show(after)))
    return sorted(out, key=lambda c: (c.scope, c.what))


def render_text(old: Policy, new: Policy, changes: list[Change]) -> str:
    from edgeproxy.policy.explain import format_table

    head = f"{old.source} (version {old.version}) -> {new.source} (version {new.version})"
    if not changes:
        return f"{head}\nno change for traffic\n"
    rows = [("scope", "what", "old", "new")]
    rows.extend((c.scope, c.what, c.old, c.new) for c in changes)
    return "\n".join([head, "", *format_table(rows), "", f"{len(changes)} change(s)"]) + "\n"

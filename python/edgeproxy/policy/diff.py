"""``edgeproxy policy diff OLD NEW``: what a policy change does to traffic, not to text.

Both files are compiled first, so the diff is between what the proxy would serve: ``*`` regions
expanded, defaults applied, aliases resolved. A reordered YAML map with the same effect shows no
change; a changed default shows on every route that inherits it.

What is compared is every key the spec declares with a place in the snapshot (``catalog.views``):
the process-wide settings (limits, breakers, retries, budget, probes, telemetry), each route's
settings and chain, and each candidate's endpoint, wire, headers, query, model settings and
health check. A new key is compared as soon as it is declared. Values that can hold a secret are
compared but never printed: a header whose value changed shows as changed, without the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeproxy.policy.catalog import KeyInfo
from edgeproxy.policy.describe import flat_view, shown_value
from edgeproxy.policy.keys import Scope
from edgeproxy.policy.units import format_duration, format_size
from edgeproxy.snapshot import Policy, Route


@dataclass(frozen=True)
class Change:
    scope: str  # "policy", "route NAME", "model NAME", "candidate KEY"
    what: str
    old: str
    new: str

    def as_dict(self) -> dict[str, str]:
        return {"scope": self.scope, "what": self.what, "old": self.old, "new": self.new}


def format_value(info: KeyInfo, value: Any) -> str:
    """A shown value (``describe.shown_value``) as one table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if info.unit == "seconds":
            return format_duration(value)
        if info.unit == "bytes":
            return format_size(int(value))
        if info.unit == "percent":
            return f"{value:g}%"
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def _chain(route: Route) -> str:
    return " > ".join(c.key for c in route.chain) or "(empty)"


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


def _view_changes(scope_name: str, old: Any, new: Any, scope: Scope) -> list[Change]:
    """Every shown key whose effective value differs between two compiled objects."""
    before, after = flat_view(old, scope), flat_view(new, scope)
    out = []
    for name, (info, a) in before.items():
        b = after[name][1]
        if a == b:
            continue
        shown_a = format_value(info, shown_value(info, a))
        shown_b = format_value(info, shown_value(info, b))
        if shown_a == shown_b:  # it differs only in what is never printed (a key, a header)
            shown_b += " (values changed, not shown)"
        out.append(Change(scope_name, name, shown_a, shown_b))
    return out


def diff_policies(old: Policy, new: Policy) -> list[Change]:
    changes = _view_changes("policy", old, new, "policy")
    for name in old.route_names:
        if name not in new.route_names:
            changes.append(Change(f"route {name}", "removed", _chain(old.routes[name]), "-"))
    for name in new.route_names:
        route = new.routes[name]
        if name not in old.route_names:
            changes.append(Change(f"route {name}", "added", "-", _chain(route)))
            continue
        changes.extend(_route_changes(name, old.routes[name], route))
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
    changes.extend(_candidate_changes(old, new))
    return changes


def _route_changes(name: str, old: Route, new: Route) -> list[Change]:
    scope = f"route {name}"
    out: list[Change] = []
    old_keys = [c.key for c in old.chain]
    new_keys = [c.key for c in new.chain]
    if old_keys != new_keys:
        out.append(Change(scope, "chain", _chain(old), _chain(new)))
        out.append(Change(scope, "chain (summary)", "", _chain_note(old_keys, new_keys)))
    for task in sorted(old.task_chains.keys() | new.task_chains.keys()):
        before = [c.key for c in old.task_chains.get(task, ())]
        after = [c.key for c in new.task_chains.get(task, ())]
        if before != after:
            out.append(
                Change(
                    scope,
                    f"tasks.{task}.chain",
                    " > ".join(before) or "(the route's chain)",
                    " > ".join(after) or "(the route's chain)",
                )
            )
    out.extend(_auto_changes(scope, old, new))
    out.extend(_view_changes(scope, old, new, "route"))
    return out


def _auto_changes(scope: str, old: Route, new: Route) -> list[Change]:
    """``auto`` switched on or off, and its pool (compared like a chain)."""
    if (old.auto is None) != (new.auto is None):
        state = ("off", "on") if old.auto is None else ("on", "off")
        return [Change(scope, "auto", *state)]
    if old.auto is None or new.auto is None:
        return []
    before = [c.key for c in old.auto.pool]
    after = [c.key for c in new.auto.pool]
    if before == after:
        return []
    return [
        Change(scope, "auto.pool", ", ".join(before) or "(empty)", ", ".join(after) or "(empty)"),
        Change(scope, "auto.pool (summary)", "", _chain_note(before, after)),
    ]


def _candidate_changes(old: Policy, new: Policy) -> list[Change]:
    """Candidates in both versions whose endpoint, wire, headers or model settings changed."""
    old_c = {c.key: c for n in old.route_names for c in old.routes[n].candidates}
    new_c = {c.key: c for n in new.route_names for c in new.routes[n].candidates}
    out = []
    for key in old_c.keys() & new_c.keys():
        out.extend(_view_changes(f"candidate {key}", old_c[key], new_c[key], "candidate"))
    return sorted(out, key=lambda c: (c.scope, c.what))


def render_text(old: Policy, new: Policy, changes: list[Change]) -> str:
    from edgeproxy.policy.explain import format_table

    head = f"{old.source} (version {old.version}) -> {new.source} (version {new.version})"
    if not changes:
        return f"{head}\nno change for traffic\n"
    rows = [("scope", "what", "old", "new")]
    rows.extend((c.scope, c.what, c.old, c.new) for c in changes)
    return "\n".join([head, "", *format_table(rows), "", f"{len(changes)} change(s)"]) + "\n"

"""A policy snapshot as plain data (``GET /admin/policy``, ``policy diff``); never a secret.

What is shown is derived from the spec (``catalog.views``): every key that reaches the compiled
snapshot, named as the policy writes it, with its effective value (defaults applied, ``defaults``
inherited, percentages as percentages). Values that can hold a secret go through their key's
``show``: headers by name only, URLs without credentials, credential-like query values masked.
"""

from __future__ import annotations

from typing import Any

from edgeproxy.policy.catalog import KeyInfo, optional_blocks, views
from edgeproxy.policy.keys import Scope, as_percent
from edgeproxy.policy.shown import plain
from edgeproxy.snapshot import Candidate, Policy, Route


def raw_value(info: KeyInfo, obj: Any) -> Any:
    """The key's effective value on a compiled object, as the proxy holds it (may be secret)."""
    assert info.at is not None
    return info.at.read(obj)


def shown_value(info: KeyInfo, raw: Any) -> Any:
    """What may be printed of ``raw``: JSON-ready, in the key's unit, never a secret."""
    if info.key is not None and info.key.show is not None and raw is not None:
        raw = info.key.show(raw)
    if info.unit == "percent" and isinstance(raw, int | float):
        return as_percent(raw)
    return plain(raw)


def flat_view(obj: Any, scope: Scope) -> dict[str, tuple[KeyInfo, Any]]:
    """``{view name: (key, raw value)}`` for every key shown on ``obj``."""
    return {info.view: (info, raw_value(info, obj)) for info in views(scope)}


def _nested(obj: Any, scope: Scope) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (info, raw) in flat_view(obj, scope).items():
        *parents, leaf = name.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = shown_value(info, raw)
    for block in optional_blocks(scope):  # an absent hedge or price is null, not all nulls
        *parents, leaf = block.split(".")
        node = out
        for parent in parents:
            node = node[parent]
            if node is None:  # inside a block already shown as null (auto.shadow in auto)
                break
        else:
            if _unset(node[leaf]):
                node[leaf] = None
    return out


def _unset(value: Any) -> bool:
    """None, or a block of nothing but unset values (nested blocks included)."""
    if isinstance(value, dict):
        return all(_unset(v) for v in value.values())
    return value is None


def describe_candidate(candidate: Candidate) -> dict[str, Any]:
    return {
        "key": candidate.key,
        "provider": candidate.provider,
        "region": candidate.region,
        "model": candidate.model,
        **_nested(candidate, "candidate"),
    }


def describe_route(route: Route) -> dict[str, Any]:
    data = {
        "chain": [describe_candidate(c) for c in route.chain],
        "tasks": {
            task: {"chain": [describe_candidate(c) for c in chain]}
            for task, chain in route.task_chains.items()
        },
        **_nested(route, "route"),
        "excluded": [{"key": e.key, "reason": e.reason} for e in route.excluded],
    }
    if route.auto is not None:  # the pool is compiled like a chain (docs/auto.md)
        data["auto"]["pool"] = [describe_candidate(c) for c in route.auto.pool]
        data["auto"]["excluded"] = [{"key": e.key, "reason": e.reason} for e in route.auto.excluded]
    return data


def describe_policy(policy: Policy) -> dict[str, Any]:
    return {
        "version": policy.version,
        "source": policy.source,
        "settings": _nested(policy, "policy"),
        "routes": {name: describe_route(policy.routes[name]) for name in policy.route_names},
        "warnings": list(policy.warnings),
    }

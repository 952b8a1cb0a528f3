"""A policy snapshot as plain data (for ``GET /admin/policy`` and ``policy diff``); no secrets.

Candidate headers hold provider keys, so they are never part of this view: only their names.
"""

from __future__ import annotations

from typing import Any

from edgeproxy.snapshot import Candidate, Policy, Route


def describe_candidate(candidate: Candidate) -> dict[str, Any]:
    return {
        "key": candidate.key,
        "provider": candidate.provider,
        "region": candidate.region,
        "model": candidate.model,
        "upstream_model": candidate.upstream_model,
        "base_url": candidate.base_url,
        "context_window": candidate.context_window,
        "tags": dict(candidate.tags),
        "header_names": sorted(candidate.headers),
    }


def describe_route(route: Route) -> dict[str, Any]:
    t = route.timeouts
    return {
        "aliases": list(route.aliases),
        "chain": [describe_candidate(c) for c in route.chain],
        "max_attempts": route.max_attempts,
        "timeouts": {
            "connect": t.connect,
            "first_token": t.first_token,
            "idle": t.idle,
            "response": t.response,
            "total": t.total,
        },
        "on_midstream_failure": route.on_midstream_failure,
        "require_tags": dict(route.require_tags),
        "min_context_window": route.min_context_window,
        "excluded": [{"key": e.key, "reason": e.reason} for e in route.excluded],
    }


def describe_policy(policy: Policy) -> dict[str, Any]:
    return {
        "version": policy.version,
        "source": policy.source,
        "max_body_bytes": policy.max_body_bytes,
        "routes": {name: describe_route(policy.routes[name]) for name in policy.route_names},
        "warnings": list(policy.warnings),
    }

"""Which simulated providers a policy needs: one per region whose base URL is on loopback.

Used by ``edgeproxy demo`` and ``edgeproxy sim`` so the simulators always match the policy the
proxy serves (same ports, same provider keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import cast, get_args
from urllib.parse import urlsplit, urlunsplit

import yaml

from edgeproxy.sim import SimConfig
from edgeproxy.sim.config import SimWire
from edgeproxy.snapshot import Candidate, Policy

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True)
class SimPlan:
    configs: list[SimConfig]
    ports: dict[str, int]


def sim_name(candidate: Candidate) -> str:
    return f"{candidate.provider}-{candidate.region}"


def plan_sims(policy: Policy, *, ttft: float, tokens_per_second: float) -> SimPlan:
    configs: dict[str, SimConfig] = {}
    ports: dict[str, int] = {}
    dimensions: dict[str, int] = {}  # the embedding length a region's models declare
    for name in policy.route_names:
        for candidate in policy.routes[name].candidates:
            url = urlsplit(candidate.base_url)
            if url.hostname not in LOOPBACK_HOSTS or url.port is None:
                continue
            key = sim_name(candidate)
            if candidate.dimensions is not None:
                dimensions.setdefault(key, candidate.dimensions)
            if key in configs:
                continue
            configs[key] = SimConfig(
                name=key,
                ttft=ttft,
                tokens_per_second=tokens_per_second,
                require_api_key=_bearer(candidate),
                wire=sim_wire(candidate),
            )
            ports[key] = url.port
    planned = [
        replace(config, embedding_dimensions=dimensions[key]) if key in dimensions else config
        for key, config in configs.items()
    ]
    return SimPlan(planned, ports)


def sim_wire(candidate: Candidate) -> SimWire:
    """The simulator's wire for a candidate: the same API, by the same name."""
    name = candidate.wire.name
    if name not in get_args(SimWire):
        raise ValueError(f"the simulator does not speak the {name!r} wire ({candidate.key})")
    return cast(SimWire, name)


def _bearer(candidate: Candidate) -> str | None:
    auth = candidate.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ")
    return candidate.headers.get("api-key") or candidate.headers.get("x-goog-api-key")


def repoint_policy_text(text: str, ports: Mapping[str, int]) -> str:
    """The policy with each simulated region's loopback ``base_url`` moved to the port its
    simulator really listens on (``ports`` by ``sim_name``), for ``demo --sim-ports free``.

    Works on the parsed document (``${ENV}`` references stay as written, the loader expands
    them); comments are not kept. Only call it on a policy that loaded: the loader has refused
    anything hostile (alias bombs, huge files) already.
    """
    document = yaml.safe_load(text)
    providers = document.get("providers") if isinstance(document, dict) else None
    for provider_name, provider in (providers or {}).items():
        regions = provider.get("regions") if isinstance(provider, dict) else None
        for region_name, region in (regions or {}).items():
            name = f"{provider_name}-{region_name}"
            if name not in ports or not isinstance(region, dict):
                continue
            url = urlsplit(str(region.get("base_url", "")))
            if url.hostname not in LOOPBACK_HOSTS or url.port is None:
                continue
            host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
            region["base_url"] = urlunsplit(url._replace(netloc=f"{host}:{ports[name]}"))
    return yaml.safe_dump(document, sort_keys=False)

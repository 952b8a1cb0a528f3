"""Which simulated providers a policy needs: one per region whose base URL is on loopback.

Used by ``edgeproxy demo`` and ``edgeproxy sim`` so the simulators always match the policy the
proxy serves (same ports, same provider keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast, get_args
from urllib.parse import urlsplit

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
    for name in policy.route_names:
        for candidate in policy.routes[name].candidates:
            url = urlsplit(candidate.base_url)
            if url.hostname not in LOOPBACK_HOSTS or url.port is None:
                continue
            key = sim_name(candidate)
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
    return SimPlan(list(configs.values()), ports)


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
    return candidate.headers.get("api-key")

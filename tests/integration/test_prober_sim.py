"""The prober's real probes against a simulated provider on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import MappingProxyType

import pytest

from edgeproxy.clock import FakeClock
from edgeproxy.resilience.breaker import BreakerRegistry
from edgeproxy.resilience.engine import probe_target
from edgeproxy.resilience.prober import Prober, http_probe
from edgeproxy.sim import Fault, SimConfig, SimProvider
from edgeproxy.snapshot import BreakerSettings, Candidate, ProberSettings
from edgeproxy.snapshot.settings import ProbeMode
from edgeproxy.upstreams.http1 import Http1Pool
from edgeproxy.wires import upstream_wire


def candidate(base_url: str, mode: ProbeMode) -> Candidate:
    wire = upstream_wire("openai")
    return Candidate(
        provider="alpha",
        region="one",
        model="m" if mode != "tcp" else "tcp",
        upstream_model="m",
        wire=wire,
        base_url=base_url,
        chat_url=wire.endpoint_url(base_url, {}),
        context_window=None,
        tags=MappingProxyType({}),
        headers=MappingProxyType({"Authorization": "Bearer sk-test"}),
        health_check=mode,
    )


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    provider = SimProvider(SimConfig(name="alpha", ttft=0.0, require_api_key="sk-test"))
    await provider.start()
    yield provider
    await provider.stop()


async def test_probes_take_a_refusing_provider_out_and_bring_it_back(
    sim: SimProvider, make_pool: Callable[..., Http1Pool]
) -> None:
    clock = FakeClock()  # schedules on the fake clock; the probes themselves go over real sockets
    registry = BreakerRegistry(lambda _: BreakerSettings(), clock)
    key = "alpha/one/m"
    targets = [
        probe_target(candidate(sim.url, "models"), (key,)),
        probe_target(candidate(sim.url, "tcp"), ("alpha/one/tcp",)),
    ]
    settings = ProberSettings(interval=10, jitter=0, timeout=2, unhealthy_threshold=2)
    prober = Prober(targets, registry, http_probe(make_pool()), settings, clock)
    await prober.step()
    assert [s["ok"] for s in prober.snapshot()] == [True, True]
    assert sim.stats.requests_total == 0  # GET /models and a TCP connect bill nothing

    sim.set_fault(Fault(mode="refuse"))
    for _ in range(2):
        clock.advance(10)
        await prober.step()
    for k in (key, "alpha/one/tcp"):
        assert registry.get(k).state == "open", prober.snapshot()
        assert "connect failed" in registry.get(k).reason

    sim.clear_fault()
    clock.advance(10)
    await prober.step()
    assert registry.get(key).state == "half_open"
    assert registry.get("alpha/one/tcp").state == "half_open"

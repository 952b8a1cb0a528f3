"""The prober's real probes against a simulated provider on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from edgeproxy.clock import FakeClock
from edgeproxy.resilience.breaker import BreakerRegistry
from edgeproxy.resilience.prober import Prober, ProbeTarget, http_probe
from edgeproxy.sim import Fault, SimConfig, SimProvider
from edgeproxy.snapshot import BreakerSettings, ProberSettings


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    provider = SimProvider(SimConfig(name="alpha", ttft=0.0, require_api_key="sk-test"))
    await provider.start()
    yield provider
    await provider.stop()


async def test_probes_take_a_refusing_provider_out_and_bring_it_back(sim: SimProvider) -> None:
    clock = FakeClock()  # schedules on the fake clock; the probes themselves go over real sockets
    registry = BreakerRegistry(lambda _: BreakerSettings(), clock)
    key = "alpha/one/m"
    targets = [
        ProbeTarget(sim.url, (key,), headers={"Authorization": "Bearer sk-test"}),
        ProbeTarget(sim.url, ("alpha/one/tcp",), mode="tcp"),
    ]
    settings = ProberSettings(interval=10, jitter=0, timeout=2, unhealthy_threshold=2)
    async with aiohttp.ClientSession() as session:
        prober = Prober(targets, registry, http_probe(session), settings, clock)
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

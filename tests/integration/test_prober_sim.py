"""The prober's real probes against a simulated provider on loopback."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from types import MappingProxyType

import pytest
from aiohttp import web

from edgeproxy.clock import FakeClock
from edgeproxy.failure import FailureClass
from edgeproxy.resilience.breaker import BreakerRegistry
from edgeproxy.resilience.engine import probe_target
from edgeproxy.resilience.prober import MAX_PROBE_BODY, Prober, ProbeTarget, http_probe
from edgeproxy.sim import Fault, SimConfig, SimProvider
from edgeproxy.snapshot import BreakerSettings, Candidate, ProberSettings
from edgeproxy.snapshot.settings import ProbeMode
from edgeproxy.snapshot.wire import ProbeRequest
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


class Recorder:
    """A tiny upstream that answers as told and records what it was sent."""

    def __init__(self, answer: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.seen: list[web.Request] = []
        self._answer = answer
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        return await self._answer(request)

    async def __aenter__(self) -> Recorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_a_probe_never_follows_a_redirect_and_never_sends_the_key_elsewhere(
    make_pool: Callable[..., Http1Pool],
) -> None:
    """A /models that redirects to another origin is not healthy, and the other origin is never
    contacted (aiohttp's client used to follow it and carry custom headers and ``api-key``)."""

    async def nothing(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with Recorder(nothing) as elsewhere:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"{elsewhere.url}/steal")

        async with Recorder(redirect) as provider:
            probe = http_probe(make_pool())
            target = probe_target(candidate(f"{provider.url}/v1", "models"), ("alpha/one/m",))
            result = await probe(target, 2.0)
            assert result.ok is False and result.failure is FailureClass.REDIRECT
            assert len(provider.seen) == 1 and elsewhere.seen == []
            assert provider.seen[0].headers["Authorization"] == "Bearer sk-test"


async def test_a_probe_url_on_another_origin_gets_no_key(
    make_pool: Callable[..., Http1Pool],
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with Recorder(ok) as status_page:
        base = "http://127.0.0.1:9/v1"  # the provider itself is never asked
        wire = upstream_wire("openai")
        provider = candidate(base, "url")
        target = ProbeTarget(
            base,
            ("alpha/one/m",),
            "url",
            request=wire.probe(provider, "url", f"{status_page.url}/health"),
            verdict=partial(wire.probe_verdict, "url"),
        )
        result = await http_probe(make_pool())(target, 2.0)
        assert result.ok is True
        (seen,) = status_page.seen
        assert "Authorization" not in seen.headers and "sk-test" not in str(dict(seen.headers))


async def test_a_probe_reads_a_compressed_or_huge_answer_capped(
    make_pool: Callable[..., Http1Pool],
) -> None:
    """A gzip-encoded /models is never inflated (the client asks for identity and decodes
    nothing) and a huge one is read only up to the cap, then dropped."""
    bomb = gzip.compress(b"0" * (16 << 20))  # 16 MiB of zeros in ~16 KiB

    async def hostile(request: web.Request) -> web.Response:
        if request.path.endswith("/models"):
            return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})
        return web.Response(body=b"x" * (MAX_PROBE_BODY * 8))

    async with Recorder(hostile) as provider:
        pool = make_pool()
        probe = http_probe(pool)
        target = probe_target(candidate(f"{provider.url}/v1", "models"), ("alpha/one/m",))
        assert (await probe(target, 2.0)).ok is True
        url_target = ProbeTarget(
            f"{provider.url}/v1",
            ("alpha/one/m",),
            "url",
            request=ProbeRequest("GET", f"{provider.url}/big", {}),
        )
        assert (await probe(url_target, 2.0)).ok is True
        assert pool.idle_connections <= 1  # the over-long answer's connection was dropped

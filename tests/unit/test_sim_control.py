"""SimCluster control API, fault validation and CLI fault specs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from edgeproxy.sim import Fault, SimCluster, SimConfig, parse_fault_spec, run_forever

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def fast(name: str) -> SimConfig:
    return SimConfig(name=name, ttft=0, tokens_per_second=0, default_completion_tokens=5)


@pytest.fixture
async def cluster() -> AsyncIterator[SimCluster]:
    async with SimCluster([fast("openai"), fast("azure")]) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_get_sims(cluster: SimCluster, http: aiohttp.ClientSession) -> None:
    async with http.get(cluster.control_url + "/sims") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [s["name"] for s in body["sims"]] == ["openai", "azure"]
    first = body["sims"][0]
    assert first["url"] == cluster.sims["openai"].url
    assert first["fault"] == Fault().to_dict()
    assert first["stats"]["requests_total"] == 0
    async with http.get(cluster.control_url + "/sims/azure") as resp:
        assert (await resp.json())["name"] == "azure"


async def test_put_and_delete_fault(cluster: SimCluster, http: aiohttp.ClientSession) -> None:
    fault = {"mode": "status", "status": 429, "retry_after": 1, "error_code": "rate_limit_exceeded"}
    async with http.put(cluster.control_url + "/sims/openai/fault", json=fault) as resp:
        assert resp.status == 200
        assert (await resp.json())["fault"]["status"] == 429
    assert cluster.sims["openai"].fault.mode == "status"
    assert cluster.sims["azure"].fault.mode == "none"

    sdk = AsyncOpenAI(base_url=cluster.sims["openai"].url, api_key="x", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        await sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "1"

    async with http.delete(cluster.control_url + "/sims/openai/fault") as resp:
        assert resp.status == 200
        state = await resp.json()
    assert state["fault"]["mode"] == "none"
    assert state["stats"]["outcomes"] == {"status": 1}
    assert (await sdk.chat.completions.create(model="m", messages=MESSAGES)).choices
    await sdk.close()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"status": 503}', "'mode' is required"),
        (b'{"mode": "explode"}', "unknown fault mode"),
        (b'{"mode": "status", "status": 200}', "between 400 and 599"),
        (b'{"mode": "status", "rate": 2}', "rate"),
        (b'{"mode": "cut", "after_tokens": "5"}', "after_tokens must be an integer"),
        (b'{"mode": "hang", "colour": "red"}', "unknown fault field(s): colour"),
    ],
)
async def test_bad_fault_body(
    cluster: SimCluster, http: aiohttp.ClientSession, body: bytes, needle: str
) -> None:
    async with http.put(cluster.control_url + "/sims/openai/fault", data=body) as resp:
        assert resp.status == 400
        assert needle in (await resp.json())["error"]["message"]
    assert cluster.sims["openai"].fault.mode == "none"


async def test_unknown_sim(cluster: SimCluster, http: aiohttp.ClientSession) -> None:
    url = cluster.control_url + "/sims/nobody"
    async with http.put(url + "/fault", json={"mode": "hang"}) as resp:
        assert resp.status == 404
    async with http.delete(url + "/fault") as resp:
        assert resp.status == 404
    async with http.get(url) as resp:
        assert resp.status == 404


async def test_control_reachable_while_refusing(
    cluster: SimCluster, http: aiohttp.ClientSession
) -> None:
    sim = cluster.sims["azure"]
    async with http.put(cluster.control_url + "/sims/azure/fault", json={"mode": "refuse"}) as r:
        assert r.status == 200
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", sim.port)
    async with http.get(cluster.control_url + "/sims") as resp:
        assert resp.status == 200
    async with http.delete(cluster.control_url + "/sims/azure/fault") as resp:
        assert resp.status == 200
    async with http.get(sim.base_url + "/health") as resp:
        assert resp.status == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_fixed_ports(http: aiohttp.ClientSession) -> None:
    sim_port, control_port = _free_port(), _free_port()
    async with SimCluster([fast("a"), fast("b")], {"a": sim_port}, control_port) as cluster:
        assert cluster.sims["a"].port == sim_port
        assert cluster.sims["a"].url == f"http://127.0.0.1:{sim_port}/v1"
        assert cluster.control_url == f"http://127.0.0.1:{control_port}"
        async with http.get(cluster.sims["b"].base_url + "/health") as resp:
            assert resp.headers["x-sim-name"] == "b"


def test_cluster_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        SimCluster([fast("a"), fast("a")])
    with pytest.raises(ValueError, match="unknown"):
        SimCluster([fast("a")], {"b": 1234})


async def test_run_forever_stops_cluster(http: aiohttp.ClientSession) -> None:
    cluster = SimCluster([fast("solo")])
    stop = asyncio.Event()
    task = asyncio.create_task(run_forever(cluster, stop))
    for _ in range(100):
        if cluster.control_url:
            break
        await asyncio.sleep(0.01)
    async with http.get(cluster.control_url + "/health") as resp:
        assert resp.status == 200
    port = cluster.sims["solo"].port
    stop.set()
    await task
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("status:503", Fault(mode="status", status=503)),
        ("status:429:retry_after=2", Fault(mode="status", status=429, retry_after=2.0)),
        (
            "status:429,error_code=insufficient_quota,count=3",
            Fault(mode="status", status=429, error_code="insufficient_quota", count=3),
        ),
        ("cut:after_tokens=5", Fault(mode="cut", after_tokens=5)),
        (
            "slow_first_token:ttft=1.5:rate=0.25",
            Fault(mode="slow_first_token", ttft=1.5, rate=0.25),
        ),
        ("refuse", Fault(mode="refuse")),
        ("HANG", Fault(mode="hang")),
        ("none", Fault()),
    ],
)
def test_parse_fault_spec(spec: str, expected: Fault) -> None:
    assert parse_fault_spec(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "boom", "status:abc", "cut:503", "cut:after_tokens=x", "hang:what=1", "status:99"]
)
def test_parse_fault_spec_errors(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault_spec(spec)


def test_fault_dict_round_trip() -> None:
    fault = Fault(mode="stall", after_tokens=7, rate=0.5, count=2)
    assert Fault.from_dict(fault.to_dict()) == fault
    assert Fault.from_dict({"mode": "status", "retry_after": 3}).retry_after == 3.0
    with pytest.raises(ValueError, match="must be an integer"):
        Fault.from_dict({"mode": "status", "status": True})
    with pytest.raises(ValueError, match="count"):
        Fault(mode="hang", count=0)

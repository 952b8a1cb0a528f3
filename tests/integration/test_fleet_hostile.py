"""The fleet tier when Redis is not a friend: slow, holding garbage, or written by someone else.

Redis is shared (several fleets, other tenants, an operator with ``redis-cli``), so what it
holds is checked before it is trusted, and a Redis that never answers costs a bounded wait:

- a sidecar whose Redis accepts connections and never answers starts, and serves;
- a shared cache entry that is not one a sidecar wrote (a zip bomb, another type of key, a
  hash of another shape, JSON of another shape, a header that is not ours) is a miss: the
  request is served upstream, nothing inflates beyond the bound, and Redis is not marked away;
- a health hash with fields another writer put there (bytes that are not UTF-8, an ejection
  until infinity) neither stops a sidecar from starting nor takes a candidate out for good.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from edgeproxy.fleet.cache import MAX_INFLATED_BYTES, inflate
from edgeproxy.sim import SimConfig
from fixtures.redis import RedisServer
from fixtures.reloadkit import wait_until
from harness import LoopThread, Stack

POLICY = """
version: 1
keys: {auth: AUTH, refresh: 100ms}
fleet: {redis: "REDIS_URL", timeout: 100ms, retry_interval: 60s}
health_check: {enabled: false}
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 2s, response: 3s, total: 10s}
providers:
  alpha:
    kind: openai
    api_key: sk-alpha-secret
    regions:
      one: {base_url: "$alpha_one"}
    models:
      m: {price: {input: 1, output: 1}}
routes:
  m:
    chain: [alpha/one/m]
    cache: {ttl: 5m}
    limits: {rpm: 1000}
"""
SIMS = (SimConfig(name="alpha_one", ttft=0.0, tokens_per_second=0, default_completion_tokens=5),)
ASK = {"model": "m", "messages": [{"role": "user", "content": "cache me"}], "temperature": 0}


def policy(url: str, auth: bool = False) -> str:
    return POLICY.replace("REDIS_URL", url).replace("AUTH", "true" if auth else "false")


def zeros_bomb(size: int) -> bytes:
    """``size`` zero bytes, zlib-compressed, without ever holding them."""
    packer = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    out = [packer.compress(chunk) for _ in range(size >> 20)]
    out.append(packer.flush())
    return b"".join(out)


# -- bounded inflation -----------------------------------------------------------------------


def test_a_zip_bomb_never_inflates_beyond_the_bound() -> None:
    bomb = zeros_bomb(256 << 20)  # 256 MiB of zeros in a quarter of a megabyte
    assert len(bomb) < MAX_INFLATED_BYTES // 100
    assert inflate(bomb) is None
    assert inflate(bomb, limit=1 << 20) is None
    fine = zlib.compress(b"x" * 1000)
    assert inflate(fine) == b"x" * 1000
    assert inflate(fine, limit=1000) == b"x" * 1000
    assert inflate(fine, limit=999) is None


@pytest.mark.parametrize(
    "packed",
    [
        b"",
        b"not zlib at all",
        zlib.compress(b"whole")[:-3],  # cut short
        zlib.compress(b"whole") + b"trailing",  # something after the stream
    ],
    ids=["empty", "garbage", "truncated", "trailing"],
)
def test_what_is_not_one_whole_zlib_stream_is_refused(packed: bytes) -> None:
    assert inflate(packed) is None


# -- a Redis that never answers --------------------------------------------------------------


@pytest.fixture
def black_hole(loop_thread: LoopThread) -> Iterator[str]:
    """A listener that accepts connections and never answers: the slow Redis."""

    async def listen() -> asyncio.Server:
        return await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)

    server = loop_thread.run(listen())
    port = server.sockets[0].getsockname()[1]
    yield f"redis://:hole-password-1234@127.0.0.1:{port}/0"

    async def close() -> None:
        server.close()

    loop_thread.run(close())


def test_a_sidecar_whose_redis_never_answers_starts_and_serves(
    make_stack: Callable[..., Stack], black_hole: str
) -> None:
    # Key auth on: the key table's reads are bounded too (the start used to wait on them
    # without a bound); the route's limits and the cache answer from local state.
    stack = make_stack(policy(black_hole, auth=True), SIMS)
    assert stack.proxy.state.fleet is not None
    assert not stack.proxy.state.fleet.link.up
    refused = stack.http.post("/v1/chat/completions", json=ASK, headers={"x-api-key": "epk_x"})
    assert refused.status_code == 401  # no key table was ever read: no key is known
    status = stack.http.get("/admin/status")
    assert status.status_code == 200 and "redis_up" in status.text
    assert "hole-password-1234" not in status.text


def test_requests_are_served_locally_while_redis_never_answers(
    make_stack: Callable[..., Stack], black_hole: str
) -> None:
    stack = make_stack(policy(black_hole), SIMS)
    for i in range(5):
        body = {**ASK, "messages": [{"role": "user", "content": f"ask {i}"}]}
        assert stack.http.post("/v1/chat/completions", json=body).status_code == 200
    fleet = stack.proxy.state.fleet
    assert fleet is not None and not fleet.link.up
    metrics = stack.http.get("/metrics").text
    assert "edgeproxy_fleet_redis_up 0" in metrics.replace(".0", "")
    assert "hole-password-1234" not in metrics


# -- hostile shared cache entries ------------------------------------------------------------


def _entry(served: dict[str, Any] | None = None, **fields: Any) -> bytes:
    entry = {
        "v": 1,
        "completion": orjson.dumps({"choices": []}).decode(),
        "events": None,
        "stored_at": 0.0,
        "served": served if served is not None else {"x-edgeproxy-provider": "alpha"},
        **fields,
    }
    return zlib.compress(orjson.dumps(entry))


HOSTILE: dict[str, Callable[[RedisServer, str], None]] = {
    "zip-bomb": lambda r, k: _hset(r, k, zeros_bomb(128 << 20)),
    "not-zlib": lambda r, k: _hset(r, k, b"\x00\x01garbage"),
    "a-string-key": lambda r, k: r.command("SET", k, "plain string"),
    "a-list-key": lambda r, k: (r.command("DEL", k), r.command("RPUSH", k, "a", "b")),
    "no-stored-time": lambda r, k: r.command("HSET", k, "v", "x"),
    "time-not-a-number": lambda r, k: _hset(r, k, _entry(), stored="soon"),
    "json-of-another-shape": lambda r, k: _hset(r, k, zlib.compress(b'{"v": 1, "events": 5}')),
    "header-injection": lambda r, k: _hset(
        r, k, _entry(served={"x-edgeproxy-provider": "a\r\nSet-Cookie: stolen=1"})
    ),
    "not-our-header": lambda r, k: _hset(r, k, _entry(served={"set-cookie": "stolen=1"})),
}


def _hset(redis: RedisServer, key: str, value: bytes, stored: str | None = None) -> None:
    """The hash a sidecar writes ({v, t}), with ``value`` and a stored time of now."""

    async def write() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis.url)
        try:
            now = await client.time()
            t = stored if stored is not None else str(now[0] * 1000 + now[1] // 1000)
            await client.delete(key)
            await client.hset(key, mapping={"v": value, "t": t})
            await client.pexpire(key, 300_000)
        finally:
            await client.aclose()

    asyncio.run(write())


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_shared_cache_entry_is_a_miss_not_a_failure(
    make_stack: Callable[..., Stack], redis_server: RedisServer, name: str
) -> None:
    first = make_stack(policy(redis_server.url), SIMS)
    assert first.http.post("/v1/chat/completions", json=ASK).headers["x-edgeproxy-cache"] == "miss"

    def stored() -> list[str]:
        return redis_server.command("KEYS", "edgeproxy:cache:*").decode().split()

    wait_until(lambda: len(stored()) == 1, 10, "the entry in Redis")
    HOSTILE[name](redis_server, stored()[0])
    # Another sidecar (an empty local cache) asks Redis for the same request.
    second = make_stack(policy(redis_server.url), SIMS)
    response = second.http.post("/v1/chat/completions", json=ASK)
    assert response.status_code == 200, response.text
    assert response.headers["x-edgeproxy-cache"] == "miss"
    assert "set-cookie" not in response.headers
    assert response.json()["choices"][0]["message"]["content"]
    fleet = second.proxy.state.fleet
    assert fleet is not None and fleet.link.up  # a bad entry is not an outage
    assert second.requests_to("alpha_one") == 1  # served by its own upstream
    again = second.http.post("/v1/chat/completions", json=ASK)
    assert again.headers["x-edgeproxy-cache"] == "hit"  # its own answer, cached locally


def test_a_good_shared_entry_still_crosses_sidecars(
    make_stack: Callable[..., Stack], redis_server: RedisServer
) -> None:
    first = make_stack(policy(redis_server.url), SIMS)
    assert first.http.post("/v1/chat/completions", json=ASK).status_code == 200
    wait_until(
        lambda: bool(redis_server.command("KEYS", "edgeproxy:cache:*").strip()), 10, "the entry"
    )
    second = make_stack(policy(redis_server.url), SIMS)
    hit = second.http.post("/v1/chat/completions", json=ASK)
    assert hit.headers["x-edgeproxy-cache"] == "hit"
    assert second.requests_to("alpha_one") == 0


# -- a hostile health hash -------------------------------------------------------------------


def test_a_health_hash_with_foreign_fields_neither_stops_a_start_nor_ejects_for_good(
    make_stack: Callable[..., Stack], redis_server: RedisServer
) -> None:
    async def write() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.hset(
                "edgeproxy:health",
                mapping={
                    b"\xff\xfe-not-utf8": b"99999999999\t{}",
                    b"alpha/one/m": b'inf\t{"by": "someone", "why": "forever"}',
                    b"other/x/y": b"99999999999\t\xff\xff",
                },
            )
        finally:
            await client.aclose()

    asyncio.run(write())
    stack = make_stack(policy(redis_server.url), SIMS)
    assert stack.proxy.state.engine.breakers.get("alpha/one/m").state == "closed"
    assert stack.http.post("/v1/chat/completions", json=ASK).status_code == 200


def test_the_redis_password_never_shows(
    make_stack: Callable[..., Stack], redis_server: RedisServer, tmp_path: Any
) -> None:
    # redis-server with a password: the URL carries it.
    redis_server.command("CONFIG", "SET", "requirepass", "fleet-pass-5678")
    url = redis_server.url.replace("redis://", "redis://:fleet-pass-5678@")
    stack = make_stack(policy(url), SIMS)
    assert stack.http.post("/v1/chat/completions", json=ASK).status_code == 200
    fleet = stack.proxy.state.fleet
    assert fleet is not None and fleet.link.up
    for path in ("/admin/status", "/metrics"):
        shown = stack.http.get(path)
        assert shown.status_code == 200 and "fleet" in shown.text
        assert "fleet-pass-5678" not in shown.text
    with httpx.Client(base_url=stack.proxy.url) as client:
        bad = client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
        assert "fleet-pass-5678" not in bad.text

"""Single flight: concurrent identical misses make one upstream call; streams are shared live."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from edgeproxy.cache import FollowerTimeout, LeaderFailed, PromptCache, StreamBroadcast
from edgeproxy.cache.layer import CachePlan
from edgeproxy.clock import FakeClock
from edgeproxy.snapshot import CacheSettings

ON = CacheSettings(enabled=True)
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
ANSWER = orjson.dumps(
    {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "yo"}, "finish_reason": "stop"}
        ]
    }
)


def plan(cache: PromptCache, headers: dict[str, str] | None = None) -> CachePlan:
    return cache.plan(orjson.dumps(BODY), BODY, "chat", ON, headers or {"x-api-key": "k"})


async def serve(cache: PromptCache, calls: list[int], fail: bool = False) -> bytes:
    """What the request path does for a non-stream request (simplified)."""
    p = plan(cache)
    hit = cache.lookup(p, stream=False)
    if hit is not None and hit.body is not None:
        return hit.body
    with cache.join(p) as flight:
        if not flight.leader:
            try:
                return await flight.wait(5.0)
            except LeaderFailed:
                pass  # fall back to an own call below
        calls.append(1)
        await asyncio.sleep(0.01)
        if fail and flight.leader:
            raise RuntimeError("upstream down")
        cache.store_completion(p, ANSWER)
        if flight.leader:
            flight.publish(ANSWER)
        return ANSWER


async def test_concurrent_identical_misses_make_one_call() -> None:
    cache = PromptCache(clock=FakeClock())
    calls: list[int] = []
    answers = await asyncio.gather(*(serve(cache, calls) for _ in range(10)))
    assert answers == [ANSWER] * 10
    assert len(calls) == 1
    assert cache.in_flight() == 0
    await serve(cache, calls)  # now a plain cache hit
    assert len(calls) == 1


async def test_leader_failure_lets_followers_call_themselves() -> None:
    cache = PromptCache(clock=FakeClock())
    calls: list[int] = []
    results = await asyncio.gather(
        *(serve(cache, calls, fail=True) for _ in range(4)), return_exceptions=True
    )
    assert isinstance(results[0], RuntimeError)
    assert results[1:] == [ANSWER] * 3
    assert len(calls) == 4
    assert cache.in_flight() == 0


async def test_follower_wait_is_bounded_by_its_deadline() -> None:
    cache = PromptCache(clock=FakeClock())
    p = plan(cache)
    with cache.join(p) as leader, cache.join(p) as follower:
        assert leader.leader and not follower.leader
        with pytest.raises(FollowerTimeout) as err:
            await follower.wait(0.01)
        assert not err.value.committed
    assert cache.in_flight() == 0


async def test_different_tenants_do_not_share_a_flight() -> None:
    cache = PromptCache(clock=FakeClock())
    a = cache.join(plan(cache, {"x-api-key": "a"}))
    b = cache.join(plan(cache, {"x-api-key": "b"}))
    assert a.leader and b.leader
    a.fail()
    b.fail()


async def collect(broadcast: StreamBroadcast, within: float = 5.0) -> list[bytes]:
    return [chunk async for chunk in broadcast.follow(within)]


async def test_stream_followers_replay_then_follow_live() -> None:
    cache = PromptCache(clock=FakeClock())
    p = plan(cache)
    broadcast, leader = cache.join_stream(p)
    assert leader
    broadcast.append(b"data: 1\n\n")
    early = asyncio.create_task(collect(broadcast))
    await asyncio.sleep(0)
    broadcast.append(b"data: 2\n\n")
    same, leads = cache.join_stream(p)
    assert same is broadcast and not leads
    late = asyncio.create_task(collect(same))
    await asyncio.sleep(0)
    broadcast.append(b"data: [DONE]\n\n")
    broadcast.close()
    want = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
    assert await early == want
    assert await late == want
    assert cache.in_flight() == 0
    _, leads_again = cache.join_stream(p)
    assert leads_again


async def test_stream_leader_failure_after_commit_gives_followers_the_same_error() -> None:
    broadcast = StreamBroadcast()
    broadcast.append(b"data: 1\n\n")
    follower = asyncio.create_task(collect(broadcast))
    await asyncio.sleep(0)
    broadcast.fail(b'data: {"error":{"message":"cut"}}\n\n')
    assert await follower == [b"data: 1\n\n", b'data: {"error":{"message":"cut"}}\n\n']


async def test_stream_leader_failure_before_commit_lets_followers_call() -> None:
    broadcast = StreamBroadcast()
    follower = asyncio.create_task(collect(broadcast))
    await asyncio.sleep(0)
    broadcast.fail(b"data: error\n\n")
    with pytest.raises(LeaderFailed):
        await follower


async def test_stream_follower_deadline() -> None:
    broadcast = StreamBroadcast()
    with pytest.raises(FollowerTimeout) as err:
        await collect(broadcast, 0.01)
    assert not err.value.committed
    broadcast.append(b"data: 1\n\n")
    got: list[bytes] = []
    with pytest.raises(FollowerTimeout) as err:
        async for chunk in broadcast.follow(0.01):
            got.append(chunk)
    assert got == [b"data: 1\n\n"] and err.value.committed
    broadcast.close()
    with pytest.raises(RuntimeError):
        broadcast.append(b"late")

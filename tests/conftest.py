from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from edgeproxy.upstreams.http1 import Http1Pool
from harness import THREE_WAY, THREE_WAY_SIMS, LoopThread, Stack


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def make_stack(loop_thread: LoopThread) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(policy: str, sims: Any, **kwargs: Any) -> Stack:
        stack = Stack(loop_thread, policy, sims, **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """alpha_one -> alpha_two -> beta, all healthy, answering instantly."""
    return make_stack(THREE_WAY, THREE_WAY_SIMS)


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., Http1Pool]]:
    """Builds ``Http1Pool(**kwargs)``; every pool it made is closed after the test, also when an
    assertion failed half-way (closing twice is harmless)."""
    pools: list[Http1Pool] = []

    def make(**kwargs: Any) -> Http1Pool:
        created = Http1Pool(**kwargs)
        pools.append(created)
        return created

    yield make
    for created in pools:
        await created.close()


@pytest.fixture
def pool(make_pool: Callable[..., Http1Pool]) -> Http1Pool:
    """A pool with the defaults, closed after the test."""
    return make_pool()


@pytest.fixture(scope="session", autouse=True)
def _no_drain_delay_for_subprocesses() -> None:
    """``edgeproxy serve`` processes started by tests stop without the SIGTERM drain delay
    (5 s by default, for load balancers); test_shutdown.py passes its own ``--drain-delay``."""
    import os

    os.environ.setdefault("EDGEPROXY_DRAIN_DELAY", "0")


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A fresh ``redis-server`` on a free port (fails, never skips, when it is not installed)."""
    from fixtures.redis import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()

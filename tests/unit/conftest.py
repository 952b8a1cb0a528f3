"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from edgeproxy.upstreams.http1 import Http1Pool


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

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

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

"""Fixtures of the integration tests that several modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeproxy.evals.scorecard import Scorecard
from edgeproxy.sim.market import Market
from fixtures.automarket import PRICE_RISE, TIME_SCALE, Desk
from harness import LoopThread

# -- the auto route on the simulated market (docs/auto.md) ---------------------------------


@pytest.fixture(scope="session")
def auto_market(loop_thread: LoopThread) -> Iterator[Market]:
    running = Market(time_scale=TIME_SCALE, seed=16)
    loop_thread.run(running.start())
    yield running
    loop_thread.run(running.stop())


@pytest.fixture(scope="session")
def auto_evals(
    loop_thread: LoopThread, auto_market: Market, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Scorecard]:
    """The baseline eval of the market (6 repeats: 60 graded requests per candidate x task),
    and one after a 3x price rise of the qa winner."""
    desk = Desk(loop_thread, auto_market, tmp_path_factory.mktemp("evals"))
    desk.write_policy()
    baseline = desk.run_eval()
    desk.write_policy(price_factors=PRICE_RISE)
    risen = desk.run_eval()
    return {"baseline": baseline, "risen": risen}


@pytest.fixture
def desk(loop_thread: LoopThread, auto_market: Market, tmp_path: Path) -> Iterator[Desk]:
    made = Desk(loop_thread, auto_market, tmp_path)
    yield made
    made.close()

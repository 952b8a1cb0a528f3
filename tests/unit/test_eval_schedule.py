"""``edgeproxy eval schedule``'s clock (docs/evals.md, "Re-evaluation on a schedule"), on the
fake clock: when a run is due, that the files are its memory, that a capped run is a run (the
cap is never spent twice by a retry loop), that a failed run is retried later, not at once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from autokit import BASE_DATE, card, cell
from edgeproxy.clock import FakeClock
from edgeproxy.evals.schedule import Scheduler, newest_run, out_path, watched_patterns
from edgeproxy.evals.scorecard import save_scorecard
from edgeproxy.policy import load_policy_text

DAY = 86_400.0

POLICY = """
version: 1
evals:
  suite: market
  scorecards: [cards/market-*.json, pinned.json]
  schedule: {every: 14d, out: "cards/market-{date}.json"}
providers:
  p:
    kind: openai
    regions: {r: {base_url: "http://127.0.0.1:1/v1"}}
    models: {m: {}}
routes:
  m: {chain: [p/r/m]}
"""


class Lab:
    """A scheduler whose runs write scorecards dated by the fake clock."""

    def __init__(self, root: Path, *, every: float = 14 * DAY, fail: int = 0) -> None:
        self.root = root
        self.clock = FakeClock(start=0.0, auto_advance=False)
        self.fail = fail
        self.written: list[Path] = []
        self.complete = True
        self.scheduler = Scheduler(every, self._run, self._newest, self.clock, now=self.now)

    def now(self) -> datetime:
        return BASE_DATE + timedelta(seconds=self.clock.monotonic())

    async def _run(self, when: datetime) -> Path:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("the eval broke")
        path = self.root / f"market-{when:%Y%m%dT%H%M%S}.json"
        made = card([cell("p/r/m")], complete=self.complete)
        save_scorecard(made.model_copy(update={"created": when}), path)
        self.written.append(path)
        return path

    def _newest(self) -> datetime | None:
        return newest_run([str(self.root / "market-*.json")])


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_first_run_is_due_at_once_then_every_period(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(lab.scheduler.run_forever(stop))
    await _settle()
    assert len(lab.written) == 1 and lab.clock.sleepers == 1
    lab.clock.advance(14 * DAY - 1)
    await _settle()
    assert len(lab.written) == 1  # a second early: not yet
    lab.clock.advance(1)
    await _settle()
    assert len(lab.written) == 2
    lab.clock.advance(14 * DAY)
    await _settle()
    assert len(lab.written) == 3
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_a_restart_remembers_the_last_run_from_the_files(tmp_path: Path) -> None:
    first = Lab(tmp_path)
    assert await first.scheduler.run_if_due() is not None
    assert await first.scheduler.run_if_due() is None  # just ran: not due
    later = Lab(tmp_path)  # a new process, its clock at the same date
    assert later.scheduler.due_in() == pytest.approx(14 * DAY)
    later.clock.advance(14 * DAY)
    assert await later.scheduler.run_if_due() is not None
    assert len(first.written) + len(later.written) == 2


async def test_a_capped_run_counts_as_a_run(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.complete = False  # the cost cap stopped it: an incomplete scorecard
    await lab.scheduler.run_if_due()
    assert lab.scheduler.due_in() == pytest.approx(14 * DAY)  # no retry spends the cap again


async def test_a_failed_run_is_retried_after_the_pause(tmp_path: Path) -> None:
    lab = Lab(tmp_path, fail=2)
    stop = asyncio.Event()
    task = asyncio.create_task(lab.scheduler.run_forever(stop))
    await _settle()
    assert lab.scheduler.failures == 1 and lab.written == []
    lab.clock.advance(3599)
    await _settle()
    assert lab.scheduler.failures == 1
    lab.clock.advance(1)
    await _settle()
    assert lab.scheduler.failures == 2
    lab.clock.advance(3600)
    await _settle()
    assert len(lab.written) == 1
    stop.set()
    await asyncio.wait_for(task, 1)


def test_a_corrupt_scorecard_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "market-broken.json").write_text("{not json")
    assert newest_run([str(tmp_path / "market-*.json")]) is None
    save_scorecard(card([cell("p/r/m")], day=3), tmp_path / "market-ok.json")
    assert newest_run([str(tmp_path / "market-*.json")]) == BASE_DATE + timedelta(days=3)


def test_the_output_and_the_patterns_come_from_the_policy(tmp_path: Path) -> None:
    policy = load_policy_text(POLICY, str(tmp_path / "p.yaml"), {})
    when = BASE_DATE + timedelta(hours=5)
    assert out_path(policy, "market", when) == tmp_path / "cards" / "market-20250101T050000Z.json"
    patterns = watched_patterns(policy)
    assert patterns == [str(tmp_path / "cards/market-*.json"), str(tmp_path / "pinned.json")]
    assert policy.evals.schedule.every == 14 * DAY

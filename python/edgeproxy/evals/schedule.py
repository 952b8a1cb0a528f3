"""``edgeproxy eval schedule``: re-run the suite every ``evals.schedule.every`` under the cost cap
(docs/evals.md, "Re-evaluation on a schedule").

**When**: a run is due ``every`` after the date of the newest scorecard the schedule can see
(its own output, ``evals.schedule.out`` with ``{date}``/``{suite}`` as wildcards, and the
policy's ``evals.scorecards``); with none, at once. The date is the scorecard's ``created``,
so a restarted scheduler neither runs again early nor forgets a run: the files are its memory.
A run the cost cap stopped writes an incomplete scorecard that counts as a run (no retry loop
can spend the cap twice); a run that failed (an exception) is retried after ``retry`` (an
hour, or ``every`` if shorter).

**What**: the policy file is read again before each run (prices and candidates change between
runs: a price rise reaches the next eval), then the suite runs like ``edgeproxy eval run``
(``evals.suite``, ``evals.candidates``, the judge, ``evals.schedule.repeats``, under
``evals.max_cost``) into ``evals.schedule.out`` — a new file each time, written atomically, which
a running proxy's ``auto`` route picks up when ``evals.scorecards`` matches it.

Time comes from the clock object (``clock.sleep``) and the wall-clock date from ``now``: the
tests drive both from a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from edgeproxy.clock import Clock
from edgeproxy.evals.scorecard import ScorecardError, load_scorecard
from edgeproxy.snapshot import Policy

log = logging.getLogger("edgeproxy.evals")

DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
RETRY: Final = 3600.0


def human(seconds: float) -> str:
    """``13d 23h 59m``: a wait as a person reads it (minutes, at least)."""
    minutes = max(1, round(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    return " ".join(p for p in parts if p) or "0m"


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def out_path(policy: Policy, suite: str, when: datetime) -> Path:
    """Where the run at ``when`` writes: ``evals.schedule.out`` filled in, relative to the
    policy file."""
    name = policy.evals.schedule.out.replace("{suite}", _safe(suite))
    name = name.replace("{date}", when.astimezone(UTC).strftime(DATE_FORMAT))
    path = Path(name)
    return path if path.is_absolute() else Path(policy.source).parent / path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text) or "suite"


def watched_patterns(policy: Policy) -> list[str]:
    """Absolute glob patterns of the scorecards the schedule counts as runs."""
    base = Path(policy.source).parent
    entries = [*policy.evals.scorecards]
    entries.append(policy.evals.schedule.out.replace("{suite}", "*").replace("{date}", "*"))
    out = []
    for entry in entries:
        path = Path(entry)
        out.append(str(path if path.is_absolute() else base / path))
    return list(dict.fromkeys(out))


def newest_run(patterns: list[str]) -> datetime | None:
    """The ``created`` date of the newest scorecard the patterns match (complete or not:
    a capped run is a run); unreadable files are skipped."""
    newest: datetime | None = None
    for pattern in patterns:
        for name in glob.glob(pattern):
            try:
                created = load_scorecard(name).created
            except ScorecardError:
                continue
            if newest is None or created > newest:
                newest = created
    return newest


RunOnce = Callable[[datetime], Awaitable[Path | None]]


@dataclass
class Scheduler:
    """Runs ``run`` whenever a run is due (see the module docstring)."""

    every: float
    run: RunOnce
    newest: Callable[[], datetime | None]
    clock: Clock
    now: Callable[[], datetime] = utc_now
    retry: float = RETRY
    runs: int = 0
    failures: int = 0

    def due_in(self) -> float:
        """Seconds until the next run (0: due now)."""
        last = self.newest()
        if last is None:
            return 0.0
        due = last + timedelta(seconds=self.every)
        return max(0.0, (due - self.now()).total_seconds())

    async def run_if_due(self) -> Path | None:
        """One run when one is due (``--once``); None when none was."""
        if self.due_in() > 0:
            return None
        return await self._run()

    async def _run(self) -> Path | None:
        self.runs += 1
        return await self.run(self.now())

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        """Wait for each due run and make it, until ``stop`` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            wait = self.due_in()
            if wait > 0:
                log.info("next scheduled eval in %.0fs", wait)
                if await self._sleep(wait, stop):
                    return
                continue
            try:
                written = await self._run()
                log.info("scheduled eval wrote %s", written)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                log.exception("a scheduled eval failed; retrying in %.0fs", self.pause)
                if await self._sleep(self.pause, stop):
                    return

    @property
    def pause(self) -> float:
        return min(self.retry, self.every)

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> bool:
        """Sleep on the clock; True when ``stop`` was set meanwhile."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return stop.is_set()

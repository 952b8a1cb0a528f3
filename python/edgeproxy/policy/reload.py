"""Policy hot reload: watch the file, build a new snapshot, validate it, swap one reference.

Triggers: a change in the policy file's directory (watchfiles), SIGHUP, ``POST /admin/reload``.
Every trigger ends in :meth:`PolicyReloader.reload`, serialised by a lock:

1. read the whole file (re-read if it changed while being read), parse, validate and compile it
   into a new frozen ``Policy`` (in a worker thread: the event loop keeps serving);
2. on any problem the new text is *rejected*: the last good policy keeps serving, and the problems
   (file:line:column and a reason) go to the log, to ``last_error`` (shown by ``GET /admin/policy``)
   and to the counters;
3. otherwise, unless it equals the serving one, ``holder.policy`` is replaced in one assignment and
   the swap hooks run right after it, in the same step of the event loop, so no request can see
   the new snapshot before they ran. A request that already read ``holder.policy`` finishes on
   its snapshot.

Why the *directory* is watched and not the file: editors save by writing a new file and renaming
it over the old one, ``rm`` + recreate replaces the inode, and a Kubernetes ConfigMap volume
swaps a ``..data`` symlink to a new timestamped directory. A watch on the file's inode misses all
three; a watch on its directory sees each as a change of an entry. Every change in the directory
triggers a reload attempt; one whose content compiles to the serving policy is a cheap no-op
("unchanged"). Debounce: the watcher waits for ``debounce`` seconds without changes before a
reload, so an in-place write that arrives in pieces is read once it has settled; a half-written
file read anyway fails validation and is rejected, and the write that completes it triggers the
reload that applies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from edgeproxy.errors import PolicyError, PolicyProblem
from edgeproxy.policy.load import load_policy_text, read_policy_text
from edgeproxy.snapshot import Policy

log = logging.getLogger("edgeproxy.policy")

SwapHook = Callable[[Policy, Policy], None]
Outcome = Literal["applied", "unchanged", "rejected"]

# A file still being written (its size or mtime moved while it was read) is read again after a
# debounce; after this many tries it is validated as it is (and most likely rejected).
_STABLE_READ_TRIES = 5


class PolicyHolder(Protocol):
    """Whatever serves from ``policy`` (the proxy's ``ProxyState``)."""

    policy: Policy


@dataclass(frozen=True)
class ReloadOptions:
    """How the policy file is watched. ``debounce`` is seconds of quiet before a reload."""

    path: Path
    watch: bool = True
    debounce: float = 0.2
    environ: Mapping[str, str] | None = None  # None: the process environment
    force_polling: bool = False  # for filesystems without change notification


@dataclass(frozen=True)
class ReloadResult:
    outcome: Outcome
    trigger: str
    version: str  # the version serving after this reload
    previous_version: str
    at: float  # wall-clock time (epoch seconds)
    problems: tuple[PolicyProblem, ...] = ()
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "trigger": self.trigger,
            "version": self.version,
            "previous_version": self.previous_version,
            "at": _iso(self.at),
            "problems": [problem_dict(p) for p in self.problems],
            "warnings": list(self.warnings),
        }


@dataclass
class ReloadCounts:
    """Running totals (metrics come later and read these)."""

    applied: int = 0
    rejected: int = 0
    unchanged: int = 0
    by_trigger: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "rejected": self.rejected,
            "unchanged": self.unchanged,
            "by_trigger": dict(self.by_trigger),
        }


def problem_dict(problem: PolicyProblem) -> dict[str, Any]:
    return {
        "file": problem.source,
        "line": problem.line,
        "column": problem.column,
        "path": problem.path,
        "message": problem.message,
        "text": str(problem),
    }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


class PolicyReloader:
    """Keeps ``holder.policy`` in step with the policy file; never lets a bad file in."""

    def __init__(self, holder: PolicyHolder, options: ReloadOptions) -> None:
        self.holder = holder
        self.options = options
        self.path = Path(options.path)
        self.counts = ReloadCounts()
        self.loaded_at = time.time()
        # The problems of the file as it is now, while they keep it from serving; None once a
        # good version loads. ``last_rejection`` keeps the most recent one for the record.
        self.last_error: ReloadResult | None = None
        self.last_rejection: ReloadResult | None = None
        self.last_result: ReloadResult | None = None
        self._hooks: list[SwapHook] = []
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[ReloadResult]] = set()

    @property
    def policy(self) -> Policy:
        return self.holder.policy

    @property
    def watching(self) -> bool:
        return self._watch_task is not None and not self._watch_task.done()

    def add_swap_hook(self, hook: SwapHook) -> None:
        """``hook(old, new)`` runs right after each swap, before any request sees ``new``.

        Meant for state that outlives a snapshot (breakers carried over by candidate key). A hook
        that raises is logged; the swap stands.
        """
        self._hooks.append(hook)

    # -- triggers ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.options.watch and self._watch_task is None:
            self._stop.clear()
            self._watch_task = asyncio.create_task(self._watch(), name="policy-watch")

    async def stop(self) -> None:
        self._stop.set()
        if self._watch_task is not None:
            task, self._watch_task = self._watch_task, None
            try:
                # The watcher thread notices the stop event within one debounce step.
                await asyncio.wait_for(task, timeout=max(2.0, self.options.debounce * 4))
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for reload_task in list(self._tasks):
            with contextlib.suppress(Exception):
                await reload_task

    def trigger(self, trigger: str) -> None:
        """Schedule a reload (for signal handlers, which cannot await)."""
        task = asyncio.get_running_loop().create_task(self.reload(trigger))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, trigger: str) -> ReloadResult:
        """Read, validate and (if good and different) swap in the policy file; never raises."""
        async with self._lock:
            self.counts.by_trigger[trigger] = self.counts.by_trigger.get(trigger, 0) + 1
            old = self.holder.policy
            try:
                new = await asyncio.to_thread(self._build)
            except PolicyError as exc:
                return self._rejected(trigger, old, tuple(exc.problems))
            except Exception as exc:  # a bug must not take the watcher (or the proxy) down
                log.exception("policy reload failed unexpectedly", extra={"trigger": trigger})
                problem = PolicyProblem(str(self.path), 0, 0, f"internal error: {exc!r}")
                return self._rejected(trigger, old, (problem,))
            self.last_error = None
            if replace(new, source=old.source) == old:  # same routes, same keys: nothing to do
                self.counts.unchanged += 1
                result = ReloadResult("unchanged", trigger, old.version, old.version, time.time())
                log.debug("policy unchanged", extra={"trigger": trigger, "version": old.version})
                self.last_result = result
                return result
            # The swap: one reference. Requests already running hold ``old`` and finish on it.
            self.holder.policy = new
            for hook in self._hooks:
                try:
                    hook(old, new)
                except Exception:
                    log.exception("a policy swap hook failed", extra={"hook": repr(hook)})
            self.counts.applied += 1
            self.loaded_at = time.time()
            result = ReloadResult(
                "applied", trigger, new.version, old.version, self.loaded_at, (), new.warnings
            )
            self.last_result = result
            log.info(
                "policy reloaded",
                extra={
                    "trigger": trigger,
                    "version": new.version,
                    "previous_version": old.version,
                    "routes": len(new.route_names),
                },
            )
            for warning in new.warnings:
                log.warning("policy warning: %s", warning, extra={"version": new.version})
            return result

    def _rejected(
        self, trigger: str, serving: Policy, problems: tuple[PolicyProblem, ...]
    ) -> ReloadResult:
        self.counts.rejected += 1
        result = ReloadResult(
            "rejected", trigger, serving.version, serving.version, time.time(), problems
        )
        self.last_error = self.last_rejection = self.last_result = result
        log.error(
            "policy rejected; the last good policy keeps serving: %s",
            "; ".join(str(p) for p in problems),
            extra={"trigger": trigger, "serving_version": serving.version},
        )
        return result

    def _build(self) -> Policy:
        """Runs in a worker thread: read the settled file and compile it."""
        text = self._read_settled()
        return load_policy_text(text, str(self.path), self.options.environ, self.path.parent)

    def _read_settled(self) -> str:
        for _ in range(_STABLE_READ_TRIES):
            before = _fingerprint(self.path)
            text = read_policy_text(self.path)
            if _fingerprint(self.path) == before:
                return text
            time.sleep(self.options.debounce)  # a worker thread: the loop is not blocked
        return text

    # -- the watcher --------------------------------------------------------------------------

    def watched_dirs(self) -> list[Path]:
        """The policy's directory, and its target's if it is a symlink to elsewhere."""
        here = self.path.absolute().parent
        dirs = [here]
        target = self.path.resolve().parent
        # A ConfigMap's ..data/<file> resolves into a timestamped directory *inside* ``here``,
        # replaced on every update: watching ``here`` covers it.
        if not target.is_relative_to(here):
            dirs.append(target)
        return dirs

    def is_relevant(self, change: object, path: str) -> bool:
        """Changes that can alter what ``path`` reads: the file itself (written, renamed over,
        deleted, recreated), its symlink target, and a ConfigMap's ``..data`` swap. Everything
        else in the directory (other files, editor swap files, logs) is ignored."""
        name = os.path.basename(path)
        if name == self.path.name or name.startswith(".."):
            return True
        try:
            return Path(path).absolute() == self.path.resolve()
        except OSError:
            return False

    async def _watch(self) -> None:
        from watchfiles import awatch

        # watchfiles logs every batch of changes at INFO; the reload result is what matters.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        step = max(1, int(self.options.debounce * 1000))
        complained = False
        while not self._stop.is_set():
            dirs = [d for d in self.watched_dirs() if d.is_dir()]
            if not dirs:
                if not complained:
                    log.warning("the policy directory is missing; waiting for it to appear")
                    complained = True
                await self._sleep_unless_stopped(max(self.options.debounce, 0.5))
                continue
            try:
                async for changes in awatch(
                    *dirs,
                    watch_filter=self.is_relevant,
                    step=step,
                    # The longest a stream of changes is grouped before a reload all the same.
                    debounce=max(step * 20, 2000),
                    stop_event=self._stop,
                    recursive=False,
                    force_polling=self.options.force_polling or None,
                    poll_delay_ms=step,
                ):
                    log.debug("policy directory changed", extra={"changes": len(changes)})
                    await self.reload("watch")
                    complained = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not complained:
                    log.warning("watching the policy failed (%s); retrying", exc)
                    complained = True
                await self._sleep_unless_stopped(max(self.options.debounce, 0.5))
            else:
                # awatch ends when the stop event is set, or when a watched directory vanished
                # (e.g. a ConfigMap target): check the file, then watch again.
                if not self._stop.is_set():
                    await self.reload("watch")

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    def describe(self) -> dict[str, Any]:
        """The reloader's state for ``GET /admin/policy``."""
        return {
            "path": str(self.path),
            "watching": self.watching,
            "debounce_seconds": self.options.debounce,
            "loaded_at": _iso(self.loaded_at),
            "counts": self.counts.as_dict(),
            "last_result": self.last_result.as_dict() if self.last_result else None,
            "last_error": self.last_error.as_dict() if self.last_error else None,
            "last_rejection": self.last_rejection.as_dict() if self.last_rejection else None,
        }


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)

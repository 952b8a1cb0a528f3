"""``AutoRouter``: the process-wide object the exchange asks for an ``auto`` route's chain.

One per proxy process (``ProxyState.auto``). It holds the scorecards (``scorecards.py``), one
``TaskState`` per route x task (``decide.py``), and the shadow worker (``shadow.py``). Its
parts:

- **the request path** (``choose``): for a route x task, the chain: the pin, or the incumbent
  (or, during a ramp, the challenger for its share of the requests), then the next ranked
  candidates of the latest scorecard (other providers first, ``fallbacks`` of them), then the
  route's own chain for the task; with no evidence, the route's chain alone; with none, a
  refusal (the exchange answers 503). It also returns the decision record for telemetry and an
  observer of the request's events for the live outcomes. A dictionary lookup, a clock read and
  a random draw: nothing waits.
- **scorecards**: read at ``start`` (before the proxy listens), on every policy swap that
  changes ``evals.scorecards``, and whenever a file in their directories changes (watchfiles).
  Each new scorecard is observed by every route x task in date order; a new route x task (the
  proxy starting, a route added, or its decision settings changed) replays every scorecard, its
  decisions taken as settled (no ramp: docs/auto.md, "State").
- **policy swaps** (``policy_swapped``): a route x task whose pool, objective, margin,
  confirmations and min_samples are unchanged keeps its state (incumbent, ramp, streak, live
  outcomes); the others start afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeproxy.auto.decide import Decision, TaskState
from edgeproxy.auto.evidence import fallback_order, read
from edgeproxy.auto.live import AutoObserver
from edgeproxy.auto.scorecards import ScorecardStore
from edgeproxy.auto.shadow import DEFAULT_PASS_SCORE, OVERALL, ShadowJob, ShadowRunner
from edgeproxy.clock import Clock
from edgeproxy.evals.suite import Criterion, SuiteError, load_suite, resolve_suite
from edgeproxy.events import AutoDecided
from edgeproxy.snapshot import AutoSettings, Candidate, Policy, Route
from edgeproxy.upstreams.http1 import Http1Pool

log = logging.getLogger("edgeproxy.auto")


@dataclass(frozen=True, slots=True)
class Pick:
    """``choose``'s answer: the chain, the decision record, and the request's observer (None
    for a refusal: ``refusal`` then says why, in words for the app)."""

    chain: tuple[Candidate, ...]
    event: AutoDecided
    observer: Callable[[Any], None] | None = None
    refusal: str | None = None


def _signature(auto: AutoSettings, task: str) -> tuple[object, ...]:
    """What a route x task's decisions depend on: a change resets its state."""
    return (
        tuple(c.key for c in auto.pool),
        auto.objective_for(task),
        auto.margin,
        auto.confirmations,
        auto.min_samples,
    )


class AutoRouter:
    def __init__(
        self,
        policy: Policy,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        watch: bool = True,
        debounce: float = 0.3,
        force_polling: bool = False,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.store = ScorecardStore()
        self.states: dict[tuple[str, str], TaskState] = {}
        self.shadow: ShadowRunner | None = None
        self.problems: list[str] = []  # the latest refresh's scorecard problems
        self.refreshed = 0  # refreshes done (tests and status)
        self._watch_enabled = watch
        self._debounce = debounce
        self._force_polling = force_polling
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[Any]] = set()
        self._index: dict[int, tuple[Route, dict[str, Candidate]]] = {}
        # Chains by (route id, task, leads, evidence id); the routes are held by ``_index``
        # and the evidence by its state while they are in use, so an id is not reused.
        self._chains: dict[tuple[object, ...], tuple[Candidate, ...]] = {}
        self._rubrics: dict[str, tuple[Sequence[Criterion], float]] = {}
        self._http: Http1Pool | None = None
        self._configure(policy)

    @property
    def active(self) -> bool:
        """The policy has an ``auto`` route."""
        return any(self.policy.routes[n].auto is not None for n in self.policy.route_names)

    def _configure(self, policy: Policy) -> bool:
        base = Path(policy.source).parent if policy.source else Path.cwd()
        patterns = policy.evals.scorecards if self.active else ()
        return self.store.configure(tuple(patterns), base.absolute())

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, http: Http1Pool | None = None) -> None:
        """Read the scorecards (before the proxy takes requests), then watch them; start the
        shadow worker when a route asks for shadow traffic."""
        self._http = http
        await self.refresh()
        self._restart_watch()
        self._start_shadow()

    async def stop(self) -> None:
        await self._stop_watch()
        for task in list(self._pending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.shadow is not None:
            await self.shadow.stop()
            self.shadow = None

    def policy_swapped(self, old: Policy, new: Policy) -> None:
        """Runs in the reloader's swap step: keep what the new policy leaves unchanged; read
        new scorecards in the background when ``evals.scorecards`` changed."""
        self.policy = new
        self._index.clear()
        self._chains.clear()
        kept: dict[tuple[str, str], TaskState] = {}
        for (name, task), state in self.states.items():
            before = old.routes.get(name)
            after = new.routes.get(name) if name in new.route_names else None
            if before is None or after is None or before.auto is None or after.auto is None:
                continue
            if _signature(before.auto, task) == _signature(after.auto, task):
                state.settings = after.auto
                kept[(name, task)] = state
        self.states = kept
        if self._configure(new):
            self._later(self.refresh())
            self._restart_watch()
        else:
            self._later(self._load_rubrics())
            self._sync()
        self._start_shadow()

    def _later(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a synchronous caller): nothing to schedule on
            coro.close()
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def refresh(self) -> list[str]:
        """Re-read the scorecards (in a thread) and let every route x task observe the new
        ones; the problems of the files that changed."""
        async with self._lock:
            self.problems = await asyncio.to_thread(self.store.refresh)
            await self._load_rubrics()
            self._sync()
            self._chains.clear()
            self.refreshed += 1
            return self.problems

    async def _load_rubrics(self) -> None:
        """The judge's criteria per task for shadow grading: the suite's rubrics."""
        name = self.policy.evals.suite
        if name is None or not any(
            self.policy.routes[n].auto is not None and self.policy.routes[n].auto.shadow  # type: ignore[union-attr]
            for n in self.policy.route_names
        ):
            return
        base = Path(self.policy.source).parent

        def load() -> dict[str, tuple[Sequence[Criterion], float]]:
            suite = load_suite(resolve_suite(name, base))
            return {t: (r.criteria, r.pass_score) for t, r in suite.spec.rubrics.items()}

        try:
            self._rubrics = await asyncio.to_thread(load)
        except (SuiteError, OSError, ValueError) as exc:
            log.warning("shadow grading uses one 'overall' criterion: %s", exc)
            self._rubrics = {}

    def rubric(self, task: str) -> tuple[Sequence[Criterion], float]:
        return self._rubrics.get(task) or (OVERALL, DEFAULT_PASS_SCORE)

    def _start_shadow(self) -> None:
        wanted = any(
            (auto := self.policy.routes[n].auto) is not None and auto.shadow is not None
            for n in self.policy.route_names
        )
        judge_key = self.policy.evals.judge
        judge = self.policy.evals.pool.get(judge_key) if judge_key else None
        if self.shadow is not None:
            self.shadow.judge = judge
            return
        if not wanted or self._http is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.shadow = ShadowRunner(self.clock, self._http, judge, self.rubric)
        self.shadow.start()

    # -- scorecards -> decisions ----------------------------------------------------------------

    def _sync(self) -> list[Decision]:
        """Every auto route x task observes the scorecards it has not seen, oldest first."""
        cards = self.store.cards()
        now, wall = self.clock.monotonic(), time.time()
        made: list[Decision] = []
        for name in self.policy.route_names:
            auto = self.policy.routes[name].auto
            if auto is None:
                continue
            pool = [c.key for c in auto.pool]
            members = set(pool)
            tasks = set(auto.tasks) | set(auto.pins)
            for loaded in cards:
                tasks.update(c.task for c in loaded.card.cells if c.candidate in members)
            for task in sorted(tasks):
                state = self.states.get((name, task))
                fresh = state is None
                if state is None:
                    state = self.states[(name, task)] = TaskState(name, task, auto)
                objective = auto.objective_for(task)
                for loaded in cards:
                    if loaded.ref.id in state.seen:
                        continue
                    ev = read(loaded.card, loaded.ref, task, pool, objective, auto.min_samples)
                    if ev is None:
                        state.seen.add(loaded.ref.id)
                        continue
                    decision = state.observe(ev, now, wall, live=not fresh)
                    made.append(decision)
                    if not fresh:
                        log.info(
                            "auto %s: %s",
                            decision.kind,
                            decision.reason,
                            extra={"route": name, "task": task, "scorecard": ev.card.label},
                        )
        return made

    # -- watching the scorecards ----------------------------------------------------------------

    def _restart_watch(self) -> None:
        if not self._watch_enabled:
            return
        old = self._watch_task
        if old is not None:
            self._watch_stop.set()
            self._later(self._await(old))
        self._watch_task = None
        if not self.active or not self.store.patterns:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watch_stop = asyncio.Event()
        self._watch_task = loop.create_task(
            self._watch(self._watch_stop), name="auto-scorecards-watch"
        )

    @staticmethod
    async def _await(task: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(task, timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()

    async def _stop_watch(self) -> None:
        task, self._watch_task = self._watch_task, None
        if task is not None:
            self._watch_stop.set()
            await self._await(task)

    async def _watch(self, stop: asyncio.Event) -> None:
        """Refresh when a scorecard file appears, changes or goes (its directory's events,
        debounced); a directory that does not exist yet is looked for every second."""
        from watchfiles import awatch

        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        step = max(1, int(self._debounce * 1000))

        def relevant(change: object, path: str) -> bool:
            name = Path(path).name
            return name.endswith(".json") and not name.startswith(".")

        while not stop.is_set():
            wanted = self.store.watched_dirs()
            present = [d for d in wanted if d.is_dir()]
            if not present:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                if any(d.is_dir() for d in wanted):
                    await self.refresh()
                continue
            missing = len(present) < len(wanted)
            try:
                async for changes in awatch(
                    *present,
                    watch_filter=relevant,
                    step=step,
                    debounce=max(step * 10, 1000),
                    stop_event=stop,
                    recursive=False,
                    force_polling=self._force_polling or None,
                    poll_delay_ms=step,
                    rust_timeout=1000 if missing else 5000,
                    yield_on_timeout=True,
                ):
                    if changes:
                        await self.refresh()
                    if missing and any(d.is_dir() for d in wanted if d not in present):
                        await self.refresh()
                        break  # watch the directory that appeared too
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watching the scorecards failed (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    # -- the request path -----------------------------------------------------------------------

    def _candidates(self, route: Route) -> dict[str, Candidate]:
        entry = self._index.get(id(route))
        if entry is None or entry[0] is not route:
            entry = (route, {c.key: c for c in route.candidates})
            self._index[id(route)] = entry
        return entry[1]

    def choose(self, route: Route, task: str, body: dict[str, Any]) -> Pick:
        """The chain for one request of ``route`` (an ``auto`` route) with task ``task``
        (``body``: what the shadow would mirror; see the module docstring)."""
        auto = route.auto
        assert auto is not None
        state = self.states.get((route.name, task))
        now = self.clock.monotonic()
        if state is not None and state.ramp is not None:
            state.advance(now, time.time())
        written = route.chain_for(task)
        pin = auto.pins.get(task)
        ramp = state.ramp if state is not None else None
        share = ramp.share if ramp is not None else None
        leads: list[str]
        if pin is not None:
            role, leads = "pinned", [pin.key]
        elif state is None or state.incumbent is None:
            if not written:
                event = AutoDecided(route.name, task, "none", None, None)
                return Pick((), event, None, self._refusal(route, task))
            role, leads = "chain", []
        elif ramp is not None and self.rng.random() < ramp.share:
            role, leads = "challenger", [ramp.challenger, state.incumbent]
        else:
            role, leads = "incumbent", [state.incumbent]
        index = self._candidates(route)
        evidence = state.evidence if state is not None else None
        memo = (id(route), task, *leads, id(evidence))
        chain = self._chains.get(memo)
        if chain is None:  # built once per route x task x leader x scorecard
            if len(self._chains) > 4096:
                self._chains.clear()
            chain = self._chains[memo] = self._chain(route, auto, state, leads, written, index)
        event = AutoDecided(route.name, task, role, chain[0].key if chain else None, share)
        if state is None:
            return Pick(chain, event)
        on_answered = self._shadow_hook(route, auto, state, index, body)
        observer = AutoObserver(
            state.record, ramp.id if ramp is not None else None, self.clock, on_answered
        )
        return Pick(chain, event, observer)

    @staticmethod
    def _chain(
        route: Route,
        auto: AutoSettings,
        state: TaskState | None,
        leads: list[str],
        written: tuple[Candidate, ...],
        index: dict[str, Candidate],
    ) -> tuple[Candidate, ...]:
        """``leads``, then the ranked fallbacks (other providers first), then ``written``."""
        evidence = state.evidence if state is not None else None
        ranked = [s.candidate for s in evidence.ranked] if evidence is not None else []
        follow: list[str] = []
        if leads:
            follow = fallback_order(leads, ranked, lambda k: k.split("/", 1)[0], auto.fallbacks)
        keys = list(dict.fromkeys([*leads, *follow]))
        chain = tuple(index[k] for k in keys if k in index)
        return chain + tuple(c for c in written if c.key not in keys)

    def preview(self, route: Route, task: str) -> tuple[Candidate, ...]:
        """The chain a request of ``task`` gets on the incumbent's side now (no draw, no
        record): for the status."""
        auto = route.auto
        assert auto is not None
        state = self.states.get((route.name, task))
        pin = auto.pins.get(task)
        leads = [pin.key] if pin is not None else []
        if not leads and state is not None and state.incumbent is not None:
            leads = [state.incumbent]
        return self._chain(
            route, auto, state, leads, route.chain_for(task), self._candidates(route)
        )

    def _shadow_hook(
        self,
        route: Route,
        auto: AutoSettings,
        state: TaskState,
        index: dict[str, Candidate],
        body: dict[str, Any],
    ) -> Callable[[], None] | None:
        """For a sampled request: what hands it to shadow traffic once it is answered."""
        settings, runner = auto.shadow, self.shadow
        if settings is None or runner is None or self.rng.random() >= settings.share:
            return None
        if state.ramp is not None:
            target_key: str | None = state.ramp.challenger
        else:
            ranked = [s.candidate for s in state.evidence.ranked] if state.evidence else []
            target_key = next((k for k in ranked if k != state.incumbent), None)
        target = index.get(target_key) if target_key is not None else None
        if target is None:
            return None
        job = ShadowJob(route.name, state.task, target, body, settings, state)

        def submit() -> None:
            runner.submit(job)

        return submit

    def _refusal(self, route: Route, task: str) -> str:
        auto = route.auto
        assert auto is not None
        return (
            f"The auto route '{route.name}' has no evaluated candidate for task '{task}': no "
            f"scorecard ranks one that meets {auto.objective_for(task).describe()}, and the "
            "route has no pin or chain for it to fall back on (GET /admin/auto says why)."
        )

    # -- records --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``GET /admin/auto`` (``status.py`` renders it)."""
        from edgeproxy.auto.status import task_status

        now, wall = self.clock.monotonic(), time.time()
        routes: dict[str, dict[str, Any]] = {}
        for (name, task), state in sorted(self.states.items()):
            route = self.policy.routes.get(name)
            if route is None or route.auto is None:
                continue
            state.advance(now, wall)
            routes.setdefault(name, {})[task] = task_status(state, route, now, self)
        return {
            "policy_version": self.policy.version,
            "scorecards": self.store.status(),
            "problems": list(self.problems),
            "routes": routes,
            "shadow": self.shadow.as_dict() if self.shadow is not None else None,
        }

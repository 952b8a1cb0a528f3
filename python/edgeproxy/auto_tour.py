"""The Auto tour of ``edgeproxy demo`` (docs/auto.md): eval -> scorecard -> ``auto`` serves the
winner of each task -> a price rise, then a degraded model -> re-eval -> switch.

Everything runs on loopback, on ephemeral ports (clear of the demo's own): the simulated market
(``sim.market``, its delays 50x shorter), a proxy serving the market's policy with an ``auto``
route, and evals of the market into the scorecard directory the route watches. A request names
its task with ``x-edgeproxy-task``; the answer's headers say who served it.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml

from edgeproxy.auto.status import render
from edgeproxy.evals.cli import candidate_pool, pick_candidates
from edgeproxy.evals.compare import fmt
from edgeproxy.evals.objective import Limits, rank
from edgeproxy.evals.runner import EvalOptions, EvalRun
from edgeproxy.evals.scorecard import Scorecard, save_scorecard
from edgeproxy.policy import load_policy
from edgeproxy.policy.reload import ReloadOptions
from edgeproxy.server.runner import ProxyServer
from edgeproxy.sim.market import Market, market_suite

TIME_SCALE: Final = 0.02
SEED: Final = 7
FLOOR: Final = 0.85
TASKS: Final = ("extraction", "qa", "writing")
RISE: Final = {"reasoner/local/reasoner-1": 3.0}
# A short canary for the demo: 10 %, then 50 %, half a second and 3 challenger requests a step.
# The latency rollback is widened to 20x: at 50x speed the market answers in a few milliseconds,
# less than a loaded machine's scheduling noise, so a live latency ratio there says nothing about
# the models (the tour shows switching on cost; docs/auto.md shows the latency rollback).
AUTO: Final = {
    "ramp": {"steps": [10, 50], "step_time": "500ms"},
    "rollback": {"min_requests": 3, "max_latency_increase": 2000},
}

Say = Callable[[str], None]


class _Tour:
    def __init__(self, say: Say, root: Path, market: Market) -> None:
        self.say = say
        self.root = root
        self.market = market
        self.cards = root / "scorecards"
        self.cards.mkdir()
        self.policy_path = root / "market.yaml"
        self.evals = 0
        self.proxy: ProxyServer | None = None
        self.session: aiohttp.ClientSession | None = None

    def write_policy(self, price_factors: dict[str, float] | None = None) -> None:
        text = self.market.policy_text(
            price_factors=price_factors, scorecards=str(self.cards / "market-*.json")
        )
        data = yaml.safe_load(text)
        data["routes"]["auto"]["auto"].update(AUTO)
        # Only the auto route, its last resort on one wire (no mixed-wire warnings in the tour).
        data["routes"] = {"auto": data["routes"]["auto"]}
        data["routes"]["auto"]["chain"] = [
            "frontier/local/frontier-xl",
            "openweight/local/llama-70b",
        ]
        self.policy_path.write_text(yaml.safe_dump(data, sort_keys=False))

    async def evaluate(self) -> Scorecard:
        self.evals += 1
        policy = await asyncio.to_thread(load_policy, self.policy_path)
        pool = candidate_pool(policy)
        out = self.root / "runs" / f"market-{self.evals}.json"
        options = EvalOptions(
            policy=policy,
            suite=market_suite(),
            candidates=pick_candidates(policy, None, None),
            out=out,
            judge=pool[policy.evals.judge or ""],
            repeats=3,
            concurrency=16,
            retry_backoff=0.0,
            fresh=True,
        )
        started = time.monotonic()
        result = await EvalRun(options).run()
        card = result.scorecard
        path = self.cards / f"market-{self.evals}.json"
        await asyncio.to_thread(save_scorecard, card, path)  # where the route reads
        self.note(
            f"{result.ran} calls in {time.monotonic() - started:.1f}s, ${card.spent_usd:.4f} "
            f"on candidates and ${card.judge_spent_usd:.4f} on the judge: {path.name}"
        )
        return card

    def note(self, text: str, indent: str = "   ") -> None:
        """A long line, wrapped at 80 columns."""
        for line in textwrap.wrap(text, 80, initial_indent=indent, subsequent_indent=indent + "  "):
            self.say(line)

    def winners(self, card: Scorecard) -> None:
        self.say(f"   {'task':<11} {'best cost per success (floor 0.85)':<36} next best")
        for task in TASKS:
            ranked = rank(card.for_task(task), "cost_per_success", Limits(min_quality=FLOOR))
            cells = [
                f"{r.cell.candidate.split('/')[-1]} {fmt('cost_per_success', r.value)}"
                for r in ranked[:2]
            ]
            first = cells[0] if cells else "-"
            self.say(f"   {task:<11} {first:<36} {cells[1] if len(cells) > 1 else '-'}")

    async def wait_for_card(self, count: int) -> None:
        """The proxy reads a new scorecard by itself (it watches the directory)."""
        assert self.proxy is not None
        router = self.proxy.state.auto
        for _ in range(100):  # up to 5 s
            if len(router.store.cards()) >= count:
                return
            await asyncio.sleep(0.05)
        await router.refresh()  # a filesystem without change events

    async def ask(self, task: str, n: int = 1) -> dict[str, int]:
        """``n`` requests of ``task`` to model ``auto``: who served how many."""
        assert self.proxy is not None and self.session is not None
        items = [i for i in market_suite().items if i.task == task]
        counts: dict[str, int] = {}
        for i in range(n):
            messages = [m.model_dump(exclude_none=True) for m in items[i % len(items)].messages]
            body = {"model": "auto", "messages": messages, "max_tokens": 300}
            async with self.session.post(
                f"{self.proxy.url}/v1/chat/completions",
                json=body,
                headers={"x-edgeproxy-task": task},
            ) as response:
                await response.read()
                served = "/".join(
                    response.headers.get(f"x-edgeproxy-{h}", "?")
                    for h in ("provider", "region", "model")
                )
            counts[served] = counts.get(served, 0) + 1
        return counts

    def state(self, task: str) -> dict[str, Any]:
        assert self.proxy is not None
        routes: dict[str, Any] = self.proxy.state.auto.status()["routes"].get("auto", {})
        found: dict[str, Any] = routes.get(task, {})
        return found

    async def serving(self) -> dict[str, str]:
        out = {}
        for task in TASKS:
            (who,) = (await self.ask(task)).keys()
            out[task] = who
            self.say(f"   {task:<11} served by {who}")
        return out


async def auto_tour(say: Say) -> bool:
    """Run the tour, printing as it goes; True when every step did what it says."""
    say("The Auto tour: per task, the best model by eval evidence, and careful switching")
    say("(the simulated market: 8 models of 5 providers, 3 tasks; docs/auto.md)")
    with tempfile.TemporaryDirectory(prefix="edgeproxy-auto-") as scratch:
        market = Market(time_scale=TIME_SCALE, seed=SEED)
        await market.start()
        tour = _Tour(say, Path(scratch), market)
        try:
            return await _steps(tour)
        finally:
            if tour.session is not None:
                await tour.session.close()
            if tour.proxy is not None:
                await tour.proxy.stop()
            await market.stop()


async def _steps(tour: _Tour) -> bool:
    say = tour.say
    ok = True
    say("")
    say("1. Evaluate every model on the suite (30 items, 3 repeats, a judge for writing)")
    tour.write_policy()
    card = await tour.evaluate()
    tour.winners(card)

    say("")
    say('2. The proxy serves model "auto"; the app names the task (x-edgeproxy-task)')
    tour.proxy = ProxyServer(
        await asyncio.to_thread(load_policy, tour.policy_path),
        port=0,
        reload=ReloadOptions(tour.policy_path),  # watches the policy and the scorecards
    )
    tour.proxy.state.auto.rng = random.Random(SEED)  # the same tour every time
    await tour.proxy.start()
    tour.session = aiohttp.ClientSession()
    first = await tour.serving()
    ok &= first["qa"] == "reasoner/local/reasoner-1"

    say("")
    say("3. reasoner-1 triples its price (a policy change, reloaded): no evidence yet")
    tour.write_policy(price_factors=RISE)
    assert tour.proxy.reloader is not None
    await tour.proxy.reloader.reload("tour")
    (who,) = (await tour.ask("qa")).keys()
    say(f"   qa          still served by {who}")

    say("")
    say("4. Re-evaluate at the new price; the proxy reads the new scorecard by itself")
    await tour.evaluate()
    await tour.wait_for_card(2)
    qa = tour.state("qa")
    tour.note(f"qa: {qa['decisions'][-1]['kind']}: {qa['why']}")
    ramp = qa.get("ramp")
    if ramp is None:
        ok = False
    else:
        tour.note(f"canary ramp: {ramp['challenger']} gets {ramp['share']:.0%} of qa, then 50%")
        while tour.state("qa").get("ramp") is not None:
            share = tour.state("qa")["ramp"]["share"]
            counts = await tour.ask("qa", 30)
            spread = ", ".join(f"{n} {k.split('/')[-1]}" for k, n in sorted(counts.items()))
            say(f"   30 qa requests from {share:.0%} on: {spread}")
            await asyncio.sleep(0.25)
        last = tour.state("qa")["decisions"][-1]
        tour.note(f"{last['kind']}: {last['reason']}")
    (who,) = (await tour.ask("qa")).keys()
    say(f"   qa          served by {who}")
    ok &= who == "openweight/local/llama-70b"

    say("")
    say("5. extract-ft degrades on extraction (98% right, now 40%: live); re-evaluate")
    profiles = f"{tour.market.control_url}/sims/specialist/profiles/extract-ft"
    assert tour.session is not None
    async with tour.session.patch(profiles, json={"tasks": {"extraction": {"quality": 0.4}}}):
        pass
    await tour.evaluate()
    await tour.wait_for_card(3)
    extraction = tour.state("extraction")
    tour.note(f"extraction: {extraction['decisions'][-1]['kind']}: {extraction['why']}")
    (who,) = (await tour.ask("extraction")).keys()
    say(f"   extraction  served by {who}")
    ok &= who != "specialist/local/extract-ft"

    say("")
    say("6. edgeproxy auto status (excerpt: qa)")
    data = tour.proxy.state.auto.status()
    data["routes"] = {"auto": {"qa": data["routes"]["auto"]["qa"]}}
    data["scorecards"] = data["scorecards"][-1:]
    for line in render(data).splitlines():
        if line:
            tour.note(line.strip(), "   " + " " * (len(line) - len(line.lstrip())))
        else:
            say("")
    say("")
    say("The Auto tour " + ("passed." if ok else "did NOT do what it says (see above)."))
    say("")
    return ok

"""A simulated model market: 8 models of 5 providers on 3 tasks, with known true profiles.

The market is what evals, the ``auto`` route and the demo's Auto tour run against on loopback
(docs/simulator.md, "The market"). Each provider is one simulator (``SimConfig.profiles`` holds
its models' profiles; the answer book of the shipped ``market`` suite tells them the task and the
right answer of each prompt). ``policies/examples/auto-market.yaml`` is ``policy_text()`` with
the fixed ports below; tests start the market on ephemeral ports (``Market()``) and render the
policy for the ports they got.

The true profiles make the seeds' stories measurable: a fine-tuned extraction specialist that is
faster *and* better on its task, a reasoning model at a small model's rate card that writes 3x
the tokens, a small model that errors and is retried, open-weight models that are cheap but slow,
frontier models that are good at everything at a price. ``true_measures`` and ``oracle`` compute
what an eval should find and each task's best achievable objective from these profiles alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from edgeproxy.evals.objective import HIGHER_IS_BETTER, Measured, Objective, value
from edgeproxy.evals.suite import Suite, load_suite, reference_text, shipped_suites
from edgeproxy.sim.answers import AnswerBook, AnswerKey, wrong_answer
from edgeproxy.sim.cluster import SimCluster
from edgeproxy.sim.config import SimConfig, SimWire
from edgeproxy.sim.play import PIECE
from edgeproxy.sim.profiles import ModelProfile, TaskProfile
from edgeproxy.sim.text import estimate_prompt_tokens
from edgeproxy.sim.tools import last_user_text

REGION: Final = "local"
TASKS: Final = ("extraction", "qa", "writing")
# The example policy's ports: a block clear of the demo's 18100-18104.
CONTROL_PORT: Final = 18200
HOST: Final = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class MarketModel:
    name: str
    price_input: float  # USD per million tokens
    price_output: float
    profile: ModelProfile


@dataclass(frozen=True, slots=True)
class MarketProvider:
    name: str
    wire: SimWire
    port: int  # in the example policy
    models: tuple[MarketModel, ...]
    tags: tuple[tuple[str, str], ...] = ()


def _profile(tasks: Mapping[str, tuple[float, float, float]], **common: float) -> ModelProfile:
    """Per task (quality, ttft, tokens_per_second); ``common`` for every task (verbosity,
    error_rate). Tasks it does not list play like a weak generalist."""
    profiles = {
        task: TaskProfile(quality=q, ttft=ttft, tokens_per_second=tps, **common)
        for task, (q, ttft, tps) in tasks.items()
    }
    return ModelProfile(profiles, TaskProfile(quality=0.5, ttft=0.5, tokens_per_second=80.0))


PROVIDERS: Final[tuple[MarketProvider, ...]] = (
    MarketProvider(
        "frontier",
        "openai",
        18201,
        (
            # Good at everything, at a price.
            MarketModel(
                "frontier-xl",
                5.0,
                15.0,
                _profile(
                    {
                        "extraction": (0.95, 0.6, 60.0),
                        "qa": (0.96, 0.6, 60.0),
                        "writing": (0.95, 0.6, 60.0),
                    },
                    error_rate=0.01,
                ),
            ),
            # The small sibling: cheap, fast, mediocre.
            MarketModel(
                "frontier-mini",
                0.3,
                1.2,
                _profile(
                    {
                        "extraction": (0.70, 0.25, 140.0),
                        "qa": (0.62, 0.25, 140.0),
                        "writing": (0.50, 0.25, 140.0),
                    },
                    error_rate=0.03,
                ),
            ),
        ),
    ),
    MarketProvider(
        "anthro",
        "anthropic",
        18202,
        (
            # The writer.
            MarketModel(
                "anthro-large",
                3.0,
                15.0,
                _profile(
                    {
                        "extraction": (0.93, 0.5, 75.0),
                        "qa": (0.92, 0.5, 75.0),
                        "writing": (0.98, 0.5, 75.0),
                    },
                ),
            ),
            # A small model that errors and is retried often enough to cost like a larger one.
            MarketModel(
                "anthro-small",
                0.8,
                4.0,
                _profile(
                    {
                        "extraction": (0.86, 0.2, 160.0),
                        "qa": (0.78, 0.2, 160.0),
                        "writing": (0.65, 0.2, 160.0),
                    },
                    error_rate=0.15,
                ),
            ),
        ),
    ),
    MarketProvider(
        "reasoner",
        "openai",
        18203,
        (
            # frontier-mini's rate card, 3x the output tokens (hidden reasoning).
            MarketModel(
                "reasoner-1",
                0.3,
                1.2,
                _profile(
                    {
                        "extraction": (0.90, 0.4, 120.0),
                        "qa": (0.94, 0.4, 120.0),
                        "writing": (0.65, 0.4, 120.0),
                    },
                    verbosity=3.0,
                ),
            ),
        ),
    ),
    MarketProvider(
        "openweight",
        "openai",
        18204,
        (
            # Self-hosted open weights: cheap, slower.
            MarketModel(
                "llama-70b",
                0.6,
                0.8,
                _profile(
                    {
                        "extraction": (0.88, 0.35, 45.0),
                        "qa": (0.92, 0.35, 45.0),
                        "writing": (0.62, 0.35, 45.0),
                    },
                ),
            ),
            MarketModel(
                "llama-8b",
                0.1,
                0.2,
                _profile(
                    {
                        "extraction": (0.65, 0.12, 220.0),
                        "qa": (0.55, 0.12, 220.0),
                        "writing": (0.40, 0.12, 220.0),
                    },
                ),
            ),
        ),
        tags=(("self_hosted", "true"),),
    ),
    MarketProvider(
        "specialist",
        "openai",
        18205,
        (
            # Fine-tuned for extraction: faster and better there, poor elsewhere.
            MarketModel(
                "extract-ft",
                0.2,
                0.6,
                _profile(
                    {
                        "extraction": (0.98, 0.08, 300.0),
                        "qa": (0.35, 0.08, 300.0),
                        "writing": (0.15, 0.08, 300.0),
                    },
                ),
            ),
        ),
    ),
)
# The judge: its own provider, outside the pool it judges. Its verdicts are deterministic
# (sim/judge.py); its profile only sets its pace.
JUDGE_PROVIDER: Final = MarketProvider(
    "judge",
    "openai",
    18206,
    (MarketModel("judge-1", 1.0, 4.0, _profile({}, error_rate=0.0)),),
)
ALL_PROVIDERS: Final = (*PROVIDERS, JUDGE_PROVIDER)


def key(provider: MarketProvider, model: MarketModel) -> str:
    return f"{provider.name}/{REGION}/{model.name}"


CANDIDATES: Final[tuple[str, ...]] = tuple(key(p, m) for p in PROVIDERS for m in p.models)
JUDGE: Final = key(JUDGE_PROVIDER, JUDGE_PROVIDER.models[0])


def models() -> dict[str, tuple[MarketProvider, MarketModel]]:
    """Every market model by candidate key (the judge included)."""
    return {key(p, m): (p, m) for p in ALL_PROVIDERS for m in p.models}


def market_suite() -> Suite:
    return load_suite(shipped_suites()["market"])


def answer_book(suites: Iterable[Suite]) -> AnswerBook:
    """What the market's models know: each item's task, a right answer and a wrong one."""
    entries = []
    for suite in suites:
        for item in suite.items:
            right = reference_text(item)
            if right is None:
                continue
            prompt = last_user_text([m.model_dump() for m in item.messages])
            entries.append((prompt, AnswerKey(item.task, right, wrong_answer(right))))
    return AnswerBook(entries)


def configs(
    book: AnswerBook,
    *,
    time_scale: float = 1.0,
    seed: int = 0,
    profiles: Mapping[str, ModelProfile] | None = None,
) -> list[SimConfig]:
    """One simulator per provider (the judge's included). ``profiles`` replaces the profile
    of the models it names (by candidate key): a market with a twist."""
    overrides = dict(profiles or {})
    out = []
    for provider in ALL_PROVIDERS:
        out.append(
            SimConfig(
                name=provider.name,
                wire=provider.wire,
                seed=seed,
                time_scale=time_scale,
                models=tuple(m.name for m in provider.models),
                profiles={
                    m.name: overrides.get(key(provider, m), m.profile) for m in provider.models
                },
                answers=book,
            )
        )
    return out


SCORECARDS: Final = "scorecards/market-*.json"  # where the example's auto route reads


def policy_text(
    ports: Mapping[str, int] | None = None,
    *,
    price_factors: Mapping[str, float] | None = None,
    host: str = HOST,
    scorecards: str = SCORECARDS,
) -> str:
    """The market's policy: every provider at ``ports`` (by provider name; the fixed example
    ports by default), prices multiplied by ``price_factors`` (by candidate key: "raise the
    winner's price 3x" is a policy change, hot-reloaded like any other). Its ``auto`` route
    chooses per task from ``evals.candidates`` by the scorecards ``scorecards`` matches
    (relative to the policy file), where ``edgeproxy eval schedule`` writes them."""
    factors = dict(price_factors or {})
    lines = [
        "# yaml-language-server: $schema=../schema.json",
        "# The simulated model market (edgeproxy.sim.market): 8 models of 5 providers on 3 tasks,",
        "# and a judge. Generated by edgeproxy.sim.market.policy_text(); serve the market with",
        "# `edgeproxy sim --market`, evaluate it with",
        "# `edgeproxy eval run --policy policies/examples/auto-market.yaml --out market.json`",
        "# (docs/evals.md, docs/simulator.md); the `auto` route serves each task from the",
        "# scorecards (docs/auto.md).",
        "version: 1",
        "tasks:",
        f"  categories: [{', '.join(TASKS)}]",
        "evals:",
        f"  judge: {JUDGE}",
        "  candidates:",
        *(f"    - {candidate}" for candidate in CANDIDATES),
        "  suite: market",
        "  max_cost: 1.0",
        "  scorecards:",
        f"    - {scorecards}",
        "  schedule:",
        "    every: 14d",
        '    out: "scorecards/market-{date}.json"',
        "    repeats: 3",
        "providers:",
    ]
    for provider in ALL_PROVIDERS:
        port = (ports or {}).get(provider.name, provider.port)
        lines += [
            f"  {provider.name}:",
            f"    kind: {provider.wire}",
            "    regions:",
            f"      {REGION}:",
            f"        base_url: http://{host}:{port}/v1",
        ]
        if provider.tags:
            tags = ", ".join(f'{k}: "{v}"' for k, v in provider.tags)
            lines.append(f"        tags: {{{tags}}}")
        lines.append("    models:")
        for model in provider.models:
            factor = factors.get(key(provider, model), 1.0)
            lines.append(
                f"      {model.name}: {{context_window: 128000, price: "
                f"{{input: {model.price_input * factor:g}, output: {model.price_output * factor:g}}}}}"
            )
    lines += [
        "routes:",
        "  # A hand-written chain; the `auto` route chooses from evals.candidates instead.",
        "  assistant:",
        "    chain:",
        "      - anthro/local/anthro-large",
        "      - frontier/local/frontier-xl",
        "      - openweight/local/llama-70b",
        "  # Per task (the app names it: x-edgeproxy-task), the best of evals.candidates by the",
        "  # newest scorecard: the cheapest good answer, never one under the quality floor. Its",
        "  # chain serves before a scorecard ranks a candidate, and is the last resort.",
        "  auto:",
        "    chain: [anthro/local/anthro-large, frontier/local/frontier-xl]",
        "    auto:",
        "      objective: {optimize: cost_per_success, min_quality: 0.85}",
    ]
    return "\n".join(lines) + "\n"


class Market:
    """The market's simulators and their control API, on ephemeral ports by default
    (``fixed_ports=True``: the example policy's)."""

    def __init__(
        self,
        *,
        suites: Iterable[Suite] | None = None,
        time_scale: float = 1.0,
        seed: int = 0,
        fixed_ports: bool = False,
        host: str = HOST,
        profiles: Mapping[str, ModelProfile] | None = None,
    ) -> None:
        book = answer_book(suites if suites is not None else [market_suite()])
        ports = {p.name: p.port for p in ALL_PROVIDERS} if fixed_ports else None
        self.host = host
        self.cluster = SimCluster(
            configs(book, time_scale=time_scale, seed=seed, profiles=profiles),
            ports=ports,
            control_port=CONTROL_PORT if fixed_ports else None,
            host=host,
        )

    @property
    def ports(self) -> dict[str, int]:
        return {name: sim.port for name, sim in self.cluster.sims.items()}

    @property
    def control_url(self) -> str:
        return self.cluster.control_url

    def policy_text(
        self, *, price_factors: Mapping[str, float] | None = None, scorecards: str = SCORECARDS
    ) -> str:
        return policy_text(
            self.ports, price_factors=price_factors, host=self.host, scorecards=scorecards
        )

    def set_profile(self, candidate: str, profile: ModelProfile) -> None:
        """Replace a model's profile now (the control API's ``PUT .../profiles/{model}``)."""
        provider, _, model = candidate.split("/", 2)
        self.cluster.sims[provider].player.profiles[model] = profile

    def profile(self, candidate: str) -> ModelProfile:
        provider, _, model = candidate.split("/", 2)
        return self.cluster.sims[provider].player.profiles[model]

    async def start(self) -> None:
        await self.cluster.start()

    async def stop(self) -> None:
        await self.cluster.stop()

    async def __aenter__(self) -> Market:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


# -- the truth: what an eval should measure, and the best achievable per task -----------------


def _expected_tokens(text: str) -> int:
    return len(PIECE.findall(text))


def true_measures(
    suite: Suite,
    *,
    profiles: Mapping[str, ModelProfile] | None = None,
    price_factors: Mapping[str, float] | None = None,
    retries: int = 2,
    retry_backoff: float = 0.25,
    time_scale: float = 1.0,
) -> dict[tuple[str, str], Measured]:
    """Per (candidate key, task): the quality, success rate, mean cost and mean latency an eval
    of ``suite`` (``retries`` as the runner's) converges to, from the true profiles.

    Per item: an attempt fails with the task's ``error_rate`` (billing the prompt and half the
    visible answer, and taking that long); an answer is right with its ``quality``; visible tokens
    are the right or wrong answer's, output tokens ``verbosity`` times that; latency is
    ``ttft + output tokens / tokens_per_second``, scaled, plus the runner's mean backoff.
    Costs use the simulator's own prompt-token estimate (what it reports as usage).
    """
    overrides = dict(profiles or {})
    factors = dict(price_factors or {})
    out: dict[tuple[str, str], Measured] = {}
    for candidate in CANDIDATES:
        provider, model = models()[candidate]
        profile = overrides.get(candidate, model.profile)
        factor = factors.get(candidate, 1.0)
        p_in, p_out = model.price_input * factor / 1e6, model.price_output * factor / 1e6
        for task in suite.tasks:
            tp = profile.for_task(task)
            items = [i for i in suite.items if i.task == task and reference_text(i) is not None]
            e = tp.error_rate
            # Failed attempts before an answer (or all 1 + retries of them), and P(no answer).
            failed_attempts = sum(e**k for k in range(1, retries + 2))
            no_answer = e ** (retries + 1)
            backoff = sum(e**k * retry_backoff * 2 ** (k - 1) * 0.75 for k in range(1, retries + 1))
            costs, latencies = [], []
            for item in items:
                right = reference_text(item)
                assert right is not None
                messages = [m.model_dump() for m in item.messages]
                if provider.wire == "anthropic":
                    messages = [m for m in messages if m["role"] != "system"]
                prompt = estimate_prompt_tokens(messages)
                visible = tp.quality * _expected_tokens(right) + (1 - tp.quality) * (
                    _expected_tokens(wrong_answer(right))
                )
                output = visible * tp.verbosity
                reasoning = output - visible
                half = max(1.0, visible // 2)
                fail_cost = prompt * p_in + half * p_out
                ok_cost = prompt * p_in + output * p_out
                costs.append(failed_attempts * fail_cost + (1 - no_answer) * ok_cost)
                interval = tp.token_interval
                before = tp.ttft + reasoning * interval
                fail_time = (before + half * interval) * time_scale
                ok_time = (before + visible * interval) * time_scale
                latencies.append(failed_attempts * fail_time + (1 - no_answer) * ok_time + backoff)
            success = tp.quality * (1 - no_answer)
            out[(candidate, task)] = Measured(
                quality=success,
                success_rate=success,
                cost=sum(costs) / len(costs) if costs else 0.0,
                latency=sum(latencies) / len(latencies) if latencies else 0.0,
            )
    return out


@dataclass(frozen=True, slots=True)
class Best:
    candidate: str
    value: float
    values: Mapping[str, float]  # every eligible candidate's value


def oracle(
    suite: Suite,
    objective: Objective,
    *,
    min_quality: float | None = None,
    **truth: object,
) -> dict[str, Best]:
    """Per task, the best achievable ``objective`` from the true profiles (among candidates
    whose true quality is at least ``min_quality``); ``truth`` goes to ``true_measures``."""
    measured = true_measures(suite, **truth)  # type: ignore[arg-type]
    out: dict[str, Best] = {}
    for task in suite.tasks:
        values = {
            candidate: value(m, objective)
            for (candidate, t), m in measured.items()
            if t == task and (min_quality is None or m.quality >= min_quality)
        }
        if not values:
            continue
        pick = max if HIGHER_IS_BETTER[objective] else min
        winner = pick(values, key=lambda c: values[c])
        out[task] = Best(winner, values[winner], values)
    return out

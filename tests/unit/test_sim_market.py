"""The simulator plays a market: per-task profiles, the answer book, hidden reasoning tokens,
profile errors, live profile changes, and the market's truth (docs/simulator.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from edgeproxy.evals.objective import value
from edgeproxy.evals.suite import parse_suite
from edgeproxy.sim import SimCluster, SimConfig
from edgeproxy.sim.answers import WRONG_TEXT, AnswerBook, AnswerKey, wrong_answer
from edgeproxy.sim.market import (
    CANDIDATES,
    market_suite,
    oracle,
    policy_text,
    true_measures,
)
from edgeproxy.sim.play import Player
from edgeproxy.sim.profiles import ModelProfile, TaskProfile
from edgeproxy.sim.request import ChatRequest

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of Australia? Answer with the city name only."
BOOK = AnswerBook([(QUESTION, AnswerKey("qa", "Canberra", wrong_answer("Canberra")))])


def profiled(quality: float = 1.0, **task: float) -> ModelProfile:
    return ModelProfile({"qa": TaskProfile(quality=quality, ttft=0, tokens_per_second=0, **task)})


@pytest.fixture
async def market() -> AsyncIterator[SimCluster]:
    def config(name: str, wire: Any) -> SimConfig:
        return SimConfig(
            name=name,
            wire=wire,
            answers=BOOK,
            profiles={
                "always": profiled(1.0),
                "never": profiled(0.0),
                "verbose": profiled(1.0, verbosity=3.0),
                "flaky": profiled(1.0, error_rate=1.0),
            },
        )

    async with SimCluster([config("oa", "openai"), config("an", "anthropic")]) as cluster:
        yield cluster


def oa(cluster: SimCluster) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=cluster.sims["oa"].url, api_key="x", max_retries=0)


def an(cluster: SimCluster) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=cluster.sims["an"].base_url, api_key="x", max_retries=0)


ASK: list[Any] = [{"role": "user", "content": QUESTION}]


async def test_a_profiled_model_answers_right_or_wrong_by_its_quality(market: SimCluster) -> None:
    client = oa(market)
    right = await client.chat.completions.create(model="always", messages=ASK)
    wrong = await client.chat.completions.create(model="never", messages=ASK)
    assert right.choices[0].message.content == "Canberra"
    assert wrong.choices[0].message.content == WRONG_TEXT
    # The Anthropic wire plays the same book (the system prompt moved out of messages).
    message = await an(market).messages.create(
        model="always", max_tokens=50, system="Be brief.", messages=ASK
    )
    assert message.content[0].text == "Canberra"  # type: ignore[union-attr]
    # A model without a profile answers as before: filler text.
    plain = await client.chat.completions.create(model="unprofiled", messages=ASK)
    assert plain.choices[0].message.content not in ("Canberra", WRONG_TEXT)


async def test_verbosity_bills_hidden_reasoning_tokens(market: SimCluster) -> None:
    terse = await oa(market).chat.completions.create(model="always", messages=ASK)
    verbose = await oa(market).chat.completions.create(model="verbose", messages=ASK)
    assert verbose.choices[0].message.content == terse.choices[0].message.content
    assert terse.usage is not None and verbose.usage is not None
    assert verbose.usage.completion_tokens == 3 * terse.usage.completion_tokens
    details = verbose.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 2 * terse.usage.completion_tokens
    # Streams report it too, and so does the Anthropic wire's usage.
    stream = await oa(market).chat.completions.create(
        model="verbose", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    usage = [chunk.usage async for chunk in stream if chunk.usage is not None]
    assert usage[-1].completion_tokens == verbose.usage.completion_tokens
    message = await an(market).messages.create(model="verbose", max_tokens=50, messages=ASK)
    assert message.usage.output_tokens == verbose.usage.completion_tokens
    # max_tokens caps hidden and visible together, reasoning first: an empty, cut answer.
    capped = await oa(market).chat.completions.create(model="verbose", messages=ASK, max_tokens=2)
    assert capped.choices[0].finish_reason == "length"
    assert capped.choices[0].message.content == ""


async def test_a_profile_error_breaks_the_answer(market: SimCluster) -> None:
    with pytest.raises(openai.InternalServerError):
        await oa(market).chat.completions.create(model="flaky", messages=ASK)
    stream = await oa(market).chat.completions.create(model="flaky", messages=ASK, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    with pytest.raises(anthropic.InternalServerError):
        await an(market).messages.create(model="flaky", max_tokens=50, messages=ASK)
    assert market.sims["oa"].stats.outcomes["profile_error"] == 2


async def test_profiles_change_live_through_the_control_api(market: SimCluster) -> None:
    url = market.control_url + "/sims/oa/profiles"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            listed = await resp.json()
        assert listed["profiles"]["always"]["tasks"]["qa"]["quality"] == 1.0
        # Degrade one task of one model, keeping the rest of its profile.
        async with http.patch(url + "/always", json={"tasks": {"qa": {"quality": 0.0}}}) as resp:
            assert resp.status == 200
            assert (await resp.json())["profile"]["tasks"]["qa"]["tokens_per_second"] == 0
        answer = await oa(market).chat.completions.create(model="always", messages=ASK)
        assert answer.choices[0].message.content == WRONG_TEXT
        # PUT replaces (and can add a model); nonsense is refused and changes nothing.
        async with http.put(url + "/newcomer", json={"default": {"quality": 0.5}}) as resp:
            assert resp.status == 200
        for body, status in (
            ({"tasks": {"qa": {"quality": 2}}}, 400),
            ({"tasks": {"qa": {"speed": 1}}}, 400),
            ({"tasks": {"qa": {"quality": True}}}, 400),
            ({"tasks": ["qa"]}, 400),
            ({"colour": "red"}, 400),
        ):
            async with http.patch(url + "/always", json=body) as resp:
                assert resp.status == status, body
        async with http.patch(url + "/always", data=b"{not json") as resp:
            assert resp.status == 400
        async with http.patch(url + "/nobody", json={}) as resp:
            assert resp.status == 404
        async with http.get(market.control_url + "/sims/none/profiles") as resp:
            assert resp.status == 404
    assert market.sims["oa"].player.profiles["always"].for_task("qa").quality == 0.0
    assert "newcomer" in market.sims["oa"].player.profiles


def chat(model: str, text: str, **extra: Any) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[{"role": "user", "content": text}],
        stream=True,
        include_usage=True,
        max_tokens=extra.pop("max_tokens", None),
    )


def test_draws_are_reproducible_per_seed_and_fresh_per_repeat() -> None:
    def run(seed: int) -> list[bool | None]:
        player = Player(SimConfig(name="s", seed=seed, answers=BOOK, profiles={"m": profiled(0.5)}))
        out = []
        for _ in range(40):
            played = player.play(chat("m", QUESTION))
            assert played is not None
            out.append(played.right)
        return out

    first = run(1)
    assert first == run(1)
    assert first != run(2)
    assert 10 < sum(bool(r) for r in first) < 30  # repeats draw afresh around the quality


def test_the_pace_follows_the_task_profile_and_the_time_scale() -> None:
    profile = ModelProfile(
        {"qa": TaskProfile(ttft=0.5, tokens_per_second=10.0, verbosity=3.0)},
        default=TaskProfile(ttft=2.0, tokens_per_second=100.0),
    )
    player = Player(SimConfig(name="s", answers=BOOK, time_scale=0.1, profiles={"m": profile}))
    played = player.play(chat("m", QUESTION))
    assert played is not None and played.task == "qa"
    # One visible token ("Canberra"), two hidden ones at 10 tokens/s before it, scaled by 0.1.
    assert played.ttft == pytest.approx((0.5 + 2 * 0.1) * 0.1)
    assert played.interval == pytest.approx(0.01)
    # A prompt the book does not know: the body's metadata.task, else the default profile.
    body = b'{"metadata": {"task": "qa"}}'
    assert player.play(chat("m", "Unknown question?"), body).task == "qa"  # type: ignore[union-attr]
    other = player.play(chat("m", "Unknown question?"))
    assert other is not None and other.task is None and other.ttft == pytest.approx(0.2)
    assert player.play(chat("unprofiled", QUESTION)) is None


def test_profiles_are_checked() -> None:
    with pytest.raises(ValueError, match="quality"):
        TaskProfile(quality=1.5)
    with pytest.raises(ValueError, match="verbosity"):
        TaskProfile(verbosity=0.5)
    with pytest.raises(ValueError, match="unknown task profile field"):
        TaskProfile.from_dict({"qualty": 1})
    merged = profiled(1.0).merged({"tasks": {"writing": {"quality": 0.2}}})
    assert merged.for_task("writing").quality == 0.2
    assert merged.for_task("qa").quality == 1.0
    assert ModelProfile.from_dict(merged.to_dict()) == merged


def test_wrong_answers_are_near_misses_a_grader_catches() -> None:
    assert wrong_answer("252") == "385"
    assert wrong_answer('{"a": 1, "b": 2}') == '{"b": 2}'
    assert wrong_answer("[1, 2]") == "[1]"
    assert wrong_answer("Canberra") == WRONG_TEXT


# -- the market -------------------------------------------------------------------------------


def test_the_example_policy_is_the_market_policy() -> None:
    text = (ROOT / "policies" / "examples" / "auto-market.yaml").read_text()
    assert text == policy_text(), "regenerate it: edgeproxy.sim.market.policy_text()"
    assert len(CANDIDATES) == 8 and len(market_suite().tasks) == 3


def test_the_truth_of_one_item_by_hand() -> None:
    suite = parse_suite(
        b"""
name: one
items:
  - id: q
    task: qa
    messages: [{role: user, content: "What is the capital of Australia? Answer with the city name only."}]
    grader: {type: exact, expected: Canberra}
""",
        "one.yaml",
    )
    twisted = {
        "openweight/local/llama-8b": ModelProfile(
            {"qa": TaskProfile(quality=0.5, ttft=0.1, tokens_per_second=10.0, verbosity=2.0)}
        )
    }
    m = true_measures(suite, profiles=twisted)[("openweight/local/llama-8b", "qa")]
    prompt = 3 + 4 + len(QUESTION) // 4  # the simulator's own estimate
    right, wrong = 1, len(WRONG_TEXT.split())  # visible tokens of each answer
    visible = 0.5 * right + 0.5 * wrong
    assert m.quality == 0.5 and m.success_rate == 0.5
    assert m.cost == pytest.approx((prompt * 0.1 + 2 * visible * 0.2) / 1e6)
    assert m.latency == pytest.approx(0.1 + 2 * visible / 10.0)
    assert value(m, "cost_per_success") == pytest.approx(m.cost / 0.5)


def test_the_oracle_tells_the_market_story() -> None:
    suite = market_suite()
    best = oracle(suite, "cost_per_success", min_quality=0.85)
    assert {t: b.candidate for t, b in best.items()} == {
        # The fine-tuned specialist on extraction; the reasoner's extra tokens are cheap on short
        # answers; the writer where writing is judged.
        "extraction": "specialist/local/extract-ft",
        "qa": "reasoner/local/reasoner-1",
        "writing": "anthro/local/anthro-large",
    }
    # A 3x price rise of a winner moves its task to the next best.
    risen = oracle(
        suite,
        "cost_per_success",
        min_quality=0.85,
        price_factors={"reasoner/local/reasoner-1": 3.0},
    )
    assert risen["qa"].candidate == "openweight/local/llama-70b"
    # No floor: the cheapest model wins everything on cost per success, whatever its quality.
    assert {b.candidate for b in oracle(suite, "cost_per_success").values()} == {
        "openweight/local/llama-8b"
    }

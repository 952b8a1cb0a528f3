"""Shadow traffic of the ``auto`` route (docs/auto.md, "Shadow traffic"), through the real proxy
on the simulated market: a share of a task's requests mirrored to its challenger, answers
discarded and graded by the judge; never visible to the app, never on its request's path,
capped in cost, and able to roll a ramping challenger back.
"""

from __future__ import annotations

from typing import Any

import httpx

from edgeproxy.evals.scorecard import Scorecard
from fixtures.automarket import PRICE_RISE, Desk, ask, client, status, word_prompts
from fixtures.reloadkit import wait_until

SHADOW_ALL = {"percent": 100, "max_cost": 1.0, "timeout": "20s"}


def _requests(desk: Desk, provider: str) -> int:
    url = f"{desk.market.control_url}/sims/{provider}"
    return int(httpx.get(url, timeout=10).json()["stats"]["requests_total"])


def _shadow(proxy: Any) -> dict[str, Any]:
    data: dict[str, Any] = status(proxy)["shadow"]
    return data


def test_the_runner_up_is_mirrored_graded_and_never_seen_by_the_app(
    desk: Desk, auto_evals: dict[str, Scorecard]
) -> None:
    desk.write_policy(auto={"shadow": SHADOW_ALL})
    desk.publish(auto_evals["baseline"], "1")
    proxy = desk.proxy()
    qa = status(proxy)["routes"]["auto"]["qa"]
    incumbent, runner_up = qa["incumbent"], qa["chain"][1]
    assert runner_up.split("/")[0] != incumbent.split("/")[0]
    before = _requests(desk, runner_up.split("/")[0])
    judged = _requests(desk, "judge")
    sdk = client(proxy)
    prompts = word_prompts("qa")
    for messages in prompts * 2:
        served, _ = ask(sdk, "qa", messages)
        assert served == incumbent  # the app only ever sees the incumbent's answer
    n = len(prompts) * 2
    wait_until(lambda: _shadow(proxy)["sent"] >= n, what="the mirrored calls")
    wait_until(
        lambda: status(proxy)["routes"]["auto"]["qa"]["shadow"][runner_up]["graded"] >= n,
        what="the judge's grades",
    )
    graded = status(proxy)["routes"]["auto"]["qa"]["shadow"][runner_up]
    assert graded["calls"] == n and graded["failed"] == 0
    assert 0.5 <= graded["pass_rate"] <= 1.0  # llama-70b is right 92 % of the time on qa
    assert graded["cost_usd"] > 0
    assert _requests(desk, runner_up.split("/")[0]) - before == n
    assert _requests(desk, "judge") - judged == n
    budget = _shadow(proxy)["budgets"]["auto"]
    assert 0 < budget["spent_usd"] <= 1.0 and budget["refused"] == 0


def test_shadow_traffic_is_capped_in_cost(desk: Desk, auto_evals: dict[str, Scorecard]) -> None:
    desk.write_policy(auto={"shadow": {**SHADOW_ALL, "max_cost": 0.0000001}})
    desk.publish(auto_evals["baseline"], "1")
    proxy = desk.proxy()
    target = status(proxy)["routes"]["auto"]["qa"]["chain"][1].split("/")[0]
    before = _requests(desk, target)
    sdk = client(proxy)
    for messages in word_prompts("qa"):
        ask(sdk, "qa", messages)
    n = len(word_prompts("qa"))
    wait_until(lambda: _shadow(proxy)["budgets"]["auto"]["refused"] >= n, what="the refusals")
    assert _shadow(proxy)["sent"] == 0
    assert _requests(desk, target) == before  # not one mirrored call was sent


def test_a_hanging_challenger_never_holds_the_apps_request(
    desk: Desk, auto_evals: dict[str, Scorecard]
) -> None:
    desk.write_policy(auto={"shadow": SHADOW_ALL})
    desk.publish(auto_evals["baseline"], "1")
    proxy = desk.proxy()
    qa = status(proxy)["routes"]["auto"]["qa"]
    target = qa["chain"][1].split("/")[0]
    assert target != qa["incumbent"].split("/")[0]
    desk.fault(target, mode="hang")
    try:
        # Each answer arrives while the mirrored call of the request before it still hangs
        # (it would until the shadow's 20 s timeout; the app's client gives up after 10 s).
        sdk = client(proxy, timeout=10)
        for messages in word_prompts("qa"):
            served, text = ask(sdk, "qa", messages)
            assert served == qa["incumbent"] and text
        wait_until(lambda: _shadow(proxy)["in_flight"] >= 1, what="a hanging mirrored call")
    finally:
        desk.fault(target, mode="none")


def test_shadow_grades_under_the_floor_roll_a_ramping_challenger_back(
    desk: Desk, auto_evals: dict[str, Scorecard]
) -> None:
    desk.write_policy(
        price_factors=PRICE_RISE,
        auto={
            "shadow": SHADOW_ALL,
            "ramp": {"steps": [5], "step_time": "1h"},
            "rollback": {"min_requests": 6},
        },
    )
    desk.publish(auto_evals["baseline"], "1")
    proxy = desk.proxy()
    desk.publish(auto_evals["risen"], "2")
    desk.refresh(proxy)
    challenger = status(proxy)["routes"]["auto"]["qa"]["ramp"]["challenger"]
    assert challenger == "openweight/local/llama-70b"
    # The challenger degrades after its eval: live shadow grades show it.
    profiles = f"{desk.market.control_url}/sims/openweight/profiles/llama-70b"
    httpx.patch(profiles, json={"tasks": {"qa": {"quality": 0.05}}}, timeout=10).raise_for_status()
    try:
        sdk = client(proxy)
        for messages in word_prompts("qa") * 3:
            ask(sdk, "qa", messages)
        wait_until(
            lambda: status(proxy)["routes"]["auto"]["qa"]["ramp"] is None,
            timeout=20,
            what="the rollback",
        )
    finally:
        httpx.patch(profiles, json={"tasks": {"qa": {"quality": 0.92}}}, timeout=10)
    qa = status(proxy)["routes"]["auto"]["qa"]
    last = qa["decisions"][-1]
    assert last["kind"] == "rollback" and "shadow-graded pass rate" in last["reason"], last
    assert qa["incumbent"] == "reasoner/local/reasoner-1"
    assert qa["shadow"][challenger]["pass_rate"] < 0.5

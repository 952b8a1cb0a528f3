"""The ``auto`` keys as the policy compiles them (docs/auto.md, docs/policies.md#auto): the pool
under the route's residency and context-window constraints, per-task objectives and pins, the
problems an SRE gets at the line that causes them, and what diff and describe say."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy_text
from edgeproxy.policy.describe import describe_policy
from edgeproxy.policy.diff import diff_policies
from edgeproxy.snapshot import AutoObjective, Policy

BASE = """
version: 1
tasks:
  categories: [qa, writing]
evals:
  candidates: [eu/r/small, eu/r/big, us/r/big]
  scorecards: [cards/*.json]
providers:
  eu:
    kind: openai
    regions: {r: {base_url: "http://127.0.0.1:1/v1", tags: {jurisdiction: eu}}}
    models:
      small: {context_window: 8000}
      big: {context_window: 128000}
  us:
    kind: openai
    regions: {r: {base_url: "http://127.0.0.1:2/v1", tags: {jurisdiction: us}}}
    models:
      big: {context_window: 128000}
routes:
  a:
    auto: {}
"""


def _policy(
    change: dict[str, object] | None = None, route: dict[str, object] | None = None
) -> Policy:
    data = yaml.safe_load(BASE)
    data["routes"]["a"]["auto"].update(change or {})
    data["routes"]["a"].update(route or {})
    return load_policy_text(yaml.safe_dump(data), "p.yaml", {})


def _problems(
    change: dict[str, object] | None = None, route: dict[str, object] | None = None
) -> list[str]:
    with pytest.raises(PolicyError) as refused:
        _policy(change, route)
    return [str(p) for p in refused.value.problems]


def test_the_default_pool_is_the_eval_candidates_that_meet_the_routes_constraints() -> None:
    auto = _policy().routes["a"].auto
    assert auto is not None
    assert [c.key for c in auto.pool] == ["eu/r/small", "eu/r/big", "us/r/big"]
    eu = _policy(route={"require_tags": {"jurisdiction": "eu"}, "min_context_window": 100000})
    assert eu.routes["a"].auto is not None
    assert [c.key for c in eu.routes["a"].auto.pool] == ["eu/r/big"]
    reasons = {e.key: e.reason for e in eu.routes["a"].auto.excluded}
    assert reasons["us/r/big"].startswith("residency: region 'r' has jurisdiction=us")
    assert reasons["eu/r/small"] == "context window 8000 < min_context_window 100000"
    # The prober and breaker carry-over see the pool.
    assert [c.key for c in eu.routes["a"].candidates] == ["eu/r/big"]


def test_a_written_pool_breaking_residency_is_an_error_at_its_line() -> None:
    problems = _problems(
        {"pool": ["eu/r/big", "us/r/big"]}, {"require_tags": {"jurisdiction": "eu"}}
    )
    assert len(problems) == 1 and "routes.a.auto.pool[1]" in problems[0]
    assert "outside this route's residency requirement" in problems[0]
    assert "pool is empty" in _problems({"pool": []})[0]


def test_objectives_resolve_per_task_and_pins_compile_like_chain_entries() -> None:
    auto = (
        _policy(
            {
                "objective": {"optimize": "latency", "min_quality": 0.8, "max_ttft_p95": "2s"},
                "tasks": {
                    "qa": {"min_quality": 0.9, "pin": "eu/r/big"},
                    "writing": {"floor_on": "lower_bound"},
                },
                "margin": 10,
                "ramp": {"steps": [1, 10, 50], "step_time": "1h"},
                "rollback": {"max_error_rate_increase": 2, "max_latency_increase": 100},
                "shadow": {"percent": 2, "window": "7d"},
            }
        )
        .routes["a"]
        .auto
    )
    assert auto is not None
    assert auto.objective == AutoObjective("latency", 0.8, max_ttft_p95=2.0)
    assert auto.objective_for("qa") == AutoObjective("latency", 0.9, max_ttft_p95=2.0)
    assert auto.objective_for("writing").floor_on == "lower_bound"
    assert auto.objective_for("default") == auto.objective
    assert auto.pins["qa"].key == "eu/r/big" and auto.margin == pytest.approx(0.1)
    assert auto.ramp.steps == pytest.approx((0.01, 0.1, 0.5)) and auto.ramp.step_time == 3600
    assert auto.rollback.max_error_rate_increase == pytest.approx(0.02)
    assert auto.rollback.max_latency_increase == pytest.approx(1.0)
    assert auto.shadow is not None and auto.shadow.share == pytest.approx(0.02)
    assert auto.shadow.window == 7 * 86400 and auto.shadow.judge


@pytest.mark.parametrize(
    ("change", "route", "where", "message"),
    [
        (
            {"tasks": {"chat": {"optimize": "quality"}}},
            None,
            "routes.a.auto.tasks.chat",
            "not one of tasks.categories",
        ),
        (
            {"tasks": {"qa": {"pin": "us/r/big"}}},
            {"require_tags": {"jurisdiction": "eu"}},
            "routes.a.auto.tasks.qa.pin",
            "residency",
        ),
        (
            {"tasks": {"qa": {"pin": "eu/*/big"}}},
            None,
            "routes.a.auto.tasks.qa.pin",
            "explicit region",
        ),
        ({"ramp": {"steps": [50, 10]}}, None, "routes.a.auto.ramp", "increase"),
        ({"ramp": {"steps": [100]}}, None, "routes.a.auto.ramp", "between 0 and 100"),
        (
            {"objective": {"optimize": "cheapest"}},
            None,
            "routes.a.auto.objective.optimize",
            "cost_per_success",
        ),
        ({"objective": {"min_quality": 1.5}}, None, "routes.a.auto.objective.min_quality", "1"),
        ({"shadow": {"percent": 0}}, None, "routes.a.auto.shadow.percent", "0"),
        ({"confirmations": 0}, None, "routes.a.auto.confirmations", "1"),
    ],
)
def test_mistakes_are_refused_at_their_place(
    change: dict[str, object], route: dict[str, object] | None, where: str, message: str
) -> None:
    problems = _problems(change, route)
    assert any(where in p and message in p for p in problems), problems


def test_a_route_needs_a_chain_unless_it_is_auto() -> None:
    data = yaml.safe_load(BASE)
    data["routes"]["b"] = {"aliases": ["bee"]}
    with pytest.raises(PolicyError) as refused:
        load_policy_text(yaml.safe_dump(data), "p.yaml", {})
    assert any(
        "routes.b.chain" in str(p) and "a route needs a chain" in str(p)
        for p in refused.value.problems
    )
    assert _policy().routes["a"].chain == ()


def test_policy_check_warns_about_scorecards_nobody_reads_or_that_are_missing() -> None:
    data = yaml.safe_load(BASE)
    data["evals"]["scorecards"] = []
    bare = load_policy_text(yaml.safe_dump(data), "p.yaml", {})
    assert any(
        "evals.scorecards: empty, so auto routes have no evidence" in w for w in bare.warnings
    )
    data["evals"]["scorecards"] = ["elsewhere/*.json"]
    data["evals"]["schedule"] = {"every": "7d"}
    scheduled = load_policy_text(yaml.safe_dump(data), "p.yaml", {})
    assert any("auto would not read scheduled evals" in w for w in scheduled.warnings)


def test_diff_and_describe_show_auto() -> None:
    plain = _policy()
    changed = _policy(
        {"pool": ["us/r/big", "eu/r/big"], "margin": 8, "tasks": {"qa": {"pin": "eu/r/small"}}}
    )
    rows = {c.what: (c.old, c.new) for c in diff_policies(plain, changed)}
    assert rows["auto.pool"] == ("eu/r/small, eu/r/big, us/r/big", "us/r/big, eu/r/big")
    assert rows["auto.margin"] == ("5%", "8%")
    assert rows["auto.pins"] == ("-", "qa=eu/r/small")
    data = yaml.safe_load(BASE)
    data["routes"]["a"] = {"chain": ["eu/r/big"]}
    manual = load_policy_text(yaml.safe_dump(data), "p.yaml", {})
    assert {(c.what, c.old, c.new) for c in diff_policies(manual, plain)} >= {("auto", "off", "on")}
    shown = describe_policy(changed)["routes"]["a"]["auto"]
    assert [c["key"] for c in shown["pool"]] == ["us/r/big", "eu/r/big"]
    assert shown["margin"] == 8 and shown["pins"] == {"qa": "eu/r/small"}
    assert describe_policy(manual)["routes"]["a"]["auto"] is None


def test_a_key_only_an_auto_pool_or_the_evals_use_is_still_scrubbed() -> None:
    from edgeproxy.telemetry.redact import policy_secrets

    data = yaml.safe_load(BASE)
    data["providers"]["us"]["api_key"] = "sk-pool-only-secret"
    data["providers"]["eu"]["api_key"] = "sk-judge-only-secret"
    data["evals"]["judge"] = "eu/r/small"
    data["evals"]["candidates"] = ["us/r/big"]
    policy = load_policy_text(yaml.safe_dump(data), "p.yaml", {})
    assert policy.routes["a"].chain == ()  # neither provider is in any chain
    assert {"sk-pool-only-secret", "sk-judge-only-secret"} <= policy_secrets(policy)


def test_explain_says_an_auto_route_chooses_at_run_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeproxy.cli import main

    data = yaml.safe_load(BASE)
    data["routes"]["a"]["chain"] = ["eu/r/big"]
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump(data))
    request = tmp_path / "req.json"
    request.write_text('{"model": "a", "messages": [{"role": "user", "content": "hi"}]}')
    assert main(["policy", "explain", str(policy), "--request", str(request)]) == 0
    out = capsys.readouterr().out
    assert "note: route 'a' is an auto route" in out and "GET /admin/auto" in out

"""Residency and context-window constraints, explain, diff, the JSON Schema, admin access."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy, load_policy_text
from edgeproxy.policy.diff import diff_policies
from edgeproxy.policy.explain import count_prompt_tokens, estimate_tokens, explain, render_text
from edgeproxy.policy.tool import schema_text
from edgeproxy.server.admin import AdminConfig, authorize, is_loopback
from edgeproxy.server.ingress import ClientError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "policies"

EU = """\
version: 1
providers:
  p:
    kind: openai
    regions:
      us: {base_url: "http://127.0.0.1:1/v1", tags: {jurisdiction: us}}
      eu1: {base_url: "http://127.0.0.1:2/v1", tags: {jurisdiction: eu, tier: gold}}
      eu2: {base_url: "http://127.0.0.1:3/v1", tags: {jurisdiction: eu}}
    models:
      m: {context_window: 128000}
      tiny: {context_window: 4096}
  q:
    kind: openai
    regions: {local: {base_url: "http://127.0.0.1:4/v1", tags: {jurisdiction: eu}}}
    models: {m: {context_window: 32768}}
routes:
  r:
    require_tags: {jurisdiction: eu}
    chain: [p/*/m, q/local/m]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "t.yaml", {})
    return [str(p) for p in info.value.problems]


def test_require_tags_keeps_the_chain_inside_the_allowed_set() -> None:
    route = load_policy_text(EU, "t.yaml", {}).routes["r"]
    # "*" expands to the allowed regions only; the rest is recorded for explain.
    assert [c.key for c in route.chain] == ["p/eu1/m", "p/eu2/m", "q/local/m"]
    assert all(c.tags["jurisdiction"] == "eu" for c in route.chain)
    assert dict(route.require_tags) == {"jurisdiction": "eu"}
    assert [(e.key, e.reason) for e in route.excluded] == [
        ("p/us/m", "residency: region 'us' has jurisdiction=us")
    ]
    assert route.constraints() == "require_tags jurisdiction=eu"


def test_an_explicit_candidate_outside_the_requirement_is_an_error_at_its_line() -> None:
    text = EU.replace("[p/*/m, q/local/m]", "[p/eu1/m, p/us/m, q/local/m]")
    assert problems(text) == [
        "t.yaml:19:22: routes.r.chain[1]: p/us/m is outside this route's residency requirement "
        "(jurisdiction=eu): region 'us' has jurisdiction=us"
    ]
    # Every required tag must match; a missing tag is named as such.
    text = EU.replace("{jurisdiction: eu}\n    chain", "{jurisdiction: eu, tier: gold}\n    chain")
    found = problems(text.replace("[p/*/m, q/local/m]", "[p/eu1/m, q/local/m]"))
    assert found == [
        "t.yaml:19:22: routes.r.chain[1]: q/local/m is outside this route's residency "
        "requirement (jurisdiction=eu, tier=gold): region 'local' has no tier tag"
    ]


def test_a_route_nothing_can_serve_is_an_error() -> None:
    text = EU.replace("{jurisdiction: eu}\n    chain", "{jurisdiction: ch}\n    chain").replace(
        "[p/*/m, q/local/m]", "[p/*/m]"
    )
    assert problems(text) == [
        "t.yaml:19:5: routes.r.chain: no candidate satisfies this route's residency "
        "requirement (jurisdiction=ch): it could never be served"
    ]


def test_min_context_window() -> None:
    policy = load_policy_text(
        EU.replace("routes:\n  r:\n", "routes:\n  r:\n    min_context_window: 32000\n"), "t", {}
    )
    assert policy.routes["r"].min_context_window == 32000
    text = EU.replace("routes:\n  r:\n", "routes:\n  r:\n    min_context_window: 64000\n")
    assert problems(text) == [
        "t.yaml:20:20: routes.r.chain[1]: model q/m holds 32768 tokens, fewer than this "
        "route's min_context_window of 64000"
    ]


def test_explain_walks_the_chain_with_reasons() -> None:
    policy = load_policy_text(EU, "t.yaml", {})
    body = {"model": "r", "max_tokens": 30000, "messages": [{"role": "user", "content": "hi"}]}
    e = explain(policy, body, down=["p/eu1"])
    assert [(v.key, v.verdict, v.attempt) for v in e.verdicts] == [
        ("p/eu1/m", "skip", None),
        ("p/eu2/m", "try", 1),
        ("q/local/m", "try", 2),
        ("p/us/m", "excluded", None),
    ]
    assert e.verdicts[0].reasons == ("down (simulated by --down p/eu1)",)
    assert "residency ok (jurisdiction=eu)" in e.verdicts[1].reasons
    assert e.outcome.startswith("served by p/eu2/m")
    # A prompt too long for q's 32k window (even by a rough estimate) skips it.
    long = {"model": "r", "messages": [{"role": "user", "content": "word " * 40000}]}
    e = explain(policy, long, down=["p"])
    assert e.prompt_tokens > 32768
    assert [v.verdict for v in e.verdicts] == ["skip", "skip", "skip", "excluded"]
    assert e.verdicts[2].reasons[0].startswith("context window: needs ~")
    assert e.outcome.startswith("fails closed: no eligible candidate")
    assert "require_tags jurisdiction=eu" in e.outcome
    text = render_text(e)
    assert "q/local/m" in text and "fails closed" in text


def test_explain_max_attempts_and_unknown_model() -> None:
    policy = load_policy_text(
        EU.replace("routes:", "defaults: {max_attempts: 1}\nroutes:"), "t", {}
    )
    e = explain(policy, {"model": "r", "messages": []})
    assert [v.verdict for v in e.verdicts] == ["try", "reserve", "reserve", "excluded"]
    missing = explain(policy, {"model": "nope", "messages": []})
    assert missing.route is None and "404" in missing.outcome and not missing.tried


def test_token_estimate_is_rough_but_monotonic() -> None:
    assert estimate_tokens([{"role": "user", "content": "abcd" * 100}]) >= 100
    parts = [{"type": "text", "text": "abcd" * 100}]
    assert estimate_tokens([{"role": "user", "content": parts}]) >= 100


def test_diff_shows_what_changes_for_traffic() -> None:
    old = load_policy(FIXTURES / "diff-old.yaml")
    new = load_policy(FIXTURES / "diff-new.yaml")
    rows = {(c.scope, c.what): (c.old, c.new) for c in diff_policies(old, new)}
    assert rows[("route legacy", "removed")] == ("beta/local/small > alpha/us/m", "-")
    assert rows[("route reports", "added")] == ("-", "alpha/eu/m > beta/local/small")
    assert rows[("route chat", "chain")] == (
        "alpha/us/m > alpha/eu/m > beta/local/small",
        "alpha/eu/m > alpha/us/m > beta/local/small",
    )
    assert "primary alpha/us/m -> alpha/eu/m" in rows[("route chat", "chain (summary)")][1]
    assert rows[("route chat", "max_attempts")] == ("3", "2")
    assert rows[("route chat", "timeouts.first_token")] == ("30s", "20s")
    assert rows[("route batch", "timeouts.first_token")] == ("30s", "20s")
    assert rows[("route batch", "require_tags")] == ("-", "jurisdiction=eu")
    assert "removed alpha/us/m" in rows[("route batch", "chain (summary)")][1]
    assert rows[("model default", "served by")] == ("route chat", "route batch")
    assert rows[("candidate alpha/us/m", "base_url")] == (
        "https://us.alpha.example/v1",
        "https://us2.alpha.example/v1",
    )
    assert diff_policies(old, old) == []


def test_diff_ignores_changes_that_do_not_reach_traffic() -> None:
    # Reordering YAML maps and comments changes the text (and version), not the routing.
    text = (FIXTURES / "diff-old.yaml").read_text()
    moved = text.replace("version: 1\n", "# a comment\nversion: 1\n")
    old, new = load_policy_text(text, "a", {}), load_policy_text(moved, "b", {})
    assert old.version != new.version
    assert diff_policies(old, new) == []


def test_schema_json_is_up_to_date() -> None:
    checked_in = (ROOT / "policies" / "schema.json").read_text()
    assert checked_in == schema_text(), (
        "policies/schema.json is stale: run `edgeproxy policy schema > policies/schema.json`"
    )


def test_schema_describes_the_shorthands_editors_will_see() -> None:
    schema = json.loads(schema_text())
    route = schema["$defs"]["RouteSpec"]["properties"]
    assert {"require_tags", "min_context_window", "chain"} <= set(route)
    chain_item = route["chain"]["items"]["anyOf"]
    assert chain_item[0]["type"] == "string" and chain_item[1]["$ref"].endswith("CandidateSpec")
    timeouts = schema["$defs"]["TimeoutsSpec"]["properties"]["connect"]["anyOf"][0]["anyOf"]
    assert {t["type"] for t in timeouts} == {"number", "string"}
    for path in sorted((ROOT / "policies").rglob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert target == (ROOT / "policies" / "schema.json").resolve(), path


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("192.168.1.2", False),
        ("fe80::1%eth0", False),
        (None, False),
        ("garbage", False),
    ],
)
def test_loopback_detection(remote: str | None, loopback: bool) -> None:
    assert is_loopback(remote) is loopback


def test_admin_access_rules() -> None:
    open_ = AdminConfig(token=None)
    authorize(open_, None, "127.0.0.1")
    with pytest.raises(ClientError) as info:
        authorize(open_, None, "10.1.2.3")
    assert info.value.status == 403
    locked = AdminConfig(token="t0ken")
    authorize(locked, "Bearer t0ken", "10.1.2.3")
    for header in (None, "Bearer nope", "Basic t0ken", "t0ken"):
        with pytest.raises(ClientError) as info:
            authorize(locked, header, "127.0.0.1")
        assert info.value.status == 401


def test_explain_counts_with_edgeproxy_tokens_or_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = {"model": "r", "messages": [{"role": "user", "content": "hello world " * 50}]}
    tokens, method = count_prompt_tokens(body, "gpt-4o-mini")
    assert tokens > 50
    assert method.startswith(("exact: ", "estimate"))
    real_import = importlib.import_module

    def no_tokens(name: str, *args: object) -> object:
        if name == "edgeproxy.tokens":
            raise ImportError(name)
        return real_import(name)

    monkeypatch.setattr(importlib, "import_module", no_tokens)
    tokens, method = count_prompt_tokens(body, "gpt-4o-mini")
    assert method == "estimate: 4 characters a token"
    assert tokens == estimate_tokens(body["messages"])


def test_explain_counts_in_each_candidates_tokenizer_not_its_name() -> None:
    # "m" implies cl100k_base by its name; the policy says p's "m" is counted o200k_base and q's
    # by estimate, as the request path counts them.
    text = EU.replace(
        "m: {context_window: 128000}", "m: {context_window: 128000, tokenizer: o200k_base}"
    )
    text = text.replace(
        "models: {m: {context_window: 32768}}",
        "models: {m: {context_window: 32768, tokenizer: estimate}}",
    )
    policy = load_policy_text(text, "t.yaml", {})
    body = {
        "model": "r",
        "messages": [{"role": "user", "content": "你好世界今天天气很好 " * 100}],
    }
    e = explain(policy, body)
    assert e.token_method == "exact: o200k_base"
    assert e.prompt_tokens == count_prompt_tokens(body, "m", "o200k_base")[0]
    assert e.prompt_tokens != count_prompt_tokens(body, "m", "cl100k_base")[0]
    assert count_prompt_tokens(body, "m", "estimate")[1] == "estimate: estimate"

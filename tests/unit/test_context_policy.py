"""The route's context settings: the plan's three overflow modes, the policy's checks (located
problems), and the defaults an unwritten block leaves."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from edgeproxy.errors import PolicyError
from edgeproxy.events import SkipReason
from edgeproxy.policy import load_policy_text
from edgeproxy.server.plan import plan_candidates
from edgeproxy.snapshot import AffinitySettings, Candidate, ContextSettings, PromptCacheSettings
from edgeproxy.wires import upstream_wire


def candidate(name: str, window: int, max_output: int = 4096) -> Candidate:
    return Candidate(
        provider=name,
        region="r",
        model="m",
        upstream_model="m",
        wire=upstream_wire("openai"),
        base_url="http://127.0.0.1:1/v1",
        chat_url="http://127.0.0.1:1/v1/x",
        context_window=window,
        tags=MappingProxyType({}),
        headers=MappingProxyType({}),
        max_output_tokens=max_output,
    )


BIG, SMALL = candidate("big", 200_000), candidate("small", 8000, max_output=1000)
BODY = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 500}
COUNTS = {"cl100k_base": 50_000}


def test_skip_error_and_compact() -> None:
    chain = (BIG, SMALL)
    skipped = plan_candidates(chain, BODY, 300_000, COUNTS, "skip")
    assert skipped.chain == (BIG,) and skipped.skipped[0].reason is SkipReason.CONTEXT_WINDOW
    refused = plan_candidates(chain, BODY, 300_000, COUNTS, "error")
    assert refused.chain == () and refused.refused_overflow
    compacted = plan_candidates(chain, BODY, 300_000, COUNTS, "compact")
    assert compacted.chain == chain and compacted.skipped == ()
    assert compacted.compact == {"small/r/m": 8000 - 500}
    # Without max_tokens, the model's max_output_tokens is the answer's room.
    no_max = {k: v for k, v in BODY.items() if k != "max_tokens"}
    assert plan_candidates(chain, no_max, 300_000, COUNTS, "compact").compact == {"small/r/m": 7000}
    # Everything fits: error mode refuses nothing.
    assert plan_candidates(chain, BODY, 100, {}, "error").chain == chain


POLICY = """
version: 1
providers:
  p:
    kind: openai
    regions: {r: {base_url: "http://127.0.0.1:1/v1"}}
    models: {m: {context_window: 8000}}
routes:
  chat:
    chain: [p/r/m]
    CONTEXT
"""


def problems(block: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(POLICY.replace("CONTEXT", block), "t.yaml", {})
    return [str(p) for p in info.value.problems]


def test_policy_problems_are_located_and_say_what_to_do() -> None:
    (problem,) = problems("context: {overflow: compact, strategies: [summarize]}")
    assert "t.yaml:" in problem and "set context.summarizer" in problem
    (problem,) = problems(
        "context: {overflow: compact, strategies: [summarize], summarizer: p/nowhere/m}"
    )
    assert "routes.chat.context.summarizer" in problem and "no region 'nowhere'" in problem
    (problem,) = problems("context: {strategies: [drop_middle, drop_middle]}")
    assert "named twice" in problem
    assert problems("context: {strategies: [shrink]}")
    assert problems("context: {summarizer: p/*/m}")  # a summariser needs an explicit region
    assert problems("affinity: {load_factor: 0.5}")
    assert problems("prompt_cache: {breakpoints: always}")


def test_defaults_when_nothing_is_written_and_when_a_block_is() -> None:
    plain = load_policy_text(POLICY.replace("CONTEXT", ""), "t.yaml", {}).routes["chat"]
    assert plain.context == ContextSettings() and plain.context.overflow == "skip"
    assert plain.prompt_cache == PromptCacheSettings() and plain.affinity is None
    assert plain.summarizer is None
    written = load_policy_text(
        POLICY.replace(
            "CONTEXT",
            "context: {overflow: compact, strategies: [summarize], summarizer: p/r/m}\n"
            "    affinity: {}",
        ),
        "t.yaml",
        {},
    ).routes["chat"]
    assert written.summarizer is not None and written.summarizer.key == "p/r/m"
    assert written.affinity == AffinitySettings()


EXPLAINED = """
version: 1
providers:
  big: {kind: openai, regions: {r: {base_url: "http://127.0.0.1:1/v1"}}, models: {m: {context_window: 200000}}}
  small:
    kind: openai
    regions: {a: {base_url: "http://127.0.0.1:2/v1"}, b: {base_url: "http://127.0.0.1:3/v1"}}
    models: {s: {context_window: 4000}}
routes:
  chat:
    chain: [big/r/m, small/*/s]
    context: {overflow: compact, keep_last: 1, tool_result_max_tokens: 100}
    affinity: {}
  strict:
    chain: [big/r/m, small/a/s]
    context: {overflow: error}
"""


def long_body(model: str) -> dict[str, object]:
    messages: list[object] = [{"role": "user", "content": "task"}]
    for i in range(6):
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": "word " * 2000})
    messages.append({"role": "user", "content": "now?"})
    return {"model": model, "messages": messages, "max_tokens": 200}


def test_explain_shows_what_compaction_and_affinity_would_do() -> None:
    from edgeproxy.policy.explain import explain, render_text

    policy = load_policy_text(EXPLAINED, "t.yaml", {})
    shown = explain(policy, long_body("chat"), down=["big"])
    tried = shown.tried
    assert [v.key for v in tried] in (
        ["small/a/s", "small/b/s"],
        ["small/b/s", "small/a/s"],
    )
    assert any("compacted for it: ~" in r and "of 3800 tokens" in r for r in tried[0].reasons)
    text = render_text(shown)
    assert f"affinity: this request's prefix goes to {tried[0].key}" in text
    assert explain(policy, long_body("chat"), down=["big", "small"]).tried == []  # down wins
    refused = explain(policy, long_body("strict"))
    assert refused.tried == [] and "context.overflow: error" in refused.outcome
    # A request compaction cannot fit: the small candidates are skipped, saying so.
    huge = long_body("chat")
    huge["messages"] = [{"role": "user", "content": "word " * 9000}]
    skipped = explain(policy, huge, down=["big"])
    assert skipped.tried == []
    assert all("too long even compacted" in " ".join(v.reasons) for v in skipped.verdicts[1:])

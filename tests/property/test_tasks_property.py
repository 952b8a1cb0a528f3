"""Properties of task classification for any input a client controls: any body and header give a
known task or a typed refusal (never an exception); the model reads any string, surrogates
included; keywords are literal text; ranges include both ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy._core import TextPattern, train_task_model
from edgeproxy.policy import load_policy_text
from edgeproxy.routing.tasks import TASK_HEADER, TaskDecision, UnknownTask, classify_now
from edgeproxy.snapshot import Policy

_MODEL = train_task_model(
    ["what does the doc say", "draft a spec", "extract the fields", "hi there"],
    [0, 1, 2, 3],
    ["qa", "writing", "extraction", "chat"],
    bits=10,
)

_POLICY_TEXT = {
    "version": 1,
    "providers": {
        "p": {
            "kind": "openai",
            "regions": {"r": {"base_url": "http://127.0.0.1:1/v1"}},
            "models": {"m": None},
        }
    },
    "routes": {"chat": {"aliases": ["a"], "chain": ["p/r/m"]}},
    "tasks": {
        "categories": ["qa", "writing", "extraction", "chat"],
        "rules": [
            {"task": "extraction", "response_format": "json", "tools": True},
            {"task": "qa", "system_regex": "(?i)cite|source", "messages": {"min": 2, "max": 3}},
            {"task": "writing", "system_keywords": ["spec", "C#"], "max_tokens": {"min": 100}},
            {"task": "chat", "routes": ["a"], "prompt_tokens": {"max": 20}},
        ],
        "classifier": {"model": "m.model", "min_confidence": 0.4},
    },
}


def _policy(tmp: Path) -> Policy:
    (tmp / "m.model").write_bytes(_MODEL.to_bytes())
    return load_policy_text(yaml.safe_dump(_POLICY_TEXT), "p.yaml", {}, tmp)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.lists(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["system", "developer", "user", "assistant", "tool", 3]),
                "content": st.one_of(
                    st.text(max_size=80),
                    st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": json_values})),
                    json_values,
                ),
            }
        ),
    ),
    max_size=5,
)
bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["chat", "a"]), "messages": messages},
    optional={
        "metadata": json_values | st.fixed_dictionaries({"task": json_values}),
        "tools": json_values,
        "functions": json_values,
        "response_format": json_values
        | st.fixed_dictionaries({"type": st.sampled_from(["json_object", "json_schema", "text"])}),
        "max_tokens": json_values,
        "max_completion_tokens": json_values,
    },
)
headers = st.dictionaries(st.just(TASK_HEADER), st.text(max_size=70), max_size=1)


@settings(max_examples=300, deadline=None)
@given(body=bodies, header=headers, tokens=st.integers(0, 10_000))
def test_any_request_gets_a_known_task_or_a_typed_refusal(
    tmp_path_factory: Any, body: dict[str, Any], header: dict[str, str], tokens: int
) -> None:
    policy = _POLICY_CACHE.get("p") or _POLICY_CACHE.setdefault(
        "p", _policy(tmp_path_factory.mktemp("tasks"))
    )
    route = policy.route_for(body["model"])
    assert route is not None
    decision = classify_now(policy.tasks, route, header, body, lambda _: tokens)
    if isinstance(decision, UnknownTask):
        assert decision.given or decision.param == "metadata.task"
        assert "\n" not in decision.message and "\r" not in decision.message
    else:
        assert isinstance(decision, TaskDecision)
        assert policy.tasks.knows(decision.task)
        assert decision.why


_POLICY_CACHE: dict[str, Policy] = {}

any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=400)


@settings(max_examples=300, deadline=None)
@given(text=any_text)
def test_the_model_reads_any_string(text: str) -> None:
    label, confidence = _MODEL.predict(text)
    assert label in _MODEL.labels
    assert 0.0 <= confidence <= 1.0
    probabilities = _MODEL.probabilities(text)
    assert abs(sum(probabilities) - 1.0) < 1e-5
    assert max(probabilities) == confidence
    TextPattern.regex("(?i)x").is_match(text)  # surrogates too: no exception


keyword = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(words=st.lists(keyword, min_size=1, max_size=4), pick=st.integers(0, 3))
def test_keywords_are_literal_text(words: list[str], pick: int) -> None:
    pattern = TextPattern.keywords(words)
    word = words[pick % len(words)]
    assert pattern.is_match(f"see {word} here")
    if word.isascii():
        assert pattern.is_match(f"see {word.swapcase()} here")


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(0, 6),
    span=st.integers(0, 6),
    count=st.integers(0, 14),
    max_tokens=st.integers(0, 14),
)
def test_ranges_include_both_ends(low: int, span: int, count: int, max_tokens: int) -> None:
    from edgeproxy.snapshot import Range

    inside = Range(low, low + span)
    assert (count in inside) == (low <= count <= low + span)
    assert (max_tokens in Range(None, low)) == (max_tokens <= low)
    assert (max_tokens in Range(low, None)) == (max_tokens >= low)
    assert True not in Range(0, 5) and "3" not in Range(0, 5)

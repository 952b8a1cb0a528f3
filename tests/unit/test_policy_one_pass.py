"""Every problem of a policy in one pass, and every key of the schema in docs/policies.md."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from types import UnionType
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy_text
from edgeproxy.policy.schema import PolicySpec

ROOT = Path(__file__).resolve().parents[2]

BASE = """
version: 1
providers:
  alpha:
    kind: openai
    regions: {us: {base_url: "http://127.0.0.1:9/v1"}, eu: {base_url: "http://127.0.0.1:9/v1"}}
    models: {gpt-4o-mini: {}}
routes:
  chat:
    chain: [CHAIN]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml", environ={})
    return [str(p) for p in caught.value.problems]


def test_a_key_typo_does_not_hide_a_provider_typo() -> None:
    # The case: two rounds before (fix the key, then learn of the provider).
    text = BASE.replace("CHAIN", "alpah/us/gpt-4o-mini") + "    max_atempts: 2\n"
    found = problems(text)
    assert len(found) == 2, found
    assert any("routes.chat.max_atempts: unknown key 'max_atempts'" in p for p in found)
    assert any(
        "routes.chat.chain[0]: unknown provider 'alpah' (did you mean 'alpha'?)" in p for p in found
    )


def test_model_and_region_typos_come_with_schema_problems_located() -> None:
    text = BASE.replace(
        "CHAIN", "alpha/us/gpt-4o-mimi, {provider: alpha, region: ue, model: gpt-4o-mini}"
    )
    text = text.replace("version: 1", "version: 1\nlimits: {max_body_bytes: lots}")
    found = problems(text)
    assert len(found) == 3, found
    assert any(p.startswith("p.yaml:3:") and "limits.max_body_bytes" in p for p in found)
    assert any(
        "p.yaml:11:13: routes.chat.chain[0]: provider 'alpha' has no model 'gpt-4o-mimi' "
        "(did you mean 'gpt-4o-mini'?)" in p
        for p in found
    )
    assert any("chain[1]: provider 'alpha' has no region 'ue'" in p for p in found)


def test_each_problem_is_reported_once() -> None:
    # Valid schema: compile reports the reference (no second report from the raw check).
    assert len(problems(BASE.replace("CHAIN", "beta/us/gpt-4o-mini"))) == 1
    # A malformed entry is the schema's problem alone; a valid "*" region is no problem.
    text = BASE.replace("CHAIN", "alpha-us-gpt, alpha/*/gpt-4o-mini") + "    bogus: 1\n"
    found = problems(text)
    assert len(found) == 2, found
    assert sum("chain[0]" in p for p in found) == 1 and not any("chain[1]" in p for p in found)


@pytest.mark.parametrize(
    "text",
    [
        "version: 2\nproviders: [a, b]\nroutes: {r: {chain: [a/b/c]}}\n",
        "version: 2\nproviders: {a: 7}\nroutes: {r: {chain: [a/b/c, 5, {provider: [x]}]}}\n",
        "version: 2\nproviders: {a: {models: [m], regions: r}}\nroutes: [r]\n",
        "version: 2\nproviders: {a: {}}\nroutes: {r: 'chain'}\n",
    ],
)
def test_a_broken_document_gets_problems_not_a_crash(text: str) -> None:
    found = problems(text)
    assert found and all(p.startswith("p.yaml") for p in found)


# -- every schema key in docs/policies.md ----------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The spec models inside an annotation (through Annotated, unions, lists and dicts)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _models(typing.get_args(annotation)[0])
    if origin in (typing.Union, UnionType, list, dict):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _reachable(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo.extend(_models(field.annotation))
    return seen


def _documented_blocks() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "policies.md").read_text()
    blocks = re.findall(
        r"<!-- BEGIN GENERATED: ([\w-]+) .*?-->\n(.*?)<!-- END GENERATED", text, re.S
    )
    return {name: re.findall(r"^\| `([^`]+)` \|", body, re.M) for name, body in blocks}


def _row_for(field: str, key: str) -> bool:
    """``key`` (a table's first cell) documents ``field``: as itself, as ``block.field`` (a
    block flattened into its parent's table), or as ``field.x`` (the rows of a flattened block)."""
    return key == field or key.endswith("." + field) or key.startswith(field + ".")


def test_every_field_of_the_schema_appears_in_docs_policies_md() -> None:
    blocks = _documented_blocks()
    models = _reachable(PolicySpec)
    assert len(models) >= 15  # the walk found the spec's blocks, not just the top
    missing = []
    for model in models:
        fields = list(model.model_fields)
        # One table documents the whole model: each field is a row, as itself or as
        # `block.field` where a block is flattened into its parent's table. A model made of another's
        # fields and more (auto.tasks.<task> is auto.objective plus `pin`) may have its inherited fields
        # in the base's table: then the two tables together hold them.
        bases = [
            m for m in models if m is not model and set(m.model_fields) < set(model.model_fields)
        ]
        inherited = {f for b in bases for f in b.model_fields}
        own = [f for f in fields if f not in inherited] or fields
        if not any(all(any(_row_for(f, k) for k in keys) for f in own) for keys in blocks.values()):
            undocumented = [
                f
                for f in fields
                if not any(_row_for(f, k) for keys in blocks.values() for k in keys)
            ]
            missing.append(f"{model.__name__}: {undocumented or 'no table holds all its fields'}")
    assert not missing, missing
    # The keys issue 17 found undocumented, each in its table.
    assert "kind" in blocks["providers"] and "max_output_tokens" in blocks["models"]
    assert {"cache", "on_midstream_failure"} <= set(blocks["routes"])
    assert {"cache_max_bytes", "cache_max_entries"} <= set(blocks["limits"])
    docs = (ROOT / "docs" / "policies.md").read_text()
    assert "`anthropic`" in docs and "`resume`" in docs


def test_value_problems_are_said_in_the_policys_words() -> None:
    # Not pydantic's "Input should be a valid dictionary" and the like (issue 17).
    text = """
version: 1
limits: {max_in_flight: many}
defaults: {max_attempts: 0}
providers:
  p:
    kind: openai
    regions: {r: {base_url: 'http://x/v1', tags: [a]}}
    models: {m: {context_window: 1.5, assistant_prefill: maybe}}
routes:
  m:
    chain: p/r/m
    hedge: {delay: 1s, percentile: 200}
"""
    found = problems(text)
    expected = {
        "limits.max_in_flight: must be a whole number",
        "defaults.max_attempts: must be at least 1",
        "providers.p.regions.r.tags: must be a mapping (key: value)",
        "providers.p.models.m.context_window: must be a whole number",
        "providers.p.models.m.assistant_prefill: must be true or false",
        "routes.m.chain: must be a list ([a, b], or one '- item' a line)",
        "routes.m.hedge.percentile: must be at most 100",
    }
    assert {p.split(": ", 1)[1] for p in found} == expected, found
    assert not any("Input should" in p for p in found)

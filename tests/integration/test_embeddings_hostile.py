"""``POST /v1/embeddings`` against an upstream that answers garbage, through the real proxy and
the official SDK: NaN or an infinity (in base64), ``true`` for a number, an empty vector, a vector
too few, an index twice or out of range, ``data`` that is not a list — each fails over to the
next candidate, never reaches the client; and a request of more inputs than OpenAI takes is a
400 naming ``input``, while the largest allowed one is batched under the Gemini wire's limit."""

from __future__ import annotations

import base64
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from edgeproxy.server.embeddings_request import MAX_INPUTS
from edgeproxy.sim import SimConfig
from harness import LoopThread, Stack

DIMS = 16


def b64(values: list[float]) -> str:
    return base64.b64encode(array("f", values).tobytes()).decode()


@dataclass
class EmbeddingsUpstream:
    """An OpenAI-wire ``/v1/embeddings`` that answers ``data(inputs)`` as its ``data``."""

    data: Callable[[int], Any] = lambda n: []
    requests: int = 0
    url: str = ""
    runner: web.AppRunner | None = field(default=None, repr=False)

    async def start(self) -> None:
        async def embeddings(request: web.Request) -> web.Response:
            self.requests += 1
            body = await request.json()
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            answer = {"object": "list", "data": self.data(len(inputs)), "model": "hostile"}
            return web.Response(body=orjson.dumps(answer), content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/embeddings", embeddings)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 2s, response: 10s, total: 20s}
providers:
  hostile:
    kind: openai
    regions: {main: {base_url: "HOSTILE"}}
    models: {emb: {upstream_name: text-embedding-3-small, dimensions: 16}}
  oai:
    kind: openai
    regions: {main: {base_url: "$oai"}}
    models: {emb: {upstream_name: text-embedding-3-small, dimensions: 16}}
  gem:
    kind: gemini
    api_key: sk-gem
    regions: {main: {base_url: "$gem"}}
    models: {gemb: {upstream_name: gemini-embedding-001, dimensions: 16}}
routes:
  embed:
    chain: [hostile/main/emb, oai/main/emb]
  gem:
    chain: [gem/main/gemb]
"""


@pytest.fixture
def upstream(loop_thread: LoopThread) -> Iterator[EmbeddingsUpstream]:
    made = EmbeddingsUpstream()
    loop_thread.run(made.start())
    yield made
    loop_thread.run(made.stop())


@pytest.fixture
def stack(make_stack: Callable[..., Stack], upstream: EmbeddingsUpstream) -> Stack:
    sims = [
        SimConfig(name="oai", ttft=0.0, tokens_per_second=0),
        SimConfig(name="gem", ttft=0.0, tokens_per_second=0, require_api_key="sk-gem"),
    ]
    return make_stack(POLICY.replace("HOSTILE", upstream.url), sims)


def items(vectors: list[Any]) -> list[dict[str, Any]]:
    return [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]


HOSTILE: dict[str, Callable[[int], Any]] = {
    "nan-base64": lambda n: items([b64([0.1, math.nan, 0.2, 0.3])] * n),
    "inf-base64": lambda n: items([b64([0.1, math.inf, 0.2, 0.3])] * n),
    "bools": lambda n: items([[True, False, 0.5, 0.5]] * n),
    "empty-vectors": lambda n: items([[]] * n),
    "one-too-few": lambda n: items([[0.1] * DIMS] * (n - 1)),
    "index-twice": lambda n: [{"index": 0, "embedding": [0.1] * DIMS}] * n,
    "index-out-of-range": lambda n: [{"index": n + i, "embedding": [0.1] * DIMS} for i in range(n)],
    "data-not-a-list": lambda n: {"0": [0.1] * DIMS},
    "strings": lambda n: items([["0.1"] * DIMS] * n),
}


@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_a_garbage_answer_fails_over_and_never_reaches_the_client(
    stack: Stack, upstream: EmbeddingsUpstream, hostile: str, encoding: str
) -> None:
    upstream.data = HOSTILE[hostile]
    raw = stack.client().embeddings.with_raw_response.create(
        model="embed",
        input=["alpha", "bravo"],
        encoding_format=encoding,  # type: ignore[arg-type]
    )
    assert raw.headers["x-edgeproxy-provider"] == "oai" and upstream.requests == 1
    body = orjson.loads(raw.content)
    for item in body["data"]:
        vector = item["embedding"]
        floats = list(array("f", base64.b64decode(vector))) if encoding == "base64" else vector
        assert len(floats) == DIMS
        assert all(type(x) is float and math.isfinite(x) for x in floats)


def test_more_inputs_than_openai_takes_is_a_400_naming_input(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().embeddings.create(model="embed", input=["x"] * (MAX_INPUTS + 1))
    assert info.value.param == "input" and str(MAX_INPUTS) in info.value.message
    assert info.value.request_id
    assert stack.requests_to("oai") == 0


def test_the_most_inputs_allowed_are_batched_under_gemini_s_limit(stack: Stack) -> None:
    texts = [f"text number {i}" for i in range(MAX_INPUTS)]
    response = stack.client().embeddings.create(model="gem", input=texts, encoding_format="float")
    assert [item.index for item in response.data] == list(range(MAX_INPUTS))
    assert stack.requests_to("gem") == math.ceil(MAX_INPUTS / 100)  # 100 a batch
    # Each vector is the one that text gets alone: the order survived the batching.
    alone = stack.client().embeddings.create(model="gem", input=texts[-1], encoding_format="float")
    assert response.data[-1].embedding == alone.data[0].embedding

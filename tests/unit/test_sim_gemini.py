"""The simulator's Gemini wire and its embeddings (OpenAI and Gemini), on a real socket: what a
proxy must get right to pass (the key in a header and never in the URL, ``alt=sse``, no field
Gemini does not know) and the shapes it answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from edgeproxy._core import SseParser
from edgeproxy.sim import Fault, SimConfig, SimProvider

KEY = "sim-gemini-key"
ASK: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    provider = SimProvider(
        SimConfig(
            name="gem",
            ttft=0.0,
            tokens_per_second=0,
            default_completion_tokens=6,
            require_api_key=KEY,
            wire="gemini",
            embedding_dimensions=4,
        )
    )
    await provider.start()
    yield provider
    await provider.stop()


async def post(
    sim: SimProvider, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session:
        sent = {"x-goog-api-key": KEY} if headers is None else headers
        async with session.post(sim.url + path, json=body, headers=sent) as response:
            raw = await response.read()
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            return response.status, parsed, raw


async def test_an_answer_and_its_usage(sim: SimProvider) -> None:
    status, answer, _ = await post(sim, "/models/gemini-x:generateContent", ASK)
    assert status == 200
    candidate = answer["candidates"][0]
    assert candidate["finishReason"] == "STOP" and candidate["content"]["role"] == "model"
    assert len(candidate["content"]["parts"][0]["text"].split()) == 6
    assert answer["usageMetadata"]["candidatesTokenCount"] == 6
    assert answer["modelVersion"] == "gemini-x"


async def test_a_stream_is_sse_with_crlf_and_a_final_finish_reason(sim: SimProvider) -> None:
    status, _, raw = await post(sim, "/models/gemini-x:streamGenerateContent?alt=sse", ASK)
    assert status == 200 and b"\r\n\r\n" in raw
    events = [orjson.loads(e.data) for e in SseParser().feed(raw)]
    assert len(events) == 6
    assert [e["candidates"][0].get("finishReason") for e in events] == [None] * 5 + ["STOP"]
    status, error, _ = await post(sim, "/models/gemini-x:streamGenerateContent", ASK)
    assert status == 400 and "alt=sse" in error["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "path", "status", "reason"),
    [
        ({}, "", 403, "PERMISSION_DENIED"),
        ({"x-goog-api-key": "wrong"}, "", 400, "INVALID_ARGUMENT"),
        ({"Authorization": f"Bearer {KEY}"}, "", 403, "PERMISSION_DENIED"),
        ({"x-goog-api-key": KEY}, f"?key={KEY}", 400, "INVALID_ARGUMENT"),
    ],
    ids=["none", "wrong", "bearer", "in-url"],
)
async def test_the_key_only_counts_in_its_header(
    sim: SimProvider, headers: dict[str, str], path: str, status: int, reason: str
) -> None:
    got, error, _ = await post(sim, "/models/gemini-x:generateContent" + path, ASK, headers)
    assert got == status and error["error"]["status"] == reason


@pytest.mark.parametrize(
    "body",
    [
        {**ASK, "model": "gemini-x"},
        {**ASK, "generationConfig": {"max_tokens": 5}},
        {"contents": [{"role": "user", "parts": [{"txt": "typo"}]}]},
        {**ASK, "tools": [{"functionDeclarations": [{"name": "f", "strict": True}]}]},
        {"contents": []},
        {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
    ],
    ids=["model", "config", "part", "declaration", "empty", "role"],
)
async def test_what_gemini_does_not_know_is_a_400(sim: SimProvider, body: dict[str, Any]) -> None:
    status, error, _ = await post(sim, "/models/gemini-x:generateContent", body)
    assert status == 400 and error["error"]["status"] == "INVALID_ARGUMENT"


async def test_a_forced_function_call(sim: SimProvider) -> None:
    body = {
        **ASK,
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "f",
                        "parametersJsonSchema": {
                            "type": "object",
                            "properties": {"n": {"type": "integer"}},
                        },
                    }
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
    }
    _, answer, _ = await post(sim, "/models/gemini-x:generateContent", body)
    call = answer["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call["name"] == "f" and call["args"] == {"n": 42} and call["id"].startswith("call_")


async def test_a_status_fault_carries_retry_info(sim: SimProvider) -> None:
    sim.set_fault(Fault(mode="status", status=429, retry_after=7))
    status, error, _ = await post(sim, "/models/gemini-x:generateContent", ASK)
    assert status == 429 and error["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in error[
        "error"
    ]["details"]


async def test_gemini_embeddings(sim: SimProvider) -> None:
    one = {"model": "models/e", "content": {"parts": [{"text": "a"}]}}
    status, answer, _ = await post(sim, "/models/e:batchEmbedContents", {"requests": [one, one]})
    assert status == 200 and [len(e["values"]) for e in answer["embeddings"]] == [4, 4]
    assert answer["embeddings"][0] == answer["embeddings"][1]  # deterministic
    short = {**one, "outputDimensionality": 2}
    _, answer, _ = await post(sim, "/models/e:embedContent", short)
    assert len(answer["embedding"]["values"]) == 2
    status, error, _ = await post(sim, "/models/e:batchEmbedContents", {"requests": [one] * 101})
    assert status == 400 and "at most 100" in error["error"]["message"]
    other = {**one, "model": "models/f"}
    status, _, _ = await post(sim, "/models/e:batchEmbedContents", {"requests": [other]})
    assert status == 400


async def test_openai_embeddings_on_the_openai_wire() -> None:
    async with SimProvider(
        SimConfig(name="oai", ttft=0, tokens_per_second=0, embedding_dimensions=3)
    ) as sim:
        status, answer, _ = await post(
            sim, "/embeddings", {"model": "e", "input": ["a", [1, 2]]}, {}
        )
        assert status == 200 and answer["object"] == "list"
        assert [len(d["embedding"]) for d in answer["data"]] == [3, 3]
        assert answer["usage"]["prompt_tokens"] == 1 + 2
        _, encoded, _ = await post(
            sim, "/embeddings", {"model": "e", "input": "a", "encoding_format": "base64"}, {}
        )
        assert isinstance(encoded["data"][0]["embedding"], str)
        status, error, _ = await post(sim, "/embeddings", {"model": "e", "input": ["x"] * 2049}, {})
        assert status == 400 and error["error"]["param"] == "input"

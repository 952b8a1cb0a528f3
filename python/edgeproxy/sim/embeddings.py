"""Simulated embeddings: a deterministic unit vector per (seed, model, input), in each wire's shape.

The same text embedded by the same simulated model gives the same vector (so a cache hit and a
fresh answer are equal); another model or seed gives another one, as a different model's vector
space would. The length is the request's ``dimensions`` (OpenAI) / ``outputDimensionality``
(Gemini), else ``SimConfig.embedding_dimensions``.

- OpenAI wire: ``POST /v1/embeddings`` (``input``: a string, strings, tokens or lists of
  tokens; ``encoding_format`` ``float`` or ``base64`` of little-endian float32), answered as
  ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
  "usage": {"prompt_tokens", "total_tokens"}}``; more than 2,048 inputs is a 400, as at OpenAI.
- Gemini wire: ``POST /v1/models/{model}:batchEmbedContents`` (at most 100 requests, each
  ``{"model", "content": {"parts": [{"text"}]}, "outputDimensionality"?}``) answered as
  ``{"embeddings": [{"values"}]}``, and ``:embedContent`` (one) as ``{"embedding": {"values"}}``;
  no token count, as Gemini reports none.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
from array import array
from typing import Any, Final

OPENAI_MAX_INPUTS: Final = 2048
GEMINI_MAX_REQUESTS: Final = 100


class BadEmbeddings(Exception):
    """A request the provider would refuse with a 400 (message, param)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def vector(seed: int, model: str, item: str | list[int], dimensions: int) -> list[float]:
    """The unit vector of ``item`` (deterministic)."""
    digest = hashlib.blake2b(repr((seed, model, item)).encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def as_base64(values: list[float]) -> str:
    return base64.b64encode(array("f", values).tobytes()).decode()


def tokens_of(item: str | list[int]) -> int:
    """The simulator's token estimate of an input (4 characters a token; tokens as given)."""
    return len(item) if isinstance(item, list) else max(1, len(item) // 4)


def _dimensions(value: Any, default: int, param: str) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 8192:
        raise BadEmbeddings(f"Invalid '{param}': expected an integer between 1 and 8192.", param)
    return value


def openai_inputs(body: Any) -> list[str | list[int]]:
    if not isinstance(body, dict):
        raise BadEmbeddings("The request body must be a JSON object.")
    data = body.get("input")
    if isinstance(data, str):
        return [data]
    if isinstance(data, list) and data and all(isinstance(x, int) for x in data):
        return [data]
    if not isinstance(data, list) or not data:
        raise BadEmbeddings("'input' must be a non-empty string or array.", "input")
    if len(data) > OPENAI_MAX_INPUTS:
        raise BadEmbeddings(
            f"'input' holds {len(data)} items; the maximum is {OPENAI_MAX_INPUTS}.", "input"
        )
    for i, item in enumerate(data):
        if not (
            isinstance(item, str)
            or (isinstance(item, list) and item and all(isinstance(t, int) for t in item))
        ):
            raise BadEmbeddings(
                f"Invalid 'input[{i}]': expected a string or tokens.", f"input[{i}]"
            )
    return list(data)


def openai_answer(body: dict[str, Any], *, seed: int, default_dimensions: int) -> dict[str, Any]:
    """The answer to an OpenAI embeddings request (``BadEmbeddings`` for a bad one)."""
    inputs = openai_inputs(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadEmbeddings("You must provide a model parameter.", "model")
    dimensions = _dimensions(body.get("dimensions"), default_dimensions, "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadEmbeddings("Invalid 'encoding_format': 'float' or 'base64'.", "encoding_format")
    data = []
    for i, item in enumerate(inputs):
        values = vector(seed, model, item, dimensions)
        embedding: list[float] | str = as_base64(values) if encoding == "base64" else values
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = sum(tokens_of(item) for item in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def gemini_text(request: Any, where: str) -> str:
    content = request.get("content") if isinstance(request, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise BadEmbeddings(f"{where}.content.parts: must be a non-empty list.")
    texts = [p.get("text") for p in parts if isinstance(p, dict)]
    if len(texts) != len(parts) or not all(isinstance(t, str) for t in texts):
        raise BadEmbeddings(f"{where}.content.parts: only text parts can be embedded.")
    return "".join(texts)  # type: ignore[arg-type]  # checked: all strings


def gemini_batch_answer(
    body: Any, model: str, *, seed: int, default_dimensions: int
) -> dict[str, Any]:
    """The answer to ``:batchEmbedContents`` (``BadEmbeddings`` for a bad request)."""
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        raise BadEmbeddings("requests: must be a non-empty list.")
    if len(requests) > GEMINI_MAX_REQUESTS:
        raise BadEmbeddings(
            f"* BatchEmbedContentsRequest.requests: at most {GEMINI_MAX_REQUESTS} requests can "
            "be in one batch"
        )
    embeddings = []
    for i, request in enumerate(requests):
        where = f"requests[{i}]"
        if request.get("model") != f"models/{model}":
            raise BadEmbeddings(f"{where}.model: must be the model of the URL (models/{model}).")
        dimensions = _dimensions(
            request.get("outputDimensionality"), default_dimensions, "outputDimensionality"
        )
        embeddings.append({"values": vector(seed, model, gemini_text(request, where), dimensions)})
    return {"embeddings": embeddings}


def gemini_one_answer(
    body: Any, model: str, *, seed: int, default_dimensions: int
) -> dict[str, Any]:
    """The answer to ``:embedContent``."""
    if not isinstance(body, dict):
        raise BadEmbeddings("The request body must be a JSON object.")
    dimensions = _dimensions(
        body.get("outputDimensionality"), default_dimensions, "outputDimensionality"
    )
    return {"embedding": {"values": vector(seed, model, gemini_text(body, "request"), dimensions)}}

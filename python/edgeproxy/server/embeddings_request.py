"""An embeddings request and answer in OpenAI's wire (``POST /v1/embeddings``), without I/O.

``parse_embeddings_request`` checks a body the way OpenAI does (its error wording, ``param`` and
``code``); ``batches`` splits the inputs under a wire's limits; ``shaped`` turns an upstream's
vector into the client's ``encoding_format`` and measures it; ``answer_body`` writes the
``{"object": "list", "data": [...], "model", "usage"}`` the SDK reads.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.ingress.base import ClientError
from edgeproxy.server.json_nesting import check_nesting
from edgeproxy.snapshot.wire import EmbeddingInput, EmbeddingsOptions

KNOWN: Final = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
# Inputs a request may hold: OpenAI's own limit, so no app written for its API sends more. It
# bounds the answer the proxy builds (every vector is held until the last batch is in: at 3,072
# dimensions, about 25 MB as float32), whatever number of tiny inputs a body limit lets in.
MAX_INPUTS: Final = 2048
_LITTLE: Final = sys.byteorder == "little"


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    model: str
    inputs: list[EmbeddingInput]
    options: EmbeddingsOptions


def _bad(message: str, param: str, code: str = "invalid_type") -> ClientError:
    return ClientError(400, message, param=param, code=code)


def _tokens(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**32 for t in value)
    )


def _inputs(value: Any) -> list[EmbeddingInput]:
    if value is None:
        raise _bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if isinstance(value, str):
        if not value:
            raise _bad("'input' cannot be an empty string.", "input", "invalid_value")
        return [value]
    if _tokens(value):
        return [value]
    if not isinstance(value, list) or not value:
        raise _bad("'input' must be a string, an array of strings or of token arrays.", "input")
    if len(value) > MAX_INPUTS:
        raise _bad(
            f"'input' holds {len(value)} items; at most {MAX_INPUTS} may be embedded in one "
            "request (send the rest in more requests).",
            "input",
            "invalid_value",
        )
    for i, item in enumerate(value):
        if isinstance(item, str):
            if not item:
                raise _bad(
                    f"'input[{i}]' cannot be an empty string.", f"input[{i}]", "invalid_value"
                )
        elif not _tokens(item):
            raise _bad(f"'input[{i}]' must be a string or an array of tokens.", f"input[{i}]")
    return list(value)


def parse_embeddings_request(raw: bytes) -> tuple[dict[str, Any], EmbeddingsRequest]:
    """The body, checked, and what it asks (``ClientError`` for what OpenAI would refuse)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ClientError(400, "The request body must be a JSON object.")
    check_nesting(body, ClientError)
    model = body.get("model")
    if model is None:
        raise _bad("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string.", "model")
    inputs = _inputs(body.get("input"))
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad(
            f"Invalid value for 'encoding_format': {encoding!r}. Supported values are: "
            "'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise _bad("'dimensions' must be an integer >= 1.", "dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("'user' must be a string.", "user")
    extra = {k: v for k, v in body.items() if k not in KNOWN}
    options = EmbeddingsOptions(
        "base64" if encoding == "base64" else "float", dimensions, user, extra
    )
    return body, EmbeddingsRequest(model, inputs, options)


def batches(
    inputs: Sequence[EmbeddingInput],
    counts: Sequence[int],
    max_inputs: int,
    max_tokens: int | None,
) -> Iterator[tuple[int, int]]:
    """``(start, end)`` slices of ``inputs`` in order, each at most ``max_inputs`` long and, with
    ``max_tokens``, at most that many tokens (an input over it alone is a batch of its own)."""
    start, tokens = 0, 0
    for i, count in enumerate(counts):
        full = i - start >= max_inputs or (
            max_tokens is not None and i > start and tokens + count > max_tokens
        )
        if full:
            yield start, i
            start, tokens = i, 0
        tokens += count
    if start < len(inputs):
        yield start, len(inputs)


def _malformed(detail: str) -> AttemptFailure:
    return AttemptFailure(FailureClass.MALFORMED, detail)


_NUMBERS: Final = frozenset({float, int})


def _finite(values: array[float]) -> bool:
    # One C-level pass: a NaN or an infinity makes the sum one (finite float32 values cannot
    # add up to an infinity; float64 ones beyond 1e305 are no embedding either).
    return math.isfinite(sum(values))


def shaped(vector: list[float] | str, encoding: str) -> tuple[list[float] | str, int]:
    """The vector in the client's ``encoding`` (floats, or base64 of little-endian float32) and
    its length; MALFORMED for one that is empty, not numbers (``true`` is not one), not base64
    of float32, or holds NaN or an infinity (JSON has no such number: it would reach the client
    as ``null``, or as bits no index can compare)."""
    if isinstance(vector, str):
        try:
            raw = base64.b64decode(vector, validate=True)
        except (binascii.Error, ValueError):
            raise _malformed("upstream embedding is not base64") from None
        if len(raw) % 4:
            raise _malformed("upstream embedding is not base64 of float32 values")
        values = array("f", raw)
        if not _LITTLE:
            values.byteswap()
        if not values:
            raise _malformed("upstream embedding is empty")
        if not _finite(values):
            raise _malformed("upstream embedding holds NaN or an infinity")
        return (vector if encoding == "base64" else values.tolist()), len(values)
    if not vector:
        raise _malformed("upstream embedding is empty")
    if not _NUMBERS.issuperset(map(type, vector)):  # bool is not a number here; C-level pass
        raise _malformed("upstream embedding holds something other than numbers")
    try:
        packed = array("f" if encoding == "base64" else "d", vector)
    except OverflowError:
        raise _malformed("upstream embedding holds a number beyond a float's range") from None
    if not _finite(packed):  # NaN, or a number beyond float32's range for base64
        raise _malformed("upstream embedding holds NaN or a number beyond float32's range")
    if encoding == "float":
        return vector, len(packed)
    if not _LITTLE:
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode(), len(packed)


def answer_body(vectors: Sequence[list[float] | str], model: str, prompt_tokens: int) -> bytes:
    """OpenAI's embeddings answer."""
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})

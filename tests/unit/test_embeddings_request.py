"""Embeddings without sockets: a request checked as OpenAI checks it, inputs split into batches
under a wire's limits (every input once, in order), vectors turned into the client's encoding,
and hostile upstream answers refused as malformed (so the attempt fails over)."""

from __future__ import annotations

import base64
from array import array
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.server.embeddings_request import (
    MAX_INPUTS,
    batches,
    parse_embeddings_request,
    shaped,
)
from edgeproxy.server.ingress import ClientError
from edgeproxy.snapshot import Candidate
from edgeproxy.snapshot.wire import EmbeddingsOptions
from edgeproxy.wires.openai_chat import WIRE


def test_a_request_is_read_with_its_options() -> None:
    _, asked = parse_embeddings_request(
        orjson.dumps(
            {
                "model": "e",
                "input": ["a", [1, 2]],
                "encoding_format": "base64",
                "dimensions": 8,
                "user": "u",
                "truncate_prompt_tokens": 10,  # a vLLM field: carried to OpenAI-wire servers
            }
        )
    )
    assert asked.model == "e" and asked.inputs == ["a", [1, 2]]
    assert asked.options == EmbeddingsOptions("base64", 8, "u", {"truncate_prompt_tokens": 10})
    _, one = parse_embeddings_request(b'{"model": "e", "input": "text"}')
    assert one.inputs == ["text"] and one.options.encoding_format == "float"
    _, tokens = parse_embeddings_request(b'{"model": "e", "input": [5, 6, 7]}')
    assert tokens.inputs == [[5, 6, 7]]


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{", None),
        (b"[]", None),
        (b'{"input": "x"}', "model"),
        (b'{"model": 3, "input": "x"}', "model"),
        (b'{"model": "e"}', "input"),
        (b'{"model": "e", "input": ""}', "input"),
        (b'{"model": "e", "input": []}', "input"),
        (b'{"model": "e", "input": ["a", ""]}', "input[1]"),
        (b'{"model": "e", "input": ["a", [true]]}', "input[1]"),
        (b'{"model": "e", "input": [[-1]]}', "input[0]"),
        (b'{"model": "e", "input": [[]]}', "input[0]"),
        (b'{"model": "e", "input": {"a": 1}}', "input"),
        (b'{"model": "e", "input": "x", "encoding_format": "hex"}', "encoding_format"),
        (b'{"model": "e", "input": "x", "dimensions": true}', "dimensions"),
        (b'{"model": "e", "input": "x", "dimensions": -4}', "dimensions"),
        (b'{"model": "e", "input": "x", "user": 5}', "user"),
    ],
)
def test_a_bad_request_names_its_field(raw: bytes, param: str | None) -> None:
    with pytest.raises(ClientError) as info:
        parse_embeddings_request(raw)
    assert info.value.status == 400 and info.value.param == param


@given(
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=60),
    st.integers(min_value=1, max_value=7),
    st.one_of(st.none(), st.integers(min_value=1, max_value=120)),
)
def test_batches_hold_every_input_once_in_order_under_the_limits(
    counts: list[int], max_inputs: int, max_tokens: int | None
) -> None:
    inputs = [str(i) for i in range(len(counts))]
    slices = list(batches(inputs, counts, max_inputs, max_tokens))
    assert [i for a, b in slices for i in range(a, b)] == list(range(len(inputs)))
    for a, b in slices:
        assert 0 < b - a <= max_inputs
        if max_tokens is not None and b - a > 1:  # an input over the limit goes alone
            assert sum(counts[a:b]) <= max_tokens


def _floats_b64(values: list[float]) -> str:
    return base64.b64encode(array("f", values).tobytes()).decode()


def test_vectors_are_shaped_to_the_clients_encoding() -> None:
    values = [0.5, -0.25, 1.0]
    assert shaped(values, "float") == (values, 3)
    encoded, length = shaped(values, "base64")
    assert encoded == _floats_b64(values) and length == 3
    assert shaped(_floats_b64(values), "float") == (values, 3)
    assert shaped(_floats_b64(values), "base64") == (_floats_b64(values), 3)


@pytest.mark.parametrize(
    ("vector", "encoding"),
    [
        ("not base64!", "float"),
        (base64.b64encode(b"\x00\x01\x02").decode(), "base64"),  # not float32s
        ([1.0, "2"], "float"),
        ([1.0, None], "base64"),
        ([1e300], "base64"),  # beyond float32
        ([[1.0]], "float"),
        # JSON has no NaN or infinity: as floats they would reach the client as null.
        (base64.b64encode(array("f", [0.5, float("nan")]).tobytes()).decode(), "float"),
        (base64.b64encode(array("f", [float("inf")]).tobytes()).decode(), "base64"),
        ([0.5, True], "float"),  # a bool is not a number (it would reach the client as true)
        ([False], "base64"),
        ([], "float"),  # an empty vector
        ("", "base64"),
        ([10**400], "float"),  # beyond a float64
    ],
)
def test_a_hostile_vector_is_malformed(vector: Any, encoding: str) -> None:
    with pytest.raises(AttemptFailure) as info:
        shaped(vector, encoding)
    assert info.value.failure is FailureClass.MALFORMED and info.value.may_fail_over


def test_more_inputs_than_openai_takes_are_refused_by_name() -> None:
    ok = orjson.dumps({"model": "m", "input": ["a"] * MAX_INPUTS})
    assert len(parse_embeddings_request(ok)[1].inputs) == MAX_INPUTS
    for many in (["a"] * (MAX_INPUTS + 1), [[1]] * 100_000):
        with pytest.raises(ClientError) as info:
            parse_embeddings_request(orjson.dumps({"model": "m", "input": many}))
        assert info.value.status == 400 and info.value.param == "input"
        assert str(MAX_INPUTS) in info.value.message


def _candidate() -> Candidate:
    return Candidate(
        provider="p",
        region="r",
        model="e",
        upstream_model="text-embedding-3-small",
        wire=WIRE,
        base_url="http://p.example/v1",
        chat_url=WIRE.endpoint_url("http://p.example/v1", {"api-version": "1"}),
        context_window=None,
        tags=MappingProxyType({}),
        headers=MappingProxyType({}),
    )


def test_the_openai_embeddings_wire() -> None:
    embeddings = WIRE.embeddings
    assert embeddings.url(_candidate()) == "http://p.example/v1/embeddings?api-version=1"
    body = orjson.loads(
        embeddings.request_body(
            ["a", [1]], EmbeddingsOptions("base64", 4, "u", {"extra": 1}), _candidate()
        )
    )
    assert body == {
        "extra": 1,
        "model": "text-embedding-3-small",
        "input": ["a", [1]],
        "encoding_format": "base64",
        "dimensions": 4,
        "user": "u",
    }
    answer = embeddings.answer(
        orjson.dumps(
            {
                "data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}],
                "model": "m",
                "usage": {"prompt_tokens": 3},
            }
        ),
        2,
    )
    assert answer.vectors == [[1.0], [2.0]] and answer.prompt_tokens == 3 and answer.model == "m"


@pytest.mark.parametrize(
    "data",
    [
        [{"index": 0, "embedding": [1.0]}],  # one vector short
        [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}],  # twice the same
        [{"index": 0, "embedding": [1.0]}, {"index": 5, "embedding": [2.0]}],  # out of range
        [{"index": 0, "embedding": [1.0]}, {"index": True, "embedding": [2.0]}],
        [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": 7}],
        [{"index": 0, "embedding": [1.0]}, "vector"],
        "everything",
    ],
)
def test_a_hostile_embeddings_answer_is_malformed(data: Any) -> None:
    with pytest.raises(AttemptFailure) as info:
        WIRE.embeddings.answer(orjson.dumps({"data": data}), 2)
    assert info.value.failure is FailureClass.MALFORMED


def test_a_hostile_usage_is_not_taken() -> None:
    for usage in ({"prompt_tokens": -1}, {"prompt_tokens": "9"}, {"prompt_tokens": True}, []):
        answer = WIRE.embeddings.answer(
            orjson.dumps({"data": [{"index": 0, "embedding": [1.0]}], "usage": usage}), 1
        )
        assert answer.prompt_tokens is None  # the proxy counts instead

"""Bad requests get a 4xx in OpenAI's error format with a request id, and are never forwarded."""

from __future__ import annotations

import openai
import pytest

from harness import Stack


def _assert_error(response, status: int, *, param: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["request_id"] == response.headers["x-request-id"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": 7, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
            "stream",
        ),
    ],
)
def test_invalid_fields_are_named(stack: Stack, body: dict, param: str) -> None:  # type: ignore[type-arg]
    _assert_error(stack.http.post("/v1/chat/completions", json=body), 400, param=param)
    assert stack.requests_to("alpha_one") == 0


def test_invalid_json(stack: Stack) -> None:
    response = stack.http.post(
        "/v1/chat/completions",
        content=b'{"model": "m", ',
        headers={"content-type": "application/json"},
    )
    assert "not valid JSON" in _assert_error(response, 400)["message"]


def test_json_that_is_not_an_object(stack: Stack) -> None:
    response = stack.http.post("/v1/chat/completions", json=[1, 2])
    _assert_error(response, 400)


def test_wrong_content_type(stack: Stack) -> None:
    response = stack.http.post(
        "/v1/chat/completions",
        content=b"model=m",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert "Content-Type" in _assert_error(response, 415)["message"]


def test_oversized_body(stack: Stack) -> None:
    big = "x" * (5 * 1024 * 1024)  # the default limit is 4 MiB
    response = stack.http.post(
        "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": big}]}
    )
    assert "max_body_bytes" in _assert_error(response, 413)["message"]
    assert stack.requests_to("alpha_one") == 0


def test_oversized_chunked_body(stack: Stack) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(80):
            yield b"y" * 65536
        yield b'"}]}'

    response = stack.http.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    _assert_error(response, 413)


def test_unknown_model_through_the_sdk(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        stack.client().chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "model_not_found"
    assert "gpt-nope" in info.value.message
    assert info.value.request_id == info.value.response.headers["x-request-id"]
    assert stack.requests_to("alpha_one") == 0


def test_unknown_path_and_method(stack: Stack) -> None:
    error = stack.http.get("/v1/nothing-here").json()["error"]
    assert "/v1/nothing-here" in error["message"]
    response = stack.http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]

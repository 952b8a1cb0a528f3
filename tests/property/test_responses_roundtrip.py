"""Same-wire fidelity: a Responses client served by an ``openai_responses`` candidate goes
Responses -> inner chat (the ingress) -> Responses (the upstream wire). For any request the
ingress accepts, nothing is lost on the way:

- the inner request is a fixed point: reading the request the wire sends, as the ingress reads
  a client's, gives back the same inner request (one documented difference: a function tool
  without ``strict`` is sent ``strict: false``, the inner shape's meaning);
- the request sent upstream carries the client's own fields as the client wrote them, and its
  conversation as the same sequence of items (a leading system message of plain text, with no
  ``instructions``, travels as ``instructions``: the API's own meaning of that field).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgeproxy.translate.openai_responses import chat_to_responses_request
from edgeproxy.translate.responses_api import responses_to_chat_request

TEXT = st.text(max_size=12)
NAME = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)


def parts(kind: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(st.builds(lambda t: {"type": kind, "text": t}, TEXT), min_size=2, max_size=3)


IMAGE = st.builds(
    lambda url, detail: (
        {"type": "input_image", "image_url": url} | ({"detail": detail} if detail else {})
    ),
    st.sampled_from(["https://x.test/a.png", "data:image/png;base64,AAAA"]),
    st.sampled_from([None, "low", "high", "auto"]),
)
INPUT_CONTENT = st.one_of(
    TEXT,
    parts("input_text"),
    st.lists(
        st.one_of(st.builds(lambda t: {"type": "input_text", "text": t}, TEXT), IMAGE), max_size=3
    ),
)
ASSISTANT_CONTENT = st.one_of(
    TEXT,
    parts("output_text"),
    st.just([{"type": "refusal", "refusal": "no"}]),
    st.just([{"type": "output_text", "text": "a"}, {"type": "refusal", "refusal": "no"}]),
)


def message(role: str) -> st.SearchStrategy[dict[str, Any]]:
    content = ASSISTANT_CONTENT if role == "assistant" else INPUT_CONTENT
    return st.builds(lambda c: {"type": "message", "role": role, "content": c}, content)


CALL_IDS = st.sampled_from(["call_1", "call_2", "call_3"])
ITEM = st.one_of(
    message("user"),
    message("assistant"),
    message("system"),
    message("developer"),
    st.builds(
        lambda i, n, a: {"type": "function_call", "call_id": i, "name": n, "arguments": a},
        CALL_IDS,
        NAME,
        st.sampled_from(["{}", '{"city":"Paris"}', ""]),
    ),
    st.builds(
        lambda i, o: {"type": "function_call_output", "call_id": i, "output": o},
        CALL_IDS,
        st.one_of(TEXT, parts("input_text")),
    ),
)
INPUT = st.one_of(TEXT.filter(bool), st.lists(ITEM, min_size=1, max_size=7))
TOOL = st.builds(
    lambda name, description, parameters, strict: (
        {"type": "function", "name": name}
        | ({"description": description} if description is not None else {})
        | ({"parameters": parameters} if parameters is not None else {})
        | ({"strict": strict} if strict is not None else {})
    ),
    NAME,
    st.one_of(st.none(), TEXT),
    st.sampled_from([None, {"type": "object", "properties": {"q": {"type": "string"}}}]),
    st.sampled_from([None, True, False]),
)
FORMAT = st.sampled_from(
    [
        None,
        {"type": "json_object"},
        {"type": "json_schema", "name": "out", "schema": {"type": "object"}},
        {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True},
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "client-model", "input": draw(INPUT)}
    if isinstance(body["input"], list):  # the ingress wants something besides system messages
        assume(any(item.get("role") != "system" for item in body["input"]))
    optional: dict[str, Any] = {
        "instructions": draw(st.one_of(st.none(), TEXT)),
        "max_output_tokens": draw(st.one_of(st.none(), st.integers(16, 4096))),
        "temperature": draw(st.one_of(st.none(), st.sampled_from([0, 0.5, 1.2]))),
        "top_p": draw(st.one_of(st.none(), st.sampled_from([0.1, 1]))),
        "metadata": draw(st.one_of(st.none(), st.just({"task": "t"}))),
        "user": draw(st.one_of(st.none(), NAME)),
        "safety_identifier": draw(st.one_of(st.none(), NAME)),
        "prompt_cache_key": draw(st.one_of(st.none(), NAME)),
        "service_tier": draw(st.one_of(st.none(), st.sampled_from(["auto", "flex"]))),
        "stream": draw(st.one_of(st.none(), st.booleans())),
        "store": draw(st.one_of(st.none(), st.booleans())),
        "truncation": draw(st.one_of(st.none(), st.just("disabled"))),
    }
    tools = draw(st.lists(TOOL, max_size=2, unique_by=lambda t: t["name"]))
    if tools:
        optional["tools"] = tools
        optional["tool_choice"] = draw(
            st.one_of(
                st.none(),
                st.sampled_from(["auto", "none", "required"]),
                st.sampled_from([{"type": "function", "name": t["name"]} for t in tools]),
            )
        )
        optional["parallel_tool_calls"] = draw(st.one_of(st.none(), st.booleans()))
    text: dict[str, Any] = {}
    fmt = draw(FORMAT)
    if fmt is not None:
        text["format"] = fmt
    verbosity = draw(st.one_of(st.none(), st.sampled_from(["low", "high"])))
    if verbosity is not None:
        text["verbosity"] = verbosity
    if text:
        optional["text"] = text
    effort = draw(st.one_of(st.none(), st.sampled_from(["minimal", "low", "medium", "high"])))
    if effort is not None:
        optional["reasoning"] = {"effort": effort}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def strict_said(inner: dict[str, Any]) -> dict[str, Any]:
    """The inner request with each function tool's ``strict`` written out (absent = false)."""
    out = copy.deepcopy(inner)
    for tool in out.get("tools", []):
        tool["function"].setdefault("strict", False)
    return out


def items_of(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The conversation as a sequence of (type, role or call_id), ``instructions`` first."""
    source = body["input"]
    head = [("message", "system")] if "instructions" in body else []
    if isinstance(source, str):
        return [*head, ("message", "user")]
    return [*head, *((i["type"], i.get("role", i.get("call_id"))) for i in source)]


@settings(max_examples=400, deadline=None)
@given(requests())
def test_the_inner_request_survives_the_responses_wire(client: dict[str, Any]) -> None:
    inner = responses_to_chat_request(client)
    upstream = chat_to_responses_request(inner, "upstream-model")
    assert upstream["store"] is False and upstream["model"] == "upstream-model"
    again = responses_to_chat_request({**upstream, "model": "client-model"})
    assert again == strict_said(inner)


@settings(max_examples=400, deadline=None)
@given(requests())
def test_the_upstream_gets_the_clients_own_fields(client: dict[str, Any]) -> None:
    upstream = chat_to_responses_request(responses_to_chat_request(client), "upstream-model")
    if "instructions" in client:
        assert upstream["instructions"] == client["instructions"]
    # else a leading system message of plain text travels as instructions (the same thing)
    for key in (
        "max_output_tokens",
        "temperature",
        "top_p",
        "metadata",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "service_tier",
        "reasoning",
    ):
        assert upstream.get(key) == client.get(key), key
    assert upstream.get("stream", False) == client.get("stream", False)
    assert items_of(upstream) == items_of(client)
    if "tools" in client:
        assert [{"strict": False, **t} for t in client["tools"]] == upstream["tools"]
        assert upstream.get("tool_choice") == client.get("tool_choice")
        assert upstream.get("parallel_tool_calls") == client.get("parallel_tool_calls")
    text = dict(client.get("text", {}))
    assert upstream.get("text", {}) == text

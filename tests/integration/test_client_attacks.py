"""Hostile request bodies and headers against the real proxy on real sockets (issue 15, items 1,
2 and 12): each used to reach the upstream inflated, take every concurrency slot, or end in a 500
with a traceback; each now gets a clean 4xx in the client's own wire, and nothing is forwarded.
"""

from __future__ import annotations

import gzip
import logging
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import orjson
import pytest

from edgeproxy.server.json_nesting import MAX_JSON_DEPTH
from edgeproxy.server.runner import ProxyServer
from edgeproxy.sim import SimConfig
from fixtures.rawhttp import (
    RawResponse,
    Trickler,
    closed_by_peer,
    connect,
    read_response,
    request_bytes,
    roundtrip,
)
from fixtures.reloadkit import wait_until
from harness import THREE_WAY, THREE_WAY_SIMS, LoopThread, Stack

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": "m", "messages": MESSAGES}
ANTHROPIC = {"model": "m", "max_tokens": 16, "messages": MESSAGES}
SIMS = ("alpha_one", "alpha_two", "beta")
CACHED = THREE_WAY.replace(
    "    chain: [alpha/one/m, alpha/two/m, beta/main/m-small]\n",
    "    chain: [alpha/one/m, alpha/two/m, beta/main/m-small]\n    cache: {cacheable: all}\n",
)


def _with_limits(limits: str, policy: str = THREE_WAY) -> str:
    return policy.replace("version: 1\n", f"version: 1\nlimits: {{{limits}}}\n")


def post(stack: Stack, path: str, body: bytes, **headers: str | bytes) -> RawResponse:
    return roundtrip(stack.proxy.port, request_bytes("POST", path, body, headers))


def upstream_requests(stack: Stack) -> int:
    return sum(stack.requests_to(s) for s in SIMS)


def assert_openai_error(response: RawResponse, status: int, code: str | None = None) -> str:
    assert response.status == status, response.body
    error = response.json()["error"]
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code
    message: str = error["message"]
    return message


def assert_anthropic_error(response: RawResponse, status: int, type: str) -> str:
    assert response.status == status, response.body
    data = response.json()
    assert data["type"] == "error" and data["error"]["type"] == type
    assert data["request_id"] == response.headers["request-id"]
    message: str = data["error"]["message"]
    return message


def _json_body(content_bytes: int, template: dict[str, Any] = CHAT) -> bytes:
    body = {**template, "messages": [{"role": "user", "content": "a" * content_bytes}]}
    return orjson.dumps(body)


# -- item 1: compressed bodies ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "template"),
    [("/v1/chat/completions", CHAT), ("/v1/messages", ANTHROPIC)],
)
def test_a_gzip_bomb_is_refused_at_the_decoded_limit(
    stack: Stack, path: str, template: dict[str, Any]
) -> None:
    # ~20 KB on the wire, 20 MB once inflated: the default limit is 4 MiB of *decoded* body.
    bomb = gzip.compress(_json_body(20_000_000, template), compresslevel=9)
    assert len(bomb) < 64 * 1024
    response = post(stack, path, bomb, **{"Content-Encoding": "gzip"})
    if path == "/v1/messages":
        message = assert_anthropic_error(response, 413, "request_too_large")
    else:
        message = assert_openai_error(response, 413, "request_too_large")
    assert "once decoded" in message and "max_body_bytes" in message
    assert response.headers["connection"] == "close"
    assert upstream_requests(stack) == 0


def test_a_chunked_gzip_bomb_is_refused_too(stack: Stack) -> None:
    bomb = gzip.compress(_json_body(20_000_000), compresslevel=9)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(bomb[i : i + 4096]), bomb[i : i + 4096])
        for i in range(0, len(bomb), 4096)
    )
    head = request_bytes(
        "POST",
        "/v1/chat/completions",
        headers={"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"},
    ).replace(b"Content-Length: 0\r\n", b"")
    response = roundtrip(stack.proxy.port, head + chunks + b"0\r\n\r\n")
    assert_openai_error(response, 413, "request_too_large")
    assert upstream_requests(stack) == 0


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(("gzip", gzip.compress), id="gzip"),
        pytest.param(("x-gzip", gzip.compress), id="x-gzip"),
        pytest.param(
            ("gzip", lambda b: gzip.compress(b[:10]) + gzip.compress(b[10:])), id="2-members"
        ),
        pytest.param(("deflate", zlib.compress), id="deflate"),
        pytest.param(("deflate", lambda b: zlib.compress(b)[2:-4]), id="raw-deflate"),
    ],
)
def test_a_compressed_body_within_the_limit_is_served(
    stack: Stack, encode: tuple[str, Callable[[bytes], bytes]]
) -> None:
    coding, compress = encode
    response = post(
        stack, "/v1/chat/completions", compress(orjson.dumps(CHAT)), **{"Content-Encoding": coding}
    )
    assert response.status == 200, response.body
    assert response.json()["object"] == "chat.completion"
    assert stack.stats("alpha_one")["outcomes"] == {"ok": 1}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x1f\x8bnot gzip at all", id="garbage"),
        pytest.param(gzip.compress(orjson.dumps(CHAT))[:-12], id="truncated"),
        pytest.param(gzip.compress(orjson.dumps(CHAT)) + b"trailing junk", id="trailing-junk"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_malformed_gzip_body_is_a_400(stack: Stack, body: bytes) -> None:
    response = post(stack, "/v1/chat/completions", body, **{"Content-Encoding": "gzip"})
    assert "not valid gzip" in assert_openai_error(response, 400, "invalid_content_encoding")
    assert upstream_requests(stack) == 0


def test_a_malformed_gzip_body_is_a_400_in_anthropic_wire(stack: Stack) -> None:
    response = post(stack, "/v1/messages", b"\x1f\x8bjunk", **{"Content-Encoding": "gzip"})
    assert_anthropic_error(response, 400, "invalid_request_error")


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip", "compress"])
def test_other_content_codings_are_a_415(stack: Stack, coding: str) -> None:
    response = post(stack, "/v1/chat/completions", b"\x00\x01", **{"Content-Encoding": coding})
    assert_openai_error(response, 415, "unsupported_content_encoding")
    assert response.headers["accept-encoding"] == "gzip, deflate"
    assert upstream_requests(stack) == 0


def test_count_tokens_reads_through_the_same_limits(stack: Stack) -> None:
    bomb = gzip.compress(_json_body(20_000_000, ANTHROPIC), compresslevel=9)
    response = post(stack, "/v1/messages/count_tokens", bomb, **{"Content-Encoding": "gzip"})
    assert_anthropic_error(response, 413, "request_too_large")
    counted = post(
        stack,
        "/v1/messages/count_tokens",
        gzip.compress(orjson.dumps(ANTHROPIC)),
        **{"Content-Encoding": "gzip"},
    )
    assert counted.status == 200 and counted.json()["input_tokens"] > 0


def test_the_framework_cap_is_the_policys_limit(stack: Stack) -> None:
    from edgeproxy.server.app import create_app

    app = create_app(stack.proxy.state)
    assert app._client_max_size == stack.policy.max_body_bytes  # not aiohttp's 1 GiB of before


# -- item 1: the concurrency limit on every endpoint --------------------------------------------


def test_count_tokens_is_behind_the_concurrency_limit(make_stack: Callable[..., Stack]) -> None:
    policy = _with_limits("max_in_flight: 1, max_queued: 0").replace(
        "first_token: 1s", "first_token: 3s"
    )
    stack = make_stack(policy, THREE_WAY_SIMS)
    stack.fault("alpha_one", mode="hang")  # holds the only slot until timeouts.first_token
    stack.fault("alpha_two", mode="hang")
    stack.fault("beta", mode="hang")
    holder = threading.Thread(
        target=lambda: stack.http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    )
    holder.start()
    try:
        wait_until(lambda: stack.proxy.state.engine.shedder.in_flight == 1, what="slot taken")
        client = anthropic.Anthropic(base_url=stack.proxy.url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as info:
            client.messages.count_tokens(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        assert info.value.status_code == 529  # Anthropic's "overloaded"
        assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    finally:
        holder.join(20)


# -- item 2: slow bodies hold a connection, never a slot ----------------------------------------


@pytest.fixture
def slow_body_stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(
        _with_limits("max_in_flight: 1, max_queued: 0, body_read_timeout: 3s"), THREE_WAY_SIMS
    )


def _trickle(stack: Stack, path: str) -> Trickler:
    head = request_bytes("POST", path, b'{"model": "m", ', content_length=100_000)
    return Trickler(stack.proxy.port, head, every=0.2)


def test_trickling_bodies_take_no_slot_and_get_a_408(slow_body_stack: Stack) -> None:
    stack = slow_body_stack
    paths = ["/v1/chat/completions"] * 4 + ["/v1/messages", "/v1/messages/count_tokens"]
    tricklers = [_trickle(stack, path) for path in paths]
    try:
        # Every trickler's request is in (its handler is reading the body) ...
        wait_until(
            lambda: stack.proxy.state.telemetry.inflight == len(paths), what="bodies being read"
        )
        # ... and the only slot is still free: an app's request is served at once.
        answer = stack.client().chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        assert answer.choices[0].message.content
        answers = [t.response() for t in tricklers]
    finally:
        for t in tricklers:
            t.close()
    for answer_ in answers[:4]:
        assert "body_read_timeout" in assert_openai_error(answer_, 408, "request_timeout")
        assert answer_.headers["connection"] == "close"
    for answer_ in answers[4:]:
        assert_anthropic_error(answer_, 408, "invalid_request_error")
    assert stack.proxy.state.engine.shedder.rejected_total == {"queue_full": 0, "queue_timeout": 0}
    assert upstream_requests(stack) == 1


# -- item 12: client input that produced a 500 --------------------------------------------------


def _depth(raw: bytes) -> int:
    """How deep a JSON text nests (for bodies whose strings hold no brackets)."""
    depth = deepest = 0
    for byte in raw:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def _around(prefix: bytes, depth: int, suffix: bytes) -> bytes:
    """``prefix`` + a value ``depth`` deep + ``suffix`` (built as text: orjson cannot write it)."""
    return prefix + b"[" * (depth - 1) + b"{}" + b"]" * (depth - 1) + suffix


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 255, 300, 1000])
def test_a_body_nested_too_deep_is_a_400_in_both_wires(stack: Stack, depth: int) -> None:
    # A tool's parameters nested 255-1024 deep parsed, then failed re-serialisation with a 500.
    openai_body = _around(
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
        b'"tools": [{"type": "function", "function": {"name": "f", "parameters": ',
        depth - 4,
        b"}}]}",
    )
    assert _depth(openai_body) == depth
    response = post(stack, "/v1/chat/completions", openai_body)
    assert f"deeper than {MAX_JSON_DEPTH}" in assert_openai_error(response, 400)
    anthropic_body = _around(
        b'{"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], '
        b'"tools": [{"name": "f", "input_schema": ',
        depth - 3,
        b"}]}",
    )
    assert _depth(anthropic_body) == depth
    response = post(stack, "/v1/messages", anthropic_body)
    assert f"deeper than {MAX_JSON_DEPTH}" in assert_anthropic_error(
        response, 400, "invalid_request_error"
    )
    assert upstream_requests(stack) == 0


TWO_WIRES = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 3s, idle: 2s, response: 5s, total: 10s}
providers:
  claude:
    kind: anthropic
    api_key: sk-ant
    regions: {main: {base_url: "$claude"}}
    models: {sonnet: {}}
  oai:
    kind: openai
    api_key: sk-oai
    regions: {main: {base_url: "$oai"}}
    models: {gpt: {}}
routes:
  to-claude: {chain: [claude/main/sonnet]}
  to-openai: {chain: [oai/main/gpt]}
"""


def _schema(depth: int) -> dict[str, Any]:
    """A JSON schema object exactly ``depth`` levels deep."""
    schema: dict[str, Any] = {"type": "string"} if depth % 2 else {"enum": ["a"]}
    while _depth(orjson.dumps(schema)) < depth:
        schema = {"type": "object", "properties": {"x": schema}}  # two levels a wrap
    return schema


@pytest.mark.parametrize("route", ["to-openai", "to-claude"])
def test_a_body_at_the_depth_bound_is_served_through_either_wire(
    make_stack: Callable[..., Stack], route: str
) -> None:
    # At the bound, also when translation adds a level (Anthropic's input_schema becomes
    # OpenAI's function.parameters): nothing in the path fails to re-serialise it.
    stack = make_stack(TWO_WIRES, [SimConfig(name="claude", ttft=0), SimConfig(name="oai", ttft=0)])
    function = {"name": "f", "parameters": _schema(MAX_JSON_DEPTH - 4)}
    openai_body = orjson.dumps(
        {**CHAT, "model": route, "tools": [{"type": "function", "function": function}]}
    )
    assert _depth(openai_body) == MAX_JSON_DEPTH
    response = post(stack, "/v1/chat/completions", openai_body)
    assert response.status == 200, response.body
    tool = {"name": "f", "input_schema": _schema(MAX_JSON_DEPTH - 3)}
    anthropic_body = orjson.dumps({**ANTHROPIC, "model": route, "tools": [tool]})
    assert _depth(anthropic_body) == MAX_JSON_DEPTH
    response = post(stack, "/v1/messages", anthropic_body)
    assert response.status == 200, response.body
    assert stack.requests_to("claude" if route == "to-claude" else "oai") == 2


@pytest.fixture
def cached_stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(CACHED, THREE_WAY_SIMS)


@pytest.mark.parametrize(
    ("value", "hit"),
    [
        ("max-age=" + "9" * 310, True),  # overflowed a float: now 2^31 s (RFC 9111 §1.2.2)
        ("max-age=" + "9" * 5000, True),  # beyond int()'s 4300-digit limit
        ("max-age=²", True),  # str.isdigit() says yes, int() says no: ignored
        ("max-age=٣", True),  # Arabic-Indic three: ignored
        ("max-age=-1", True),
        ("max-age=1e3", True),
        ("max-age=0", False),  # the real directive still works
    ],
)
def test_odd_cache_control_values_are_parsed_defensively(
    cached_stack: Stack, value: str, hit: bool
) -> None:
    stack = cached_stack
    body = orjson.dumps(CHAT)
    assert post(stack, "/v1/chat/completions", body).headers["x-edgeproxy-cache"] == "miss"
    response = post(stack, "/v1/chat/completions", body, **{"Cache-Control": value.encode()})
    assert response.status == 200, response.body
    assert response.headers["x-edgeproxy-cache"] == ("hit" if hit else "miss")


def test_non_utf8_credentials_on_a_cached_route_scope_their_own_entries(
    cached_stack: Stack,
) -> None:
    stack = cached_stack
    body = orjson.dumps(CHAT)

    def ask(**headers: bytes) -> str:
        response = post(stack, "/v1/chat/completions", body, **headers)
        assert response.status == 200, response.body
        return response.headers["x-edgeproxy-cache"]

    assert ask(Authorization=b"Bearer \xff\xfe") == "miss"
    assert ask(Authorization=b"Bearer \xff\xfe") == "hit"
    assert ask(Authorization=b"Bearer \xff\xfd") == "miss"  # another invalid key: its own scope
    assert ask(**{"x-edgeproxy-tenant": b"\xc3\x28"}) == "miss"
    assert ask(**{"x-edgeproxy-tenant": b"\xc3\x28"}) == "hit"
    assert ask(**{"x-api-key": b"\x80\x81"}) == "miss"


@pytest.fixture
def token_proxy(stack: Stack, loop_thread: LoopThread) -> Iterator[ProxyServer]:
    proxy = ProxyServer(stack.policy, port=0, admin_token="s3cret", metrics_token="scrape")
    loop_thread.run(proxy.start())
    yield proxy
    loop_thread.run(proxy.stop())


@pytest.mark.parametrize("path", ["/admin/status", "/admin/policy", "/metrics"])
@pytest.mark.parametrize(
    "authorization", [b"Bearer \xff\xfe", b"Bearer s3cret\xff", b"\xff", b"Bearer \xe2\x82"]
)
def test_non_utf8_authorization_on_admin_is_a_401(
    token_proxy: ProxyServer, path: str, authorization: bytes
) -> None:
    response = roundtrip(
        token_proxy.port, request_bytes("GET", path, headers={"Authorization": authorization})
    )
    assert response.status == 401, response.body
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", id="header"
        ),
        pytest.param(b"GET /healthz HTTP/9.z\r\nHost: 127.0.0.1\r\n\r\n", id="version"),
        pytest.param(
            request_bytes(
                "POST", "/v1/chat/completions", headers={"Transfer-Encoding": "chunked"}
            ).replace(b"Content-Length: 0\r\n", b"")
            + b"zz\r\n{}\r\n0\r\n\r\n",
            id="chunk-size",
        ),
        pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", id="long-line"),
    ],
)
def test_malformed_http_is_a_400_without_a_logged_traceback(
    stack: Stack, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp answered these in plain text and logged each with a traceback at ERROR: a client
    # could fill the log. Now: the OpenAI error shape with a request id, and a debug line.
    caplog.set_level(logging.DEBUG)
    with connect(stack.proxy.port) as sock:
        sock.sendall(data)
        response = read_response(sock)
        assert closed_by_peer(sock)
    assert response.status in (400, 413, 414, 431), response.body
    assert "not valid HTTP/1.1" in assert_openai_error(
        response, response.status, "bad_http_request"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert upstream_requests(stack) == 0

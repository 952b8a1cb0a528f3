"""Keys, limits and budgets on one sidecar, attacked: what a hostile client or a bad day does.

The real proxy on loopback sockets in front of simulators (the SQLite store):

- every endpoint that reaches a model passes admission: ``/v1/embeddings`` and
  ``/v1/responses`` are held to a key's routes and limits as chat is, and counted in its usage;
- a burst of concurrent requests against an RPM admits exactly the limit;
- a request that can never fit a limit (its reservation above the whole TPM or budget) is told
  so, once, rather than sent round a 429 loop;
- a request whose every candidate failed gives its budget reservation back, and a client that
  leaves mid-stream does not hold its reservation;
- hostile key headers (non-UTF-8 bytes, huge, two disagreeing headers) are refused in the
  client's wire, never a 500, never echoed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeproxy.keys import SqliteStore, make_key
from edgeproxy.limits import LocalCounters
from edgeproxy.sim import SimConfig
from edgeproxy.snapshot import Budget, Limits
from fixtures.reloadkit import wait_until
from harness import Stack

POLICY = """
version: 1
keys: {auth: true, store: "STORE", refresh: 50ms}
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 2s, response: 5s, total: 10s}
providers:
  alpha:
    kind: openai
    api_key: sk-alpha-secret
    regions:
      one: {base_url: "$alpha_one"}
      two: {base_url: "$alpha_two"}
    models:
      m: {price: {input: 100, output: 100}}
      emb: {upstream_name: text-embedding-3-small, dimensions: 16, price: {input: 100, output: 0}}
  claude:
    kind: anthropic
    api_key: sk-claude-secret
    regions:
      main: {base_url: "$claude"}
    models:
      c: {price: {input: 100, output: 100}}
routes:
  m:
    chain: [alpha/one/m, alpha/two/m]
  c:
    chain: [claude/main/c]
  emb:
    chain: [alpha/one/emb]
"""
SIMS = (
    SimConfig(name="alpha_one", ttft=0.0, tokens_per_second=0, default_completion_tokens=5),
    SimConfig(name="alpha_two", ttft=0.0, tokens_per_second=0, default_completion_tokens=5),
    SimConfig(name="claude", ttft=0.0, tokens_per_second=0, default_completion_tokens=5),
)
ASK = [{"role": "user", "content": "hello there"}]
RID = "x-request-id"


class Keys:
    def __init__(self, path: Path) -> None:
        self.store = SqliteStore(path)

    def make(self, name: str, **kwargs: Any) -> str:
        key, record = make_key(name, now=time.time(), **kwargs)
        self.store.create(record)
        return key


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.sqlite")


@pytest.fixture
def start(make_stack: Callable[..., Stack], keys: Keys) -> Callable[..., Stack]:
    def made(sims: tuple[SimConfig, ...] = SIMS) -> Stack:
        return make_stack(POLICY.replace("STORE", str(keys.store.path)), sims)

    return made


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(stack: Stack, key: str, **body: Any) -> httpx.Response:
    payload = {"model": "m", "messages": ASK, "max_tokens": 20, **body}
    return stack.http.post("/v1/chat/completions", json=payload, headers=bearer(key))


def embed(stack: Stack, key: str, model: str = "emb") -> httpx.Response:
    payload = {"model": model, "input": ["alpha", "bravo"]}
    return stack.http.post("/v1/embeddings", json=payload, headers=bearer(key))


def respond(stack: Stack, key: str, **body: Any) -> httpx.Response:
    payload = {"model": "m", "input": "hello there", "max_output_tokens": 20, **body}
    return stack.http.post("/v1/responses", json=payload, headers=bearer(key))


def messages(stack: Stack, key: str, **body: Any) -> httpx.Response:
    payload = {"model": "c", "messages": ASK, "max_tokens": 20, **body}
    return stack.http.post("/v1/messages", json=payload, headers={"x-api-key": key})


def counters(stack: Stack) -> LocalCounters:
    found = stack.proxy.state.limiter.counters
    assert isinstance(found, LocalCounters)
    return found


def reserved(stack: Stack) -> float:
    snap = counters(stack).snapshot()
    return sum(float(b["reserved_usd"]) for b in snap.values())  # type: ignore[index]


def openai_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["request_id"] == response.headers[RID]
    return error


def anthropic_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error" and body["request_id"] == response.headers[RID], body
    error: dict[str, Any] = body["error"]
    return error


# -- every endpoint that reaches a model is admitted -----------------------------------------


def test_embeddings_are_held_to_a_keys_routes_limits_and_usage(
    start: Callable[..., Stack], keys: Keys
) -> None:
    chat_only = keys.make("chat-only", routes=("m",))
    limited = keys.make("embedder", limits=Limits(rpm=2))
    stack = start()
    refused = embed(stack, chat_only)
    assert refused.status_code == 403
    assert openai_error(refused)["code"] == "model_not_allowed"
    assert stack.requests_to("alpha_one") == 0
    assert embed(stack, limited).status_code == 200
    assert embed(stack, limited).status_code == 200
    over = embed(stack, limited)
    assert over.status_code == 429
    assert over.headers["x-edgeproxy-limit"] == "key:rpm" and int(over.headers["Retry-After"]) >= 1
    assert openai_error(over)["code"] == "rate_limit_exceeded"
    assert stack.requests_to("alpha_one") == 2
    writer = stack.proxy.limits.writer
    assert writer is not None
    stack.loop.run(writer.flush())
    rows = [r for r in keys.store.usage(time.time() - 86_400, time.time() + 86_400)]
    mine = [r for r in rows if r.route == "emb"]
    assert sum(r.requests for r in mine) == 2
    assert sum(r.input_tokens for r in mine) > 0 and sum(r.usd for r in mine) > 0


def test_an_embeddings_budget_reserves_and_settles(start: Callable[..., Stack], keys: Keys) -> None:
    key = keys.make("emb-budget", limits=Limits(budget=Budget(1.0, "day")))
    stack = start()
    assert embed(stack, key).status_code == 200
    # Settled after the answer is out (a background task): nothing stays held.
    wait_until(lambda: reserved(stack) == 0.0, 10, "the reservation released")
    spent = sum(float(b["spent_usd"]) for b in counters(stack).snapshot().values())  # type: ignore[index]
    assert spent > 0


def test_the_responses_api_is_held_to_a_keys_limits(
    start: Callable[..., Stack], keys: Keys
) -> None:
    key = keys.make("responses", limits=Limits(rpm=1))
    chat_only = keys.make("c-only", routes=("c",))
    stack = start()
    assert respond(stack, key).status_code == 200
    over = respond(stack, key)
    assert over.status_code == 429 and over.headers["x-edgeproxy-limit"] == "key:rpm"
    assert openai_error(over)["type"] == "rate_limit_error"
    assert respond(stack, chat_only).status_code == 403


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"])
def test_a_bad_key_is_a_401_in_openais_wire_on_every_openai_path(
    start: Callable[..., Stack], keys: Keys, path: str
) -> None:
    revoked = keys.make("gone")
    keys.store.revoke("gone", time.time())
    stack = start()
    for headers in ({}, bearer("epk_" + "Z" * 32), bearer(revoked)):
        response = stack.http.post(path, json={"model": "m", "input": "x"}, headers=headers)
        assert response.status_code == 401, response.text
        error = openai_error(response)
        assert error["code"] == "invalid_api_key"
        assert "epk_" not in response.text
    assert stack.requests_to("alpha_one") == 0


# -- limits under concurrency ----------------------------------------------------------------


async def _burst(url: str, key: str, n: int, path: str = "/v1/chat/completions") -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        calls = [
            client.post(
                path,
                json={"model": "m", "messages": ASK, "max_tokens": 5},
                headers=bearer(key),
            )
            for _ in range(n)
        ]
        return [r.status_code for r in await asyncio.gather(*calls)]


def test_thirty_at_once_against_an_rpm_of_ten_admit_exactly_ten(
    start: Callable[..., Stack], keys: Keys
) -> None:
    key = keys.make("burst", limits=Limits(rpm=10))
    budgeted = keys.make("burst-budget", limits=Limits(rpm=10, budget=Budget(100.0, "day")))
    stack = start()
    for k in (key, budgeted):
        statuses = asyncio.run(_burst(stack.proxy.url, k, 30))
        assert statuses.count(200) == 10 and statuses.count(429) == 20, statuses
    wait_until(lambda: reserved(stack) == 0.0, 10, "the reservations released")


# -- a request that can never fit ------------------------------------------------------------


def test_a_reservation_above_the_whole_tpm_is_refused_once_not_looped(
    start: Callable[..., Stack], keys: Keys
) -> None:
    key = keys.make("small-tpm", limits=Limits(tpm=500))
    stack = start()
    too_big = chat(stack, key, max_tokens=10_000)
    assert too_big.status_code == 400, too_big.text
    error = openai_error(too_big)
    assert error["code"] == "request_exceeds_limit" and error["param"] == "max_tokens"
    assert "500 tokens per minute" in error["message"] and "max_tokens" in error["message"]
    assert "Retry-After" not in too_big.headers
    assert too_big.headers["x-edgeproxy-limit"] == "key:tpm"
    anth = messages(stack, key, max_tokens=10_000)
    assert anth.status_code == 400
    assert anth_error_type(anth) == "invalid_request_error"
    # The refusal took nothing: a request that fits is served at once.
    assert chat(stack, key, max_tokens=100).status_code == 200
    assert stack.requests_to("alpha_one") == 1


def anth_error_type(response: httpx.Response) -> str:
    return str(anthropic_error(response)["type"])


def test_a_worst_case_above_the_whole_budget_is_refused_once(
    start: Callable[..., Stack], keys: Keys
) -> None:
    # 100 USD per million tokens: 10 000 answer tokens can cost 1 USD, the budget is 0.5.
    key = keys.make("small-budget", limits=Limits(budget=Budget(0.5, "day")))
    stack = start()
    too_big = chat(stack, key, max_tokens=10_000)
    assert too_big.status_code == 400, too_big.text
    assert openai_error(too_big)["code"] == "request_exceeds_limit"
    assert too_big.headers["x-edgeproxy-limit"] == "key:budget"
    assert chat(stack, key, max_tokens=100).status_code == 200


# -- reservations are given back -------------------------------------------------------------


def test_a_request_every_candidate_failed_gives_its_budget_back(
    start: Callable[..., Stack], keys: Keys
) -> None:
    key = keys.make("failing", limits=Limits(budget=Budget(0.05, "day")))
    stack = start()
    stack.fault("alpha_one", mode="status", status=500)
    stack.fault("alpha_two", mode="status", status=500)
    # Each reserves ~0.002 USD (20 answer tokens at 100/M); 0.05 would run out in 25 if the
    # failures kept their reservations or were billed.
    for _ in range(40):
        assert chat(stack, key).status_code >= 500
    wait_until(lambda: reserved(stack) == 0.0, 10, "the reservations released")
    # The key's budget is whole: another route (its breakers closed) serves it at once.
    served = messages(stack, key)
    assert served.status_code == 200, served.text


def test_a_client_that_leaves_mid_stream_does_not_hold_its_reservation(
    start: Callable[..., Stack], keys: Keys
) -> None:
    slow = (
        SimConfig(name="alpha_one", ttft=0.0, tokens_per_second=20, default_completion_tokens=400),
        *SIMS[1:],
    )
    key = keys.make("leaver", limits=Limits(tpm=5000, budget=Budget(1.0, "day")))
    stack = start(slow)
    url = stack.proxy.url
    with (
        httpx.Client(base_url=url, timeout=10) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "m", "messages": ASK, "max_tokens": 1000, "stream": True},
            headers=bearer(key),
        ) as response,
    ):
        assert response.status_code == 200
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first
        assert reserved(stack) > 0, (first, b"".join(chunks)[-400:], counters(stack).snapshot())
    # The client is gone: the exchange ends and settles what the tokens so far cost.
    wait_until(lambda: reserved(stack) == 0.0, 10, "the reservation released")
    spent = sum(float(b["spent_usd"]) for b in counters(stack).snapshot().values())  # type: ignore[index]
    assert 0 < spent < 1000 * 100 / 1e6  # the tokens streamed, not the whole reservation


# -- hostile key headers ---------------------------------------------------------------------


def _raw_request(url: str, header_lines: list[bytes]) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    head = [
        b"POST /v1/chat/completions HTTP/1.1",
        f"Host: {host}:{port}".encode(),
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        b"Connection: close",
        *header_lines,
    ]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "lines",
    [
        [b"Authorization: Bearer epk_\xff\xfe\x80" + b"A" * 30],
        [b"x-api-key: epk_\xc3\x28\xa0\xa1"],
        [b"Authorization: \xff\xff"],
        [b"Authorization: Bearer " + b"A" * 7000],
        [b"x-api-key: " + b"epk_" + b"B" * 65_536],
    ],
    ids=["bearer-bytes", "x-api-key-bytes", "bare-bytes", "long", "64k"],
)
def test_hostile_key_headers_are_refused_not_crashed_nor_echoed(
    start: Callable[..., Stack], keys: Keys, lines: list[bytes]
) -> None:
    keys.make("someone")
    stack = start()
    raw = _raw_request(stack.proxy.url, lines)
    status = int(raw.split(b" ", 2)[1])
    assert status in (400, 401, 431), raw[:300]
    assert b"epk_" not in raw.split(b"\r\n\r\n", 1)[1]
    assert b"AAAAAAAA" not in raw and b"BBBBBBBB" not in raw
    assert stack.requests_to("alpha_one") == 0
    # The sidecar still serves.
    good = keys.make("good")
    wait_until(lambda: chat(stack, good).status_code == 200, 10, "a good key served")


def test_two_disagreeing_key_headers_use_the_bearer_and_never_both(
    start: Callable[..., Stack], keys: Keys
) -> None:
    mine = keys.make("mine", limits=Limits(rpm=1))
    other = keys.make("other")
    stack = start()
    both = {"Authorization": f"Bearer {mine}", "x-api-key": other}
    payload = {"model": "m", "messages": ASK, "max_tokens": 5}
    assert stack.http.post("/v1/chat/completions", json=payload, headers=both).status_code == 200
    # The bearer's key was the one held to its limit (the other key cannot lift it).
    again = stack.http.post("/v1/chat/completions", json=payload, headers=both)
    assert again.status_code == 429
    wrong = {"Authorization": "Bearer epk_" + "Q" * 32, "x-api-key": other}
    refused = stack.http.post("/v1/chat/completions", json=payload, headers=wrong)
    assert refused.status_code == 401 and "QQQQ" not in refused.text

"""Virtual keys, limits and budgets on one sidecar (the SQLite store), through both wires.

The real proxy on a loopback socket in front of simulators, driven by the official ``openai``
and ``anthropic`` SDKs: key auth (``Authorization: Bearer`` and ``x-api-key``), errors in each
client's wire, a key's routes, RPM exact to the request, TPM reserved then settled on the real
usage, a USD budget that stops within one request of its limit, providers' own limits failing
over before the provider says 429, and the usage rows ``edgeproxy keys usage`` reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from edgeproxy.keys import SqliteStore, make_key
from edgeproxy.sim import SimConfig
from edgeproxy.snapshot import Budget, Limits
from fixtures.reloadkit import wait_until
from harness import Stack

POLICY = """
version: 1
keys: {auth: true, store: "STORE", refresh: 50ms}
teams:
  search: {rpm: 4}
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 2s, response: 3s, total: 10s}
providers:
  alpha:
    kind: openai
    api_key: sk-alpha-secret
    regions:
      one: {base_url: "$alpha_one"}
      two: {base_url: "$alpha_two"}
    models:
      m:
        price: {input: 100, output: 100}
        limits: {rpm: PROVIDER_RPM}
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
    limits: ROUTE_LIMITS
  c:
    chain: [claude/main/c]
"""
SIMS = (
    SimConfig(name="alpha_one", ttft=0.0, tokens_per_second=0, default_completion_tokens=5),
    SimConfig(name="alpha_two", ttft=0.0, tokens_per_second=0, default_completion_tokens=5),
    SimConfig(name="claude", ttft=0.0, tokens_per_second=0, default_completion_tokens=5),
)
ASK = [{"role": "user", "content": "hello there"}]


class Keys:
    """Keys made in the store before (or while) the proxy runs."""

    def __init__(self, path: Path) -> None:
        self.store = SqliteStore(path)

    def make(self, name: str, rpm: int | None = None, tpm: int | None = None, **kwargs: Any) -> str:
        if rpm is not None or tpm is not None:
            kwargs["limits"] = Limits(rpm=rpm, tpm=tpm)
        key, record = make_key(name, now=time.time(), **kwargs)
        self.store.create(record)
        return key


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.sqlite")


@pytest.fixture
def proxy(make_stack: Callable[..., Stack], keys: Keys) -> Callable[..., Stack]:
    def start(route_limits: str = "{}", provider_rpm: int = 1000) -> Stack:
        policy = (
            POLICY.replace("STORE", str(keys.store.path))
            .replace("ROUTE_LIMITS", route_limits)
            .replace("PROVIDER_RPM", str(provider_rpm))
        )
        return make_stack(policy, SIMS)

    return start


def oai(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=10)


def claude(stack: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.proxy.url, api_key=key, max_retries=0, timeout=10)


def ask_openai(stack: Stack, key: str, **kwargs: Any) -> Any:
    return oai(stack, key).chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "m"), messages=ASK, **kwargs
    )


def ask_anthropic(stack: Stack, key: str, model: str = "c", max_tokens: int = 20) -> Any:
    return claude(stack, key).messages.with_raw_response.create(
        model=model, max_tokens=max_tokens, messages=ASK
    )


# -- auth ---------------------------------------------------------------------------------


def test_a_valid_key_is_served_on_both_wires(proxy: Callable[..., Stack], keys: Keys) -> None:
    key = keys.make("app")
    stack = proxy()
    assert ask_openai(stack, key).parse().choices[0].message.content
    assert ask_anthropic(stack, key).parse().content[0].text


@pytest.mark.parametrize(
    "given",
    [
        "",  # none at all
        "sk-client-not-a-virtual-key",
        "epk_" + "A" * 32,  # the shape, not a key
        "epk_\u00e9\u00e9\u00e9" + "x" * 40,  # not ASCII
        "epk_" + "B" * 8000,  # long
    ],
)
def test_a_missing_or_wrong_key_is_a_401_in_each_wire(
    proxy: Callable[..., Stack], keys: Keys, given: str
) -> None:
    keys.make("app")
    stack = proxy()
    # Raw UTF-8 bytes in the header (an SDK would refuse to send them; a hostile client may).
    headers = {"Authorization": f"Bearer {given}".encode()} if given else {}
    raw = stack.http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": ASK},
        headers={**headers, "x-request-id": b"req-auth-1"},
    )
    assert raw.status_code == 401
    body = raw.json()["error"]
    assert body["code"] == "invalid_api_key" and body["request_id"] == "req-auth-1"
    assert not given or given[:40] not in raw.text  # what was sent is never echoed
    msg = stack.http.post(
        "/v1/messages",
        json={"model": "c", "max_tokens": 5, "messages": ASK},
        headers={"x-api-key": given.encode()} if given else {},
    )
    assert msg.status_code == 401
    assert msg.json()["type"] == "error"
    assert msg.json()["error"]["type"] == "authentication_error"


def test_the_sdks_raise_their_authentication_error(proxy: Callable[..., Stack], keys: Keys) -> None:
    keys.make("app")
    stack = proxy()
    with pytest.raises(openai.AuthenticationError) as oerr:
        ask_openai(stack, "epk_wrongwrongwrongwrongwrongwrong")
    assert oerr.value.status_code == 401
    assert "epk_wrong" not in str(oerr.value)
    with pytest.raises(anthropic.AuthenticationError) as aerr:
        ask_anthropic(stack, "epk_wrongwrongwrongwrongwrongwrong")
    assert "epk_wrong" not in str(aerr.value)


def test_revoked_and_expired_keys_stop_working(proxy: Callable[..., Stack], keys: Keys) -> None:
    live = keys.make("live")
    expired = keys.make("old", expires=time.time() - 1)
    stack = proxy()
    with pytest.raises(openai.AuthenticationError, match="expired"):
        ask_openai(stack, expired)
    assert ask_openai(stack, live).status_code == 200
    keys.store.revoke("live", time.time())

    def refused() -> bool:
        try:
            ask_openai(stack, live)
        except openai.AuthenticationError as exc:
            return "revoked" in str(exc)
        return False

    wait_until(refused, 10, "the revocation to reach the sidecar")


def test_a_key_may_be_held_to_its_routes(proxy: Callable[..., Stack], keys: Keys) -> None:
    key = keys.make("only-m", routes=("m",))
    stack = proxy()
    assert ask_openai(stack, key).status_code == 200
    with pytest.raises(openai.PermissionDeniedError):
        ask_openai(stack, key, model="c")
    with pytest.raises(anthropic.PermissionDeniedError):
        ask_anthropic(stack, key, model="c")


def test_a_key_is_never_logged(
    proxy: Callable[..., Stack], keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    key = keys.make("logged", team="search")
    stack = proxy()
    with caplog.at_level("INFO"):
        ask_openai(stack, key)
        with pytest.raises(openai.AuthenticationError):
            ask_openai(stack, key + "x")
        stack.loop.run(_flush(stack))
    lines = [r for r in caplog.records if r.name == "edgeproxy.access"]
    assert any(
        getattr(r, "key", None) == "logged" and getattr(r, "team", None) == "search" for r in lines
    )
    assert key not in caplog.text and key[4:] not in caplog.text


async def _flush(stack: Stack) -> None:
    stack.proxy.state.telemetry.access_log.flush()


# -- limits -------------------------------------------------------------------------------


def _refusal(exc: openai.RateLimitError | anthropic.RateLimitError) -> tuple[str, int]:
    headers = exc.response.headers
    return headers["x-edgeproxy-limit"], int(headers["Retry-After"])


def test_rpm_is_exact_across_both_wires(proxy: Callable[..., Stack], keys: Keys) -> None:
    key = keys.make("rpm3", rpm=3)
    stack = proxy()
    assert ask_openai(stack, key).status_code == 200
    assert ask_anthropic(stack, key).status_code == 200
    assert ask_openai(stack, key).status_code == 200
    with pytest.raises(anthropic.RateLimitError) as aerr:
        ask_anthropic(stack, key)
    limit, retry_after = _refusal(aerr.value)
    assert limit == "key:rpm" and 1 <= retry_after <= 60
    assert aerr.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(openai.RateLimitError) as oerr:
        ask_openai(stack, key)
    assert _refusal(oerr.value)[0] == "key:rpm"
    assert "3 requests per minute" in str(oerr.value)
    # Another key is not held by this one's limit; the team's limit holds all its keys.
    other = keys.make("other", team="search")  # the sidecar sees it within keys.refresh
    wait_until(lambda: _served(stack, other), 10, "the new key")
    served = 1 + sum(_served(stack, other) for _ in range(5))
    assert served == 4  # teams.search.rpm


def _served(stack: Stack, key: str) -> bool:
    try:
        ask_openai(stack, key)
    except (openai.RateLimitError, openai.AuthenticationError):
        return False
    return True


def test_tpm_reserves_max_tokens_and_settles_on_the_real_usage(
    proxy: Callable[..., Stack], keys: Keys
) -> None:
    key = keys.make("tpm", tpm=1000)
    stack = proxy()
    # Each reserves its prompt and 900 answer tokens; the answers use ~5, the rest comes back.
    for _ in range(3):
        assert ask_openai(stack, key, max_tokens=900).status_code == 200
    # Prompt + 1000 is more than the whole of 1000: no wait would admit it, so a 400 that
    # says what to lower rather than a 429 an SDK would retry forever.
    with pytest.raises(openai.BadRequestError) as err:
        ask_openai(stack, key, max_tokens=1000)
    assert err.value.response.headers["x-edgeproxy-limit"] == "key:tpm"
    assert err.value.code == "request_exceeds_limit"


def test_a_budget_stops_within_one_request_of_its_limit(
    proxy: Callable[..., Stack], keys: Keys
) -> None:
    budget = 0.02
    key = keys.make("budget", limits=Limits(budget=Budget(budget, "day")))
    stack = proxy()
    spent, served = 0.0, 0
    with pytest.raises(anthropic.RateLimitError) as err:
        for i in range(200):
            if i % 2:
                response = ask_anthropic(stack, key, max_tokens=20)
            else:
                response = ask_openai(stack, key, max_tokens=20)
            spent += float(response.headers.get("x-edgeproxy-cost-usd", 0) or 0)
            served += 1
    assert _refusal(err.value)[0] == "key:budget"
    worst = (len("hello there") + 20 + 10) * 100 / 1e6  # a request's reserve, generously
    assert served >= 5
    assert spent <= budget + 1e-9
    assert spent + worst > budget  # refused with less than one request's worth left
    # The spend is in the store: a restarted sidecar would start from it.
    writer = stack.proxy.limits.writer
    assert writer is not None
    stack.loop.run(writer.flush())
    rows = keys.store.usage(time.time() - 86_400, time.time() + 86_400)
    assert sum(r.usd for r in rows if r.key_id) == pytest.approx(spent, rel=1e-6)
    assert sum(r.requests for r in rows if r.key_id) == served


def test_the_spend_survives_a_restart(proxy: Callable[..., Stack], keys: Keys) -> None:
    key = keys.make("restart", limits=Limits(budget=Budget(0.004, "day")))
    first = proxy()
    served = 0
    while served < 50:
        try:
            ask_openai(first, key, max_tokens=5)
        except openai.RateLimitError:
            break
        served += 1
    assert 0 < served < 50
    first.loop.run(first.proxy.stop())  # a clean stop writes the usage rows
    second = proxy()
    with pytest.raises(openai.RateLimitError):
        ask_openai(second, key, max_tokens=5)


def test_a_route_budget_holds_every_key(proxy: Callable[..., Stack], keys: Keys) -> None:
    a, b = keys.make("a"), keys.make("b")
    stack = proxy(route_limits="{rpm: 2}")
    assert ask_openai(stack, a).status_code == 200
    assert ask_openai(stack, b).status_code == 200
    with pytest.raises(openai.RateLimitError) as err:
        ask_openai(stack, a)
    assert _refusal(err.value)[0] == "route:rpm"
    assert ask_anthropic(stack, a).status_code == 200  # route c has no limit


def test_a_provider_limit_fails_over_before_the_provider_says_429(
    proxy: Callable[..., Stack], keys: Keys
) -> None:
    key = keys.make("p")
    stack = proxy(provider_rpm=2)
    served_by = [ask_openai(stack, key).headers["x-edgeproxy-region"] for _ in range(4)]
    assert served_by == ["one", "one", "two", "two"]
    assert stack.requests_to("alpha_one") == 2
    # Both regions at their limit: a 429 naming the provider limit, with a Retry-After.
    response = httpx.post(
        f"{stack.proxy.url}/v1/chat/completions",
        json={"model": "m", "messages": ASK},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "provider_limit"
    assert int(response.headers["Retry-After"]) >= 1
    assert "alpha/one/m" in response.json()["error"]["message"]
    assert stack.requests_to("alpha_one") == 2 and stack.requests_to("alpha_two") == 2


def test_a_request_above_every_candidates_provider_tpm_is_a_400_not_an_endless_429(
    make_stack: Callable[..., Stack], keys: Keys
) -> None:
    key = keys.make("p-tpm")
    policy = (
        POLICY.replace("STORE", str(keys.store.path))
        .replace("ROUTE_LIMITS", "{}")
        .replace("limits: {rpm: PROVIDER_RPM}", "limits: {tpm: 500}")
    )
    stack = make_stack(policy, SIMS)
    # Under the limit: served. Above the whole of it on both regions: a 400 in each wire that
    # says what to lower, no Retry-After, and no upstream ever asked.
    assert ask_openai(stack, key, max_tokens=20).status_code == 200
    before = stack.requests_to("alpha_one") + stack.requests_to("alpha_two")
    with pytest.raises(openai.BadRequestError) as err:
        ask_openai(stack, key, max_tokens=1000)
    response = err.value.response
    assert response.json()["error"]["code"] == "request_exceeds_limit"
    assert "provider tpm 500 is less than this request's" in response.json()["error"]["message"]
    assert response.headers["x-edgeproxy-limit"] == "provider:tpm"
    assert "Retry-After" not in response.headers and response.headers["x-request-id"]
    with pytest.raises(anthropic.BadRequestError) as aerr:
        claude(stack, key).messages.create(model="m", max_tokens=1000, messages=ASK)
    assert aerr.value.response.json()["error"]["type"] == "invalid_request_error"
    assert stack.requests_to("alpha_one") + stack.requests_to("alpha_two") == before


def test_cached_answers_take_no_limit(make_stack: Callable[..., Stack], keys: Keys) -> None:
    key = keys.make("cached", rpm=1)
    policy = POLICY.replace("STORE", str(keys.store.path)).replace("ROUTE_LIMITS", "{}")
    policy = policy.replace("PROVIDER_RPM", "1000").replace(
        "    chain: [alpha/one/m, alpha/two/m]\n",
        "    chain: [alpha/one/m, alpha/two/m]\n    cache: {ttl: 1m}\n",
    )
    stack = make_stack(policy, SIMS)
    first = ask_openai(stack, key, temperature=0)
    again = ask_openai(stack, key, temperature=0)
    assert first.headers["x-edgeproxy-cache"] == "miss"
    assert again.headers["x-edgeproxy-cache"] == "hit"
    with pytest.raises(openai.RateLimitError):
        ask_openai(stack, key, temperature=0.5)  # not cacheable: its own call, over the rpm

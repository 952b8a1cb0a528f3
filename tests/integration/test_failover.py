"""Before the first byte reaches the client, any failed candidate is replaced by the next one.

Each test breaks the primary (``alpha_one``) through the simulator's control API and checks, with
the OpenAI SDK as the client, who served the answer and how many attempts it took.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import openai
import pytest
from aiohttp import web

from harness import THREE_WAY, THREE_WAY_SIMS, LoopThread, Stack

MESSAGES = [{"role": "user", "content": "Summarise the incident."}]


def _served(stack: Stack, *, stream: bool) -> tuple[str, str, str]:
    client = stack.client()
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="m", messages=MESSAGES, stream=True
        ) as response:
            chunks = list(response.parse())
            headers = response.headers
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        text = raw.parse().choices[0].message.content or ""
        headers = raw.headers
    assert text, "the answer must not be empty"
    return (
        headers["x-edgeproxy-region"],
        headers["x-edgeproxy-attempts"],
        headers["x-edgeproxy-provider"],
    )


FAULTS = {
    "refused": {"mode": "refuse"},
    "reset": {"mode": "reset"},
    "503": {"mode": "status", "status": 503},
    "500": {"mode": "status", "status": 500},
    "502": {"mode": "status", "status": 502},
    "429+retry-after": {"mode": "status", "status": 429, "retry_after": 2},
    "cut before the first event": {"mode": "cut", "after_tokens": 0},
    "malformed first event": {"mode": "malformed", "after_tokens": 0},
}


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_failover_to_the_next_region(stack: Stack, fault: str, stream: bool) -> None:
    spec = FAULTS[fault]
    if not stream and spec["mode"] in ("cut", "malformed"):
        spec = {**spec, "after_tokens": 0}
    stack.fault("alpha_one", **spec)
    region, attempts, provider = _served(stack, stream=stream)
    assert (provider, region, attempts) == ("alpha", "two", "2")
    assert stack.requests_to("beta") == 0


def test_failover_across_providers_when_a_whole_provider_is_down(stack: Stack) -> None:
    stack.fault("alpha_one", mode="status", status=503)
    stack.fault("alpha_two", mode="refuse")
    region, attempts, provider = _served(stack, stream=True)
    assert (provider, region, attempts) == ("beta", "main", "3")


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_hang_fails_over_at_the_timeout(stack: Stack, stream: bool) -> None:
    # first_token is 1s (stream) and response is 2s (non-stream) in the test policy.
    stack.fault("alpha_one", mode="hang")
    region, attempts, _ = _served(stack, stream=stream)
    assert (region, attempts) == ("two", "2")


def test_slow_first_token_fails_over(stack: Stack) -> None:
    stack.fault("alpha_one", mode="slow_first_token", ttft=5)
    region, attempts, _ = _served(stack, stream=True)
    assert (region, attempts) == ("two", "2")


# 401/403/404 are the proxy's key or the policy's model, not the request: they fail over
# (tests/integration/test_misconfigured_upstream.py).
@pytest.mark.parametrize("status", [400, 413, 422])
def test_client_errors_are_returned_as_is_without_failover(stack: Stack, status: int) -> None:
    stack.fault("alpha_one", mode="status", status=status)
    with pytest.raises(openai.APIStatusError) as info:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == status
    assert info.value.response.headers["x-edgeproxy-attempts"] == "1"
    assert info.value.response.headers["x-request-id"]
    assert stack.requests_to("alpha_two") == 0
    assert stack.requests_to("beta") == 0


def test_all_candidates_down_gives_one_clear_502(stack: Stack) -> None:
    for sim in ("alpha_one", "alpha_two", "beta"):
        stack.fault(sim, mode="status", status=503)
    with pytest.raises(openai.InternalServerError) as info:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    response = info.value.response
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-edgeproxy-attempts"] == "3"
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert error["request_id"] == response.headers["x-request-id"]
    for key in ("alpha/one/m", "alpha/two/m", "beta/main/m-small"):
        assert key in error["message"]
    assert "sk-alpha-secret" not in response.text and "sk-beta-secret" not in response.text


def test_all_rate_limited_gives_429_with_retry_after(stack: Stack) -> None:
    for sim, wait in (("alpha_one", 7), ("alpha_two", 3), ("beta", 5)):
        stack.fault(sim, mode="status", status=429, retry_after=wait)
    with pytest.raises(openai.RateLimitError) as info:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "3"


def test_max_attempts_caps_the_chain(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(
        THREE_WAY.replace("    aliases: [default]", "    aliases: [default]\n    max_attempts: 2"),
        THREE_WAY_SIMS,
    )
    stack.fault("alpha_one", mode="status", status=503)
    stack.fault("alpha_two", mode="status", status=503)
    with pytest.raises(openai.InternalServerError) as info:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.response.headers["x-edgeproxy-attempts"] == "2"
    assert stack.requests_to("beta") == 0


def test_when_every_attempt_timed_out_the_client_gets_a_504(make_stack) -> None:  # type: ignore[no-untyped-def]
    # A hung upstream on a real socket is cut at the attempt's first_token limit (1s); with
    # 0.5s left of total, less than min_attempt_time (1s), no other attempt starts. (How the
    # loop shares one deadline across attempts is tested on a fake clock in
    # tests/unit/test_attempt_loop.py.)
    stack = make_stack(THREE_WAY.replace("total: 10s", "total: 1500ms"), THREE_WAY_SIMS)
    stack.fault("alpha_one", mode="hang")
    with pytest.raises(openai.APIStatusError) as info:
        list(stack.client().chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert info.value.status_code == 504
    assert info.value.response.json()["error"]["code"] == "upstream_timeout"
    assert info.value.response.headers["x-edgeproxy-attempts"] == "1"
    assert "deadline" in info.value.response.json()["error"]["message"]
    assert stack.requests_to("alpha_two") == 0


def test_traffic_returns_when_the_primary_heals(stack: Stack) -> None:
    stack.fault("alpha_one", mode="refuse")
    assert _served(stack, stream=False)[0] == "two"
    stack.heal("alpha_one")
    assert _served(stack, stream=False)[:2] == ("one", "1")


# -- what the simulator will not send: answers from a scripted upstream ------------------------

COMPLETION = {
    "id": "chatcmpl-x",
    "object": "chat.completion",
    "created": 0,
    "model": "upstream-m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class ScriptedUpstream:
    """An OpenAI-wire upstream on loopback that answers each chat request with what ``answer``
    builds (statuses and headers a hostile or broken upstream sends; the simulator refuses to)."""

    def __init__(self, answer: Callable[[], web.StreamResponse]) -> None:
        self.answer = answer
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def chat(request: web.Request) -> web.StreamResponse:
            await request.read()
            self.requests += 1
            return self.answer()

        async def models(request: web.Request) -> web.Response:
            return web.json_response({"object": "list", "data": []})

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/models", models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
def scripted(loop_thread: LoopThread) -> Iterator[Callable[..., ScriptedUpstream]]:
    started: list[ScriptedUpstream] = []

    def make(answer: Callable[[], web.StreamResponse]) -> ScriptedUpstream:
        upstream = ScriptedUpstream(answer)
        loop_thread.run(upstream.start())
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        loop_thread.run(upstream.stop())


def _with_primary(url: str, extra: str = "") -> str:
    """THREE_WAY with alpha_one's base URL replaced by ``url`` (the simulator stays unused)."""
    return THREE_WAY.replace('"$alpha_one"', f'"{url}"').replace(
        "version: 1\n", f"version: 1\nhealth_check: {{enabled: false}}\n{extra}"
    )


REDIRECTS = {
    "302 elsewhere": lambda: web.Response(
        status=302, headers={"Location": "http://attacker.example/v1/chat/completions"}
    ),
    "301 with a JSON error body": lambda: web.json_response(
        {"error": {"type": "invalid_request_error", "message": "moved"}}, status=301
    ),
    "304": lambda: web.Response(status=304),
    "307": lambda: web.Response(status=307, headers={"Location": "/v2/chat/completions"}),
}


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("redirect", list(REDIRECTS), ids=list(REDIRECTS))
def test_an_upstream_redirect_fails_over_and_never_reaches_the_client(
    make_stack: Callable[..., Stack],
    scripted: Callable[..., ScriptedUpstream],
    redirect: str,
    stream: bool,
) -> None:
    upstream = scripted(REDIRECTS[redirect])
    stack = make_stack(_with_primary(upstream.url), THREE_WAY_SIMS)
    region, attempts, provider = _served(stack, stream=stream)
    assert (provider, region, attempts) == ("alpha", "two", "2")
    assert upstream.requests == 1  # asked once, the redirect not followed
    # Breakers count redirects: four more open alpha_one's (five in a row).
    for _ in range(4):
        assert _served(stack, stream=stream)[:2] == ("two", "2")
    assert _served(stack, stream=stream)[:2] == ("two", "1")
    assert upstream.requests == 5


@pytest.mark.parametrize(
    "retry_after", ["1e308", "inf", "nan", "-5", "100000", "Infinity", "5_000", "1" * 320]
)
def test_a_hostile_retry_after_is_ignored_not_a_500_and_not_an_ejection(
    make_stack: Callable[..., Stack],
    scripted: Callable[..., ScriptedUpstream],
    retry_after: str,
) -> None:
    def throttled() -> web.Response:
        return web.json_response(
            {"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded"}},
            status=429,
            headers={"Retry-After": retry_after},
        )

    upstream = scripted(throttled)
    # Alone in its route: the client gets the 429 (nothing to fail over to), without a
    # Retry-After the upstream did not really give.
    single = _with_primary(upstream.url).replace(
        "chain: [alpha/one/m, alpha/two/m, beta/main/m-small]", "chain: [alpha/one/m]"
    )
    stack = make_stack(single, THREE_WAY_SIMS)
    with pytest.raises(openai.RateLimitError) as info:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    assert "retry-after" not in info.value.response.headers
    assert info.value.response.headers["x-request-id"]
    breaker = _breaker(stack, "alpha/one/m")
    assert breaker["state"] == "closed"  # no ejection for a header that means nothing


def test_a_long_retry_after_ejects_for_at_most_max_ejection_time(
    make_stack: Callable[..., Stack], scripted: Callable[..., ScriptedUpstream]
) -> None:
    def throttled() -> web.Response:
        error = {"error": {"code": "rate_limit_exceeded"}}
        return web.json_response(error, status=429, headers={"Retry-After": "86400"})

    upstream = scripted(throttled)
    policy = _with_primary(upstream.url, "outlier_detection: {max_ejection_time: 120s}\n")
    stack = make_stack(policy, THREE_WAY_SIMS)
    assert _served(stack, stream=False)[:2] == ("two", "2")
    breaker = _breaker(stack, "alpha/one/m")
    assert breaker["state"] == "open"
    assert 0 < breaker["reopen_in_seconds"] <= 120  # not a day: capped
    assert _served(stack, stream=False)[:2] == ("two", "1")  # skipped while ejected
    assert upstream.requests == 1


def _breaker(stack: Stack, key: str) -> dict[str, Any]:
    candidates = stack.http.get("/admin/status").json()["candidates"]
    breaker: dict[str, Any] = next(c for c in candidates if c["key"] == key)["breaker"]
    return breaker


# -- whatever goes wrong inside an attempt fails over ------------------------------------------

UNUSABLE_BASE_URLS = [
    "http://sk-user:sk-secret@127.0.0.1:99999/v1",
    "http://sk-user:sk-secret@[::1/v1",
    "http://sk-user:sk-secret@127.0.0.1/v1/caf\u00e9",
    "http://sk-user:sk-secret@" + "a" * 64 + ".example/v1",
]


def _break_first_candidate(stack: Stack, base_url: str) -> None:
    """Give the route's first candidate ``base_url`` (built here rather than loaded: policy
    loading may refuse such URLs, and this is about what the request path does if one gets
    through)."""
    policy = stack.proxy.state.policy
    route = policy.routes["m"]
    first = replace(route.chain[0], base_url=base_url, chat_url=f"{base_url}/chat/completions")
    broken = replace(route, chain=(first, *route.chain[1:]))
    routes = {name: broken if r is route else r for name, r in policy.routes.items()}
    stack.proxy.state.policy = replace(policy, routes=routes)


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("base_url", UNUSABLE_BASE_URLS, ids=["port", "ipv6", "path", "label"])
def test_a_base_url_no_request_can_go_to_fails_over_to_the_next_candidate(
    make_stack: Callable[..., Stack], base_url: str, stream: bool
) -> None:
    no_probes = THREE_WAY.replace("version: 1\n", "version: 1\nhealth_check: {enabled: false}\n")
    stack = make_stack(no_probes, THREE_WAY_SIMS)
    _break_first_candidate(stack, base_url)
    region, attempts, provider = _served(stack, stream=stream)
    assert (provider, region, attempts) == ("alpha", "two", "2")


def test_an_unexpected_error_inside_an_attempt_fails_over_and_is_logged_without_its_text(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug anywhere in an attempt (here the HTTP client itself, for alpha_one only): that
    # attempt failed; the request is served by the next candidate, not answered with a 500.
    from edgeproxy.upstreams.http1 import Http1Pool

    real = Http1Pool.post
    broken = stack.policy.routes["m"].chain[0].chat_url

    async def post(self: Http1Pool, url: str, *args: Any, **kwargs: Any) -> Any:
        if url == broken:
            raise KeyError("a message quoting sk-alpha-secret")
        return await real(self, url, *args, **kwargs)

    monkeypatch.setattr(Http1Pool, "post", post)
    with caplog.at_level(logging.INFO):
        for stream in (False, True):
            region, attempts, _ = _served(stack, stream=stream)
            assert (region, attempts) == ("two", "2")
    unexpected = [r for r in caplog.records if r.getMessage().startswith("attempt failed with")]
    assert len(unexpected) == 2  # once per failed attempt
    assert all(getattr(r, "error", None) == "KeyError" for r in unexpected)
    assert "sk-alpha-secret" not in caplog.text


def test_every_request_an_upstream_sees_is_an_attempt(stack: Stack) -> None:
    # A keep-alive connection to alpha_one is in the pool; alpha_one then reads the next
    # request on it and resets the connection. The request was written: the loss is an
    # attempt the proxy counts and fails over, never a silent second POST to alpha_one.
    assert _served(stack, stream=False)[:2] == ("one", "1")
    stack.fault("alpha_one", mode="reset", count=1)
    region, attempts, _ = _served(stack, stream=False)
    assert (region, attempts) == ("two", "2")
    seen = sum(stack.requests_to(s) for s in ("alpha_one", "alpha_two", "beta"))
    assert seen == 1 + 2  # every request an upstream saw is one of the three attempts
    assert stack.requests_to("alpha_one") == 2

"""The resilience engine on the live path: breakers, quota ejection, context length, retries."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from edgeproxy import tokens
from harness import THREE_WAY, THREE_WAY_SIMS, Stack

MESSAGES = [{"role": "user", "content": "Status report."}]


def _ask(stack: Stack) -> tuple[str, str]:
    raw = stack.client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-edgeproxy-region"], raw.headers["x-edgeproxy-attempts"]


def test_an_open_breaker_skips_its_candidate_without_a_network_call(stack: Stack) -> None:
    stack.fault("alpha_one", mode="status", status=503)
    # Five consecutive failures (the default) open alpha_one's breaker; each request still
    # succeeds on alpha_two.
    for _ in range(5):
        assert _ask(stack) == ("two", "2")
    assert stack.requests_to("alpha_one") == 5
    assert _ask(stack) == ("two", "1")
    assert stack.requests_to("alpha_one") == 5  # skipped: no sixth call


def test_every_breaker_open_fails_fast_with_503_and_retry_after(stack: Stack) -> None:
    # Refused connections: the health probes see the outage too, so none of them moves a breaker
    # to half-open while the test runs (a /models probe cannot see a chat-only 503).
    for sim in ("alpha_one", "alpha_two", "beta"):
        stack.fault(sim, mode="refuse")
    for _ in range(5):
        with pytest.raises(openai.APIStatusError):
            stack.client().chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.APIStatusError) as info:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    response = info.value.response
    assert response.status_code == 503
    assert response.headers["x-edgeproxy-attempts"] == "0"
    assert int(response.headers["retry-after"]) >= 1
    assert "circuit breaker is open" in response.json()["error"]["message"]


def test_quota_exhausted_is_ejected_at_once(stack: Stack) -> None:
    stack.fault("alpha_one", mode="status", status=429, error_code="insufficient_quota")
    assert _ask(stack) == ("two", "2")
    assert _ask(stack) == ("two", "1")  # ejected after one quota error, not five
    assert stack.requests_to("alpha_one") == 1


def test_context_length_goes_to_a_larger_window_with_one_primary_attempt(
    make_stack: Callable[..., Stack],
) -> None:
    policy = THREE_WAY.replace(
        "m: {upstream_name: upstream-m}", "m: {upstream_name: upstream-m, context_window: 8000}"
    ).replace("m-small: {}", "m-small: {context_window: 128000}")
    stack = make_stack(policy, THREE_WAY_SIMS)
    for sim in ("alpha_one", "alpha_two"):
        stack.fault(sim, mode="status", status=400, error_code="context_length_exceeded")
    raw = stack.client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    # alpha_two has the same 8k window as alpha_one: it is not tried.
    assert (raw.headers["x-edgeproxy-provider"], raw.headers["x-edgeproxy-attempts"]) == (
        "beta",
        "2",
    )
    assert stack.requests_to("alpha_one") == 1
    assert stack.requests_to("alpha_two") == 0


def test_context_length_with_no_larger_window_returns_the_upstream_error(stack: Stack) -> None:
    stack.fault("alpha_one", mode="status", status=400, error_code="context_length_exceeded")
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.code == "context_length_exceeded"
    assert stack.requests_to("alpha_two") == 0


def test_last_candidate_is_retried_after_retry_after(make_stack: Callable[..., Stack]) -> None:
    single = THREE_WAY.replace(
        "chain: [alpha/one/m, alpha/two/m, beta/main/m-small]", "chain: [alpha/one/m]"
    )
    from edgeproxy.clock import FakeClock

    # The backoff waits on the proxy's clock: a fake one, so the test does not sleep.
    clock = FakeClock()
    single = single.replace("version: 1\n", "version: 1\nhealth_check: {enabled: false}\n")
    stack = make_stack(single, THREE_WAY_SIMS, clock=clock)
    started = clock.monotonic()
    # One 429 with Retry-After: 1, then healthy: the proxy waits it out and succeeds.
    stack.fault("alpha_one", mode="status", status=429, retry_after=1, count=1)
    assert _ask(stack) == ("one", "2")
    assert stack.requests_to("alpha_one") == 2
    assert clock.monotonic() - started >= 1.0  # Retry-After was the floor of the wait


def test_retry_after_keeps_other_requests_away_while_failing_over(stack: Stack) -> None:
    stack.fault("alpha_one", mode="status", status=429, retry_after=30)
    assert _ask(stack) == ("two", "2")
    assert _ask(stack) == ("two", "1")  # alpha_one said "not for 30 s": skipped
    assert stack.requests_to("alpha_one") == 1


def test_failures_after_the_commit_count_against_the_breaker(
    make_stack: Callable[..., Stack],
) -> None:
    from edgeproxy.sim import SimConfig

    sims = [
        SimConfig(name=n, ttft=0.0, tokens_per_second=200)
        for n in ("alpha_one", "alpha_two", "beta")
    ]
    policy = THREE_WAY.replace("api_key: sk-alpha-secret", "").replace(
        "api_key: sk-beta-secret", ""
    )
    stack = make_stack(policy, sims)
    stack.fault("alpha_one", mode="cut", after_tokens=3)
    client = stack.client()
    for _ in range(5):
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    # Five cut streams opened alpha_one's breaker: the next request never reaches it.
    assert _ask(stack) == ("two", "1")
    assert stack.requests_to("alpha_one") == 5


def test_admin_status_shows_breakers_probes_and_recent_errors(stack: Stack) -> None:
    stack.fault("alpha_one", mode="status", status=503)
    for _ in range(5):
        _ask(stack)
    status = stack.http.get("/admin/status").json()
    assert status["policy"]["version"] == stack.policy.version
    by_key = {c["key"]: c for c in status["candidates"]}
    assert by_key["alpha/one/m"]["breaker"]["state"] == "open"
    assert by_key["alpha/two/m"]["breaker"]["state"] == "closed"
    assert by_key["alpha/one/m"]["probe"]["url"].endswith("/v1/models")
    assert by_key["alpha/one/m"]["recent"]["errors"] >= 5
    assert "retry_budget" in status["resilience"]
    assert "sk-alpha-secret" not in stack.http.get("/admin/status").text


CONTEXT = THREE_WAY.replace(
    "m: {upstream_name: upstream-m}", "m: {upstream_name: upstream-m, context_window: 300}"
).replace("m-small: {}", "m-small: {context_window: 100000}")


def test_candidates_whose_window_cannot_hold_the_prompt_are_skipped(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(CONTEXT, THREE_WAY_SIMS)
    long = [{"role": "user", "content": "word " * 400}]  # ~400 tokens: more than alpha's 300
    raw = stack.client().chat.completions.with_raw_response.create(model="m", messages=long)
    assert raw.headers["x-edgeproxy-provider"] == "beta"
    assert raw.headers["x-edgeproxy-attempts"] == "1"
    assert (
        raw.headers["x-edgeproxy-skipped"]
        == "alpha/one/m=context_window, alpha/two/m=context_window"
    )
    assert stack.requests_to("alpha_one") == stack.requests_to("alpha_two") == 0
    # A short prompt fits alpha's window, but not with max_tokens 500 on top.
    short = [{"role": "user", "content": "hi"}]
    assert (
        stack.client()
        .chat.completions.with_raw_response.create(model="m", messages=short)
        .headers["x-edgeproxy-provider"]
        == "alpha"
    )
    raw = stack.client().chat.completions.with_raw_response.create(
        model="m", messages=short, max_tokens=500
    )
    assert raw.headers["x-edgeproxy-provider"] == "beta"


def test_a_large_prompt_is_counted_off_the_loop_and_routed_by_its_tokens(
    make_stack: Callable[..., Stack],
) -> None:
    # ~80 KB: over tokens.OFF_LOOP_BYTES, so the prompt is counted in a worker thread; its
    # ~16,000 tokens fit neither alpha's 300 nor a 12,000 window, but fit beta's 100,000.
    policy = CONTEXT.replace("context_window: 300", "context_window: 12000")
    stack = make_stack(policy, THREE_WAY_SIMS)
    big = [{"role": "user", "content": "word " * 16_000}]
    # The prompt alone is over the threshold, so the request body that carries it is too.
    assert len(big[0]["content"].encode()) >= tokens.OFF_LOOP_BYTES
    raw = stack.client().chat.completions.with_raw_response.create(model="m", messages=big)
    assert raw.headers["x-edgeproxy-provider"] == "beta"
    assert "alpha/one/m=context_window" in raw.headers["x-edgeproxy-skipped"]
    assert stack.requests_to("alpha_one") == stack.requests_to("alpha_two") == 0


def test_a_prompt_no_window_can_hold_is_refused_before_any_attempt(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(
        CONTEXT.replace("context_window: 100000", "context_window: 200"), THREE_WAY_SIMS
    )
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "word " * 400}]
        )
    assert info.value.code == "context_length_exceeded"
    assert "context window 300 < prompt" in info.value.message
    assert sum(stack.requests_to(s) for s in ("alpha_one", "alpha_two", "beta")) == 0


def test_load_shedding_answers_503_with_retry_after(make_stack: Callable[..., Stack]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from edgeproxy.sim import SimConfig

    policy = THREE_WAY.replace(
        "version: 1\n", "version: 1\nlimits: {max_in_flight: 1, max_queued: 0}\n"
    )
    slow = [
        SimConfig(name=n, ttft=0.6, tokens_per_second=0) for n in ("alpha_one", "alpha_two", "beta")
    ]
    stack = make_stack(
        policy.replace("api_key: sk-alpha-secret", "").replace("api_key: sk-beta-secret", ""), slow
    )
    body = {"model": "m", "messages": MESSAGES}
    with ThreadPoolExecutor(3) as pool:
        responses = list(
            pool.map(lambda _: stack.http.post("/v1/chat/completions", json=body), range(3))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 503, 503]
    shed = [r for r in responses if r.status_code == 503]
    assert all(
        r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded" for r in shed
    )
    assert all("x-should-retry" not in r.headers for r in shed)  # the SDK may retry a shed request
    assert stack.requests_to("alpha_one") == 1


def test_traffic_returns_to_the_primary_after_its_ejection(
    make_stack: Callable[..., Stack],
) -> None:
    from edgeproxy.clock import FakeClock

    # The proxy's breakers run on a fake clock: the ejection ends when the test says so.
    clock = FakeClock()
    policy = THREE_WAY.replace(
        "version: 1\n",
        "version: 1\noutlier_detection: {base_ejection_time: 30s}\nhealth_check: {enabled: false}\n",
    )
    stack = make_stack(policy, THREE_WAY_SIMS, clock=clock)
    stack.fault("alpha_one", mode="status", status=503)
    for _ in range(5):
        _ask(stack)
    assert _ask(stack) == ("two", "1")  # ejected
    stack.heal("alpha_one")
    clock.advance(29)
    assert _ask(stack) == ("two", "1")  # still ejected
    clock.advance(1)
    assert _ask(stack) == ("one", "1")  # the half-open trial succeeds and closes the breaker
    assert _ask(stack) == ("one", "1")

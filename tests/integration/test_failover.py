"""Before the first byte reaches the client, any failed candidate is replaced by the next one.

Each test breaks the primary (``alpha_one``) through the simulator's control API and checks, with
the OpenAI SDK as the client, who served the answer and how many attempts it took.
"""

from __future__ import annotations

import openai
import pytest

from harness import Stack

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


@pytest.mark.parametrize("status", [400, 401, 404, 422])
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
    from harness import THREE_WAY, THREE_WAY_SIMS

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


def test_total_deadline_is_shared_by_all_attempts(make_stack) -> None:  # type: ignore[no-untyped-def]
    from harness import THREE_WAY, THREE_WAY_SIMS

    # total 2.5s with a 1s first-token limit: two hangs use 2s, and the 0.5s left is too little
    # to start a third attempt (backoff.min_attempt_time is 1s).
    policy = THREE_WAY.replace("total: 10s", "total: 2500ms")
    stack = make_stack(policy, THREE_WAY_SIMS)
    stack.fault("alpha_one", mode="hang")
    stack.fault("alpha_two", mode="hang")
    with pytest.raises(openai.APIStatusError) as info:
        list(stack.client().chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert info.value.status_code == 504
    assert info.value.response.headers["x-edgeproxy-attempts"] == "2"
    assert "deadline" in info.value.response.json()["error"]["message"]
    assert stack.requests_to("beta") == 0


def test_traffic_returns_when_the_primary_heals(stack: Stack) -> None:
    stack.fault("alpha_one", mode="refuse")
    assert _served(stack, stream=False)[0] == "two"
    stack.heal("alpha_one")
    assert _served(stack, stream=False)[:2] == ("one", "1")

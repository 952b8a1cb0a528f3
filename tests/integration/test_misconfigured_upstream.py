"""An upstream that refuses the proxy's own configuration (its key: 401/403; the policy's model
or base URL: 404) is not the client's error: the request fails over to a healthy fallback, the
candidate is ejected (the next request does not touch it), and when no candidate is left the
client gets a 502 in its own wire naming what the operator must fix, never the key nor the
upstream's words. A 400 the request itself caused still passes through untouched.

Every wire (OpenAI, Anthropic, Gemini) as the failing upstream, both official SDKs as clients,
real sockets; probes are off so that only traffic decides (the probe verdicts are unit-tested).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from edgeproxy.sim import SimConfig
from edgeproxy.telemetry.redact import clear_secrets
from harness import Stack

KEYS = {
    "oai": "sk-oai-misconf-0123456789abcdef",
    "ant": "sk-ant-misconf-0123456789abcdef",
    "gem": "AIzaSyMisconf0123456789abcdefghijklmn",
}
POLICY = f"""
version: 1
health_check: {{enabled: false}}
defaults:
  timeouts: {{connect: 1s, first_token: 3s, idle: 2s, response: 5s, total: 10s}}
providers:
  oai:
    kind: openai
    api_key: {KEYS["oai"]}
    regions: {{one: {{base_url: "$oai_one"}}, two: {{base_url: "$oai_two"}}}}
    models: {{m: {{upstream_name: gpt-upstream}}}}
  ant:
    kind: anthropic
    api_key: {KEYS["ant"]}
    regions: {{one: {{base_url: "$ant_one"}}, two: {{base_url: "$ant_two"}}}}
    models: {{m: {{upstream_name: claude-upstream}}}}
  gem:
    kind: gemini
    api_key: {KEYS["gem"]}
    regions: {{one: {{base_url: "$gem_one"}}, two: {{base_url: "$gem_two"}}}}
    models: {{m: {{upstream_name: gemini-upstream}}}}
routes:
  openai: {{chain: [oai/one/m, oai/two/m]}}
  anthropic: {{chain: [ant/one/m, ant/two/m]}}
  gemini: {{chain: [gem/one/m, gem/two/m]}}
"""
WIRES = ("openai", "anthropic", "gemini")
PROVIDER = {"openai": "oai", "anthropic": "ant", "gemini": "gem"}
MESSAGES = [{"role": "user", "content": "Say something."}]
CLASS = {401: "auth_rejected", 403: "auth_rejected", 404: "model_not_found"}


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    sims = [
        SimConfig(name=f"{p}_{r}", ttft=0.0, tokens_per_second=0, require_api_key=key)
        for p, key in KEYS.items()
        for r in ("one", "two")
    ]
    yield make_stack(POLICY, sims)
    clear_secrets()


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.proxy.url, api_key="sk-ant-client", max_retries=0, timeout=10
    )


def ask(stack: Stack, client: str, route: str) -> tuple[str, httpx.Headers]:
    """One request through an official SDK: the answer's text and the proxy's headers."""
    if client == "openai":
        raw = stack.client().chat.completions.with_raw_response.create(
            model=route,
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        return raw.parse().choices[0].message.content or "", raw.headers
    message = anthropic_client(stack).messages.with_raw_response.create(
        model=route,
        max_tokens=50,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    parsed = message.parse()
    text = "".join(block.text for block in parsed.content if block.type == "text")
    return text, message.headers


def no_key_in(*texts: str) -> None:
    for text in texts:
        for key in KEYS.values():
            assert key not in text


@pytest.mark.parametrize("client", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [401, 403, 404])
@pytest.mark.parametrize("wire", WIRES)
def test_a_refused_primary_fails_over_and_is_ejected(
    stack: Stack, caplog: pytest.LogCaptureFixture, wire: str, status: int, client: str
) -> None:
    caplog.set_level(logging.INFO)
    provider = PROVIDER[wire]
    primary, fallback = f"{provider}_one", f"{provider}_two"
    stack.fault(primary, mode="status", status=status)

    text, headers = ask(stack, client, wire)
    assert text
    assert (headers["x-edgeproxy-region"], headers["x-edgeproxy-attempts"]) == ("two", "2")
    assert stack.requests_to(primary) == 1 and stack.requests_to(fallback) == 1

    # Ejected: the next requests go straight to the fallback, the primary sees none of them.
    for _ in range(2):
        text, headers = ask(stack, client, wire)
        assert text and headers["x-edgeproxy-attempts"] == "1"
    assert stack.requests_to(primary) == 1 and stack.requests_to(fallback) == 3

    # Said once, at ERROR, naming the candidate and what to fix; the attempt carries its class.
    records = caplog.records  # this phase's (a fixture's list would be the setup phase's)
    said = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    expected = (
        f"provider rejected the proxy's key for {provider}/one/m"
        if status != 404
        else f"model not found at {provider}/one/m (retired or renamed?)"
    )
    assert len(said) == 1 and expected in said[0], said
    attempts = [r for r in records if r.name == "edgeproxy.access" and hasattr(r, "failure")]
    assert any(str(getattr(r, "failure", "")).startswith(CLASS[status]) for r in attempts)
    no_key_in(*(f"{r.getMessage()} {vars(r)}" for r in records))


@pytest.mark.parametrize("wire", WIRES)
def test_a_refused_stream_fails_over_before_its_first_byte(stack: Stack, wire: str) -> None:
    primary = f"{PROVIDER[wire]}_one"
    stack.fault(primary, mode="status", status=401)
    with stack.client().chat.completions.with_streaming_response.create(
        model=wire,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    ) as response:
        chunks = list(response.parse())
        assert response.headers["x-edgeproxy-region"] == "two"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _all_refused(stack: Stack, wire: str) -> None:
    for region in ("one", "two"):
        # The upstream quotes the key it was sent, as some do ("Incorrect API key provided").
        stack.fault(f"{PROVIDER[wire]}_{region}", mode="echo_key", status=401, after_tokens=0)


@pytest.mark.parametrize("wire", WIRES)
def test_every_candidate_refusing_the_key_is_a_502_in_the_openai_wire(
    stack: Stack, wire: str
) -> None:
    _all_refused(stack, wire)
    with pytest.raises(openai.InternalServerError) as info:
        stack.client().chat.completions.create(model=wire, messages=MESSAGES)  # type: ignore[arg-type]
    response = info.value.response
    assert response.status_code == 502 and response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["code"] == "upstream_auth_rejected" and error["type"] == "upstream_error"
    assert error["request_id"] == response.headers["x-request-id"]
    provider = PROVIDER[wire]
    assert f"rejected the proxy's credentials for {provider}/two/m" in error["message"]
    assert f"{provider}/one/m" in error["message"]  # every attempt is listed
    # Never the key, never the upstream's own words (they describe the proxy's credentials).
    no_key_in(response.text, str(response.headers))
    for quoted in ("Incorrect API key", "invalid x-api-key", "API key not valid"):
        assert quoted not in response.text


@pytest.mark.parametrize("wire", WIRES)
def test_every_candidate_refusing_the_key_is_a_502_in_the_anthropic_wire(
    stack: Stack, wire: str
) -> None:
    _all_refused(stack, wire)
    with pytest.raises(anthropic.InternalServerError) as info:
        anthropic_client(stack).messages.create(
            model=wire,
            max_tokens=50,
            messages=MESSAGES,  # type: ignore[arg-type]
        )
    response = info.value.response
    assert response.status_code == 502
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "rejected the proxy's credentials" in body["error"]["message"]
    no_key_in(response.text, str(response.headers))
    assert "invalid x-api-key" not in response.text and "Incorrect API key" not in response.text


def test_every_candidate_refusing_the_key_is_a_502_in_the_responses_wire(stack: Stack) -> None:
    _all_refused(stack, "anthropic")
    with pytest.raises(openai.InternalServerError) as info:
        stack.client().responses.create(model="anthropic", input="Say something.")
    response = info.value.response
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_auth_rejected"
    assert "rejected the proxy's credentials for ant/two/m" in error["message"]
    no_key_in(response.text, str(response.headers))


@pytest.mark.parametrize("wire", WIRES)
def test_every_candidate_without_the_model_names_the_retired_model(stack: Stack, wire: str) -> None:
    for region in ("one", "two"):
        stack.fault(f"{PROVIDER[wire]}_{region}", mode="status", status=404)
    with pytest.raises(openai.InternalServerError) as info:
        stack.client().chat.completions.create(model=wire, messages=MESSAGES)  # type: ignore[arg-type]
    error = info.value.response.json()["error"]
    assert error["code"] == "upstream_model_not_found"
    assert f"does not serve the model of {PROVIDER[wire]}/two/m" in error["message"]


@pytest.mark.parametrize("client", ["openai", "anthropic"])
@pytest.mark.parametrize("wire", WIRES)
def test_a_bad_request_still_passes_through_without_failover(
    stack: Stack, wire: str, client: str
) -> None:
    primary, fallback = f"{PROVIDER[wire]}_one", f"{PROVIDER[wire]}_two"
    stack.fault(primary, mode="status", status=400)
    error: Any
    for _ in range(2):  # the request's fault: no ejection, the primary is asked again
        if client == "openai":
            with pytest.raises(openai.BadRequestError) as oinfo:
                stack.client().chat.completions.create(model=wire, messages=MESSAGES)  # type: ignore[arg-type]
            error = oinfo.value
        else:
            with pytest.raises(anthropic.BadRequestError) as ainfo:
                anthropic_client(stack).messages.create(
                    model=wire,
                    max_tokens=50,
                    messages=MESSAGES,  # type: ignore[arg-type]
                )
            error = ainfo.value
        assert error.response.headers["x-edgeproxy-attempts"] == "1"
        assert error.response.headers["x-edgeproxy-region"] == "one"
    assert stack.requests_to(primary) == 2 and stack.requests_to(fallback) == 0


def test_the_metrics_count_the_attempt_by_its_class(stack: Stack) -> None:
    stack.fault("oai_one", mode="status", status=401)
    stack.fault("ant_one", mode="status", status=404)
    for route in ("openai", "anthropic"):
        ask(stack, "openai", route)
    metrics = stack.http.get("/metrics").text
    attempts = [
        line for line in metrics.splitlines() if line.startswith("edgeproxy_attempts_total")
    ]
    for candidate, outcome in (("oai/one/m", "auth_rejected"), ("ant/one/m", "model_not_found")):
        assert any(
            f'candidate="{candidate}"' in line and f'outcome="{outcome}"' in line
            for line in attempts
        ), attempts

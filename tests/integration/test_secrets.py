"""A provider key never reaches a client, a log record or a span, even when an upstream quotes it
back ("Incorrect API key provided: Bearer sk-…"): through both ingresses (OpenAI and Anthropic
SDKs), streamed or not, before the first byte (a 401 the proxy answers 502 for), mid-stream (an in-band error
relayed, or the proxy's own error text quoting an Anthropic upstream's message), and in the
all-failed error that lists every attempt."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edgeproxy.policy import load_policy_text
from edgeproxy.sim import SimConfig
from edgeproxy.telemetry.process import Telemetry
from edgeproxy.telemetry.redact import REDACTED, clear_secrets, redact
from harness import Stack

# Keys with no vendor shape: only their registration at policy load can find them in free text.
OPENAI_KEY = "qW8rT2yU6iO0pA4sD7fG1hJ5kL9zX3cV8bN2mQ4e"
ANTHROPIC_KEY = "Zx9Cv8Bn7Mq6Wl5Ek4Rj3Tu2Yi1Op0AsDfGhJkLz"
KEYS = (OPENAI_KEY, ANTHROPIC_KEY)

POLICY = f"""
version: 1
defaults:
  timeouts: {{connect: 1s, first_token: 2s, idle: 2s, response: 3s, total: 10s}}
providers:
  alpha:
    kind: openai
    api_key: {OPENAI_KEY}
    regions:
      one: {{base_url: "$alpha_one"}}
      two: {{base_url: "$alpha_two"}}
    models: {{m: {{}}}}
  claude:
    kind: anthropic
    api_key: {ANTHROPIC_KEY}
    regions: {{main: {{base_url: "$claude"}}}}
    models: {{c: {{}}}}
routes:
  m: {{chain: [alpha/one/m, alpha/two/m]}}
  c: {{chain: [claude/main/c]}}
"""

MESSAGES = [{"role": "user", "content": "Say something."}]


def _sims() -> list[SimConfig]:
    return [
        SimConfig(name="alpha_one", ttft=0.0, tokens_per_second=200, require_api_key=OPENAI_KEY),
        SimConfig(name="alpha_two", ttft=0.0, tokens_per_second=200, require_api_key=OPENAI_KEY),
        SimConfig(name="claude", ttft=0.0, tokens_per_second=200, require_api_key=ANTHROPIC_KEY),
    ]


class Rig:
    def __init__(self, make_stack: Callable[..., Stack]) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.stack = make_stack(POLICY, _sims(), telemetry=Telemetry(tracer_provider=provider))
        self.seen: list[str] = []  # everything a client got: bodies, headers, SDK errors

    def raw(self, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"anthropic-version": "2023-06-01"} if path == "/v1/messages" else {}
        response = self.stack.http.post(path, json=body, headers=headers)
        self.seen.append(response.text)
        self.seen.append(str(response.headers))
        return response

    def spans(self) -> str:
        return "\n".join(span.to_json() for span in self.exporter.get_finished_spans())


@pytest.fixture
def rig(make_stack: Callable[..., Stack]) -> Iterator[Rig]:
    yield Rig(make_stack)
    clear_secrets()


class LiveRecords:
    """The log records of the whole test, read when iterated: ``caplog.records`` taken in a
    fixture is the setup phase's list, which never sees what the test itself logs."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __iter__(self) -> Iterator[logging.LogRecord]:
        every = [*self._caplog.get_records("setup"), *self._caplog.records]
        # The simulator is the upstream: it may log what it was told to quote; the proxy may not.
        return iter(r for r in every if not r.name.startswith("edgeproxy.sim"))


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> LiveRecords:
    caplog.set_level(logging.DEBUG)
    return LiveRecords(caplog)


def _record_text(record: logging.LogRecord) -> str:
    return f"{record.getMessage()} {vars(record)}"


def assert_no_key(rig: Rig, records: Iterable[logging.LogRecord]) -> None:
    client = "\n".join(rig.seen)
    logs = "\n".join(_record_text(r) for r in records)
    spans = rig.spans()
    assert spans and client and logs  # something was recorded, logged and answered
    for key in KEYS:
        assert key not in client
        assert key not in logs
        assert key not in spans


def _openai_body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": stream}


def _anthropic_body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "max_tokens": 50, "messages": MESSAGES, "stream": stream}


def _sdk_openai(rig: Rig, model: str, stream: bool) -> None:
    client = rig.stack.client()
    try:
        if stream:
            for _ in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):  # type: ignore[arg-type]
                pass
        else:
            client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    except openai.APIError as exc:
        rig.seen.append(f"{exc} {exc.body!r}")
    else:
        pytest.fail("the SDK must raise: the upstream failed")


def _sdk_anthropic(rig: Rig, model: str, stream: bool) -> None:
    client = anthropic.Anthropic(
        base_url=rig.stack.proxy.url, api_key="sk-ant-client", max_retries=0, timeout=10
    )
    try:
        if stream:
            with client.messages.stream(model=model, max_tokens=50, messages=MESSAGES) as events:  # type: ignore[arg-type]
                for _ in events:
                    pass
        else:
            client.messages.create(model=model, max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    except anthropic.APIError as exc:
        rig.seen.append(f"{exc} {exc.body!r}")
    else:
        pytest.fail("the SDK must raise: the upstream failed")


INGRESS = {
    "openai": ("/v1/chat/completions", _openai_body, _sdk_openai),
    "anthropic": ("/v1/messages", _anthropic_body, _sdk_anthropic),
}


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("ingress", list(INGRESS))
def test_a_401_quoting_the_key_never_reaches_the_client(
    rig: Rig, caplog: pytest.LogCaptureFixture, ingress: str, stream: bool
) -> None:
    """Before the first byte: the upstream's 401 is the proxy's key, not the client's error, so
    it fails over; with every candidate refusing it the client gets the proxy's own 502, which
    names the candidates and never quotes the upstream's body (nor, then, the key in it)."""
    caplog.set_level(logging.DEBUG)
    path, body, sdk = INGRESS[ingress]
    for sim in ("alpha_one", "alpha_two", "claude"):
        rig.stack.fault(sim, mode="echo_key", status=401, after_tokens=0)
    for model in ("m", "c"):
        response = rig.raw(path, body(model, stream))
        assert response.status_code == 502
        assert "rejected the proxy's credentials" in response.text
        assert "Incorrect API key provided" not in response.text
        assert "invalid x-api-key" not in response.text
        sdk(rig, model, stream)  # ejected now: a 503, raised by the SDK too
    assert_no_key(rig, caplog.records)


@pytest.mark.parametrize("ingress", list(INGRESS))
def test_an_in_stream_error_quoting_the_key_is_scrubbed(
    rig: Rig, records: LiveRecords, ingress: str
) -> None:
    """After the commit point: an OpenAI-wire upstream's in-band error (relayed as the
    upstream's own error) and an Anthropic-wire upstream's ``event: error`` (which becomes the
    proxy's own mid-stream error text, quoting the failure) both reach the client scrubbed."""
    path, body, sdk = INGRESS[ingress]
    for sim in ("alpha_one", "claude"):
        rig.stack.fault(sim, mode="echo_key", after_tokens=3)
    for model in ("m", "c"):
        response = rig.raw(path, body(model, stream=True))
        assert response.status_code == 200  # committed before the error
        assert REDACTED in response.text and "[DONE]" not in response.text
        sdk(rig, model, True)
    assert_no_key(rig, records)


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("ingress", list(INGRESS))
def test_the_all_failed_error_scrubs_every_attempt(
    rig: Rig, records: LiveRecords, ingress: str, stream: bool
) -> None:
    """A hostile upstream putting the key in its error *code*: every attempt's detail quotes it,
    the all-failed error lists them, and only the key's registration can find it there."""
    path, body, sdk = INGRESS[ingress]
    for sim in ("alpha_one", "alpha_two"):
        rig.stack.fault(sim, mode="echo_key", status=503, error_code=OPENAI_KEY, after_tokens=0)
    response = rig.raw(path, body("m", stream))
    assert response.status_code == 502
    assert response.text.count(REDACTED) >= 2  # one per attempt
    sdk(rig, "m", stream)
    assert_no_key(rig, records)


def test_every_key_of_a_policy_is_registered_at_load() -> None:
    """Provider keys and secret header values, in every form; a plain key with no shape a
    pattern knows is redacted once the policy is loaded. (A base_url with credentials is
    refused by the loader: tests/unit/test_policy_hostile.py.)"""
    clear_secrets()
    assert redact(f"x {OPENAI_KEY} y") == f"x {OPENAI_KEY} y"
    load_policy_text(
        f"""
version: 1
providers:
  p:
    kind: openai
    api_key: {OPENAI_KEY}
    headers: {{X-Org-Token: "orgtoken-1234567", X-Trace: "not-a-secret-value"}}
    regions: {{r: {{base_url: "http://127.0.0.1:9/v1"}}}}
    models: {{m: {{}}}}
routes:
  m: {{chain: [p/r/m]}}
""",
        "t.yaml",
        {},
    )
    try:
        for secret in (OPENAI_KEY, "orgtoken-1234567"):
            assert redact(f"<{secret}>") == f"<{REDACTED}>"
        assert redact("not-a-secret-value") == "not-a-secret-value"
    finally:
        clear_secrets()

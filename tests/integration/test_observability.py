"""Traces, metrics and the access log through the real proxy, with the OpenAI SDK as client."""

from __future__ import annotations

import io
import logging
import shlex
from collections.abc import Callable, Iterator

import openai
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.sim import SimConfig
from edgeproxy.telemetry.access_log import AccessLogWriter
from edgeproxy.telemetry.logs import JsonFormatter
from edgeproxy.telemetry.metrics import metrics_from_env
from edgeproxy.telemetry.process import Telemetry
from harness import THREE_WAY, THREE_WAY_SIMS, Stack

MESSAGES = [{"role": "user", "content": "Trace me."}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Traced:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.telemetry = Telemetry(tracer_provider=provider, metrics=metrics_from_env({}))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]


@pytest.fixture
def traced() -> Traced:
    return Traced()


@pytest.fixture
def access_log() -> Iterator[list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))

    handler = Collect()
    logger = logging.getLogger("edgeproxy")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_one_trace_for_a_failover_stream(make_stack: Callable[..., Stack], traced: Traced) -> None:
    stack = make_stack(THREE_WAY, THREE_WAY_SIMS, telemetry=traced.telemetry)
    stack.fault("alpha_one", mode="status", status=503)
    client = stack.client(default_headers={"traceparent": TRACEPARENT})
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        if c.choices
    )
    assert text
    spans = traced.spans()
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}  # one trace, the app's
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.attributes["edgeproxy.route"] == "m"
    assert server.attributes["edgeproxy.policy_version"] == stack.policy.version
    assert server.attributes["gen_ai.request.model"] == "m"
    assert format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    attempts = sorted(
        (s for s in spans if s.kind is SpanKind.CLIENT),
        key=lambda s: s.attributes["edgeproxy.attempt"],
    )
    assert [a.attributes["edgeproxy.candidate"] for a in attempts] == ["alpha/one/m", "alpha/two/m"]
    assert all(a.parent.span_id == server.context.span_id for a in attempts)
    assert attempts[0].attributes["error.type"] == "server_error"
    assert "error.type" not in attempts[1].attributes
    assert attempts[1].attributes["gen_ai.provider.name"] == "alpha"
    assert attempts[1].attributes["gen_ai.request.model"] == "upstream-m"
    assert attempts[0].attributes["edgeproxy.attempt.kind"] == "first"
    assert attempts[1].attributes["edgeproxy.attempt.kind"] == "failover"
    assert attempts[1].attributes["edgeproxy.relay.outcome"] == "complete"
    assert attempts[1].attributes["edgeproxy.relay.chunks"] >= 1
    assert server.attributes["edgeproxy.chain"] == (
        "alpha/one/m",
        "alpha/two/m",
        "beta/main/m-small",
    )
    assert len(spans) == 3  # the request and its two attempts: route, cache, relay are attributes


def test_a_cut_stream_is_an_error_on_the_attempt_span(
    make_stack: Callable[..., Stack], traced: Traced
) -> None:
    sims = [
        SimConfig(name=n, ttft=0.0, tokens_per_second=200)
        for n in ("alpha_one", "alpha_two", "beta")
    ]
    policy = THREE_WAY.replace("api_key: sk-alpha-secret", "").replace(
        "api_key: sk-beta-secret", ""
    )
    stack = make_stack(policy, sims, telemetry=traced.telemetry)
    stack.fault("alpha_one", mode="cut", after_tokens=3)
    with pytest.raises(openai.APIError):
        list(stack.client().chat.completions.create(model="m", messages=MESSAGES, stream=True))
    (attempt,) = [s for s in traced.spans() if s.kind is SpanKind.CLIENT]
    assert attempt.attributes["edgeproxy.relay.outcome"] == "cut"
    assert attempt.attributes["error.type"] == "cut"
    (server,) = [s for s in traced.spans() if s.kind is SpanKind.SERVER]
    assert server.attributes["error.type"] == "cut"


def test_usage_reaches_the_attempt_span_and_the_access_log(
    make_stack: Callable[..., Stack], traced: Traced, access_log: list[str]
) -> None:
    stack = make_stack(THREE_WAY, THREE_WAY_SIMS, telemetry=traced.telemetry)
    completion = stack.client().chat.completions.create(model="m", messages=MESSAGES)
    assert completion.usage is not None
    (attempt,) = [s for s in traced.spans() if s.kind is SpanKind.CLIENT]
    assert attempt.attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert attempt.attributes["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    requests = [line for line in access_log if '"msg":"request"' in line]
    assert len(requests) == 1
    line = requests[0]
    assert f'"output_tokens":{completion.usage.completion_tokens}' in line
    assert '"candidate":"alpha/one/m"' in line and '"status":200' in line and '"route":"m"' in line


def test_metrics_scrape_through_the_proxy(stack: Stack) -> None:
    stack.fault("alpha_one", mode="status", status=503)
    for _ in range(3):
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    response = stack.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    attempts = [s for s in families["edgeproxy_attempts"].samples if s.name.endswith("_total")]
    by_outcome = {
        (s.labels["edgeproxy_candidate"], s.labels["edgeproxy_outcome"]): s.value for s in attempts
    }
    assert by_outcome[("alpha/one/m", "server_error")] == 3
    assert by_outcome[("alpha/two/m", "ok")] == 3
    assert "sk-alpha-secret" not in text


def test_canary_provider_key_is_nowhere(
    make_stack: Callable[..., Stack], traced: Traced, access_log: list[str]
) -> None:
    canary = "sk-canary-0123456789abcdef0123456789abcdef"
    policy = THREE_WAY.replace("sk-alpha-secret", canary)
    sims = [
        SimConfig(name=n, ttft=0, tokens_per_second=0, require_api_key=canary)
        for n in ("alpha_one", "alpha_two")
    ] + [SimConfig(name="beta", ttft=0, tokens_per_second=0)]
    stack = make_stack(
        policy.replace("api_key: sk-beta-secret", ""), sims, telemetry=traced.telemetry
    )
    stack.fault("alpha_one", mode="cut", after_tokens=0)
    stack.client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    # An auth failure is the likeliest leak: every candidate refuses the key, quoting it back
    # (and is ejected for it, so this comes last).
    for sim in ("alpha_one", "alpha_two", "beta"):
        stack.fault(sim, mode="echo_key", status=401, after_tokens=0)
    with pytest.raises(openai.InternalServerError) as info:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.response.json()["error"]["code"] == "upstream_auth_rejected"
    everything = [
        info.value.response.text,
        str(dict(info.value.response.headers)),
        stack.http.get("/metrics").text,
    ]
    everything += access_log
    for span in traced.spans():
        everything.append(str(dict(span.attributes or {})))
        everything += [str(e.name) + str(dict(e.attributes or {})) for e in span.events]
        everything.append(str(span.status.description))
    assert access_log, "the proxy logged nothing: the check would be empty"
    assert all(canary not in text for text in everything)


CACHED_PRICED = THREE_WAY.replace(
    "m: {upstream_name: upstream-m}",
    "m: {upstream_name: upstream-m, price: {input: 2.5, output: 10}}",
).replace("    aliases: [default]", "    aliases: [default]\n    cache: {ttl: 60s}")


def test_a_cache_hit_is_a_server_span_without_attempts(
    make_stack: Callable[..., Stack], traced: Traced
) -> None:
    stack = make_stack(CACHED_PRICED, THREE_WAY_SIMS, telemetry=traced.telemetry)
    client = stack.client()
    client.chat.completions.create(model="m", messages=MESSAGES, temperature=0)
    traced.exporter.clear()
    client.chat.completions.create(model="m", messages=MESSAGES, temperature=0)
    spans = traced.spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.attributes["edgeproxy.cache.result"] == "hit"
    assert not [s for s in spans if s.kind is SpanKind.CLIENT]


def test_cost_is_on_the_answer_the_span_and_the_log(
    make_stack: Callable[..., Stack], traced: Traced, access_log: list[str]
) -> None:
    stack = make_stack(CACHED_PRICED, THREE_WAY_SIMS, telemetry=traced.telemetry)
    raw = stack.client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    usage = raw.parse().usage
    assert usage is not None
    expected = (usage.prompt_tokens * 2.5 + usage.completion_tokens * 10) / 1_000_000
    assert float(raw.headers["x-edgeproxy-cost-usd"]) == pytest.approx(expected)
    (attempt,) = [s for s in traced.spans() if s.kind is SpanKind.CLIENT]
    assert attempt.attributes["edgeproxy.cost_usd"] == pytest.approx(expected)
    (line,) = [line for line in access_log if '"msg":"request"' in line]
    assert f'"cost_usd":{round(expected, 8)}' in line


def test_a_failovers_cost_counts_the_failed_attempt(
    make_stack: Callable[..., Stack], traced: Traced
) -> None:
    # beta is priced too: the failed alpha attempt consumed nothing, beta's answer is the cost.
    policy = CACHED_PRICED.replace("m-small: {}", "m-small: {price: {input: 1, output: 1}}")
    stack = make_stack(policy, THREE_WAY_SIMS, telemetry=traced.telemetry)
    stack.fault("alpha_one", mode="status", status=503)
    stack.fault("alpha_two", mode="status", status=503)
    raw = stack.client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    usage = raw.parse().usage
    assert usage is not None and raw.headers["x-edgeproxy-provider"] == "beta"
    assert float(raw.headers["x-edgeproxy-cost-usd"]) == pytest.approx(
        usage.total_tokens / 1_000_000
    )


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_client_cannot_forge_an_access_log_line(
    make_stack: Callable[..., Stack], fmt: str
) -> None:
    """``--log-format text`` printed a newline in ``model`` as is: the client wrote a line."""
    lines = io.BytesIO()
    writer = AccessLogWriter(lines, fmt)
    stack = make_stack(THREE_WAY, THREE_WAY_SIMS, telemetry=Telemetry(access_log=writer))
    forged = "m\n12:00:00 INFO    edgeproxy.access: request request_id=forged status=200"
    for model in (forged, "m\r\x1b[2Kstatus=200", "m"):
        stack.http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
    writer.close()
    written = lines.getvalue().decode().splitlines()
    assert len(written) == 3, written  # one line per request, whatever the model said
    if fmt == "json":
        parsed = [orjson.loads(line) for line in written]
    else:
        assert all("\r" not in line and "\x1b" not in line for line in written)
        # key=value pairs, read back the way a shell reads quotes: no forged field
        parsed = [
            dict(t.partition("=")[::2] for t in shlex.split(line.split(": request ", 1)[1]))
            for line in written
        ]
    assert [p["request_id"] != "forged" for p in parsed] == [True] * 3
    assert [str(p["status"]) for p in parsed] == ["404", "404", "200"]
    assert [p["model"] for p in parsed][2] == "m"
    if fmt == "json":
        assert [p["model"] for p in parsed][:2] == [forged, "m\r\x1b[2Kstatus=200"]
    else:
        assert parsed[0]["model"] == forged.replace("\n", "\\n")


HEDGED = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 3s, idle: 1s, response: 5s, total: 10s}
limits: {max_hedge_percent: 100}
providers:
  alpha:
    kind: openai
    regions: {one: {base_url: "$alpha_one"}}
    models: {m: {}}
  beta:
    kind: openai
    regions: {main: {base_url: "$beta"}}
    models: {m-small: {}}
routes:
  m:
    chain: [alpha/one/m, beta/main/m-small]
    hedge: {delay: 200ms}
"""


def test_a_hedge_is_counted_and_traced(make_stack: Callable[..., Stack], traced: Traced) -> None:
    sims = [SimConfig(name=n, ttft=0.0, tokens_per_second=200) for n in ("alpha_one", "beta")]
    stack = make_stack(HEDGED, sims, telemetry=traced.telemetry)
    stack.fault("alpha_one", mode="slow_first_token", ttft=3)
    chunks = stack.client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    families = {f.name: f for f in text_string_to_metric_families(stack.http.get("/metrics").text)}
    (hedges,) = [s for s in families["edgeproxy_hedges"].samples if s.name.endswith("_total")]
    assert hedges.labels == {"edgeproxy_route": "m"} and hedges.value == 1
    attempts = sorted(
        (s for s in traced.spans() if s.kind is SpanKind.CLIENT),
        key=lambda s: s.attributes["edgeproxy.attempt"],
    )
    assert [a.attributes["edgeproxy.attempt.kind"] for a in attempts] == ["first", "hedge"]
    assert [a.attributes["edgeproxy.outcome"] for a in attempts] == ["abandoned", "ok"]
    (server,) = [s for s in traced.spans() if s.kind is SpanKind.SERVER]
    assert server.attributes["edgeproxy.candidate"] == "beta/main/m-small"


BREAKING = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 2s, idle: 1s, response: 2s, total: 10s}
outlier_detection: {consecutive_failures: 2, base_ejection_time: 60s}
health_check: {enabled: false}
telemetry: {capture_content: true}
providers:
  alpha:
    kind: openai
    regions: {one: {base_url: "$alpha_one"}}
    models: {m: {}}
  beta:
    kind: openai
    regions: {main: {base_url: "$beta"}}
    models: {m-small: {}}
routes:
  m:
    chain: [alpha/one/m, beta/main/m-small]
"""


def _samples(stack: Stack, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = stack.http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in families[family].samples
        if s.name.endswith("_total")
    }


def test_a_breaker_opening_is_counted(make_stack: Callable[..., Stack], traced: Traced) -> None:
    """The breaker registry's transitions reach /metrics (edgeproxy_breaker_transitions_total)
    through telemetry's process-wide listener."""
    sims = [SimConfig(name=n, ttft=0.0, tokens_per_second=0) for n in ("alpha_one", "beta")]
    stack = make_stack(BREAKING, sims, telemetry=traced.telemetry)
    stack.fault("alpha_one", mode="status", status=503)
    client = stack.client()
    for _ in range(3):
        client.chat.completions.create(model="m", messages=MESSAGES)
    transitions = _samples(stack, "edgeproxy_breaker_transitions")
    opened = (("edgeproxy_breaker_to", "open"), ("edgeproxy_candidate", "alpha/one/m"))
    assert transitions == {opened: 1.0}
    # The third request skipped the open breaker: two attempts at alpha, not three.
    assert stack.requests_to("alpha_one") == 2


def test_captured_content_goes_on_the_server_span(
    make_stack: Callable[..., Stack], traced: Traced
) -> None:
    """telemetry.capture_content: true puts the prompt and the answer on the SERVER span, for
    whole answers and streams alike (and only then: the other tests' spans carry no text)."""
    sims = [SimConfig(name=n, ttft=0.0, tokens_per_second=0) for n in ("alpha_one", "beta")]
    stack = make_stack(BREAKING, sims, telemetry=traced.telemetry)
    client = stack.client()
    answer = client.chat.completions.create(model="m", messages=MESSAGES)
    chunks = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    servers = [s for s in traced.spans() if s.kind is SpanKind.SERVER]
    assert len(servers) == 2
    for server, text in zip(servers, (answer.choices[0].message.content, streamed), strict=True):
        assert orjson.loads(str(server.attributes["gen_ai.input.messages"])) == MESSAGES
        output = orjson.loads(str(server.attributes["gen_ai.output.messages"]))
        assert output[0]["content"] == text and text

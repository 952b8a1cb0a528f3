"""Tracing's configuration from the OTEL_* environment, and W3C trace-context validation (what
a client sends in ``traceparent``/``tracestate`` is checked before it is trusted or forwarded)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from edgeproxy.telemetry import tracing
from edgeproxy.telemetry.process import Telemetry
from edgeproxy.telemetry.tracing import incoming_context, parse_traceparent, parse_tracestate

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"


# -- W3C trace context ---------------------------------------------------------------------------


def test_traceparent_validation() -> None:
    assert parse_traceparent(TRACEPARENT) == (TRACE_ID, PARENT)
    assert parse_traceparent(f"  {TRACEPARENT}\t") == (TRACE_ID, PARENT)
    for bad in (
        "",
        "00-zz-bad-01",
        TRACEPARENT.upper(),  # W3C: lowercase hex only
        f"01-{TRACE_ID}-{PARENT}-01",  # a version this proxy does not understand
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"{TRACEPARENT}\n",
        f"{TRACEPARENT}-extra",
        f"00-{TRACE_ID}-{PARENT}-0\uff11",  # a full-width digit (non-ASCII)
        f"00-{TRACE_ID[:-1]}é-{PARENT}-01",
    ):
        assert parse_traceparent(bad) is None, bad


def test_tracestate_validation() -> None:
    assert parse_tracestate("vendor=x") == "vendor=x"
    assert (
        parse_tracestate(" a=1 ,, b@tenant=two words , c*/_-=x") == "a=1,b@tenant=two words,c*/_-=x"
    )
    too_many = ",".join(f"k{i}=v" for i in range(33))
    for bad in (
        "vendor=café",  # non-ASCII: forwarding it verbatim broke the upstream request (500)
        "vendor=x\u2028",
        "Vendor=x",  # keys are lowercase
        "vendor",
        "vendor=",
        "vendor=a,b",  # "b" is not key=value
        "vendor=\x7f",  # a control character
        "a=1,a=2",  # a duplicate key
        "1abc=x",  # a simple key starts with a letter
        "vendor=a=b",
        too_many,
        "",
        " , ",
    ):
        assert parse_tracestate(bad) is None, bad
    assert parse_tracestate(",".join(f"k{i}=v" for i in range(32))) is not None


def test_only_a_valid_context_is_taken_in() -> None:
    assert incoming_context({"traceparent": TRACEPARENT, "tracestate": "v=1"}) == {
        "traceparent": TRACEPARENT,
        "tracestate": "v=1",
    }
    # A bad tracestate is dropped, the traceparent kept (W3C: do not propagate what you cannot
    # parse); a bad traceparent drops both.
    assert incoming_context({"traceparent": TRACEPARENT, "tracestate": "v=ü"}) == {
        "traceparent": TRACEPARENT
    }
    assert incoming_context({"traceparent": "00-bad", "tracestate": "v=1"}) == {}
    assert incoming_context({"tracestate": "v=1"}) == {}


# -- configuration from the environment ---------------------------------------------------------


def test_env_defaults_to_off() -> None:
    assert tracing.traces_exporter_name({}) == "none"
    assert tracing.tracer_provider_from_env({}) is None
    assert tracing.traces_exporter_name(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    ) == ("otlp")
    assert tracing.traces_exporter_name({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    assert (
        tracing.traces_exporter_name({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
        == "none"
    )
    with pytest.raises(tracing.TracingConfigError):
        tracing.traces_exporter_name({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_env_sampler_and_resource() -> None:
    sampler = tracing.sampler_from_env(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    )
    assert "0.25" in sampler.get_description()
    assert tracing.sampler_from_env({"OTEL_TRACES_SAMPLER": "always_off"}) is ALWAYS_OFF
    with pytest.raises(tracing.TracingConfigError):
        tracing.sampler_from_env(
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}
        )
    res = tracing.resource_from_env(
        {
            "OTEL_SERVICE_NAME": "sidecar-a",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
        }
    )
    assert res.attributes["service.name"] == "sidecar-a"
    assert res.attributes["deployment.environment"] == "prod"


def test_env_otlp_provider_builds_without_network() -> None:
    provider = tracing.tracer_provider_from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}  # nothing is sent until a batch
    )
    assert provider is not None
    provider.shutdown()


def test_from_env_default_is_tracing_off_metrics_on() -> None:
    t = Telemetry.from_env({})
    assert not t.tracing and t.metrics is not None
    t2 = Telemetry.from_env({"OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "console"})
    assert t2.tracing and t2.metrics is None
    t.shutdown()
    t2.shutdown()

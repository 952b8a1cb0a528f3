"""Traces: a tracer provider configured the standard OpenTelemetry way, and W3C propagation.

Environment (the standard variables; see docs/observability.md):

- ``OTEL_TRACES_EXPORTER``: ``otlp`` | ``console`` | ``none``. Unset: ``otlp`` when an OTLP
  endpoint is set, else ``none`` — tracing is OFF by default.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: OTLP over HTTP
  (protobuf); the exporter reads these itself, with ``OTEL_EXPORTER_OTLP_HEADERS`` etc.
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: ``parentbased_always_on`` (default),
  ``always_on``, ``always_off``, ``traceidratio``, ``parentbased_always_off``,
  ``parentbased_traceidratio``.
- ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``; ``OTEL_SDK_DISABLED=true`` turns it all off.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from edgeproxy import __version__

log = logging.getLogger("edgeproxy.telemetry")

SERVICE_NAME = "edgeproxy"
INSTRUMENTATION_SCOPE = "edgeproxy"

# Only the W3C trace context crosses the proxy: no baggage, which could carry the app's data
# to a third-party provider.
PROPAGATOR = TraceContextTextMapPropagator()
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class TracingConfigError(ValueError):
    """An OTEL_* variable has a value this proxy cannot honour."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def traces_exporter_name(env: Mapping[str, str]) -> str:
    """The exporter the environment asks for: otlp, console or none."""
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return "none"
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not name:
        has_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        )
        return "otlp" if has_endpoint else "none"
    if name not in ("otlp", "console", "none"):
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={name!r} is not supported (use otlp, console or none)"
        )
    return name


def sampler_from_env(env: Mapping[str, str]) -> Sampler:
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    ratio = 1.0
    if name.endswith("traceidratio") and arg:
        try:
            ratio = float(arg)
        except ValueError:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a number") from None
        if not 0.0 <= ratio <= 1.0:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not in [0, 1]")
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(TraceIdRatioBased(ratio)),
    }
    if name not in samplers:
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER={name!r} is not supported (use one of {', '.join(samplers)})"
        )
    return samplers[name]


def resource_from_env(env: Mapping[str, str]) -> Resource:
    attrs: dict[str, str] = {"service.name": SERVICE_NAME, "service.version": __version__}
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            attrs[key.strip()] = value.strip()
    if env.get("OTEL_SERVICE_NAME", "").strip():
        attrs["service.name"] = env["OTEL_SERVICE_NAME"].strip()
    return Resource(attrs)


def _exporter(name: str, env: Mapping[str, str]) -> SpanProcessor:
    if name == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    protocol = env.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol and protocol.strip() != "http/protobuf":
        log.warning("OTLP protocol %r is not shipped; exporting traces as http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT/HEADERS/TIMEOUT itself. Batching
    # moves the export to the SDK's worker thread: nothing blocks the event loop.
    exporter: SpanExporter = OTLPSpanExporter()
    return BatchSpanProcessor(exporter)


def tracer_provider_from_env(env: Mapping[str, str]) -> TracerProvider | None:
    """A configured provider, or None when tracing is off (no span is then built at all)."""
    name = traces_exporter_name(env)
    if name == "none":
        return None
    provider = TracerProvider(sampler=sampler_from_env(env), resource=resource_from_env(env))
    provider.add_span_processor(_exporter(name, env))
    return provider


# -- W3C trace context ---------------------------------------------------------------------------

# https://www.w3.org/TR/trace-context/ : version 00 only (a later version's extra fields are not
# understood, so its context is not trusted either).
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}", re.ASCII)
# A tracestate list-member: a simple or multi-tenant key, ``=``, a value of 1-256 printable
# ASCII characters other than ``,`` and ``=`` that does not end with a space.
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][a-z0-9_*/-]{0,255}|[a-z0-9][a-z0-9_*/-]{0,240}@[a-z][a-z0-9_*/-]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]",
    re.ASCII,
)
MAX_TRACESTATE_MEMBERS = 32


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, parent span id) of a version-00 ``traceparent``, or None if it is not valid."""
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None or match[1] == _ZERO_TRACE or match[2] == _ZERO_SPAN:
        return None
    return match[1], match[2]


def parse_tracestate(value: str) -> str | None:
    """A valid ``tracestate`` with its members joined by ``,`` (empty members dropped), or None
    when any member is invalid (non-ASCII, a bad key, a duplicate key, more than 32 members):
    W3C says an unparsable tracestate must not be propagated."""
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    keys = set()
    for member in members:
        if _TRACESTATE_MEMBER.fullmatch(member) is None:
            return None
        keys.add(member.partition("=")[0])
    if len(keys) != len(members):
        return None
    return ",".join(members)


def incoming_context(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's W3C trace context, validated: ``traceparent`` if it is valid, with its
    ``tracestate`` if that is valid too. Anything else the client sent is dropped, so nothing
    invalid (a non-ASCII ``tracestate`` broke the upstream request) is ever forwarded."""
    parent = headers.get("traceparent")
    if parent is None or parse_traceparent(parent) is None:
        return {}
    out = {"traceparent": parent.strip(" \t")}
    state = headers.get("tracestate")
    if state:
        valid = parse_tracestate(state)
        if valid is not None:
            out["tracestate"] = valid
    return out


def extract_context(headers: Mapping[str, str]) -> Context:
    """The caller's trace context from a valid ``traceparent``/``tracestate`` (empty if none)."""
    return PROPAGATOR.extract(incoming_context(headers))


def inject_headers(span: Span) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) naming ``span`` as the parent, for an upstream call."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=set_span_in_context(span))
    return carrier

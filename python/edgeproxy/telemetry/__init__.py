"""Telemetry: traces, metrics, cost, the access log and ``/admin/status``, as a listener.

The request path and the breakers emit typed events (``edgeproxy.events``); this package
listens. Nothing on the request path reads telemetry state back, except the trace context an
attempt sends upstream. One module per job:

- ``process``: the process's ``Telemetry`` (from the ``OTEL_*`` environment), which makes each
  request's listener and listens to breaker transitions;
- ``listener``: one request's listener: events in, spans, metrics and the access log line out;
  ``attempt``: what it keeps per attempt;
- ``spans``: building the SERVER and CLIENT spans; ``tracing``: the tracer provider from the
  environment and W3C trace-context validation;
- ``metrics``: the instruments and ``GET /metrics``;
- ``access_log``: the per-request line, written off the event loop; ``logs``: the log formats;
  ``escape``: control characters in text lines; ``redact``: secrets out of free text;
- ``recent``, ``status``, ``runtime``: ``/admin/status``, ``edgeproxy status``,
  ``/admin/debug/runtime``;
- ``legacy``/``request``: the hop-by-hop facade the request path still calls (to be deleted).
"""

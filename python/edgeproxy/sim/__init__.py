"""Simulated LLM providers (OpenAI chat and Responses, Anthropic and Gemini wires) that fail on
command.

Used by ``make demo``, the integration tests (the real proxy against simulated providers on
loopback, with the official ``openai`` SDK as client) and the locust load tests.

Each simulated provider (``SimProvider``) speaks one wire (``SimConfig.wire``), on its own port
as a real provider's endpoint does (a request in the other wire gets a 404):

- ``openai``: ``POST /v1/chat/completions`` with ``stream`` false (``chat.completion``) or true
  (SSE ``chat.completion.chunk`` events, a usage chunk when ``stream_options.include_usage`` is
  true, then ``data: [DONE]``). The text is deterministic for a given seed and request messages.
- ``anthropic``: ``POST /v1/messages``, the Anthropic Messages wire, with the same simulated
  model and the same faults (``sim/anthropic.py`` documents the shapes): ``x-api-key`` auth,
  Anthropic error bodies, ``message`` objects and the Messages event stream.
- ``gemini``: ``POST /v1/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``,
  Gemini's own API (``sim/gemini.py``): ``x-goog-api-key`` auth, Gemini error bodies, unknown
  fields refused as Gemini refuses them.
- ``openai_responses``: ``POST /v1/responses``, OpenAI's Responses API (``sim/openai_responses.py``):
  a ``response`` object or its typed event stream, unknown fields refused as OpenAI refuses
  them, OpenAI's auth and errors, and its ``/v1/embeddings``.
- Embeddings (``sim/embeddings.py``): ``POST /v1/embeddings`` on the OpenAI wire,
  ``:batchEmbedContents`` / ``:embedContent`` on Gemini's; a deterministic vector per input.
- Tool use (every wire, ``sim/tools.py``): when the request offers tools and the last user message
  contains ``SimConfig.tool_trigger`` (default ``"use tool"``), or the tool choice forces a tool,
  the answer is a tool call with deterministic arguments streamed in pieces (OpenAI
  ``tool_calls`` / ``finish_reason: tool_calls``; Anthropic ``tool_use`` / ``input_json_delta``).
- ``GET /v1/models``: configured model ids plus every model requested so far.
- ``GET /health``: ``200 ok``. ``GET /_sim/stats``: name, url, fault and counters.

Every response carries ``x-sim-name: <name>``. When ``require_api_key`` is set, ``/v1/*`` needs
``Authorization: Bearer <key>`` or ``api-key: <key>``, otherwise 401 ``invalid_api_key``.

Faults
------
A fault is a JSON object; only ``mode`` is required::

    {"mode": "status", "status": 429, "retry_after": 2, "error_code": "rate_limit_exceeded",
     "rate": 1.0, "count": null}

=================  ==========================================================================
mode               effect on ``/v1/chat/completions`` (and ``/v1/messages``)
=================  ==========================================================================
none               normal answers
status             ``status`` (any 4xx/5xx, e.g. 429, 503, 529) with an OpenAI error body
                   (Anthropic wire: ``{"type": "error", "error": {"type", "message"}}``)
                   ``{"error": {"message", "type", "param", "code"}}``; ``error_code`` sets
                   ``error.code`` (e.g. ``insufficient_quota``, ``context_length_exceeded``);
                   ``retry_after`` adds a ``Retry-After`` header (seconds)
refuse             the listening port is closed (connection refused) and open connections are
                   dropped; clearing the fault listens again on the same port
reset              the request is read, then the connection is aborted with a TCP RST
hang               no answer until the client goes away or the simulator stops
slow_first_token   first stream chunk (or the whole non-stream body) only after ``ttft`` seconds
cut                stream: connection closed after ``after_tokens`` content chunks (no finish
                   chunk, no ``[DONE]``); non-stream: half of a Content-Length body, then close
stall              stream: no more bytes after ``after_tokens`` chunks, connection kept open;
                   non-stream: half of the body, then silence
malformed          stream: an event with invalid JSON after ``after_tokens`` chunks, then the
                   rest of the stream; non-stream: a 200 whose body is not JSON
no_done            stream: finish chunk but no ``data: [DONE]``, then a clean end of body
                   (Anthropic wire: no ``message_stop``)
overloaded         stream: an in-stream error with type ``overloaded_error`` after
                   ``after_tokens`` chunks (Anthropic: ``event: error``), then the end of the
                   stream; non-stream: 529 ``overloaded_error``
=================  ==========================================================================

``rate`` (0..1) is the probability that a request is affected, drawn from an RNG seeded with
the provider's ``seed`` and re-seeded whenever a fault is set, so runs are reproducible.
``count`` limits the fault to the next N affected requests, after which the mode reverts to
``none``. ``rate`` and ``count`` do not apply to ``refuse``. Faults never affect
``/health`` or ``/v1/models`` (except ``refuse``, which takes the whole port down).

CLI fault specs (``parse_fault_spec``): ``MODE[:STATUS][:key=value]...``, for example
``status:503``, ``status:429:retry_after=2``, ``cut:after_tokens=5``, ``refuse``, ``hang``.

Control API
-----------
``SimCluster`` serves a control API on its own port, reachable even while a provider refuses
connections. Bodies are JSON.

- ``GET /sims`` -> ``{"sims": [{"name", "url", "fault", "stats"}, ...]}``
- ``GET /sims/{name}`` -> ``{"name", "url", "fault", "stats"}``; 404 for an unknown sim
- ``PUT /sims/{name}/fault`` with a fault object -> the sim's new state; 400
  ``{"error": {"message": ...}}`` for an invalid fault, 404 for an unknown sim
- ``DELETE /sims/{name}/fault`` -> heal (mode ``none``), returns the sim's state
- ``GET /health`` -> ``200 ok``

``stats`` holds ``requests_total``, ``in_flight``, ``streams_started``, ``streams_completed`` and
``outcomes`` (request counts by ``ok``, ``bad_request``, ``unauthorized`` or fault mode).
Example: ``curl -X PUT $CONTROL/sims/openai/fault -d '{"mode": "status", "status": 503}'``.
"""

from __future__ import annotations

from .cluster import SimCluster
from .config import SimConfig
from .faults import FAULT_MODES, Fault, parse_fault_spec
from .provider import SimProvider
from .runner import run_forever
from .stats import SimStats

__all__ = [
    "FAULT_MODES",
    "Fault",
    "SimCluster",
    "SimConfig",
    "SimProvider",
    "SimStats",
    "parse_fault_spec",
    "run_forever",
]

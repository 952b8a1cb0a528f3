"""The simulated provider's Gemini wire: ``POST /v1/models/{model}:{method}``.

Served by a simulator whose ``SimConfig.wire`` is ``gemini``, with the same simulated model as the
other wires (text, function calls, ``maxOutputTokens``), the same faults and the same stats:

- ``generateContent``: a ``GenerateContentResponse`` (``text`` or ``functionCall`` parts,
  ``finishReason`` ``STOP`` / ``MAX_TOKENS``, ``usageMetadata``);
- ``streamGenerateContent?alt=sse``: one event per piece of text (a function call whole), the
  last with the ``finishReason`` and the final ``usageMetadata``; events end with CRLF CRLF and
  the stream has no terminator, as Gemini's. Without ``alt=sse``: a 400 (the simulator streams
  SSE only);
- ``batchEmbedContents`` and ``embedContent``: embeddings (``sim/embeddings.py``);
- auth: with ``require_api_key``, the ``x-goog-api-key`` header must match: a wrong key is a 400
  ``INVALID_ARGUMENT`` ("API key not valid", reason ``API_KEY_INVALID``), a missing one a 403
  ``PERMISSION_DENIED``, as Gemini answers. A key in the URL (``?key=``) is refused with a 400
  here: the proxy must never put it there;
- the body is checked as Gemini checks it: an unknown field anywhere the translator writes
  (the request, ``generationConfig``, a part, a function declaration) is a 400
  ``INVALID_ARGUMENT`` ("Unknown name"), so a translation that invents a field cannot pass;
- errors: ``{"error": {"code", "message", "status", "details"?}}`` (``sim/gemini_wire.py``);
  fault ``status`` 429 adds ``RetryInfo`` when ``retry_after`` is set, ``error_code``
  ``insufficient_quota`` a per-day ``QuotaFailure``, ``context_length_exceeded`` the input token
  count message;
- fault ``overloaded``: an in-stream ``{"error": {"status": "UNAVAILABLE", "message": "The model
  is overloaded..."}}`` after ``after_tokens`` events, then the end of the body (non-stream: a
  503 saying so); ``no_done``: the same as a normal stream (Gemini's has no terminator to
  leave out); ``keepalive_only``: SSE comments only; ``echo_key``: ``INVALID_ARGUMENT`` quoting
  the key received; ``cut``, ``stall``, ``malformed``, ``slow_first_token``, ``reset``,
  ``hang``, ``refuse`` as on the OpenAI wire.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web

from . import embeddings, netio
from . import gemini_wire as gw
from .completion import Completion
from .faults import Fault
from .request import ChatRequest
from .respond import Pacer, keep_alive, send_body
from .wire import credential_of

if TYPE_CHECKING:
    from .provider import SimProvider

_REQUEST_FIELDS: Final = frozenset(
    {
        "contents",
        "tools",
        "toolConfig",
        "safetySettings",
        "systemInstruction",
        "generationConfig",
        "cachedContent",
    }
)
_CONFIG_FIELDS: Final = frozenset(
    {
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "thinkingConfig",
        "responseModalities",
    }
)
_PART_FIELDS: Final = frozenset(
    {
        "text",
        "inlineData",
        "fileData",
        "functionCall",
        "functionResponse",
        "thought",
        "thoughtSignature",
        "executableCode",
        "codeExecutionResult",
    }
)
_DECLARATION_FIELDS: Final = frozenset(
    {
        "name",
        "description",
        "parameters",
        "parametersJsonSchema",
        "behavior",
        "response",
        "responseJsonSchema",
    }
)


KEY_HEADER: Final = "x-goog-api-key"


class BadGemini(Exception):
    """A request Gemini would refuse with a 400 ``INVALID_ARGUMENT``."""


def key_status(sim: SimProvider, request: web.Request) -> int | None:
    """None when the request may pass, else the status of Gemini's refusal."""
    expected = sim.config.require_api_key
    if expected is None:
        return None
    given = request.headers.get(KEY_HEADER)
    if given is None:
        return 403
    return None if hmac.compare_digest(given, expected) else 400


def refuse_key(sim: SimProvider, request: web.Request) -> web.Response | None:
    """Gemini's answer to a request without the right key (or with one in the URL)."""
    if "key" in request.query:
        sim.stats.record("bad_request")
        return gw.error_response(400, message="the key belongs in x-goog-api-key, not the URL")
    status = key_status(sim, request)
    if status is None:
        return None
    sim.stats.record("unauthorized")
    return gw.error_response(status, code="invalid_api_key" if status == 400 else None)


def _unknown(fields: Any, known: frozenset[str], where: str) -> None:
    if not isinstance(fields, dict):
        raise BadGemini(f"Invalid JSON payload received. {where}: expected an object.")
    for name in fields:
        if name not in known:
            raise BadGemini(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}'.")


def _text_of(parts: list[Any]) -> str:
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def to_chat_request(body: Any, model: str, stream: bool) -> ChatRequest:
    """The simulated model's view of a Gemini request (it plans answers for every wire)."""
    _unknown(body, _REQUEST_FIELDS, "request")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadGemini("* GenerateContentRequest.contents: contents is not specified")
    messages: list[dict[str, Any]] = []
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
            raise BadGemini(f"* {where}.role: must be 'user' or 'model'.")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise BadGemini(f"* {where}.parts: must contain at least one part.")
        for j, part in enumerate(parts):
            _unknown(part, _PART_FIELDS, f"{where}.parts[{j}]")
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": _text_of(parts)})
    system = body.get("systemInstruction")
    if system is not None:
        parts = system.get("parts") if isinstance(system, dict) else None
        if not isinstance(parts, list):
            raise BadGemini("* systemInstruction.parts: must be a list.")
        messages.insert(0, {"role": "system", "content": _text_of(parts)})
    config = body.get("generationConfig") or {}
    _unknown(config, _CONFIG_FIELDS, "generation_config")
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise BadGemini("* generation_config.max_output_tokens: must be a positive integer.")
    tools: list[tuple[str, Any]] = []
    for i, tool in enumerate(body.get("tools") or []):
        for j, declaration in enumerate((tool or {}).get("functionDeclarations") or []):
            _unknown(declaration, _DECLARATION_FIELDS, f"tools[{i}].function_declarations[{j}]")
            name = declaration.get("name")
            if not isinstance(name, str) or not name:
                raise BadGemini(f"* tools[{i}].function_declarations[{j}].name: required.")
            schema = declaration.get("parametersJsonSchema", declaration.get("parameters"))
            tools.append((name, schema))
    calling = ((body.get("toolConfig") or {}).get("functionCallingConfig")) or {}
    mode = calling.get("mode", "AUTO")
    allowed = calling.get("allowedFunctionNames") or []
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=True,
        max_tokens=max_tokens,
        tools=[] if mode == "NONE" else tools,
        tool_forced=mode == "ANY",
        tool_forced_name=allowed[0] if mode == "ANY" and allowed else None,
    )


async def serve_models(sim: SimProvider, request: web.Request) -> web.StreamResponse:
    """``POST /v1/models/{model}:{method}``: generation or embeddings, by the method."""
    call = request.match_info["call"]
    model, _, method = call.rpartition(":")
    if not model or method not in (
        "generateContent",
        "streamGenerateContent",
        "batchEmbedContents",
        "embedContent",
    ):
        return gw.error_response(404, message=f"Method not found: {call}.")
    if method in ("batchEmbedContents", "embedContent"):
        return await serve_embeddings(sim, request, model, method)
    return await serve_generate(sim, request, model, stream=method == "streamGenerateContent")


async def _admit(
    sim: SimProvider, request: web.Request
) -> tuple[bytes, Fault | None, web.StreamResponse | None]:
    """The body, the fault drawn, and an early answer (refused port, status fault, bad key)."""
    body = await request.read()
    fault, early = await sim.opening(
        request,
        lambda f: gw.error_response(f.status, code=f.error_code, retry_after=f.retry_after),
    )
    if early is not None:
        return body, fault, early
    refused = refuse_key(sim, request)
    return body, fault, refused


async def serve_generate(
    sim: SimProvider, request: web.Request, model: str, *, stream: bool
) -> web.StreamResponse:
    body, fault, early = await _admit(sim, request)
    if early is not None:
        return early
    if stream and request.query.get("alt") != "sse":
        sim.stats.record("bad_request")
        return gw.error_response(400, message="the simulator streams SSE only: add ?alt=sse")
    try:
        chat = to_chat_request(orjson.loads(body), model, stream)
    except (orjson.JSONDecodeError, BadGemini, AttributeError, TypeError) as exc:
        sim.stats.record("bad_request")
        message = str(exc) if isinstance(exc, BadGemini) else "Invalid JSON payload received."
        return gw.error_response(400, message=message)
    if fault is None:
        sim.stats.record("ok")
    sim.received.append(body)
    if fault is not None and fault.mode == "echo_key" and not (stream and fault.after_tokens):
        return gw.error_response(
            fault.status,
            code="INVALID_ARGUMENT",
            message=f"API key not valid: {credential_of(request.headers)}",
        )
    sim._models.setdefault(model, None)
    completion, ttft, interval, fault = sim.plan(chat, body, fault)
    if not stream:
        if fault is not None and fault.mode == "overloaded":
            return gw.error_response(503, message=gw.OVERLOADED_MESSAGE)
        delay = ttft + interval * completion.completion_tokens
        if delay > 0:
            await asyncio.sleep(delay)
        parts = (
            [gw.call_part(completion)] if completion.tool_call else [{"text": completion.content}]
        )
        answer = gw.response_object(completion, parts, finish=True)
        return await send_body(request, orjson.dumps(answer), fault=fault, park=sim._park)
    sim.stats.streams_started += 1
    response, completed = await send_stream(
        request, completion, ttft=ttft, interval=interval, fault=fault, park=sim._park
    )
    if completed:
        sim.stats.streams_completed += 1
    return response


async def send_stream(
    request: web.Request,
    completion: Completion,
    *,
    ttft: float,
    interval: float,
    fault: Fault | None,
    park: Any,
) -> tuple[web.StreamResponse, bool]:
    """The SSE answer; returns the response and whether its finishReason event was sent."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    if ttft > 0:
        await asyncio.sleep(ttft)
    if completion.tool_call is not None:
        events = [gw.response_object(completion, [gw.call_part(completion)], finish=True)]
    else:
        pieces = completion.pieces or [""]
        events = [
            gw.response_object(completion, [{"text": piece}], finish=i == len(pieces) - 1)
            for i, piece in enumerate(pieces)
        ]
    fault_at = min(fault.after_tokens, len(events) - 1) if fault is not None else -1
    mode = fault.mode if fault is not None else "none"
    pacer = Pacer(interval)
    for index, data in enumerate(events):
        if index == fault_at:
            if mode == "cut":
                netio.drop_connection(request)
                return response, False
            if mode == "stall":
                await park()
                netio.abort_transport(request.transport)
                return response, False
            if mode == "malformed":
                await response.write(gw.SSE_MALFORMED)
            if mode == "overloaded":
                await response.write(gw.OVERLOADED_EVENT)
                await response.write_eof()
                return response, False
            if mode == "echo_key":
                message = f"API key not valid: {credential_of(request.headers)}"
                await response.write(gw.error_event(400, "INVALID_ARGUMENT", message))
                await response.write_eof()
                return response, False
            if mode == "keepalive_only":
                await keep_alive(request, response, park, gw.SSE_KEEPALIVE)
                return response, False
        await pacer.wait_for(index)
        await response.write(gw.event(data))
    await response.write_eof()
    return response, True


async def serve_embeddings(
    sim: SimProvider, request: web.Request, model: str, method: str
) -> web.StreamResponse:
    body, fault, early = await _admit(sim, request)
    if early is not None:
        return early
    if fault is not None and fault.mode == "overloaded":
        return gw.error_response(503, message=gw.OVERLOADED_MESSAGE)
    try:
        parsed = orjson.loads(body)
        answer = (
            embeddings.gemini_batch_answer
            if method == "batchEmbedContents"
            else embeddings.gemini_one_answer
        )(parsed, model, seed=sim.config.seed, default_dimensions=sim.config.embedding_dimensions)
    except (orjson.JSONDecodeError, embeddings.BadEmbeddings, AttributeError, TypeError) as exc:
        sim.stats.record("bad_request")
        message = (
            exc.message
            if isinstance(exc, embeddings.BadEmbeddings)
            else "Invalid JSON payload received."
        )
        return gw.error_response(400, message=message)
    if fault is None:
        sim.stats.record("ok")
    sim.received.append(body)
    sim._models.setdefault(model, None)
    return await send_body(request, orjson.dumps(answer), fault=fault, park=sim._park)


async def list_models(sim: SimProvider, request: web.Request) -> web.Response:
    """``GET /v1/models`` in Gemini's shape (``{"models": [{"name": "models/..."}]}``)."""
    refused = refuse_key(sim, request)
    if refused is not None:
        return refused
    models = [{"name": f"models/{model}", "displayName": model} for model in sim._models]
    return web.Response(body=orjson.dumps({"models": models}), content_type="application/json")

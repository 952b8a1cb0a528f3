"""The simulated provider's Anthropic Messages wire: ``POST /v1/messages``.

Served by a simulator whose ``SimConfig.wire`` is ``anthropic``, with the same simulated model as
the OpenAI wire (text, tool use, ``max_tokens``), the same faults and the same stats:

- non-stream: a ``message`` object (``text`` or ``tool_use`` content, ``stop_reason``
  ``end_turn`` / ``max_tokens`` / ``tool_use``, ``usage``);
- stream: ``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``
  (``text_delta`` or ``input_json_delta``), ``content_block_stop``, ``message_delta``,
  ``message_stop``;
- auth: with ``require_api_key``, ``x-api-key`` (or ``Authorization: Bearer``) must match, else
  401 ``authentication_error``; ``anthropic-version`` is required (400 without it);
- errors: ``{"type": "error", "error": {"type", "message"}}``; fault ``status`` uses the
  status's Anthropic type (429 ``rate_limit_error``, 500 ``api_error``, 529
  ``overloaded_error``; ``error_code`` may name a type or an OpenAI code such as
  ``context_length_exceeded`` -> "prompt is too long");
- fault ``overloaded``: an ``event: error`` with ``overloaded_error`` after ``after_tokens``
  deltas, then the end of the body (non-stream: 529); ``no_done``: no ``message_stop``;
  ``malformed``: an event whose JSON is broken; ``echo_key``: an ``authentication_error``
  quoting the key received (HTTP ``status``, or in-stream after ``after_tokens`` deltas);
  ``keepalive_only``: ``ping`` events only after ``after_tokens`` deltas; ``cut``, ``stall``,
  ``slow_first_token``, ``reset``, ``hang``, ``refuse`` as on the OpenAI wire;
- extended thinking (``anthropic_thinking``): signed ``thinking`` blocks first (streamed as
  ``thinking_delta`` and ``signature_delta``, counted with the deltas ``after_tokens`` counts),
  a follow-up turn with altered or missing thinking blocks refused like Anthropic does.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from edgeproxy.server.ingress.anthropic_messages import parse_messages_request
from edgeproxy.server.ingress.base import ClientError

from . import anthropic_thinking as thinking
from . import anthropic_wire as aw
from . import netio
from .completion import Completion
from .faults import Fault
from .request import ChatRequest
from .respond import Pacer, keep_alive, send_body
from .tools import last_user_text
from .wire import credential_of

if TYPE_CHECKING:
    from .provider import SimProvider


def authorized(sim: SimProvider, request: web.Request) -> bool:
    expected = sim.config.require_api_key
    if expected is None:
        return True
    if hmac.compare_digest(request.headers.get("x-api-key", ""), expected):
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)


def to_chat_request(body: dict[str, Any]) -> ChatRequest:
    """The simulated model's view of a Messages request (it plans answers for both wires)."""
    choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
    assert isinstance(choice, dict)
    kind = choice.get("type", "auto")
    tools: list[tuple[str, Any]] = []
    if kind != "none":
        for tool in body.get("tools") or []:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                tools.append((tool["name"], tool.get("input_schema")))
    name = choice.get("name")
    messages = list(body["messages"])
    return ChatRequest(
        model=body["model"],
        messages=messages,
        stream=bool(body.get("stream")),
        include_usage=True,
        max_tokens=body["max_tokens"],
        tools=tools,
        tool_forced=kind in ("any", "tool"),
        tool_forced_name=name if kind == "tool" and isinstance(name, str) else None,
    )


async def serve_messages(sim: SimProvider, request: web.Request) -> web.StreamResponse:
    body = await request.read()
    fault, early = await sim.opening(
        request,
        lambda f: aw.error_response(f.status, code=f.error_code, retry_after=f.retry_after),
    )
    if early is not None:
        return early

    if not authorized(sim, request):
        sim.stats.record("unauthorized")
        return aw.error_response(401)
    if not request.headers.get("anthropic-version"):
        sim.stats.record("bad_request")
        return aw.error_response(400, message="anthropic-version: header is required")
    try:
        parsed = parse_messages_request(body)
    except ClientError as exc:
        sim.stats.record("bad_request")
        return aw.error_response(exc.status, code=exc.type, message=exc.message)
    budget = thinking.budget(parsed)
    refused = budget if isinstance(budget, str) else thinking.check_history(parsed, bool(budget))
    if refused is not None:
        sim.stats.record("bad_request")
        return aw.error_response(400, message=refused)
    if fault is None:
        sim.stats.record("ok")
    sim.received.append(body)

    chat = to_chat_request(parsed)
    if fault is not None and fault.mode == "echo_key" and not (chat.stream and fault.after_tokens):
        return aw.error_response(
            fault.status,
            code=fault.error_code or "invalid_api_key",
            message=f"invalid x-api-key: {credential_of(request.headers)}",
        )
    sim._models.setdefault(chat.model, None)
    completion, ttft, interval, fault = sim.plan(chat, body, fault)
    thoughts = (
        thinking.blocks(last_user_text(chat.messages), fault.mode if fault else "none")
        if budget
        else []
    )
    thought_tokens = sum(len(thinking.pieces(b.get("thinking", ""))) for b in thoughts)
    if not chat.stream:
        if fault is not None and fault.mode == "overloaded":
            return aw.error_response(529)
        delay = ttft + interval * completion.completion_tokens
        if delay > 0:
            await asyncio.sleep(delay)
        answer = aw.message_object(
            message_id=message_id(completion),
            model=completion.model,
            content=thoughts + content_blocks(completion),
            stop_reason=aw.STOP_REASONS[completion.finish_reason],
            **_input_usage(completion),
            output_tokens=completion.completion_tokens + thought_tokens,
        )
        return await send_body(request, orjson.dumps(answer), fault=fault, park=sim._park)

    sim.stats.streams_started += 1
    response, completed = await send_stream(
        request,
        completion,
        ttft=ttft,
        interval=interval,
        fault=fault,
        park=sim._park,
        thoughts=thoughts,
    )
    if completed:
        sim.stats.streams_completed += 1
    return response


def _input_usage(completion: Completion) -> dict[str, int]:
    """The prompt's tokens as Anthropic reports them: input excludes cache reads and writes."""
    read, written = completion.cached_tokens, completion.cache_write_tokens
    return {
        "input_tokens": completion.prompt_tokens - read - written,
        "cache_read": read,
        "cache_write": written,
    }


def message_id(completion: Completion) -> str:
    return "msg_" + completion.completion_id.removeprefix("chatcmpl-")


def content_blocks(completion: Completion) -> list[dict[str, Any]]:
    call = completion.tool_call
    if call is None:
        return [{"type": "text", "text": completion.content}]
    return [
        {
            "type": "tool_use",
            "id": "toolu_" + call.call_id,
            "name": call.name,
            "input": orjson.loads(call.arguments),
        }
    ]


async def send_stream(
    request: web.Request,
    completion: Completion,
    *,
    ttft: float,
    interval: float,
    fault: Fault | None,
    park: Any,
    thoughts: list[dict[str, Any]] | None = None,
) -> tuple[web.StreamResponse, bool]:
    """The SSE answer; returns the response and whether it reached its final ``message_delta``."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "request-id": aw.new_request_id(),
        }
    )
    await response.prepare(request)
    if ttft > 0:
        await asyncio.sleep(ttft)
    start = aw.message_object(
        message_id=message_id(completion),
        model=completion.model,
        content=[],
        stop_reason=None,
        **_input_usage(completion),
        output_tokens=1,
    )
    # Thinking blocks first (each event of them one of the deltas a fault counts), then the
    # answer's block at the next index.
    first, deltas = _thinking_events(thoughts or [])
    at = len(thoughts or [])
    call = completion.tool_call
    if call is None:
        block: dict[str, Any] = {"type": "text", "text": ""}
        answer = [aw.text_delta(at, piece) for piece in completion.pieces]
    else:
        block = {"type": "tool_use", "id": "toolu_" + call.call_id, "name": call.name, "input": {}}
        answer = [aw.input_json_delta(at, "")] + [
            aw.input_json_delta(at, piece) for piece in call.pieces
        ]
    if first:
        deltas.append(aw.block_start(at, block) + answer[0])
        deltas.extend(answer[1:])
    else:
        first, deltas = aw.block_start(at, block), answer
    await response.write(
        aw.event("message_start", {"type": "message_start", "message": start}) + first + aw.PING
    )
    fault_at = min(fault.after_tokens, len(deltas)) if fault is not None else -1
    mode = fault.mode if fault is not None else "none"
    pacer = Pacer(interval)
    for index in range(len(deltas) + 1):
        if index == fault_at:
            if mode == "cut":
                netio.drop_connection(request)
                return response, False
            if mode == "stall":
                await park()
                netio.abort_transport(request.transport)
                return response, False
            if mode == "malformed":
                await response.write(aw.SSE_MALFORMED)
            if mode == "overloaded":
                await response.write(aw.OVERLOADED_EVENT)
                await response.write_eof()
                return response, False
            if mode == "echo_key":
                message = f"invalid x-api-key: {credential_of(request.headers)}"
                error = {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": message},
                }
                await response.write(aw.event("error", error))
                await response.write_eof()
                return response, False
            if mode == "keepalive_only":
                await keep_alive(request, response, park, aw.PING)
                return response, False
        if index == len(deltas):
            break
        await pacer.wait_for(index)
        await response.write(deltas[index])
    tail = aw.block_stop(at) + aw.message_delta(
        aw.STOP_REASONS[completion.finish_reason], completion.completion_tokens
    )
    if mode != "no_done":
        tail += aw.MESSAGE_STOP
    await response.write(tail)
    await response.write_eof()
    return response, True


def _thinking_events(thoughts: list[dict[str, Any]]) -> tuple[bytes, list[bytes]]:
    """The first thinking block's start, and every later thinking event (one per delta)."""
    if not thoughts:
        return b"", []
    events: list[bytes] = []
    for index, block in enumerate(thoughts):
        if block["type"] == "thinking":
            events.append(aw.block_start(index, {**block, "thinking": "", "signature": ""}))
            events.extend(aw.thinking_delta(index, p) for p in thinking.pieces(block["thinking"]))
            events.append(aw.signature_delta(index, block["signature"]))
        else:
            events.append(aw.block_start(index, block))
        events.append(aw.block_stop(index))
    return events[0], events[1:]

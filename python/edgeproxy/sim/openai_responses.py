"""The simulated provider's Responses API wire: ``POST /v1/responses``.

Served by a simulator whose ``SimConfig.wire`` is ``openai_responses``, with the same simulated
model as the other wires (text, function calls, ``max_output_tokens``), the same faults and the
same stats (``GET /v1/models`` and ``POST /v1/embeddings`` are the OpenAI wire's):

- an answer: a ``response`` object (``sim/openai_responses_wire.py``): a ``message`` item or a
  ``function_call`` item, ``status`` ``completed`` or ``incomplete`` (``max_output_tokens``),
  ``usage``;
- a stream (``stream: true``): ``response.created``, ``response.in_progress``, the item's
  ``response.output_item.added``, its deltas (``response.output_text.delta`` or
  ``response.function_call_arguments.delta``), their ``.done`` events,
  ``response.output_item.done``, then ``response.completed`` (or ``response.incomplete``);
- the body is checked as OpenAI checks it: an unknown field (at the top, in a tool, in an item)
  is a 400 ``unknown_parameter``; ``max_output_tokens`` below 16 a 400
  ``integer_below_min_value``; an assistant's ``input_text`` part, a ``function_call_output``
  whose ``call_id`` no earlier ``function_call`` has, and ``previous_response_id`` (the
  simulator stores nothing) are 400s. So a translation that invents a field cannot pass;
- auth and errors are OpenAI's (``Authorization: Bearer``, ``{"error": {...}}``);
- faults: as on the OpenAI wire; in a stream, ``overloaded`` and ``echo_key`` are an ``error``
  event (nested, as OpenAI sends it) after ``after_tokens`` deltas, then the end of the body;
  ``no_done`` leaves out the terminal ``response.completed`` (a stream that just ends);
  ``malformed`` an event whose JSON is broken; ``keepalive_only`` SSE comments only.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web

from . import netio
from . import openai_responses_wire as rw
from .completion import Completion
from .errors import error_response
from .faults import Fault
from .request import BadRequest, ChatRequest
from .respond import Pacer, keep_alive, send_body
from .wire import echo_key_message

if TYPE_CHECKING:
    from .provider import SimProvider

MIN_OUTPUT_TOKENS: Final = 16
_FIELDS: Final = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "stream_options",
        "store",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "max_tool_calls",
        "temperature",
        "top_p",
        "top_logprobs",
        "parallel_tool_calls",
        "metadata",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
        "reasoning",
        "text",
        "include",
        "truncation",
        "background",
        "previous_response_id",
        "conversation",
        "prompt",
    }
)
_TOOL_FIELDS: Final = frozenset({"type", "name", "description", "parameters", "strict"})
_ITEM_FIELDS: Final = {
    "message": frozenset({"type", "role", "content", "id", "status"}),
    "function_call": frozenset({"type", "call_id", "name", "arguments", "id", "status"}),
    "function_call_output": frozenset({"type", "call_id", "output", "id", "status"}),
}
_PARTS: Final = {
    "assistant": frozenset({"output_text", "refusal"}),
    "user": frozenset({"input_text", "input_image", "input_file"}),
    "system": frozenset({"input_text"}),
    "developer": frozenset({"input_text"}),
}


def _unknown(fields: Any, known: frozenset[str], where: str) -> None:
    if not isinstance(fields, dict):
        raise BadRequest(f"Invalid type for '{where}': expected an object.", param=where)
    for name in fields:
        if name not in known:
            param = f"{where}.{name}" if where else name
            raise BadRequest(
                f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter"
            )


def _text(content: Any, role: str, where: str) -> str:
    """The text of a message item's content, its parts checked as OpenAI checks them."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"Invalid type for '{where}': expected a string or an array.", param=where)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PARTS[role]:
            allowed = "', '".join(sorted(_PARTS[role]))
            raise BadRequest(
                f"Invalid value: '{kind}'. Supported values are: '{allowed}'.",
                param=f"{where}[{j}].type",
                code="invalid_value",
            )
        assert isinstance(part, dict)
        texts.append(str(part.get("text") or part.get("refusal") or ""))
    return " ".join(texts)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The simulated model's view of ``instructions`` and ``input``."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": str(instructions)})
    source = body.get("input")
    if isinstance(source, str):
        return [*messages, {"role": "user", "content": source}]
    if not isinstance(source, list):
        raise BadRequest("Missing required parameter: 'input'.", param="input")
    calls: set[str] = set()
    for i, item in enumerate(source):
        where = f"input[{i}]"
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind not in _ITEM_FIELDS:
            raise BadRequest(
                f"Invalid value: '{kind}'.", param=f"{where}.type", code="invalid_value"
            )
        _unknown(item, _ITEM_FIELDS[kind], where)
        if kind == "message":
            role = item.get("role")
            if role not in _PARTS:
                raise BadRequest(f"Invalid value: '{role}'.", param=f"{where}.role")
            text = _text(item.get("content"), role, f"{where}.content")
            messages.append({"role": role, "content": text})
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise BadRequest(
                        f"Missing required parameter: '{where}.{key}'.", param=f"{where}.{key}"
                    )
            calls.add(item["call_id"])
            messages.append({"role": "assistant", "content": ""})
        else:
            if item.get("call_id") not in calls:
                raise BadRequest(
                    "No tool call found for function call output with call_id "
                    f"{item.get('call_id')}.",
                    param="input",
                )
            output = item.get("output")
            messages.append({"role": "tool", "content": output if isinstance(output, str) else ""})
    return messages


def _tools(body: dict[str, Any]) -> tuple[list[tuple[str, Any]], bool, str | None]:
    tools: list[tuple[str, Any]] = []
    for i, tool in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        _unknown(tool, _TOOL_FIELDS, where)
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise BadRequest(f"Missing required parameter: '{where}.name'.", param=where)
        tools.append((tool["name"], tool.get("parameters")))
    choice = body.get("tool_choice")
    if choice == "none":
        return [], False, None
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise BadRequest("Invalid value for 'tool_choice'.", param="tool_choice")
        return tools, True, choice["name"]
    return tools, choice == "required", None


def to_chat_request(body: Any) -> ChatRequest:
    """The simulated model's view of a Responses request; ``BadRequest`` as OpenAI refuses."""
    _unknown(body, _FIELDS, "")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Missing required parameter: 'model'.", param="model")
    if body.get("previous_response_id") is not None:
        raise BadRequest(
            f"Previous response with id '{body['previous_response_id']}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise BadRequest("Invalid type for 'max_output_tokens'.", param="max_output_tokens")
    if limit is not None and limit < MIN_OUTPUT_TOKENS:
        raise BadRequest(
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{MIN_OUTPUT_TOKENS}, but got {limit} instead.",
            param="max_output_tokens",
            code="integer_below_min_value",
        )
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise BadRequest("Invalid type for 'stream': expected a boolean.", param="stream")
    tools, forced, forced_name = _tools(body)
    return ChatRequest(
        model=model,
        messages=_messages(body),
        stream=stream,
        include_usage=True,
        max_tokens=limit,
        tools=tools,
        tool_forced=forced,
        tool_forced_name=forced_name,
    )


async def serve_responses(sim: SimProvider, request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``: an answer or a stream, with the sim's faults."""
    body = await request.read()
    fault, early = await sim.opening(request)
    if early is not None:
        return early
    if not sim._authorized(request):
        sim.stats.record("unauthorized")
        return error_response(401, code="invalid_api_key")
    try:
        chat = to_chat_request(orjson.loads(body))
    except orjson.JSONDecodeError:
        sim.stats.record("bad_request")
        return error_response(400, message="We could not parse the JSON body of your request.")
    except BadRequest as exc:
        sim.stats.record("bad_request")
        return error_response(400, code=exc.code, message=exc.message, param=exc.param)
    if fault is None:
        sim.stats.record("ok")
    sim.received.append(body)
    if fault is not None and fault.mode == "echo_key" and not (chat.stream and fault.after_tokens):
        return error_response(
            fault.status,
            code=fault.error_code or "invalid_api_key",
            message=echo_key_message(request.headers),
        )
    sim._models.setdefault(chat.model, None)
    completion, ttft, interval, fault = sim.plan(chat, body, fault)
    if not chat.stream:
        if fault is not None and fault.mode == "overloaded":
            return error_response(529)
        delay = ttft + interval * completion.completion_tokens
        if delay > 0:
            await asyncio.sleep(delay)
        answer = rw.response_object(completion, status="completed")
        if not sim.config.reports_usage:
            answer["usage"] = None
        return await send_body(request, orjson.dumps(answer), fault=fault, park=sim._park)
    sim.stats.streams_started += 1
    response, completed = await send_stream(
        request,
        completion,
        ttft=ttft,
        interval=interval,
        fault=fault,
        park=sim._park,
        reports_usage=sim.config.reports_usage,
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
    reports_usage: bool = True,
) -> tuple[web.StreamResponse, bool]:
    """The typed event stream; returns the response and whether its terminal event was sent."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    if ttft > 0:
        await asyncio.sleep(ttft)
    writer = rw.EventWriter()
    opening, deltas, closing = rw.stream_events(completion)
    for kind, fields in opening:
        await response.write(writer.event(kind, fields))
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
                await response.write(rw.SSE_MALFORMED)
            if mode in ("overloaded", "echo_key"):
                error = (
                    rw.error_event("server_error", rw.OVERLOADED_MESSAGE)
                    if mode == "overloaded"
                    else rw.error_event("invalid_api_key", echo_key_message(request.headers))
                )
                await response.write(writer.event(*error))
                await response.write_eof()
                return response, False
            if mode == "keepalive_only":
                await keep_alive(request, response, park, rw.SSE_KEEPALIVE)
                return response, False
        if index == len(deltas):
            break
        await pacer.wait_for(index)
        await response.write(writer.event(*deltas[index]))
    for kind, fields in closing:
        await response.write(writer.event(kind, fields))
    if mode != "no_done":
        kind, fields = rw.terminal_event(completion)
        if not reports_usage:
            fields["response"]["usage"] = None
        await response.write(writer.event(kind, fields))
    await response.write_eof()
    return response, mode != "no_done"

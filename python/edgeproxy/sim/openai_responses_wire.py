"""OpenAI Responses API wire objects: ``response`` bodies and the typed stream events.

Shapes follow OpenAI's API reference (``POST /v1/responses``): a response holds ``output``
items (a ``message`` with ``output_text`` parts, or ``function_call`` items), ``status``
(``completed``, or ``incomplete`` with ``incomplete_details.reason``) and ``usage``
(``input_tokens`` with ``input_tokens_details.cached_tokens``, ``output_tokens`` with
``output_tokens_details.reasoning_tokens``). Stream events are ``event: <type>`` /
``data: {"type", "sequence_number", ...}``. Errors are OpenAI's JSON (``sim/errors.py``).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from .completion import Completion

SSE_MALFORMED: Final = b'event: response.output_text.delta\ndata: {"type": broken\n\n'
SSE_KEEPALIVE: Final = b": keep-alive\n\n"
OVERLOADED_MESSAGE: Final = "The server is overloaded. Please try again later."


def response_id(completion: Completion) -> str:
    return "resp_" + completion.completion_id.removeprefix("chatcmpl-")


def usage(completion: Completion) -> dict[str, Any]:
    return {
        "input_tokens": completion.prompt_tokens,
        "input_tokens_details": {"cached_tokens": completion.cached_tokens},
        "output_tokens": completion.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": completion.reasoning_tokens},
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def message_item(completion: Completion, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": "msg_" + completion.completion_id.removeprefix("chatcmpl-"),
        "status": status,
        "role": "assistant",
        "content": content if status == "completed" else [],
    }


def call_item(completion: Completion, arguments: str, status: str) -> dict[str, Any]:
    call = completion.tool_call
    assert call is not None
    return {
        "type": "function_call",
        "id": "fc_" + call.call_id,
        "call_id": "call_" + call.call_id,
        "name": call.name,
        "arguments": arguments,
        "status": status,
    }


def output(completion: Completion) -> list[dict[str, Any]]:
    if completion.tool_call is not None:
        return [call_item(completion, completion.tool_call.arguments, "completed")]
    return [message_item(completion, completion.content, "completed")]


def response_object(
    completion: Completion, *, status: str, items: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A ``response``: ``in_progress`` (no output, no usage), or finished."""
    finished = status != "in_progress"
    if finished and completion.finish_reason == "length":
        status = "incomplete"
    return {
        "id": response_id(completion),
        "object": "response",
        "created_at": completion.created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": completion.model,
        "output": (items if items is not None else output(completion)) if finished else [],
        "parallel_tool_calls": True,
        "store": False,
        "usage": usage(completion) if finished else None,
    }


class EventWriter:
    """Numbers the events of one stream (``sequence_number`` from 0)."""

    def __init__(self) -> None:
        self.sequence = 0

    def event(self, kind: str, fields: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


Event = tuple[str, dict[str, Any]]  # (type, fields): numbered when written


def stream_events(completion: Completion) -> tuple[list[Event], list[Event], list[Event]]:
    """The stream as (opening events, content deltas, closing events): a fault "after N
    tokens" strikes after the first N deltas."""
    opening: list[Event] = [
        ("response.created", {"response": response_object(completion, status="in_progress")}),
        ("response.in_progress", {"response": response_object(completion, status="in_progress")}),
    ]
    call = completion.tool_call
    if call is not None:
        item = call_item(completion, "", "in_progress")
        where = {"item_id": item["id"], "output_index": 0}
        opening.append(("response.output_item.added", {"output_index": 0, "item": item}))
        deltas: list[Event] = [
            ("response.function_call_arguments.delta", {**where, "delta": piece})
            for piece in call.pieces
            if piece
        ]
        done = call_item(completion, call.arguments, "completed")
        closing: list[Event] = [
            ("response.function_call_arguments.done", {**where, "arguments": call.arguments}),
            ("response.output_item.done", {"output_index": 0, "item": done}),
        ]
        return opening, deltas, closing
    item = message_item(completion, "", "in_progress")
    at = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    opening.append(("response.output_item.added", {"output_index": 0, "item": item}))
    opening.append(("response.content_part.added", {**at, "part": empty}))
    deltas = [
        ("response.output_text.delta", {**at, "delta": piece, "logprobs": []})
        for piece in completion.pieces
    ]
    text = completion.content
    closing = [
        ("response.output_text.done", {**at, "text": text, "logprobs": []}),
        ("response.content_part.done", {**at, "part": {**empty, "text": text}}),
        (
            "response.output_item.done",
            {"output_index": 0, "item": message_item(completion, text, "completed")},
        ),
    ]
    return opening, deltas, closing


def terminal_event(completion: Completion) -> Event:
    """``response.completed`` (``response.incomplete`` for a length stop) with the usage."""
    response = response_object(completion, status="completed")
    kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    return kind, {"response": response}


def error_event(code: str, message: str) -> Event:
    """An in-stream ``error`` event, nested under ``error`` as OpenAI's servers send it."""
    return "error", {"error": {"type": "server_error", "code": code, "message": message}}

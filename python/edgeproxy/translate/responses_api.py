"""OpenAI's Responses API <-> the proxy's inner Chat Completions shape (docs/responses.md).

A ``POST /v1/responses`` body becomes a Chat Completions body (``responses_to_chat_request``);
a ``chat.completion`` becomes a ``response`` object (``chat_to_response``); a stream of
``chat.completion.chunk`` events becomes the Responses API's typed events (``ResponsesEvents``).
The proxy is stateless: nothing is stored, so ``previous_response_id``, ``conversation`` and
item references are refused with a message that says what to send instead.

The rule of every translation in the proxy holds: a field is translated, dropped on purpose
(``DROPPED_FIELDS``, each with its reason) or refused with ``TranslationError`` naming it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

from edgeproxy._core import SseError, SseParser, encode_sse

from .util import as_dict, as_list, as_str, refuse

# Fields dropped on purpose (docs/responses.md says why).
DROPPED_FIELDS: Final = frozenset(
    {
        "store",  # the proxy stores nothing, whatever is asked; answers say store: false
        "stream_options",  # include_obfuscation: padding against length side channels, not needed
        "max_tool_calls",  # a bound on OpenAI's hosted tool calls, which are refused anyway
        "prompt_cache_retention",  # a hint to OpenAI's cache; providers cache their own way
    }
)
# Fields carried to the inner Chat Completions body under the same name.
_SAME: Final = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
)
# What the proxy keeps no state for: what to send instead.
_STATEFUL: Final = {
    "previous_response_id": (
        "this proxy keeps no conversation state (it is stateless, docs/responses.md): send the "
        "earlier turns as items in 'input' (with store: false, as the Agents SDK does)"
    ),
    "conversation": (
        "this proxy keeps no conversation state: send the conversation's items in 'input'"
    ),
    "prompt": "stored prompt templates live at OpenAI; send the instructions and input",
}
# The fields a response object echoes from its request.
ECHOED: Final = (
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "reasoning",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
)
_INCLUDE_IGNORED: Final = frozenset({"reasoning.encrypted_content"})  # no reasoning items made


# -- request ------------------------------------------------------------------------------------


def responses_to_chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The inner Chat Completions body for a Responses API body (``TranslationError`` for a
    field the proxy cannot serve)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise refuse("model", "a non-empty string is required")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": as_str(instructions, "instructions")})
    source = body.get("input")
    if source is None:
        raise refuse("input", "required (this proxy keeps no state to continue from)")
    if isinstance(source, str):
        messages.append({"role": "user", "content": source})
    else:
        for i, item in enumerate(as_list(source, "input")):
            _item(as_dict(item, f"input[{i}]"), f"input[{i}]", messages)
    if not any(m["role"] != "system" for m in messages):
        raise refuse("input", "at least one item besides the instructions is required")
    out: dict[str, Any] = {"model": model, "messages": messages}
    for key, value in body.items():
        if key in ("model", "input", "instructions") or value is None:
            continue
        if key in _STATEFUL:
            raise refuse(key, _STATEFUL[key])
        if key in DROPPED_FIELDS:
            continue
        if key in _SAME:
            out[key] = value
        elif key == "stream":
            if not isinstance(value, bool):
                raise refuse(key, "expected a boolean")
            if value:
                out["stream"] = True
                out["stream_options"] = {"include_usage": True}
        elif key == "max_output_tokens":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise refuse(key, "expected an integer >= 1")
            out["max_tokens"] = value
        elif key == "tools":
            tools = [_tool(t, i) for i, t in enumerate(as_list(value, key))]
            if tools:
                out["tools"] = tools
        elif key == "tool_choice":
            out["tool_choice"] = _tool_choice(value)
        elif key == "text":
            out.update(_text(as_dict(value, key)))
        elif key == "reasoning":
            out.update(_reasoning(as_dict(value, key)))
        elif key == "include":
            for j, name in enumerate(as_list(value, key)):
                if name not in _INCLUDE_IGNORED:
                    raise refuse(f"include[{j}]", f"{name!r} is not produced by this proxy")
        elif key == "truncation":
            if value != "disabled":
                raise refuse(
                    key,
                    "only 'disabled': a conversation too long for a model is the route's "
                    "context.overflow to handle (docs/context.md)",
                )
        elif key == "background":
            if value:
                raise refuse(key, "background responses need stored state; this proxy keeps none")
        elif key == "top_logprobs":
            if value:
                raise refuse(key, "log probabilities are not translated to Responses output")
        else:
            raise refuse(key, "this Responses API field is not supported by the proxy")
    if "tools" not in out:
        # The Responses API takes these without tools; Chat Completions refuses them.
        out.pop("parallel_tool_calls", None)
        if out.get("tool_choice") in ("auto", "none"):
            del out["tool_choice"]
        elif "tool_choice" in out:
            raise refuse("tool_choice", "a tool choice needs tools")
    return out


def _text_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    return {"type": "text", "text": as_str(part.get("text"), f"{where}.text")}


def _content(content: Any, role: str, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(as_list(content, where)):
        at = f"{where}[{j}]"
        part = as_dict(part, at)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append(_text_part(part, at))
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "refusal", "refusal": as_str(part.get("refusal"), at)})
        elif kind == "input_image" and role != "assistant":
            if part.get("file_id") is not None:
                raise refuse(f"{at}.file_id", "files uploaded to OpenAI are not reachable here")
            image: dict[str, Any] = {"url": as_str(part.get("image_url"), f"{at}.image_url")}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise refuse(f"{at}.type", f"content part {kind!r} is not supported by the proxy")
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _item(item: dict[str, Any], where: str, messages: list[dict[str, Any]]) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise refuse(
                f"{where}.role", f"expected user, assistant, system or developer, got {role!r}"
            )
        messages.append(
            {"role": role, "content": _content(item.get("content"), role, f"{where}.content")}
        )
    elif kind == "function_call":
        call = {
            "id": as_str(item.get("call_id"), f"{where}.call_id"),
            "type": "function",
            "function": {
                "name": as_str(item.get("name"), f"{where}.name"),
                "arguments": as_str(item.get("arguments", "{}"), f"{where}.arguments"),
            },
        }
        last = messages[-1] if messages else None
        # Calls of one turn go in one assistant message, with its text if it came just before.
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
            last.setdefault("content", None)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        content: str | list[dict[str, Any]]
        if isinstance(output, str):
            content = output
        else:
            content = []
            for j, part in enumerate(as_list(output, f"{where}.output")):
                at = f"{where}.output[{j}]"
                part = as_dict(part, at)
                if part.get("type") not in ("input_text", "output_text", "text"):
                    raise refuse(f"{at}.type", "tool outputs are carried as text only")
                content.append(_text_part(part, at))
        messages.append(
            {
                "role": "tool",
                "tool_call_id": as_str(item.get("call_id"), f"{where}.call_id"),
                "content": content,
            }
        )
    elif kind == "reasoning":
        return  # a model's own reasoning, opaque to any other: dropped (docs/responses.md)
    elif kind == "item_reference":
        raise refuse(where, "item references point at stored items; send the items themselves")
    else:
        raise refuse(
            f"{where}.type",
            f"item type {kind!r} is not supported (hosted tools run at OpenAI, not here)",
        )


def _tool(tool: Any, i: int) -> dict[str, Any]:
    where = f"tools[{i}]"
    tool = as_dict(tool, where)
    if tool.get("type") != "function":
        raise refuse(
            f"{where}.type",
            f"tool type {tool.get('type')!r} runs at OpenAI; the proxy translates function tools",
        )
    function: dict[str, Any] = {"name": as_str(tool.get("name"), f"{where}.name")}
    if tool.get("description") is not None:
        function["description"] = as_str(tool["description"], f"{where}.description")
    if tool.get("parameters") is not None:
        function["parameters"] = as_dict(tool["parameters"], f"{where}.parameters")
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {
            "type": "function",
            "function": {"name": as_str(choice.get("name"), "tool_choice.name")},
        }
    raise refuse("tool_choice", f"{choice!r} is not supported (function tools only)")


def _text(text: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fmt = text.get("format")
    if fmt is not None:
        fmt = as_dict(fmt, "text.format")
        kind = fmt.get("type")
        if kind == "json_object":
            out["response_format"] = {"type": "json_object"}
        elif kind == "json_schema":
            schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
            out["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif kind != "text":
            raise refuse("text.format.type", f"{kind!r} is not supported")
    verbosity = text.get("verbosity")
    if verbosity is not None:
        out["verbosity"] = verbosity
    return out


def _reasoning(reasoning: dict[str, Any]) -> dict[str, Any]:
    for key in ("summary", "generate_summary"):
        if reasoning.get(key) is not None:
            raise refuse(f"reasoning.{key}", "reasoning summaries are not translated")
    effort = reasoning.get("effort")
    return {"reasoning_effort": effort} if effort is not None else {}


# -- answers ------------------------------------------------------------------------------------


def _suffix(chat_id: Any) -> str:
    text = chat_id if isinstance(chat_id, str) and chat_id else uuid.uuid4().hex
    return text.removeprefix("chatcmpl-")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """A chat ``usage`` in the Responses API's names."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    done_details = usage.get("completion_tokens_details")
    cached = (
        _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, Mapping) else 0
    )
    reasoning = (
        _count(done_details.get("reasoning_tokens")) if isinstance(done_details, Mapping) else 0
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _status(finish: Any) -> tuple[str, dict[str, str] | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    response_id: str,
    created: int,
    model: str,
    echo: Mapping[str, Any],
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``response`` object: its own fields, and those it echoes from the request."""
    out: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }
    out.update({k: v for k, v in echo.items() if v is not None})
    return out


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(call: Mapping[str, Any], status: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
    assert isinstance(function, Mapping)
    call_id = str(call.get("id") or "call_" + uuid.uuid4().hex[:24])
    return {
        "type": "function_call",
        "id": "fc_" + call_id.removeprefix("call_"),
        "call_id": call_id,
        "name": str(function.get("name") or ""),
        "arguments": str(function.get("arguments") or ""),
        "status": status,
    }


def chat_to_response(
    completion: Mapping[str, Any], echo: Mapping[str, Any], model: str
) -> dict[str, Any]:
    """A ``response`` object for a ``chat.completion`` (one choice)."""
    choices = as_list(completion.get("choices"), "choices")
    if len(choices) != 1:
        raise refuse("choices", f"a response holds one answer, not {len(choices)}")
    choice = as_dict(choices[0], "choices[0]")
    message = as_dict(choice.get("message"), "choices[0].message")
    suffix = _suffix(completion.get("id"))
    parts: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        parts.append(output_text(text))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    output: list[dict[str, Any]] = []
    if parts:
        output.append(message_item("msg_" + suffix, parts, "completed"))
    for j, call in enumerate(as_list(message.get("tool_calls") or [], "tool_calls")):
        output.append(call_item(as_dict(call, f"tool_calls[{j}]"), "completed"))
    status, incomplete = _status(choice.get("finish_reason"))
    created = completion.get("created")
    answered = completion.get("model")
    return response_object(
        "resp_" + suffix,
        created if isinstance(created, int) else int(time.time()),
        answered if isinstance(answered, str) and answered else model,
        echo,
        status=status,
        output=output,
        usage=responses_usage(completion.get("usage")),
        incomplete=incomplete,
    )


# -- stream -------------------------------------------------------------------------------------


class ResponsesEvents:
    """Chat Completions chunks (the relay's SSE) in, the Responses API's typed events out.

    ``response.created`` and ``response.in_progress`` open the stream; text arrives as a
    ``message`` item (``response.output_item.added``, ``response.content_part.added``,
    ``response.output_text.delta`` ... ``.done``), each tool call as a ``function_call`` item
    (``response.function_call_arguments.delta`` ... ``.done``); ``[DONE]`` closes the open
    items and ends with ``response.completed`` (``response.incomplete`` for a length or content
    filter stop) holding the whole response and its usage. Every event carries its
    ``sequence_number``; nothing else is sent after the last one.
    """

    def __init__(self, model: str, echo: Mapping[str, Any]) -> None:
        self._model = model
        self._echo = echo
        self._parser = SseParser()
        self.sequence = 0
        self.started = False
        self.done = False
        self._id = ""
        self._created = int(time.time())
        self._output: list[dict[str, Any]] = []  # every item, open or done, by output index
        self._message: int | None = None  # the open message item's output index
        self._parts: list[dict[str, Any]] = []  # its content parts (text, refusal)
        self._calls: dict[int, int] = {}  # a chat tool call's index -> its item's output index
        self._usage: dict[str, Any] | None = None
        self._finish: Any = None

    def feed(self, sse: bytes) -> bytes:
        try:
            events = self._parser.feed(sse)
        except SseError:
            return b""  # the relay checked every event already; a comment cannot break it
        out = bytearray()
        for event in events:
            if self.done:
                break
            if event.data == "[DONE]":
                out += self._complete()
                continue
            try:
                chunk = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                out += self._chunk(chunk)
        return bytes(out)

    def event(self, kind: str, fields: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return encode_sse(orjson.dumps(data).decode(), event=kind)

    def snapshot(self, status: str, incomplete: dict[str, str] | None = None) -> dict[str, Any]:
        return response_object(
            self._id or "resp_" + uuid.uuid4().hex,
            self._created,
            self._model,
            self._echo,
            status=status,
            output=[item for item in self._output if item.get("status") == "completed"]
            if status != "in_progress"
            else [],
            usage=responses_usage(self._usage) if status != "in_progress" else None,
            incomplete=incomplete,
        )

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self.started = True
        self._id = "resp_" + _suffix(chunk.get("id"))
        created = chunk.get("created")
        if isinstance(created, int):
            self._created = created
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self._model = model
        return self.event(
            "response.created", {"response": self.snapshot("in_progress")}
        ) + self.event("response.in_progress", {"response": self.snapshot("in_progress")})

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        out = bytearray()
        if not self.started:
            out += self._start(chunk)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out += self._delta(delta)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return bytes(out)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        out = bytearray()
        for kind, field in (("output_text", "content"), ("refusal", "refusal")):
            text = delta.get(field)
            if isinstance(text, str) and text:
                out += self._text(kind, text)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                out += self._call(call)
        return bytes(out)

    def _text(self, kind: str, text: str) -> bytes:
        out = bytearray()
        if self._message is None:
            out += self._close_calls()
            self._message = len(self._output)
            messages = sum(1 for item in self._output if item["type"] == "message")
            item_id = "msg_" + self._id.removeprefix("resp_") + (f"_{messages}" if messages else "")
            item = message_item(item_id, [], "in_progress")
            self._output.append(item)
            out += self.event(
                "response.output_item.added", {"output_index": self._message, "item": item}
            )
        item = self._output[self._message]
        if not self._parts or self._parts[-1]["type"] != kind:
            out += self._close_part()
            part = output_text("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
            self._parts.append(part)
            out += self.event(
                "response.content_part.added",
                {**self._where(), "content_index": len(self._parts) - 1, "part": dict(part)},
            )
        part = self._parts[-1]
        key = "text" if kind == "output_text" else "refusal"
        part[key] += text
        fields: dict[str, Any] = {
            **self._where(),
            "content_index": len(self._parts) - 1,
            "delta": text,
        }
        if kind == "output_text":
            fields["logprobs"] = []
        out += self.event(f"response.{kind}.delta", fields)
        item["content"] = self._parts
        return bytes(out)

    def _where(self) -> dict[str, Any]:
        assert self._message is not None
        return {"item_id": self._output[self._message]["id"], "output_index": self._message}

    def _close_part(self) -> bytes:
        if not self._parts or self._parts[-1].get("_done"):
            return b""
        part = self._parts[-1]
        index = len(self._parts) - 1
        kind = part["type"]
        key = "text" if kind == "output_text" else "refusal"
        done: dict[str, Any] = {**self._where(), "content_index": index, key: part[key]}
        if kind == "output_text":
            done["logprobs"] = []
        out = self.event(f"response.{kind}.done", done)
        out += self.event(
            "response.content_part.done",
            {**self._where(), "content_index": index, "part": dict(part)},
        )
        part["_done"] = True
        return out

    def _close_message(self) -> bytes:
        if self._message is None:
            return b""
        out = self._close_part()
        item = self._output[self._message]
        item["content"] = [{k: v for k, v in p.items() if k != "_done"} for p in self._parts]
        item["status"] = "completed"
        out += self.event(
            "response.output_item.done", {"output_index": self._message, "item": item}
        )
        self._message, self._parts = None, []
        return out

    def _call(self, call: dict[str, Any]) -> bytes:
        out = bytearray()
        index = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        position = self._calls.get(index)
        if position is None:
            out += self._close_message()
            position = self._calls[index] = len(self._output)
            item = call_item(
                {"id": call.get("id"), "function": {"name": function.get("name")}}, "in_progress"
            )
            self._output.append(item)
            out += self.event(
                "response.output_item.added", {"output_index": position, "item": dict(item)}
            )
        item = self._output[position]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            out += self.event(
                "response.function_call_arguments.delta",
                {"item_id": item["id"], "output_index": position, "delta": arguments},
            )
        return bytes(out)

    def _close_calls(self) -> bytes:
        out = bytearray()
        for position in self._calls.values():
            item = self._output[position]
            if item["status"] == "completed":
                continue
            item["status"] = "completed"
            out += self.event(
                "response.function_call_arguments.done",
                {
                    "item_id": item["id"],
                    "output_index": position,
                    "name": item["name"],
                    "arguments": item["arguments"],
                },
            )
            out += self.event("response.output_item.done", {"output_index": position, "item": item})
        return bytes(out)

    def _complete(self) -> bytes:
        out = bytearray()
        if not self.started:
            out += self._start({})
        out += self._close_message()
        out += self._close_calls()
        status, incomplete = _status(self._finish)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out += self.event(kind, {"response": self.snapshot(status, incomplete)})
        self.done = True
        return bytes(out)

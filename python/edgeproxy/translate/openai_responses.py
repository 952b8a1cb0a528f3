"""Translation between the proxy's inner Chat Completions shape and an upstream that speaks
OpenAI's Responses API (``POST {base}/responses``, the ``openai_responses`` wire,
docs/responses.md "A Responses upstream").

The reverse of ``responses_api`` (the ingress): a chat body becomes a stateless Responses
request (``chat_to_responses_request``: ``store: false``, the conversation as ``input`` items),
a ``response`` object becomes a ``chat.completion`` (``response_to_chat``), and the typed event
stream becomes chat chunks (``ResponsesToChatStream``, per network chunk). A Responses client
served by this wire goes Responses -> inner -> Responses: everything the ingress accepts
survives both translations (tests/property/test_responses_roundtrip.py).

The rule of every translation in the proxy holds: a field is translated, dropped on purpose
(``DROPPED_FIELDS``, each with its reason) or refused with ``TranslationError`` naming it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

from edgeproxy._core import EdgeProxyError, SseError, SseParser, encode_sse

from .util import as_dict, as_list, as_str, refuse

# The Responses API refuses a smaller max_output_tokens (400 integer_below_min_value).
MIN_OUTPUT_TOKENS: Final = 16

# Chat fields dropped on purpose when the upstream speaks the Responses API.
DROPPED_FIELDS: Final = frozenset(
    {
        "stream_options",  # a Responses stream always ends with its usage (response.completed)
        "store",  # the proxy keeps no state: every request says store: false
    }
)
# Chat fields carried under the same name (the Responses API has each at the top level).
_SAME: Final = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
)
# Chat fields whose neutral value changes nothing (taken), any other value has no Responses
# equivalent (refused: the candidate is skipped, docs/responses.md).
_NEUTRAL: Final[dict[str, tuple[Any, ...]]] = {
    "n": (1,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
    "logit_bias": ({},),
    "stop": ([],),
    "modalities": (["text"],),
}
_NO_EQUIVALENT: Final = {
    "n": "a Responses answer holds one output; n must be 1",
    "presence_penalty": "the Responses API has no presence penalty",
    "frequency_penalty": "the Responses API has no frequency penalty",
    "logprobs": "log probabilities are not translated from the Responses API",
    "top_logprobs": "log probabilities are not translated from the Responses API",
    "logit_bias": "the Responses API has no logit bias",
    "stop": "the Responses API has no stop sequences",
    "seed": "the Responses API has no seed",
    "modalities": "only text output is translated",
    "audio": "audio output is not translated",
    "prediction": "predicted outputs are a Chat Completions feature",
    "web_search_options": "hosted web search is not translated; use a function tool",
    "functions": "the deprecated functions API is not translated; use tools",
    "function_call": "the deprecated functions API is not translated; use tools",
}


# -- chat request -> Responses request ----------------------------------------------------------


def chat_to_responses_request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A stateless Responses request for a Chat Completions body (``TranslationError`` for a
    field the Responses API cannot carry with the same meaning)."""
    instructions, items = _input(as_list(body.get("messages"), "messages"))
    out: dict[str, Any] = {"model": model}
    if instructions is not None:
        out["instructions"] = instructions
    out["input"] = items
    out["store"] = False
    text: dict[str, Any] = {}
    limit: int | None = None
    for key, value in body.items():
        if key in ("model", "messages") or value is None:
            continue
        if key in DROPPED_FIELDS:
            continue
        if key in _SAME:
            out[key] = value
        elif key == "stream":
            if not isinstance(value, bool):
                raise refuse(key, "expected a boolean")
            if value:
                out["stream"] = True
        elif key in ("max_tokens", "max_completion_tokens"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise refuse(key, "expected an integer >= 1")
            if key == "max_completion_tokens" or limit is None:  # the newer name wins
                limit = value
        elif key == "reasoning_effort":
            out["reasoning"] = {"effort": as_str(value, key)}
        elif key == "response_format":
            text["format"] = _format(as_dict(value, key))
        elif key == "verbosity":
            text["verbosity"] = as_str(value, key)
        elif key == "tools":
            tools = [_tool(t, i) for i, t in enumerate(as_list(value, key))]
            if tools:
                out["tools"] = tools
        elif key == "tool_choice":
            out["tool_choice"] = _tool_choice(value)
        elif key in _NEUTRAL and value in _NEUTRAL[key]:
            continue
        elif key in _NO_EQUIVALENT:
            raise refuse(key, _NO_EQUIVALENT[key])
        elif key == "x_anthropic":  # Anthropic's extended thinking (translate.thinking)
            raise refuse("thinking", "Anthropic's extended thinking is not translated to Responses")
        else:
            raise refuse(key, "this field has no Responses API equivalent")
    if limit is not None:
        if limit < MIN_OUTPUT_TOKENS:
            param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
            raise refuse(param, f"the Responses API takes max_output_tokens >= {MIN_OUTPUT_TOKENS}")
        out["max_output_tokens"] = limit
    if text:
        out["text"] = text
    return out


def _input(messages: list[Any]) -> tuple[str | None, list[dict[str, Any]]]:
    """``instructions`` (a leading system message of plain text, as the ingress reads
    ``instructions``) and the conversation as input items (a developer message stays one).
    A message's ``name`` (a participant's) is dropped: the Responses API has no field for it."""
    if not messages:
        raise refuse("messages", "at least one message is required")
    instructions: str | None = None
    items: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        message = as_dict(message, where)
        role = message.get("role")
        content = message.get("content")
        if i == 0 and role == "system" and isinstance(content, str):
            instructions = content
        elif role in ("system", "developer", "user"):
            items.append(
                {"type": "message", "role": role, "content": _input_content(content, role, where)}
            )
        elif role == "assistant":
            items.extend(_assistant(message, where))
        elif role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": as_str(message.get("tool_call_id"), f"{where}.tool_call_id"),
                    "output": _tool_output(content, f"{where}.content"),
                }
            )
        elif role == "function":
            raise refuse(f"{where}.role", "the deprecated function role is not translated")
        else:
            raise refuse(f"{where}.role", f"unknown role {role!r}")
    return instructions, items


def _input_content(content: Any, role: str, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(as_list(content, f"{where}.content")):
        at = f"{where}.content[{j}]"
        part = as_dict(part, at)
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "input_text", "text": as_str(part.get("text"), f"{at}.text")})
        elif kind == "image_url":  # where the ingress takes input_image (not an assistant's)
            image = as_dict(part.get("image_url"), f"{at}.image_url")
            out = {"type": "input_image", "image_url": as_str(image.get("url"), f"{at}.url")}
            if image.get("detail") is not None:
                out["detail"] = image["detail"]
            parts.append(out)
        else:
            raise refuse(f"{at}.type", f"content part {kind!r} is not translated for {role}")
    return parts


def _assistant(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    for key in ("audio", "function_call"):
        if message.get(key) is not None:
            raise refuse(f"{where}.{key}", "not translated to the Responses API")
    items: list[dict[str, Any]] = []
    content = message.get("content")
    refusal = message.get("refusal")
    parts: list[dict[str, Any]] | None = None
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            part = as_dict(part, at)
            if part.get("type") == "text":
                parts.append(_output_text(as_str(part.get("text"), f"{at}.text")))
            elif part.get("type") == "refusal":
                parts.append(
                    {"type": "refusal", "refusal": as_str(part.get("refusal"), f"{at}.refusal")}
                )
            else:
                raise refuse(f"{at}.type", "only text and refusal parts are translated")
    elif content is not None and not isinstance(content, str):
        raise refuse(f"{where}.content", "expected a string or an array of parts")
    if isinstance(refusal, str) and refusal:  # a chat answer's refusal, sent back
        if parts is None:
            parts = [_output_text(content)] if isinstance(content, str) and content else []
        parts.append({"type": "refusal", "refusal": refusal})
    if parts is not None:
        items.append({"type": "message", "role": "assistant", "content": parts})
    elif isinstance(content, str):  # "" too: the conversation's own turn, kept as it was
        items.append({"type": "message", "role": "assistant", "content": content})
    for j, call in enumerate(as_list(message.get("tool_calls") or [], f"{where}.tool_calls")):
        at = f"{where}.tool_calls[{j}]"
        call = as_dict(call, at)
        if call.get("type", "function") != "function":
            raise refuse(f"{at}.type", "only function tool calls are translated")
        function = as_dict(call.get("function"), f"{at}.function")
        items.append(
            {
                "type": "function_call",
                "call_id": as_str(call.get("id"), f"{at}.id"),
                "name": as_str(function.get("name"), f"{at}.function.name"),
                "arguments": as_str(function.get("arguments", ""), f"{at}.function.arguments"),
            }
        )
    return items


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _tool_output(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(as_list(content, where)):
        at = f"{where}[{j}]"
        part = as_dict(part, at)
        if part.get("type") != "text":
            raise refuse(f"{at}.type", "tool results are translated as text")
        parts.append({"type": "input_text", "text": as_str(part.get("text"), f"{at}.text")})
    return parts


def _tool(tool: Any, i: int) -> dict[str, Any]:
    where = f"tools[{i}]"
    tool = as_dict(tool, where)
    if tool.get("type") != "function":
        raise refuse(f"{where}.type", f"tool type {tool.get('type')!r} is not translated")
    function = as_dict(tool.get("function"), f"{where}.function")
    out: dict[str, Any] = {
        "type": "function",
        "name": as_str(function.get("name"), f"{where}.function.name"),
    }
    if function.get("description") is not None:
        out["description"] = as_str(function["description"], f"{where}.function.description")
    if function.get("parameters") is not None:
        out["parameters"] = as_dict(function["parameters"], f"{where}.function.parameters")
    # Chat's default is non-strict, the Responses API's is strict: said out loud, so the
    # schema is enforced exactly as the inner request means it.
    strict = function.get("strict")
    out["strict"] = strict if isinstance(strict, bool) else False
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = as_dict(choice.get("function"), "tool_choice.function")
        return {"type": "function", "name": as_str(function.get("name"), "tool_choice.function")}
    raise refuse("tool_choice", f"{choice!r} is not translated (function tools only)")


def _format(value: dict[str, Any]) -> dict[str, Any]:
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        spec = as_dict(value.get("json_schema"), "response_format.json_schema")
        out: dict[str, Any] = {"type": "json_schema"}
        for key in ("name", "schema", "strict", "description"):
            if key in spec:
                out[key] = spec[key]
        return out
    raise refuse("response_format.type", f"{kind!r} is not translated")


# -- Responses answer -> chat completion --------------------------------------------------------


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _created(value: object) -> int:
    return value if isinstance(value, int) and _is_count(value) else int(time.time())


def _detail(details: object, name: str) -> int | None:
    """A ``*_tokens_details`` count: 0 when absent, None when present but not a count."""
    if details is None:
        return 0
    if not isinstance(details, Mapping):
        return None
    value = details.get(name)
    if value is None:
        return 0
    return value if _is_count(value) else None


def chat_usage(usage: object) -> dict[str, Any] | None:
    """A Responses ``usage`` in Chat Completions' names; None when it is not the upstream's
    word on what it billed (missing, or a count that is not a non-negative integer): the proxy
    counts the answer itself then, as for any upstream that reports none (a zero would bill it
    as free)."""
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    if not _is_count(prompt) or not _is_count(completion):
        return None
    cached = _detail(usage.get("input_tokens_details"), "cached_tokens")
    reasoning = _detail(usage.get("output_tokens_details"), "reasoning_tokens")
    if cached is None or reasoning is None:
        return None
    assert isinstance(prompt, int) and isinstance(completion, int)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt)},
        "completion_tokens_details": {"reasoning_tokens": min(reasoning, completion)},
    }


# ``incomplete_details.reason`` -> finish_reason (an unknown reason is still a truncated answer:
# never handed on as whole).
_INCOMPLETE: Final = {"max_output_tokens": "length", "content_filter": "content_filter"}


def incomplete_reason(response: Mapping[str, Any]) -> str:
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, Mapping) else None
    return _INCOMPLETE.get(reason if isinstance(reason, str) else "", "length")


class FailedResponse(EdgeProxyError):
    """A response whose ``status`` is ``failed`` (or an ``error`` event): its code, message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def failed(error: object) -> FailedResponse:
    """The failure a ``response.error`` (or an ``error`` event's fields) stands for."""
    nested = error.get("error") if isinstance(error, Mapping) else None
    if isinstance(nested, Mapping):
        error = nested  # the nested form OpenAI's servers send
    if not isinstance(error, Mapping):
        return FailedResponse("server_error", "the upstream reported an error")
    code, message = error.get("code"), error.get("message")
    return FailedResponse(
        code[:128] if isinstance(code, str) and code else "server_error",
        message if isinstance(message, str) else "the upstream reported an error",
    )


def chat_id(response_id: object) -> str:
    """A completion id from a response id (``resp_x`` -> ``chatcmpl-x``: the ingress maps it
    back, so a Responses client sees the upstream's own id)."""
    text = response_id if isinstance(response_id, str) and response_id else uuid.uuid4().hex
    return "chatcmpl-" + text.removeprefix("resp_")


def _tool_call(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {
        "id": as_str(item.get("call_id"), f"{where}.call_id"),
        "type": "function",
        "function": {
            "name": as_str(item.get("name"), f"{where}.name"),
            "arguments": as_str(item.get("arguments", ""), f"{where}.arguments"),
        },
    }


def _message_parts(item: Mapping[str, Any], where: str) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    refusals: list[str] = []
    for j, part in enumerate(as_list(item.get("content") or [], f"{where}.content")):
        at = f"{where}.content[{j}]"
        part = as_dict(part, at)
        if part.get("type") == "output_text":
            texts.append(as_str(part.get("text"), f"{at}.text"))
        elif part.get("type") == "refusal":
            refusals.append(as_str(part.get("refusal"), f"{at}.refusal"))
        # any other part (a future kind) is not part of the chat answer
    return texts, refusals


def response_to_chat(response: Mapping[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` for a ``response`` object. ``TranslationError`` when it is not an
    answer (no ``output`` array, an item that is not an object, an unfinished status);
    ``FailedResponse`` for ``status: failed``."""
    status = response.get("status")
    if status == "failed":
        raise failed(response.get("error"))
    if status not in ("completed", "incomplete"):
        raise refuse("status", f"{status!r} is not a finished response")
    output = as_list(response.get("output"), "output")
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, item in enumerate(output):
        where = f"output[{i}]"
        item = as_dict(item, where)
        kind = item.get("type")
        if kind == "message":
            more, refused = _message_parts(item, where)
            texts += more
            refusals += refused
        elif kind == "function_call":
            calls.append(_tool_call(item, where))
        # reasoning items (billed in usage), and any item type the proxy does not know: skipped
    if status == "incomplete":
        finish = incomplete_reason(response)
    else:
        finish = "tool_calls" if calls else "stop"
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not (calls or refusals) else None,
        "refusal": "".join(refusals) if refusals else None,
    }
    if calls:
        message["tool_calls"] = calls
    created = response.get("created_at")
    model = response.get("model")
    answer: dict[str, Any] = {
        "id": chat_id(response.get("id")),
        "object": "chat.completion",
        "created": _created(created),
        "model": model if isinstance(model, str) else "",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    usage = chat_usage(response.get("usage"))
    if usage is not None:  # none: the proxy counts the answer itself (server/usage.py)
        answer["usage"] = usage
    return answer


# -- Responses stream -> chat chunks ------------------------------------------------------------


class ResponsesToChatStream:
    """The Responses API's typed events in, ``chat.completion.chunk`` SSE out.

    ``response.created`` opens the answer (the role chunk); ``response.output_text.delta`` and
    ``response.refusal.delta`` are content; a ``function_call`` item is a tool call
    (``response.output_item.added`` its id and name, ``response.function_call_arguments.delta``
    its arguments; ``response.output_item.done`` supplies what no delta sent);
    ``response.completed`` / ``response.incomplete`` end it with the finish chunk, the usage
    chunk (when asked) and ``[DONE]``. ``response.failed`` and ``error`` become an OpenAI
    in-band error event (``{"error": {...}}``), which the relay classifies as it does the
    OpenAI wire's own. Any other event type (reasoning summaries, annotations, a future kind) is
    skipped. A stream that ends without a terminal event gets no ``[DONE]``: the relay reports
    it cut. Raises ``TranslationError`` for bytes that are not a stream of JSON events.
    """

    __slots__ = (
        "_arguments",
        "_calls",
        "_created",
        "_ended",
        "_id",
        "_include_usage",
        "_model",
        "_parser",
        "_started",
        "usage",
    )

    def __init__(self, *, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._parser = SseParser()
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._started = False
        self._ended = False  # a terminal event (completed, incomplete, failed, error) came
        self._calls: dict[str, int] = {}  # a function_call item's id -> its tool_calls index
        self._arguments: list[str] = []  # the arguments sent so far, per tool_calls index
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        try:
            events = self._parser.feed(chunk)
        except SseError as exc:
            raise refuse("stream", str(exc)) from None
        out = bytearray()
        for event in events:
            if self._ended:
                break  # nothing after the end is part of the answer
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                raise refuse("stream", "an event is not JSON") from None
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                raise refuse("stream", "an event is not a JSON object with a type")
            out += self._event(data["type"], data)
        return bytes(out)

    def finish(self) -> bytes:
        return b""  # everything was written at the terminal event; without one, a cut

    def _sse(self, fields: dict[str, Any]) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            **fields,
        }
        return encode_sse(orjson.dumps(chunk).decode())

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    def _start(self, response: object) -> bytes:
        self._started = True
        if isinstance(response, Mapping):
            self._id = chat_id(response.get("id"))
            model, created = response.get("model"), response.get("created_at")
            self._model = model if isinstance(model, str) else ""
            self._created = _created(created)
        else:
            self._id = chat_id(None)
        return self._delta({"role": "assistant", "content": ""})

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        out = b""
        if not self._started and kind not in ("error", "response.failed"):
            out = self._start(data.get("response"))
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            delta = as_str(data.get("delta"), f"{kind}.delta")
            field = "content" if kind == "response.output_text.delta" else "refusal"
            return out + (self._delta({field: delta}) if delta else b"")
        if kind == "response.function_call_arguments.delta":
            index = self._call_index(data.get("item_id"), kind)
            return out + self._arguments_delta(index, as_str(data.get("delta"), f"{kind}.delta"))
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = as_dict(data.get("item"), f"{kind}.item")
            if item.get("type") == "function_call":
                out += self._function_call(item, kind)
            return out
        if kind in ("response.completed", "response.incomplete"):
            response = as_dict(data.get("response"), f"{kind}.response")
            return out + self._end(response, incomplete=kind == "response.incomplete")
        if kind == "response.failed":
            ended = data.get("response")
            return out + self._error(
                failed(ended.get("error") if isinstance(ended, Mapping) else None)
            )
        if kind == "error":
            return out + self._error(failed(data))
        return out  # created, in_progress, content parts, *.done, reasoning, annotations, ...

    def _call_index(self, item_id: object, kind: str) -> int:
        index = self._calls.get(item_id) if isinstance(item_id, str) else None
        if index is None:
            raise refuse(f"{kind}.item_id", "names no function_call item of this stream")
        return index

    def _function_call(self, item: dict[str, Any], kind: str) -> bytes:
        item_id = item.get("id")
        key = item_id if isinstance(item_id, str) and item_id else str(item.get("call_id"))
        index = self._calls.get(key)
        out = b""
        if index is None:
            index = self._calls[key] = len(self._arguments)
            self._arguments.append("")
            call = _tool_call(item, f"{kind}.item")
            call["function"]["arguments"] = ""
            out = self._delta({"tool_calls": [{"index": index, **call}]})
        if kind == "response.output_item.done":
            whole = as_str(item.get("arguments", ""), f"{kind}.item.arguments")
            sent = self._arguments[index]
            if not whole.startswith(sent):
                raise refuse(f"{kind}.item.arguments", "differ from the deltas streamed")
            out += self._arguments_delta(index, whole[len(sent) :])
        return out

    def _arguments_delta(self, index: int, delta: str) -> bytes:
        if not delta:
            return b""
        self._arguments[index] += delta
        return self._delta({"tool_calls": [{"index": index, "function": {"arguments": delta}}]})

    def _end(self, response: dict[str, Any], *, incomplete: bool) -> bytes:
        self._ended = True
        self.usage = chat_usage(response.get("usage"))
        if incomplete:
            finish = incomplete_reason(response)
        else:
            finish = "tool_calls" if self._arguments else "stop"
        out = self._delta({}, finish)
        if self._include_usage and self.usage is not None:
            out += self._sse({"choices": [], "usage": self.usage})
        return out + encode_sse("[DONE]")

    def _error(self, error: FailedResponse) -> bytes:
        self._ended = True
        body = {"error": {"message": error.message, "type": "server_error", "code": error.code}}
        return encode_sse(orjson.dumps(body).decode())

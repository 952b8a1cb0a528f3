"""Translation between the proxy's inner OpenAI Chat Completions shape and Gemini's native API
(``generateContent`` / ``streamGenerateContent``, docs/gemini.md).

Requests and whole answers are translated here once per request; a stream is translated per
network chunk by ``GeminiStream`` (Python: one ``SseParser`` call in Rust and one JSON decode per
event; docs/gemini.md says why no Rust translator was needed). The rule of every translation in
the proxy holds: a field is translated, dropped on purpose (``DROPPED_FIELDS``, each with its
reason) or refused with ``TranslationError`` naming it; never silently changed.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

from edgeproxy._core import EdgeProxyError, SseError, SseParser, encode_sse

from .util import as_dict, as_list, as_str, refuse

# OpenAI fields dropped when the upstream speaks Gemini (docs/gemini.md says why).
DROPPED_FIELDS: Final = frozenset(
    {
        "stream",  # the URL says it: streamGenerateContent?alt=sse
        "stream_options",  # Gemini streams always carry usageMetadata; the translator decides
        "store",  # OpenAI-side storage of completions
        "metadata",  # OpenAI-side tags for stored completions
        "service_tier",  # provider-specific capacity tiers
        "safety_identifier",  # OpenAI abuse-monitoring id; Gemini takes none
        "user",  # the same, under its older name
        "prompt_cache_key",  # OpenAI's cache routing hint; Gemini caches implicitly
    }
)

_STOP_LIMIT: Final = 5  # Gemini's stopSequences holds at most five
_DATA_URL: Final = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.S)
# Gemini's finishReason -> OpenAI's finish_reason (a candidate that called a function says
# STOP; the translator answers ``tool_calls`` then, as OpenAI does).
_FINISH: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}
# A finishReason that says the model failed rather than answered (a function call it could not
# form, a tool it was not given, a thought signature missing from the request, an unsupported
# language, "other"): the attempt fails (malformed) and the next candidate is tried. Answering
# ``stop`` would hand the client an empty or partial answer as if it were whole.
_FAILED: Final = frozenset(
    {
        "FINISH_REASON_UNSPECIFIED",
        "OTHER",
        "LANGUAGE",
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
    }
)


def check_finish(reason: object) -> None:
    """``TranslationError`` for a finishReason that is a failure of the model (``_FAILED``)."""
    if reason in _FAILED:
        raise refuse("candidates[0].finishReason", f"the model failed ({reason})")


def finish_reason_for(reason: str | None, called: bool) -> str:
    """OpenAI's ``finish_reason`` for a Gemini ``finishReason`` (anything else: ``stop``)."""
    out = _FINISH.get(reason or "STOP", "stop")
    return "tool_calls" if called and out == "stop" else out


def model_path(model: str) -> str:
    """The model as Gemini's URL names it (``models/`` written in the policy is not doubled)."""
    return model.removeprefix("models/")


# -- OpenAI -> Gemini ---------------------------------------------------------------------------


def openai_to_gemini_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """A ``generateContent`` body for an OpenAI Chat Completions body (the model and the stream
    switch go in the URL). Raises ``TranslationError`` for a field Gemini cannot honour."""
    system, contents = _messages(as_list(body.get("messages"), "messages"))
    out: dict[str, Any] = {"contents": contents}
    if system is not None:
        out["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    for name in ("max_tokens", "max_completion_tokens"):  # the newer name wins, as at OpenAI
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise refuse(name, "expected an integer >= 1")
            config["maxOutputTokens"] = value
    for key, value in body.items():
        if key in ("model", "messages", "max_tokens", "max_completion_tokens") or value is None:
            continue
        if key in DROPPED_FIELDS:
            continue
        if key == "temperature":
            config["temperature"] = _number(value, key)
        elif key == "top_p":
            config["topP"] = _number(value, key)
        elif key in ("presence_penalty", "frequency_penalty"):
            config["presencePenalty" if key[0] == "p" else "frequencyPenalty"] = _number(value, key)
        elif key == "seed":
            if not isinstance(value, int) or isinstance(value, bool):
                raise refuse(key, "expected an integer")
            config["seed"] = value
        elif key == "stop":
            stops = [value] if isinstance(value, str) else as_list(value, key)
            if len(stops) > _STOP_LIMIT:
                raise refuse(key, f"Gemini accepts at most {_STOP_LIMIT} stop sequences")
            if stops:
                config["stopSequences"] = [as_str(s, key) for s in stops]
        elif key == "n":
            if value != 1:
                raise refuse(key, "translated answers hold one choice; n must be 1")
        elif key in ("logprobs", "top_logprobs"):
            if value:
                raise refuse(key, "token log probabilities are not translated from Gemini")
        elif key == "logit_bias":
            if value:
                raise refuse(key, "Gemini has no logit bias")
        elif key == "response_format":
            config.update(_response_format(as_dict(value, key)))
        elif key == "tools":
            if value:
                declarations = [_tool(t, i) for i, t in enumerate(as_list(value, key))]
                out["tools"] = [{"functionDeclarations": declarations}]
        elif key == "tool_choice":
            continue  # below, once the tools are known
        elif key == "parallel_tool_calls":
            if value is False:
                raise refuse(
                    key, "Gemini has no switch for one function call per turn; it may make several"
                )
        elif key in ("functions", "function_call"):
            raise refuse(key, "the deprecated functions API is not translated; use tools")
        elif key == "reasoning_effort":
            raise refuse(
                key, "not translated: Gemini's thinking takes a token budget or a level instead"
            )
        elif key == "x_anthropic":  # Anthropic's extended thinking (translate.thinking)
            raise refuse("thinking", "Anthropic's extended thinking is not translated to Gemini")
        else:
            raise refuse(key, "this OpenAI field has no Gemini equivalent")
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None:
        if choice["mode"] != "NONE" and "tools" not in out:
            raise refuse("tool_choice", "a tool choice needs tools")
        out["toolConfig"] = {"functionCallingConfig": choice}
    if config:
        out["generationConfig"] = config
    return out


def _number(value: Any, param: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise refuse(param, "expected a number")
    return value


def _response_format(value: dict[str, Any]) -> dict[str, Any]:
    kind = value.get("type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = as_dict(value.get("json_schema"), "response_format.json_schema")
        where = "response_format.json_schema.schema"
        schema = gemini_schema(as_dict(spec.get("schema", {}), where), where)
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    raise refuse("response_format", f"response_format {kind!r} is not translated to Gemini")


# JSON Schema keywords whose value is a schema, a list of schemas or a map of them: where
# ``gemini_schema`` looks for ``$ref`` (a keyword's *data*, such as an enum value, is not a schema).
_SUBSCHEMA: Final = frozenset(
    {"items", "additionalProperties", "not", "contains", "if", "then", "else", "additionalItems"}
)
_SUBSCHEMAS: Final = frozenset({"prefixItems", "anyOf", "oneOf", "allOf"})
_SCHEMA_MAPS: Final = frozenset({"properties", "patternProperties", "$defs", "definitions"})
# What may sit next to ``$ref`` and be dropped without changing what the schema accepts.
_ANNOTATIONS: Final = frozenset(
    {"description", "title", "default", "examples", "deprecated", "readOnly", "writeOnly"}
)


def gemini_schema(schema: Any, param: str) -> Any:
    """A JSON Schema as Gemini's ``parametersJsonSchema`` / ``responseJsonSchema`` take it.

    Gemini takes JSON Schema as written (``$ref``, ``$defs``, ``anyOf``,
    ``additionalProperties``, ...) with one documented rule: a sub-schema with ``$ref`` may hold
    no other keyword but ``$``-keywords. Annotations next to a ``$ref`` (``description``,
    ``title``, ``default``: what pydantic writes for a described nested model) are dropped,
    since they do not change what the schema accepts; any other keyword there would change its
    meaning if dropped, so it is refused (``TranslationError`` naming it).
    """
    if isinstance(schema, list):
        return [gemini_schema(item, f"{param}[{i}]") for i, item in enumerate(schema)]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        where = f"{param}.{key}"
        if "$ref" in schema and not key.startswith("$"):
            if key in _ANNOTATIONS:
                continue
            raise refuse(
                where, "Gemini takes no keyword next to a $ref but $-keywords (wrap it in anyOf)"
            )
        if key in _SUBSCHEMA or key in _SUBSCHEMAS:
            out[key] = gemini_schema(value, where)
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: gemini_schema(v, f"{where}.{k}") for k, v in value.items()}
        else:
            out[key] = value
    return out


def _messages(messages: list[Any]) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
    if not messages:
        raise refuse("messages", "at least one message is required")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name (a functionResponse names it)
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        message = as_dict(message, param)
        role = message.get("role")
        if role in ("system", "developer"):
            if contents:
                raise refuse(
                    f"{param}.role",
                    "a system message after the conversation started cannot be translated: "
                    "Gemini takes one systemInstruction",
                )
            system.extend(_text_parts(message.get("content"), f"{param}.content"))
        elif role == "user":
            contents.append({"role": "user", "parts": _user_parts(message.get("content"), param)})
        elif role == "assistant":
            contents.append({"role": "model", "parts": _model_parts(message, param, names)})
        elif role == "tool":
            part = {"functionResponse": _function_response(message, param, names)}
            last = contents[-1] if contents else None
            # The answers to one turn's calls go back together, in one content.
            if last is not None and last["role"] == "user" and _all_responses(last["parts"]):
                last["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
        elif role == "function":
            raise refuse(f"{param}.role", "the deprecated function role is not translated")
        else:
            raise refuse(f"{param}.role", f"unknown role {role!r}")
    if not contents:
        raise refuse("messages", "Gemini needs at least one user message besides the system")
    return (system or None), contents


def _all_responses(parts: list[dict[str, Any]]) -> bool:
    return all("functionResponse" in p for p in parts)


def _text_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(as_list(content, param)):
        part = as_dict(part, f"{param}[{j}]")
        if part.get("type") != "text":
            raise refuse(f"{param}[{j}].type", "only text parts are allowed here")
        parts.append({"text": as_str(part.get("text"), f"{param}[{j}].text")})
    return parts


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(as_list(content, f"{param}.content")):
        where = f"{param}.content[{j}]"
        part = as_dict(part, where)
        kind = part.get("type")
        if kind == "text":
            parts.append({"text": as_str(part.get("text"), f"{where}.text")})
        elif kind == "image_url":
            image = as_dict(part.get("image_url"), f"{where}.image_url")
            url = as_str(image.get("url"), f"{where}.image_url.url")
            match = _DATA_URL.fullmatch(url)
            if match is None:
                raise refuse(
                    f"{where}.image_url.url",
                    "Gemini takes images inline: a base64 data: URL (it does not fetch http URLs)",
                )
            parts.append({"inlineData": {"mimeType": match["type"].lower(), "data": match["data"]}})
        else:
            raise refuse(f"{where}.type", f"content part {kind!r} is not translated to Gemini")
    return parts or [{"text": ""}]


def _model_parts(
    message: dict[str, Any], param: str, names: dict[str, str]
) -> list[dict[str, Any]]:
    for key in ("function_call", "audio"):
        if message.get(key) is not None:
            raise refuse(f"{param}.{key}", "not translated to Gemini")
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str):
        if content:
            parts.append({"text": content})
    elif content is not None:
        for j, part in enumerate(as_list(content, f"{param}.content")):
            where = f"{param}.content[{j}]"
            part = as_dict(part, where)
            if part.get("type") == "text":
                parts.append({"text": as_str(part.get("text"), f"{where}.text")})
            elif part.get("type") == "refusal":
                parts.append({"text": as_str(part.get("refusal"), f"{where}.refusal")})
            else:
                raise refuse(f"{where}.type", "only text and refusal parts are translated")
    for j, call in enumerate(as_list(message.get("tool_calls") or [], f"{param}.tool_calls")):
        where = f"{param}.tool_calls[{j}]"
        call = as_dict(call, where)
        if call.get("type", "function") != "function":
            raise refuse(f"{where}.type", "only function tool calls are translated")
        function = as_dict(call.get("function"), f"{where}.function")
        name = as_str(function.get("name"), f"{where}.function.name")
        arguments = as_str(function.get("arguments", "{}") or "{}", f"{where}.function.arguments")
        try:
            args = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise refuse(f"{where}.function.arguments", "not valid JSON") from None
        if not isinstance(args, dict):
            raise refuse(f"{where}.function.arguments", "Gemini function args must be an object")
        call_id = as_str(call.get("id"), f"{where}.id")
        names[call_id] = name
        parts.append({"functionCall": {"id": call_id, "name": name, "args": args}})
    return parts or [{"text": ""}]


def _function_response(
    message: dict[str, Any], param: str, names: dict[str, str]
) -> dict[str, Any]:
    call_id = as_str(message.get("tool_call_id"), f"{param}.tool_call_id")
    name = names.get(call_id)
    if name is None:
        raise refuse(
            f"{param}.tool_call_id",
            "no earlier assistant tool call has this id (Gemini's answer to a call names its "
            "function)",
        )
    content = message.get("content")
    text = (
        content
        if isinstance(content, str)
        else "".join(p["text"] for p in _text_parts(content, f"{param}.content"))
    )
    return {"id": call_id, "name": name, "response": _response_object(text)}


def _response_object(text: str) -> dict[str, Any]:
    """A tool's output as the object Gemini's ``functionResponse.response`` must be: a JSON
    object as it is, anything else under ``result`` (docs/gemini.md)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": text}


def _tool(tool: Any, i: int) -> dict[str, Any]:
    param = f"tools[{i}]"
    tool = as_dict(tool, param)
    if tool.get("type") != "function":
        raise refuse(f"{param}.type", f"tool type {tool.get('type')!r} is not translated")
    function = as_dict(tool.get("function"), f"{param}.function")
    out: dict[str, Any] = {"name": as_str(function.get("name"), f"{param}.function.name")}
    if function.get("description") is not None:
        out["description"] = as_str(function["description"], f"{param}.function.description")
    schema = function.get("parameters")
    if schema is not None:
        # JSON Schema as written (Gemini's ``parameters`` takes an OpenAPI subset only).
        where = f"{param}.function.parameters"
        out["parametersJsonSchema"] = gemini_schema(as_dict(schema, where), where)
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"mode": choice.upper()}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = as_dict(choice.get("function"), "tool_choice.function").get("name")
        return {"mode": "ANY", "allowedFunctionNames": [as_str(name, "tool_choice.function.name")]}
    raise refuse("tool_choice", f"{choice!r} is not translated to Gemini")


# -- Gemini -> OpenAI ---------------------------------------------------------------------------


_COUNTS: Final = (
    "promptTokenCount",
    "toolUsePromptTokenCount",
    "thoughtsTokenCount",
    "candidatesTokenCount",
    "cachedContentTokenCount",
)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def openai_usage(meta: object) -> dict[str, Any] | None:
    """Gemini's ``usageMetadata`` in OpenAI's shape: thinking tokens are billed as output (and
    reported as reasoning tokens), cached tokens are part of the prompt's.

    None when there is no count to take at its word (no ``usageMetadata``, no
    ``promptTokenCount``, or a count that is not a non-negative integer): the answer then
    carries no usage and the proxy counts its own, as for any upstream that reports none. A
    zero would bill the answer as free. A missing ``candidatesTokenCount`` is 0 (nothing was
    generated: a blocked prompt).
    """
    if not isinstance(meta, Mapping) or not _is_count(meta.get("promptTokenCount")):
        return None
    if any(meta.get(name) is not None and not _is_count(meta.get(name)) for name in _COUNTS):
        return None
    counts = {name: int(meta.get(name) or 0) for name in _COUNTS}
    prompt = counts["promptTokenCount"] + counts["toolUsePromptTokenCount"]
    thoughts = counts["thoughtsTokenCount"]
    completion = counts["candidatesTokenCount"] + thoughts
    cached = min(counts["cachedContentTokenCount"], prompt)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def new_call_id() -> str:
    """A tool call id for a Gemini function call that came without one (older models)."""
    return "call_" + uuid.uuid4().hex[:24]


def _call(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    call = as_dict(part.get("functionCall"), f"{where}.functionCall")
    args = call.get("args", {})
    call_id = call.get("id")
    return {
        "id": call_id if isinstance(call_id, str) and call_id else new_call_id(),
        "type": "function",
        "function": {
            "name": as_str(call.get("name"), f"{where}.functionCall.name"),
            "arguments": orjson.dumps(as_dict(args, f"{where}.functionCall.args")).decode(),
        },
    }


def _candidate_parts(data: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]], Any]:
    """The visible text, the function calls and the finishReason of a response's first
    candidate (thought summaries are left out: reasoning the client did not ask to see)."""
    candidates = data.get("candidates")
    if not candidates:
        return [], [], None
    candidate = as_dict(as_list(candidates, "candidates")[0], "candidates[0]")
    content = candidate.get("content")
    parts = (
        as_list(as_dict(content, "candidates[0].content").get("parts") or [], "parts")
        if (content is not None)
        else []
    )
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        where = f"candidates[0].content.parts[{j}]"
        part = as_dict(part, where)
        if "functionCall" in part:
            calls.append(_call(part, where))
        elif isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
    return texts, calls, candidate.get("finishReason")


def gemini_to_openai_response(
    data: Mapping[str, Any], *, model: str | None = None
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for a ``GenerateContentResponse``. A prompt Gemini blocked
    (no candidate, ``promptFeedback.blockReason``) is an empty answer with ``content_filter``."""
    texts, calls, reason = _candidate_parts(data)
    check_finish(reason)
    if not data.get("candidates"):
        feedback = data.get("promptFeedback")
        if not (isinstance(feedback, dict) and feedback.get("blockReason")):
            raise refuse("candidates", "the answer holds no candidate")
        reason = "SAFETY"
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    answer_id = data.get("responseId")
    answer: dict[str, Any] = {
        "id": "chatcmpl-" + (answer_id if isinstance(answer_id, str) else uuid.uuid4().hex),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if model is not None else str(data.get("modelVersion") or ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason_for(reason, bool(calls)),
            }
        ],
    }
    usage = openai_usage(data.get("usageMetadata"))
    if usage is not None:  # none: the proxy counts the answer itself (server/usage.py)
        answer["usage"] = usage
    return answer


class GeminiStreamError(EdgeProxyError):
    """An ``error`` object inside a Gemini stream (after the 200): ``status`` and ``message``."""

    def __init__(self, status: str, message: str, code: int | None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code


class GeminiStream:
    """``streamGenerateContent?alt=sse`` events in, OpenAI ``chat.completion.chunk`` SSE out.

    Each Gemini event is one ``GenerateContentResponse`` whose parts are the new text (function
    calls arrive whole); the one with a ``finishReason`` ends the answer, and its
    ``usageMetadata`` is the whole request's. The stream has no terminator: ``finish`` writes the
    usage chunk (when asked) and ``[DONE]`` only if a finishReason came, so a cut stream stays
    cut. Raises ``TranslationError`` for events that are not JSON objects and
    ``GeminiStreamError`` for an in-stream error.
    """

    __slots__ = (
        "_calls",
        "_created",
        "_finished",
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
        self._finished = False
        self._calls = 0  # function calls so far (each one a tool_calls index)
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        try:
            events = self._parser.feed(chunk)
        except SseError as exc:
            raise refuse("stream", str(exc)) from None
        out = bytearray()
        for event in events:
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                raise refuse("stream", "an event is not JSON") from None
            if not isinstance(data, dict):
                raise refuse("stream", "an event is not a JSON object")
            error = data.get("error")
            if error is not None:
                raise _stream_error(error)
            out += self._translate(data)
        return bytes(out)

    def finish(self) -> bytes:
        if not self._finished:
            return b""  # the relay sees no finish_reason: a cut, never a complete answer
        tail = b""
        if self._include_usage and self.usage is not None:
            tail = self._sse({"choices": [], "usage": self.usage})
        return tail + encode_sse("[DONE]")

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

    def _translate(self, data: dict[str, Any]) -> bytes:
        if self._finished:
            if "usageMetadata" in data:
                self.usage = openai_usage(data["usageMetadata"])
            return b""  # nothing after the finish is part of the answer
        out = bytearray()
        if not self._started:
            self._started = True
            answer_id = data.get("responseId")
            self._id = "chatcmpl-" + (answer_id if isinstance(answer_id, str) else uuid.uuid4().hex)
            self._model = str(data.get("modelVersion") or "")
            out += self._delta({"role": "assistant", "content": ""})
        texts, calls, reason = _candidate_parts(data)
        check_finish(reason)
        for text in texts:
            if text:
                out += self._delta({"content": text})
        for call in calls:
            out += self._delta({"tool_calls": [{"index": self._calls, **call}]})
            self._calls += 1
        if (
            "usageMetadata" in data
        ):  # the latest word: an unusable one leaves the count to the proxy
            self.usage = openai_usage(data["usageMetadata"])
        if reason is not None or (not data.get("candidates") and _blocked(data)):
            self._finished = True
            out += self._delta({}, finish_reason_for(reason or "SAFETY", self._calls > 0))
        return bytes(out)


def _blocked(data: Mapping[str, Any]) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _stream_error(error: Any) -> GeminiStreamError:
    if not isinstance(error, dict):
        return GeminiStreamError("UNKNOWN", "the upstream reported an error", None)
    status, message, code = error.get("status"), error.get("message"), error.get("code")
    return GeminiStreamError(
        status[:64] if isinstance(status, str) and status else "UNKNOWN",
        message if isinstance(message, str) else "",
        code if isinstance(code, int) and not isinstance(code, bool) else None,
    )


# -- errors -------------------------------------------------------------------------------------


def error_fields(body: bytes) -> tuple[str | None, str | None, list[Any]]:
    """``(error.status, error.message, error.details)`` of a Gemini error body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, []
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None, []
    status, message, details = error.get("status"), error.get("message"), error.get("details")
    return (
        status[:64] if isinstance(status, str) and status else None,
        message if isinstance(message, str) else None,
        details if isinstance(details, list) else [],
    )

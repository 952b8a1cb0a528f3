"""Parsing and validating a Chat Completions request body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


class BadRequest(Exception):
    """A request OpenAI would reject with 400; carries the error body fields."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[Any]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    # (name, JSON schema) of the offered tools; empty when tool_choice is "none".
    tools: list[tuple[str, Any]] = field(default_factory=list)
    tool_forced: bool = False  # tool_choice "required" or a named function
    tool_forced_name: str | None = None


def parse_chat_request(body: bytes) -> ChatRequest:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        ) from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")

    model = data.get("model")
    if model is None:
        raise BadRequest("You must provide a model parameter.", param="model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Invalid type for 'model': expected a string.", param="model")

    messages = data.get("messages")
    if messages is None:
        raise BadRequest(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest(
            "Invalid type for 'messages': expected an array of objects.", param="messages"
        )
    if not messages:
        raise BadRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )

    stream = data.get("stream") or False
    if not isinstance(stream, bool):
        raise BadRequest("Invalid type for 'stream': expected a boolean.", param="stream")

    n = data.get("n")
    if n is not None and n != 1:
        # One choice keeps stream/fault semantics simple; the proxy never needs n > 1.
        raise BadRequest("The simulator only supports n=1.", param="n")

    options = data.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    # max_completion_tokens is the newer name; OpenAI honours it over max_tokens.
    max_tokens: int | None = None
    for param in ("max_tokens", "max_completion_tokens"):
        value = data.get(param)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadRequest(f"Invalid '{param}': expected an integer >= 1.", param=param)
        max_tokens = value
    tools, forced, forced_name = _tools(data.get("tools"), data.get("tool_choice"))
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        tools=tools,
        tool_forced=forced,
        tool_forced_name=forced_name,
    )


def _tools(tools: Any, choice: Any) -> tuple[list[tuple[str, Any]], bool, str | None]:
    if tools is None or choice == "none":
        return [], False, None
    if not isinstance(tools, list):
        raise BadRequest("Invalid type for 'tools': expected an array of objects.", param="tools")
    offered: list[tuple[str, Any]] = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise BadRequest(
                f"Missing required parameter: 'tools[{i}].function.name'.",
                param=f"tools[{i}].function.name",
                code="missing_required_parameter",
            )
        assert isinstance(function, dict)
        offered.append((name, function.get("parameters")))
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return offered, True, name if isinstance(name, str) else None
    return offered, choice == "required", None

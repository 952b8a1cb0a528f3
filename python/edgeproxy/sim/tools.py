"""Simulated tool use, shared by the OpenAI and Anthropic wires.

The simulated model calls a tool when the request offers tools and either the tool choice forces
one (OpenAI ``required`` or a named function; Anthropic ``any`` or ``tool``) or the last user
message's text contains the trigger (``SimConfig.tool_trigger``, default ``"use tool"``,
case-insensitive). It calls the named tool, else the first one, with deterministic arguments
built from the tool's JSON schema: each property gets a value of its type (strings
``"sim-<name>"``, integers 42, numbers 1.5, booleans true, arrays [], objects {}; the first
``enum`` value when there is one). The arguments are streamed in pieces of 8 characters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

import orjson

DEFAULT_TRIGGER: Final = "use tool"
_PIECE_CHARS: Final = 8


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str  # a deterministic suffix; each wire adds its prefix (call_ / toolu_)
    name: str
    arguments: str  # compact JSON object

    @property
    def pieces(self) -> list[str]:
        """The argument JSON in streaming pieces (they join to ``arguments``)."""
        args = self.arguments
        return [args[i : i + _PIECE_CHARS] for i in range(0, len(args), _PIECE_CHARS)] or [""]


def plan_tool_call(
    seed: int,
    tools: list[tuple[str, Any]],
    *,
    forced: bool,
    forced_name: str | None,
    last_user_text: str,
    trigger: str,
) -> ToolCall | None:
    """The tool call the simulated model makes, or None for a text answer.

    ``tools`` holds (name, JSON schema) pairs; ``forced``/``forced_name`` come from the tool
    choice; an empty ``trigger`` never matches.
    """
    if not tools:
        return None
    if not forced and not (trigger and trigger.lower() in last_user_text.lower()):
        return None
    by_name = dict(tools)
    name = forced_name if forced_name in by_name else tools[0][0]
    assert name is not None
    arguments = orjson.dumps(_example(by_name[name])).decode()
    digest = hashlib.blake2b(f"{seed}:{name}:{arguments}".encode(), digest_size=8).hexdigest()
    return ToolCall(call_id=digest, name=name, arguments=arguments)


def _example(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    return {str(name): _value(str(name), prop) for name, prop in props.items()}


def _value(name: str, prop: Any) -> Any:
    if not isinstance(prop, dict):
        return f"sim-{name}"
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {
        "integer": 42,
        "number": 1.5,
        "boolean": True,
        "array": [],
        "object": _example(prop),
        "null": None,
    }.get(str(kind), f"sim-{name}")


def last_user_text(messages: list[Any]) -> str:
    """The text of the last user message (string content or its text parts/blocks)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    str(p.get("text", ""))
                    for p in content
                    if isinstance(p, dict) and p.get("type") == "text"
                )
            return ""
    return ""

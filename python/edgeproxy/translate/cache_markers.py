"""Anthropic's prompt-cache breakpoints (``cache_control``) in the proxy's inner OpenAI shape.

Where they sit inside (``requests.CACHE_CONTROL``): on a content part (system, user, assistant
or tool text, an image), on a tool definition, on an assistant's tool call, and on a tool
message (an Anthropic ``tool_result``'s own marker). An Anthropic upstream gets them back as
Anthropic blocks; an OpenAI-wire upstream gets a body without them (OpenAI caches prefixes by
itself, and strict OpenAI-compatible servers refuse fields they do not know).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .requests import CACHE_CONTROL


def _part_marked(content: object) -> bool:
    if type(content) is not list:
        return False
    return any(type(part) is dict and CACHE_CONTROL in part for part in content)


def _message_marked(message: object) -> bool:
    if type(message) is not dict:
        return False
    if CACHE_CONTROL in message or _part_marked(message.get("content")):
        return True
    calls = message.get("tool_calls")
    return type(calls) is list and any(type(c) is dict and CACHE_CONTROL in c for c in calls)


def count_cache_control(body: Mapping[str, Any]) -> int:
    """How many breakpoints the body carries (Anthropic accepts at most four)."""
    n = 0
    tools = body.get("tools")
    if type(tools) is list:
        n += sum(1 for tool in tools if type(tool) is dict and CACHE_CONTROL in tool)
    messages = body.get("messages")
    if type(messages) is not list:
        return n
    for message in messages:
        if type(message) is not dict:
            continue
        n += CACHE_CONTROL in message
        content = message.get("content")
        if type(content) is list:
            n += sum(1 for part in content if type(part) is dict and CACHE_CONTROL in part)
        calls = message.get("tool_calls")
        if type(calls) is list:
            n += sum(1 for call in calls if type(call) is dict and CACHE_CONTROL in call)
    return n


def has_cache_control(body: Mapping[str, Any]) -> bool:
    """Whether the body carries any breakpoint (a scan of its messages and tools: no copy)."""
    tools = body.get("tools")
    if type(tools) is list and any(type(t) is dict and CACHE_CONTROL in t for t in tools):
        return True
    messages = body.get("messages")
    return type(messages) is list and any(_message_marked(m) for m in messages)


def _unmarked(item: Any) -> Any:
    if type(item) is dict and CACHE_CONTROL in item:
        return {k: v for k, v in item.items() if k != CACHE_CONTROL}
    return item


def without_cache_control(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``body`` without breakpoints: the same object when it has none (the common case), else
    a copy in which only the marked messages and tools are copied."""
    if not has_cache_control(body):
        return body
    out = dict(body)
    tools = body.get("tools")
    if type(tools) is list:
        out["tools"] = [_unmarked(tool) for tool in tools]
    messages: list[Any] = []
    for message in body.get("messages") or ():
        if not _message_marked(message):
            messages.append(message)
            continue
        copy = _unmarked(message)
        if copy is message:
            copy = dict(message)
        content = copy.get("content")
        if type(content) is list:
            copy["content"] = [_unmarked(part) for part in content]
        calls = copy.get("tool_calls")
        if type(calls) is list:
            copy["tool_calls"] = [_unmarked(call) for call in calls]
        messages.append(copy)
    out["messages"] = messages
    return out

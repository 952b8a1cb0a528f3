"""Anthropic prompt-cache breakpoints placed by the proxy (``prompt_cache.breakpoints: auto``).

Anthropic caches a prompt's prefix up to a block marked ``cache_control`` (at most four marks;
nothing under 1,024 tokens is cached), reads it back at 10% of the input price and writes it at
125%. A long system prompt, the tool definitions and a growing conversation are the prefix every
turn repeats, so three marks cover them:

1. the last tool definition (the tools alone: shared by every request of an app feature);
2. the last leading system message (tools and system prompt);
3. the last message (the whole conversation so far: the next turn reads it, its own new part is
   written; Anthropic looks back about 20 blocks from a mark for an earlier entry, more than a
   turn adds).

A request that carries a ``cache_control`` of its own is the client's to manage and is left as it
is. The marks go on the proxy's inner OpenAI shape (``translate.requests.CACHE_CONTROL``): the
Anthropic wire sends them, the OpenAI wire leaves them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from edgeproxy.translate.cache_markers import has_cache_control
from edgeproxy.translate.requests import CACHE_CONTROL

EPHEMERAL: Final = {"type": "ephemeral"}


def _marked_content(content: Any) -> Any:
    """``content`` with its last part marked (a string becomes one text part); None when there
    is nothing to mark (Anthropic refuses a mark on an empty text block)."""
    if isinstance(content, str):
        if not content:
            return None
        return [{"type": "text", "text": content, CACHE_CONTROL: dict(EPHEMERAL)}]
    if isinstance(content, list) and content and isinstance(content[-1], Mapping):
        last = content[-1]
        if last.get("type") == "text" and not last.get("text"):
            return None
        return [*content[:-1], {**last, CACHE_CONTROL: dict(EPHEMERAL)}]
    return None


def _marked(message: Any) -> Any:
    if not isinstance(message, Mapping):
        return message
    if message.get("role") == "tool":  # a tool result's mark is its message's (tool_result)
        return {**message, CACHE_CONTROL: dict(EPHEMERAL)}
    content = _marked_content(message.get("content"))
    if content is not None:
        return {**message, "content": content}
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls and isinstance(calls[-1], Mapping):
        return {
            **message,
            "tool_calls": [*calls[:-1], {**calls[-1], CACHE_CONTROL: dict(EPHEMERAL)}],
        }
    return message


def with_breakpoints(
    body: Mapping[str, Any], prompt_tokens: int, min_prefix_tokens: int
) -> Mapping[str, Any]:
    """``body`` with up to three cache breakpoints on its stable prefix; the same object when
    it is too short to be cached (``prompt_tokens``, an estimate is enough) or carries its own
    marks."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return body
    if prompt_tokens < min_prefix_tokens or has_cache_control(body):
        return body
    out = dict(body)
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[-1], Mapping):
        out["tools"] = [*tools[:-1], {**tools[-1], CACHE_CONTROL: dict(EPHEMERAL)}]
    marked = list(messages)
    system = None
    for i, message in enumerate(messages):
        if isinstance(message, Mapping) and message.get("role") in ("system", "developer"):
            system = i
        else:
            break
    if system is not None and system != len(messages) - 1:
        marked[system] = _marked(messages[system])
    marked[-1] = _marked(messages[-1])
    out["messages"] = marked
    return out

"""Anthropic's extended thinking, carried through the proxy's inner (OpenAI) shape.

The inner shape has no place for Anthropic's thinking, so it rides in one extension field,
``x_anthropic``, that the Anthropic ingress sets and only the Anthropic upstream wire reads
(docs/anthropic.md, "Extended thinking"); every other wire refuses a request that carries it
(the candidate is skipped, reason ``wire``):

- request: ``x_anthropic.thinking`` is the client's ``thinking`` parameter, verbatim;
- an assistant message (request history, or a non-stream answer): ``x_anthropic.thinking_blocks``
  holds its ``thinking`` / ``redacted_thinking`` blocks verbatim (signatures included), which
  Anthropic puts before the text and tool use;
- a stream: each thinking event of the upstream (``content_block_start`` of a thinking block,
  ``thinking_delta``, ``signature_delta``, its ``content_block_stop``) is one chunk whose delta
  holds ``x_anthropic.event`` (the event without its index: the client's stream numbers its own
  blocks) and, for a ``thinking_delta``, ``reasoning_content`` (so the relay's commit point
  and idle timer see the thinking as part of the answer).

Blocks an upstream sends are checked (``check_block``): a signature is an opaque string the
client must send back, so one that is not a string or is over ``MAX_SIGNATURE_CHARS`` is refused
(the upstream's answer is malformed: fail over before the commit point).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from edgeproxy._core import encode_sse

from .util import as_dict, as_list, refuse

X_ANTHROPIC: Final = "x_anthropic"
THINKING_TYPES: Final = frozenset({"thinking", "redacted_thinking"})
# Anthropic's signatures are a few hundred bytes to a few KiB of base64; far more is not one.
MAX_SIGNATURE_CHARS: Final = 64 * 1024
_EXTENSION_KEYS: Final = frozenset({"thinking"})


def requested(value: object) -> bool:
    """The client's ``thinking`` parameter asks for thinking (anything but ``disabled``)."""
    return isinstance(value, dict) and value.get("type") != "disabled"


def carried_param(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``thinking`` parameter an inner body carries for an Anthropic upstream, if any."""
    extension = body.get(X_ANTHROPIC)
    if not isinstance(extension, dict):
        return None
    value = extension.get("thinking")
    return value if isinstance(value, dict) else None


def check_extension(value: object) -> dict[str, Any]:
    """The inner body's ``x_anthropic`` as the Anthropic wire takes it (``thinking`` only)."""
    extension = as_dict(value, X_ANTHROPIC)
    unknown = sorted(set(extension) - _EXTENSION_KEYS)
    if unknown:
        raise refuse(f"{X_ANTHROPIC}.{unknown[0]}", "not an extension the proxy carries")
    return {"thinking": as_dict(extension.get("thinking"), "thinking")}


def check_block(block: object, where: str) -> dict[str, Any]:
    """A ``thinking`` or ``redacted_thinking`` block, checked; returned as it is (verbatim)."""
    block = as_dict(block, where)
    kind = block.get("type")
    if kind == "thinking":
        if not isinstance(block.get("thinking"), str):
            raise refuse(f"{where}.thinking", "expected a string")
        check_signature(block.get("signature"), f"{where}.signature")
    elif kind == "redacted_thinking":
        if not isinstance(block.get("data"), str):
            raise refuse(f"{where}.data", "expected a string")
    else:
        raise refuse(f"{where}.type", f"expected a thinking block, got {kind!r}")
    return block


def check_signature(value: object, where: str, so_far: int = 0) -> str:
    if not isinstance(value, str):
        raise refuse(where, "a thinking signature must be a string")
    if so_far + len(value) > MAX_SIGNATURE_CHARS:
        raise refuse(where, f"a thinking signature over {MAX_SIGNATURE_CHARS} characters")
    return value


def message_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """The thinking blocks an inner assistant message carries (none: an empty list)."""
    extension = message.get(X_ANTHROPIC)
    if extension is None:
        return []
    extension = as_dict(extension, f"{where}.{X_ANTHROPIC}")
    blocks = as_list(extension.get("thinking_blocks", []), f"{where}.{X_ANTHROPIC}.thinking_blocks")
    return [
        check_block(b, f"{where}.{X_ANTHROPIC}.thinking_blocks[{i}]") for i, b in enumerate(blocks)
    ]


def with_blocks(message: dict[str, Any], blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """``message`` carrying ``blocks`` (unchanged when there are none)."""
    if blocks:
        message[X_ANTHROPIC] = {"thinking_blocks": blocks}
    return message


# -- streams ------------------------------------------------------------------------------------


def event_delta(event: Mapping[str, Any]) -> dict[str, Any]:
    """The inner chunk's ``delta`` carrying one thinking event (its index left out)."""
    carried = {k: v for k, v in event.items() if k != "index"}
    delta: dict[str, Any] = {X_ANTHROPIC: {"event": carried}}
    inner = event.get("delta")
    if isinstance(inner, dict) and inner.get("type") == "thinking_delta" and inner.get("thinking"):
        delta["reasoning_content"] = inner["thinking"]
    return delta


def stream_chunk(event: Mapping[str, Any]) -> bytes:
    """The inner OpenAI SSE chunk carrying one upstream thinking event."""
    chunk = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": event_delta(event), "finish_reason": None}],
    }
    return encode_sse(orjson.dumps(chunk).decode())


def carried_event(chunk: Mapping[str, Any]) -> dict[str, Any] | None:
    """The thinking event an inner chunk carries, or None for any other chunk."""
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get(X_ANTHROPIC), dict):
            event = delta[X_ANTHROPIC].get("event")
            return event if isinstance(event, dict) else None
    return None


def blocks_to_events(blocks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stream events (without index) that deliver ``blocks`` (a cached answer replayed)."""
    events: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "thinking":
            start = {**block, "thinking": "", "signature": ""}
            events.append({"type": "content_block_start", "content_block": start})
            if block.get("thinking"):
                delta = {"type": "thinking_delta", "thinking": block["thinking"]}
                events.append({"type": "content_block_delta", "delta": delta})
            if block.get("signature"):
                delta = {"type": "signature_delta", "signature": block["signature"]}
                events.append({"type": "content_block_delta", "delta": delta})
        else:
            events.append({"type": "content_block_start", "content_block": dict(block)})
        events.append({"type": "content_block_stop"})
    return events


class BlockAssembler:
    """Thinking blocks put together from stream events (a streamed answer cached, or assembled)."""

    def __init__(self) -> None:
        self.blocks: list[dict[str, Any]] = []

    def add(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            self.blocks.append(dict(event["content_block"]))
        elif kind == "content_block_delta" and self.blocks:
            delta = event.get("delta")
            block = self.blocks[-1]
            if not isinstance(delta, dict):
                return
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
                block["thinking"] = str(block.get("thinking") or "") + delta["thinking"]
            elif delta.get("type") == "signature_delta" and isinstance(delta.get("signature"), str):
                block["signature"] = str(block.get("signature") or "") + delta["signature"]

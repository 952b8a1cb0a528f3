"""The cached value: one complete, successful answer, and conversions between its two shapes.

An entry holds the answer as the non-stream ``chat.completion`` JSON and, when it came from a
stream, the data of every SSE event as it was relayed (without ``[DONE]``). A request is served
in the shape it asked for:

- non-stream request: the completion JSON (assembled from the events by ``chunks_to_completion``
  when the answer was streamed);
- stream request, entry from a stream: exactly the stored events, then ``[DONE]`` (the same bytes
  the first client got; a usage-only chunk is dropped or added to follow ``include_usage``);
- stream request, entry from a non-stream answer: chunks synthesised by ``completion_to_chunks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from edgeproxy._core import encode_sse
from edgeproxy.translate import thinking

DONE = "[DONE]"
FORMAT_VERSION = 1
# Content and tool-call arguments are cut into pieces of this many characters when a stream is
# synthesised from a non-stream answer (SDKs and UIs expect several small deltas, not one).
PIECE_CHARS = 16


@dataclass(frozen=True, slots=True)
class Answer:
    """One cache entry, decoded."""

    completion: bytes  # the chat.completion JSON
    events: list[str] | None  # SSE data strings as relayed (no [DONE]), if it came from a stream
    stored_at: float  # clock.monotonic() when stored
    served: dict[str, str]  # response headers of the attempt that produced it (provider, ...)

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "v": FORMAT_VERSION,
                "completion": self.completion.decode(),
                "events": self.events,
                "stored_at": self.stored_at,
                "served": self.served,
            }
        )

    @staticmethod
    def loads(raw: bytes) -> Answer | None:
        """The entry, or None when it is of another format version (treated as a miss)."""
        d = orjson.loads(raw)
        if not isinstance(d, dict) or d.get("v") != FORMAT_VERSION:
            return None
        return Answer(
            completion=d["completion"].encode(),
            events=d["events"],
            stored_at=d["stored_at"],
            served=d["served"],
        )


def _pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def completion_to_chunks(completion: bytes, *, include_usage: bool = False) -> list[bytes]:
    """SSE-encoded ``chat.completion.chunk`` events (ending with ``[DONE]``) for a completion.

    Per choice: a role chunk, content in small pieces (or a refusal), each tool call (id, type
    and name first, then its arguments in pieces), a chunk with the ``finish_reason``. With
    ``include_usage`` a final usage-only chunk (``choices: []``) as OpenAI sends it.
    """
    c = orjson.loads(completion)
    head: dict[str, Any] = {
        "id": c.get("id", ""),
        "object": "chat.completion.chunk",
        "created": c.get("created", 0),
        "model": c.get("model", ""),
    }
    if c.get("system_fingerprint") is not None:
        head["system_fingerprint"] = c["system_fingerprint"]
    out: list[bytes] = []

    def emit(choices: list[dict[str, Any]], **extra: Any) -> None:
        out.append(encode_sse(orjson.dumps({**head, "choices": choices, **extra}).decode()))

    def delta(index: int, d: dict[str, Any], finish: str | None = None) -> None:
        emit([{"index": index, "delta": d, "logprobs": None, "finish_reason": finish}])

    for choice in c.get("choices", []):
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        delta(index, {"role": message.get("role", "assistant"), "content": ""})
        extension = message.get(thinking.X_ANTHROPIC)
        if isinstance(extension, dict):  # Anthropic's thinking blocks, first (docs/anthropic.md)
            for event in thinking.blocks_to_events(extension.get("thinking_blocks") or ()):
                delta(index, thinking.event_delta(event))
        if message.get("refusal"):
            for piece in _pieces(message["refusal"]):
                delta(index, {"refusal": piece})
        elif message.get("content"):
            for piece in _pieces(message["content"]):
                delta(index, {"content": piece})
        for n, call in enumerate(message.get("tool_calls") or []):
            fn = call.get("function") or {}
            first = {
                "index": n,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": fn.get("name", ""), "arguments": ""},
            }
            delta(index, {"tool_calls": [first]})
            args = fn.get("arguments") or ""
            if args:
                for piece in _pieces(args):
                    delta(index, {"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
        delta(index, {}, choice.get("finish_reason") or "stop")
    if include_usage and c.get("usage") is not None:
        emit([], usage=c["usage"])
    out.append(encode_sse(DONE))
    return out


def chunks_to_completion(events: list[str]) -> bytes:
    """Assemble a ``chat.completion`` from the data of stream events (``[DONE]`` is skipped).

    Content, refusal and each tool call's arguments are concatenated per choice; the last
    ``finish_reason`` and the ``usage`` (from the usage chunk) are kept.
    """
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    usage: Any = None
    for data in events:
        if data == DONE:
            continue
        chunk = orjson.loads(data)
        if not head:
            head = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if chunk.get("usage"):
            usage = chunk["usage"]
        for ch in chunk.get("choices") or []:
            acc = choices.setdefault(
                ch.get("index", 0),
                {"role": "assistant", "content": [], "refusal": [], "tools": {}, "finish": None},
            )
            d = ch.get("delta") or {}
            event = thinking.carried_event(chunk)
            if event is not None:
                acc.setdefault("thinking", thinking.BlockAssembler()).add(event)
            if d.get("role"):
                acc["role"] = d["role"]
            if d.get("content"):
                acc["content"].append(d["content"])
            if d.get("refusal"):
                acc["refusal"].append(d["refusal"])
            for call in d.get("tool_calls") or []:
                tool = acc["tools"].setdefault(
                    call.get("index", 0), {"id": None, "type": "function", "name": "", "args": []}
                )
                if call.get("id"):
                    tool["id"] = call["id"]
                if call.get("type"):
                    tool["type"] = call["type"]
                fn = call.get("function") or {}
                if fn.get("name"):
                    tool["name"] += fn["name"]
                if fn.get("arguments"):
                    tool["args"].append(fn["arguments"])
            if ch.get("finish_reason"):
                acc["finish"] = ch["finish_reason"]
    out_choices = []
    for index in sorted(choices):
        acc = choices[index]
        message: dict[str, Any] = {
            "role": acc["role"],
            "content": "".join(acc["content"]) if acc["content"] or not acc["tools"] else None,
            "refusal": "".join(acc["refusal"]) or None,
        }
        if "thinking" in acc:
            thinking.with_blocks(message, acc["thinking"].blocks)
        if acc["tools"]:
            message["tool_calls"] = [
                {
                    "id": t["id"],
                    "type": t["type"],
                    "function": {"name": t["name"], "arguments": "".join(t["args"])},
                }
                for _, t in sorted(acc["tools"].items())
            ]
        out_choices.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": acc["finish"]}
        )
    completion: dict[str, Any] = {
        "id": head.get("id") or "",
        "object": "chat.completion",
        "created": head.get("created") or 0,
        "model": head.get("model") or "",
        "choices": out_choices,
    }
    if usage is not None:
        completion["usage"] = usage
    if head.get("system_fingerprint") is not None:
        completion["system_fingerprint"] = head["system_fingerprint"]
    return orjson.dumps(completion)


def is_usage_only(data: str) -> bool:
    """True for the final ``include_usage`` chunk (no choices, a usage object)."""
    if '"usage"' not in data:
        return False
    chunk = orjson.loads(data)
    return isinstance(chunk, dict) and not chunk.get("choices") and bool(chunk.get("usage"))

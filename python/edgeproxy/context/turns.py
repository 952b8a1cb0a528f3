"""A conversation as blocks, and hashes of its prefixes.

A **block** is what compaction may keep or drop as a whole: one message, except that an
assistant message with ``tool_calls`` and the ``tool`` messages answering it are one block (a
tool call never loses its result, a result never loses its call). The leading system (and
developer) messages are blocks of their own kind.

A **prefix hash** names "the conversation up to here": BLAKE2b-128 over the tools and the
messages in a canonical form (keys sorted, no whitespace, cache breakpoints left out, so a
client moving its ``cache_control`` marker from one turn to the next does not change the
history's name). The summary cache keys summaries by it, and affinity hashes the first messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from edgeproxy.translate.cache_markers import without_cache_control

BlockKind = Literal["system", "user", "assistant", "tool_calls", "other"]
HASH_BYTES: Final = 16  # the size the Rust CacheStore takes as a key


@dataclass(frozen=True, slots=True)
class Block:
    """Messages ``[start, end)`` of a conversation, kept or dropped together."""

    start: int
    end: int
    kind: BlockKind


def split_blocks(messages: Sequence[Any]) -> list[Block]:
    """The conversation's blocks, in order."""
    blocks: list[Block] = []
    i, n = 0, len(messages)
    leading = True
    while i < n:
        message = messages[i]
        role = message.get("role") if isinstance(message, Mapping) else None
        if leading and role in ("system", "developer"):
            blocks.append(Block(i, i + 1, "system"))
            i += 1
            continue
        leading = False
        if role == "assistant" and isinstance(message, Mapping) and message.get("tool_calls"):
            end = i + 1
            while end < n and _role(messages[end]) == "tool":
                end += 1
            blocks.append(Block(i, end, "tool_calls"))
            i = end
            continue
        kind: BlockKind = role if role in ("user", "assistant") else "other"
        blocks.append(Block(i, i + 1, kind))
        i += 1
    return blocks


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, Mapping) else None


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _tools_seed(body: Mapping[str, Any]) -> hashlib.blake2b:
    h = hashlib.blake2b(b"edgeproxy-prefix-v1\0", digest_size=HASH_BYTES)
    tools = body.get("tools")
    h.update(_canonical(without_cache_control({"tools": tools})["tools"] if tools else None))
    return h


def prefix_hash(body: Mapping[str, Any], n_messages: int) -> bytes:
    """The hash of the tools and the first ``n_messages`` messages (all if fewer)."""
    h = _tools_seed(body)
    messages = body.get("messages")
    head = list(messages[:n_messages]) if isinstance(messages, list) else []
    for message in without_cache_control({"messages": head})["messages"]:
        h.update(b"\x1e")
        h.update(_canonical(message))
    return h.digest()


def block_prefix_hashes(body: Mapping[str, Any], blocks: Sequence[Block]) -> list[bytes]:
    """``hashes[i]``: the hash of the tools and the first ``i`` blocks (``len(blocks) + 1``
    values). One pass: each block's bytes are hashed once, into a running hash."""
    messages = without_cache_control({"messages": body.get("messages") or []})["messages"]
    h = _tools_seed(body)
    out = [h.digest()]
    for block in blocks:
        for message in messages[block.start : block.end]:
            h.update(b"\x1e")
            h.update(_canonical(message))
        out.append(h.digest())
    return out

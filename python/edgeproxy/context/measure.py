"""A request's prompt tokens, per message, in one candidate's encoding.

Counted by the Rust counter (``tokens.count_chat``), one message at a time: each message's count
is what it adds to the whole (the whole's framing, the reply priming and the tool definitions are
``base``). The sum can differ from the whole's count by a token or two (the ``estimate``
encoding scales and rounds), which is why compaction counts its result again, whole, before it
sends it. Synchronous and CPU-bound: the request path runs it in a worker thread for a large
body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from edgeproxy import tokens
from edgeproxy.context.turns import Block, split_blocks

# Tokens ``count_chat`` adds to every request to prime the reply (docs/tokens.md).
REPLY_PRIMING: Final = 3


@dataclass(frozen=True, slots=True)
class Measured:
    """A conversation's messages, blocks and tokens in one encoding."""

    encoding: str
    messages: Sequence[Any]
    blocks: tuple[Block, ...]
    message_tokens: tuple[int, ...]
    base: int  # the reply priming and the tool definitions

    @property
    def total(self) -> int:
        return self.base + sum(self.message_tokens)

    def block_tokens(self, index: int) -> int:
        block = self.blocks[index]
        return sum(self.message_tokens[block.start : block.end])


def count_body(body: Mapping[str, Any] | bytes, encoding: str) -> int:
    """The whole request's prompt tokens (4 bytes a token where the counter refuses it, as
    the request path does)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    try:
        return tokens.count_chat(raw, encoding).tokens
    except tokens.TokenizerError:
        return -(-len(raw) // 4)


def count_text(text: str, encoding: str) -> int:
    return tokens.count(text, encoding)


def measure(body: Mapping[str, Any], encoding: str) -> Measured:
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = []
    tools = body.get("tools")
    base = count_body({"messages": [], **({"tools": tools} if tools else {})}, encoding)
    counts = tuple(
        max(count_body({"messages": [message]}, encoding) - REPLY_PRIMING, 0)
        for message in messages
    )
    return Measured(encoding, messages, tuple(split_blocks(messages)), counts, base)

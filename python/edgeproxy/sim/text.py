"""Deterministic, readable completion text and rough token counts."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Final

import orjson

# The vocabulary of the simulated model: plain words so demo output reads like prose.
_VOCABULARY: Final = """
the edge proxy keeps every request moving while upstream providers wobble and stream of
tokens flows back to caller through a resilient path with careful retries budgets
deadlines honest errors so that each application feature stays useful even when region
goes dark model slows down or quota runs out during peak traffic hours operators watch
latency cost error rates on dashboards then adjust routing policy calmly because failover
happens automatically behind familiar interface
"""
_WORDS: Final = tuple(_VOCABULARY.split())


def completion_pieces(seed: int, messages: Sequence[object], n_tokens: int) -> list[str]:
    """Return ``n_tokens`` text pieces (one per simulated token) derived from seed + messages.

    Pieces after the first carry their leading space, as real BPE tokens do, so that joining
    them yields the full text and stream deltas concatenate to the non-stream content.
    """
    digest = hashlib.blake2b(
        orjson.dumps([seed, list(messages)], option=orjson.OPT_SORT_KEYS), digest_size=8
    ).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    pieces: list[str] = []
    sentence_left = 0
    for i in range(n_tokens):
        word = rng.choice(_WORDS)
        while pieces and pieces[-1].strip(" .").lower() == word:
            word = rng.choice(_WORDS)  # "the the" reads like a bug, not like a model
        if sentence_left == 0:
            word = word.capitalize()
            sentence_left = rng.randint(6, 12)
        sentence_left -= 1
        if sentence_left == 0 or i == n_tokens - 1:
            word += "."
        pieces.append(word if i == 0 else " " + word)
    return pieces


def estimate_prompt_tokens(messages: Sequence[object]) -> int:
    """Approximate prompt tokens: ~4 characters per token plus per-message framing."""
    total = 3
    for message in messages:
        total += 4
        if isinstance(message, dict):
            total += len(_message_text(message.get("content"))) // 4
    return total


def _message_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Content-part arrays: only text parts count (images are ignored by the simulator).
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""

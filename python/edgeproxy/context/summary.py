"""What the summariser is asked, and how its cache entry is named.

The summariser gets the older part of the conversation as a plain transcript (one line head per
message: who spoke, which tool was called with what, what a tool returned) and is asked for a
summary a model can continue the task from. A transcript longer than the summariser's own window
has its longest pieces cut to their head and tail until it fits.

Summaries are cached by the conversation's **prefix hash** up to the end of the summarised range
(``turns.block_prefix_hashes``), the summariser's key and the tenant: the same history is never
summarised twice while the entry lives, and a longer history can start from the summary of a
shorter one (the summariser then gets that summary and only the messages after it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

from edgeproxy.context.compact import cut_text
from edgeproxy.context.measure import count_text
from edgeproxy.context.turns import HASH_BYTES

INSTRUCTIONS: Final = (
    "You summarise the earlier part of a conversation between a user, an AI assistant and its "
    "tools, so that the assistant can continue the task from your summary alone. Keep every "
    "fact, decision, file name, identifier, number, error message and open question that may "
    "matter later; say which tools were called and what they returned, briefly. Write plain "
    "prose and lists, no preamble."
)
OVERHEAD_TOKENS: Final = 200  # the instructions and the chat framing, with room to spare


def _line(message: Any) -> str:
    if not isinstance(message, Mapping):
        return ""
    role = str(message.get("role") or "message")
    parts: list[str] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, Mapping):
                parts.append(f"[{part.get('type', 'part')}]")
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            parts.append(f"calls {function.get('name')}({function.get('arguments') or ''})")
    if role == "tool":
        return f"tool result ({message.get('tool_call_id', '')}): " + "\n".join(parts)
    return f"{role}: " + "\n".join(parts)


def transcript_pieces(previous: str | None, messages: Sequence[Any]) -> list[str]:
    pieces = [f"Summary of what came before:\n{previous}"] if previous else []
    pieces.extend(line for line in (_line(m) for m in messages) if line)
    return pieces


def fitted_transcript(pieces: list[str], budget: int, encoding: str) -> str:
    """The pieces joined, the longest ones cut to their head and tail until the whole is at
    most ``budget`` tokens (a piece is never cut below 64 tokens; then the oldest go)."""
    counts = [count_text(p, encoding) for p in pieces]
    while sum(counts) + len(counts) > budget and pieces:
        longest = max(range(len(pieces)), key=counts.__getitem__)
        keep = counts[longest] // 2
        if keep < 64:
            pieces, counts = pieces[1:], counts[1:]
            continue
        pieces[longest] = cut_text(pieces[longest], keep, encoding)
        counts[longest] = count_text(pieces[longest], encoding)
    return "\n\n".join(pieces)


def summary_request(
    model: str,
    previous: str | None,
    messages: Sequence[Any],
    *,
    max_tokens: int,
    window: int | None,
    encoding: str,
) -> dict[str, Any]:
    """The summariser's chat request (OpenAI-shaped; its wire shapes it)."""
    budget = (window or 128_000) - max_tokens - OVERHEAD_TOKENS
    transcript = fitted_transcript(
        transcript_pieces(previous, messages), max(budget, 256), encoding
    )
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"The conversation so far:\n\n{transcript}"},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def summary_key(prefix: bytes, summarizer: str, tenant: str) -> bytes:
    """The summary cache's key: the history's prefix hash, scoped by the summariser and the
    tenant (one tenant's summary never reaches another, even for the same history)."""
    h = hashlib.blake2b(b"edgeproxy-summary-v1\0", digest_size=HASH_BYTES)
    for part in (summarizer.encode(), tenant.encode(), prefix):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()

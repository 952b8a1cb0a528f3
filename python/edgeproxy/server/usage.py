"""The usage the proxy counts itself, for upstreams that report none (and for cut streams).

An answer's usage is the upstream's own when it sends a valid one. Otherwise the proxy counts:
the prompt with the request's shared ``PromptTokens`` (once per encoding), the answer's text with
the serving candidate's tokenizer; counts are exact for the OpenAI encodings and labelled
estimates for the others (and for the 4-bytes-a-token fallback). Large texts are counted off the
event loop.
"""

from __future__ import annotations

from typing import Any

import orjson

from edgeproxy import tokens
from edgeproxy.server.prompt import PromptTokens
from edgeproxy.server.upstream_stream import add_usage


class UsageCounter:
    """The proxy's own usage count of one candidate's answers, with that candidate's tokenizer."""

    __slots__ = ("encoding", "prompt")

    def __init__(self, prompt: PromptTokens, encoding: str) -> None:
        self.prompt = prompt
        self.encoding = encoding

    async def count(self, text: str) -> dict[str, int]:
        """Prompt and completion tokens for an answer's ``text`` (may wait for a worker thread)."""
        return {
            "prompt_tokens": await self.prompt.count(self.encoding),
            "completion_tokens": await tokens.count_async(text, self.encoding),
        }

    def text_now(self, text: str) -> int:
        """Completion tokens of ``text``, counted inline (small pieces, or in a worker thread
        already)."""
        return tokens.count(text, self.encoding)

    def prompt_now(self) -> int:
        """The prompt's count without waiting (a ``finally`` that must not be cancelled)."""
        return self.prompt.now(self.encoding)


async def with_usage(
    answer: bytes, parsed: dict[str, Any], counter: UsageCounter
) -> tuple[bytes, dict[str, Any], bool]:
    """A non-stream answer with its usage: ``(answer, usage, estimated)``. An upstream that sent
    none gets the proxy's own count, written into the answer the client gets."""
    usage = parsed.get("usage")
    if isinstance(usage, dict) and usage:
        return answer, usage, False
    choices = parsed.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    counted = add_usage(await counter.count(content if isinstance(content, str) else ""), {})
    return orjson.dumps({**parsed, "usage": counted}), counted, True

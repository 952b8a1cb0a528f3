"""A provider's prompt cache, simulated: prefixes the provider has seen recently cost less.

One cache per simulated provider (a region, a replica: caches are not shared between them,
which is what cache-affinity routing is about), per model. A prompt is a sequence of
**segments** in the provider's cache order (tools, then the system prompt, then the messages),
each with an estimated token count (four characters a token, the simulator's estimate) and a
running hash; an entry is a segment boundary's hash with its expiry (``ttl`` seconds, refreshed
when it is read, as both providers do).

- **OpenAI** (automatic): every prefix of a prompt of at least ``min_tokens`` (1,024) is cached
  after the request; the next request reads its longest cached prefix, reported in 128-token
  steps as ``prompt_tokens_details.cached_tokens`` (part of ``prompt_tokens``).
- **Anthropic** (explicit): only prefixes ending at a block marked ``cache_control`` are written
  (``cache_creation_input_tokens``: the part past what was read, up to the last mark); a request
  reads the longest cached prefix ending at a mark or up to ``lookback`` (20) blocks before one
  (``cache_read_input_tokens``); ``input_tokens`` is the rest. Nothing marked, nothing cached.

The cached part of a prompt is also fast: ``SimConfig.prefill_tokens_per_second`` adds the
prompt's uncached tokens' prefill time to the first token's delay.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

OPENAI_STEP: Final = 128
MIN_TOKENS: Final = 1024
LOOKBACK: Final = 20
_SWEEP_EVERY: Final = 4096  # stores between two sweeps of expired entries


@dataclass(frozen=True, slots=True)
class Segment:
    data: bytes  # canonical JSON of the segment, cache marks left out
    tokens: int
    marked: bool  # carries ``cache_control`` (Anthropic)


@dataclass(frozen=True, slots=True)
class Cached:
    """A prompt's tokens as the provider bills them: read from its cache, written to it, the rest."""

    prompt_tokens: int  # all of them (OpenAI's prompt_tokens)
    read: int = 0
    written: int = 0

    @property
    def uncached(self) -> int:
        return self.prompt_tokens - self.read - self.written


def _unmarked(value: Any) -> Any:
    if isinstance(value, Mapping) and "cache_control" in value:
        return {k: v for k, v in value.items() if k != "cache_control"}
    return value


def _tokens(value: Any) -> int:
    if isinstance(value, str):
        return len(value) // 4
    return len(orjson.dumps(value)) // 4


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _segment(value: Any, tokens: int) -> Segment:
    marked = isinstance(value, Mapping) and "cache_control" in value
    return Segment(orjson.dumps(_unmarked(value), option=orjson.OPT_SORT_KEYS), tokens, marked)


def openai_segments(body: Mapping[str, Any]) -> list[Segment]:
    """Tools, then one segment per message (content text, tool calls' arguments)."""
    segments: list[Segment] = []
    tools = body.get("tools")
    if tools:
        segments.append(_segment(tools, _tokens(tools)))
    for message in body.get("messages") or []:
        if not isinstance(message, Mapping):
            continue
        text = _text(message.get("content"))
        for call in message.get("tool_calls") or []:
            if isinstance(call, Mapping):
                text += str(call.get("function", ""))
        segments.append(_segment(message, 4 + len(text) // 4))
    return segments


def _block_tokens(block: Any) -> int:
    if not isinstance(block, Mapping):
        return _tokens(block)
    kind = block.get("type")
    if kind == "text":
        return len(str(block.get("text", ""))) // 4
    if kind == "tool_result":
        return 4 + len(_text(block.get("content"))) // 4
    if kind == "image":
        return 1000
    return _tokens(_unmarked(block))


def anthropic_segments(body: Mapping[str, Any]) -> list[Segment]:
    """Each tool, each system block, each content block of each message (a string content is
    one block), in Anthropic's cache order."""
    segments = [_segment(t, _tokens(_unmarked(t))) for t in body.get("tools") or []]
    system = body.get("system")
    if isinstance(system, str) and system:
        segments.append(_segment(system, len(system) // 4))
    elif isinstance(system, list):
        segments.extend(_segment(b, _block_tokens(b)) for b in system)
    for message in body.get("messages") or []:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        role = str(message.get("role", ""))
        if isinstance(content, str):
            segments.append(_segment({"role": role, "text": content}, 4 + len(content) // 4))
            continue
        for i, block in enumerate(content or []):
            framing = 4 if i == 0 else 0
            segments.append(_segment(block, framing + _block_tokens(block)))
    return segments


def gemini_segments(body: Mapping[str, Any]) -> list[Segment]:
    """Tools, the system instruction, then one segment per content (Gemini caches implicitly,
    like OpenAI: the automatic model applies)."""
    segments: list[Segment] = []
    for part in ("tools", "systemInstruction"):
        value = body.get(part)
        if value:
            segments.append(_segment(value, _tokens(value)))
    for content in body.get("contents") or []:
        if isinstance(content, Mapping):
            segments.append(_segment(content, 4 + _tokens(content.get("parts"))))
    return segments


def responses_segments(body: Mapping[str, Any]) -> list[Segment]:
    """Tools, the instructions, then one segment per input item (OpenAI caches a Responses
    prompt as it does a chat one: the automatic model applies)."""
    segments: list[Segment] = []
    for part in ("tools", "instructions"):
        value = body.get(part)
        if value:
            segments.append(_segment(value, _tokens(value)))
    source = body.get("input")
    for item in [source] if isinstance(source, str) else source or []:
        segments.append(_segment(item, 4 + _tokens(item)))
    return segments


class PromptCacheModel:
    """One simulated provider's prompt cache (all its models; entries are scoped by model)."""

    def __init__(
        self,
        ttl: float,
        *,
        min_tokens: int = MIN_TOKENS,
        lookback: int = LOOKBACK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.min_tokens = min_tokens
        self.lookback = lookback
        self._clock = clock
        self._entries: dict[bytes, float] = {}
        self._stores = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _chain(self, model: str, segments: list[Segment]) -> tuple[list[int], list[bytes]]:
        """Tokens and hash at the end of each segment."""
        running = hashlib.blake2b(model.encode(), digest_size=16).digest()
        total, sums, hashes = 0, [], []
        for segment in segments:
            running = hashlib.blake2b(running + segment.data, digest_size=16).digest()
            total += segment.tokens
            sums.append(total)
            hashes.append(running)
        return sums, hashes

    def _live(self, key: bytes, now: float) -> bool:
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self._entries[key]
            return False
        self._entries[key] = now + self.ttl  # a hit refreshes the entry
        return True

    def _store(self, key: bytes, now: float) -> None:
        self._entries[key] = now + self.ttl
        self._stores += 1
        if self._stores % _SWEEP_EVERY == 0:
            self._entries = {k: e for k, e in self._entries.items() if e > now}

    def automatic(self, model: str, segments: list[Segment], framing: int = 3) -> Cached:
        """OpenAI's automatic prefix caching."""
        sums, hashes = self._chain(model, segments)
        prompt = framing + (sums[-1] if sums else 0)
        now = self._clock()
        best = 0
        for i in range(len(hashes) - 1, -1, -1):
            if self._live(hashes[i], now):
                best = sums[i]
                break
        read = best // OPENAI_STEP * OPENAI_STEP if best >= self.min_tokens else 0
        for i, key in enumerate(hashes):
            if sums[i] >= self.min_tokens:
                self._store(key, now)
        return Cached(prompt, min(read, prompt))

    def explicit(self, model: str, segments: list[Segment], framing: int = 3) -> Cached:
        """Anthropic's breakpoints."""
        sums, hashes = self._chain(model, segments)
        prompt = framing + (sums[-1] if sums else 0)
        marks = [i for i, s in enumerate(segments) if s.marked]
        if not marks:
            return Cached(prompt)
        now = self._clock()
        read = 0
        for mark in reversed(marks):
            for i in range(mark, max(mark - self.lookback, -1), -1):
                if self._live(hashes[i], now):
                    read = sums[i]
                    break
            if read:
                break
        last = sums[marks[-1]]
        written = last - read if last >= self.min_tokens and last > read else 0
        for mark in marks:
            if sums[mark] >= self.min_tokens:
                self._store(hashes[mark], now)
        return Cached(prompt, read, written)

    def apply(self, wire: str, body: Mapping[str, Any]) -> Cached:
        model = str(body.get("model", ""))
        if wire == "anthropic":
            return self.explicit(model, anthropic_segments(body))
        if wire == "gemini":
            return self.automatic(model, gemini_segments(body))
        if wire == "openai_responses":
            return self.automatic(model, responses_segments(body))
        return self.automatic(model, openai_segments(body))

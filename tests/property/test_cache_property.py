"""Property tests: canonical_request is equal exactly when the requests are equal as JSON values
(after dropping the fields that do not affect the answer, numbers compared by exact value)."""

from __future__ import annotations

import json
import random
from decimal import Decimal, localcontext
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy._core import cache_key, canonical_request

IGNORED = {"stream", "stream_options", "user", "metadata", "store", "service_tier"}
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: abs(d.adjusted()) < 40
    ),
)
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
leaves = st.one_of(st.none(), st.booleans(), numbers, text)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=20,
)
fields = st.sampled_from(["model", "messages", "temperature", "stream", "user", "metadata", "n"])
requests = st.dictionaries(st.one_of(fields, text), values, max_size=6)


def normal(v: Any) -> Any:
    """A value with numbers as exact Decimals (so 1 == 1.0 == 1e0), for comparison."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | Decimal):
        with localcontext(prec=200):  # exact: the default 28 digits would round
            return Decimal(v).normalize() if v else Decimal(0)
    if isinstance(v, list):
        return [normal(x) for x in v]
    return {k: normal(x) for k, x in v.items()}


def semantic(request: dict[str, Any]) -> Any:
    return normal({k: v for k, v in request.items() if k not in IGNORED})


def spell(v: Any, rng: random.Random) -> str:
    """One of many JSON spellings of a value: whitespace, key order, number and string forms."""
    ws = lambda: rng.choice(["", " ", "\n  ", "\t"])  # noqa: E731
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=rng.random() < 0.5)
    if isinstance(v, int | Decimal):
        d = Decimal(v)
        sign, digits, exp = d.as_tuple()
        assert isinstance(exp, int)
        pad = rng.randrange(3)
        mantissa = "".join(map(str, digits)).lstrip("0") or "0"
        form = rng.randrange(3)
        neg = "-" if sign else ""
        if mantissa == "0":
            return rng.choice(["0", "-0", "0.0", "0e5", "-0.00E-3"])
        if form == 0:
            return f"{neg}{mantissa}{'0' * pad}e{exp - pad}"
        if form == 1:
            e = exp + len(mantissa)
            return f"{neg}0.{mantissa}E{'+' if e >= 0 else ''}{e}"
        return neg + format(d.copy_abs(), "f") if abs(exp) < 30 else f"{neg}{mantissa}e{exp}"
    if isinstance(v, list):
        return "[" + ",".join(ws() + spell(x, rng) + ws() for x in v) + "]"
    items = list(v.items())
    rng.shuffle(items)
    return (
        "{" + ",".join(f"{ws()}{json.dumps(k)}{ws()}:{ws()}{spell(x, rng)}" for k, x in items) + "}"
    )


@SETTINGS
@given(requests, st.integers(), st.integers())
def test_every_spelling_has_one_canonical_form(request: dict[str, Any], s1: int, s2: int) -> None:
    a = canonical_request(spell(request, random.Random(s1)).encode())
    b = canonical_request(spell(request, random.Random(s2)).encode())
    assert a == b
    assert normal(json.loads(a, parse_float=Decimal, parse_int=Decimal)) == semantic(request)


@SETTINGS
@given(requests, requests, st.integers())
def test_canonical_forms_equal_iff_json_equal(a: dict[str, Any], b: dict[str, Any], s: int) -> None:
    rng = random.Random(s)
    ca = canonical_request(spell(a, rng).encode())
    cb = canonical_request(spell(b, rng).encode())
    assert (ca == cb) == (semantic(a) == semantic(b))


@SETTINGS
@given(requests, st.text(max_size=8), st.text(max_size=8))
def test_keys_are_scoped_by_tenant(request: dict[str, Any], t1: str, t2: str) -> None:
    body = json.dumps(request, default=str).encode()
    assert (cache_key(body, "m", "openai", t1) == cache_key(body, "m", "openai", t2)) == (t1 == t2)


# Long strings (crossing the 64-byte blocks of the Rust scan) biased to escapes, backslash runs,
# quotes, control characters, non-ASCII and astral characters.
long_text = st.text(
    alphabet=st.one_of(
        st.sampled_from('"\\/\n\t\r\b\f\x00\x1f\x7fé€😀\u2028 uUn0'),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=300,
)
SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def spell_str(s: str, rng: random.Random) -> str:
    """A JSON string token for ``s``, each character spelled raw, by its short escape, or as
    ``\\uXXXX`` in either case (a surrogate pair for astral characters); ``/`` maybe as ``\\/``."""
    out = ['"']
    for c in s:
        short = "\\/" if c == "/" else SHORT.get(c)
        must_escape = c in '"\\' or ord(c) < 0x20
        r = rng.randrange(3)
        if short and r == 0:
            out.append(short)
        elif not must_escape and r == 1:
            out.append(c)
        else:
            units = c.encode("utf-16-be")
            for i in range(0, len(units), 2):
                h = units[i : i + 2].hex()
                out.append("\\u" + (h.upper() if rng.random() < 0.5 else h))
    out.append('"')
    return "".join(out)


@SETTINGS
@given(long_text, st.integers(), st.integers(), st.integers(min_value=0, max_value=70))
def test_string_spellings_collide_across_blocks(s: str, s1: int, s2: int, pad: int) -> None:
    def body(seed: int) -> bytes:
        rng = random.Random(seed)
        first, second = spell_str(s, rng), spell_str(s * 3, rng)
        return (" " * pad + '{"messages":[' + first + "," + second + "]}").encode()

    # The canonical string is what json.dumps writes without ensure_ascii (RFC 8785 escaping).
    want = '{"messages":[' + json.dumps(s, ensure_ascii=False) + ","
    want += json.dumps(s * 3, ensure_ascii=False) + "]}"
    assert canonical_request(body(s1)) == want.encode()
    assert canonical_request(body(s2)) == want.encode()
    key = cache_key(body(s1), "m", "openai", "t")
    assert key == cache_key(body(s2), "m", "openai", "t")
    assert key == cache_key(body(s2), "m", "openai", "t", utf8_checked=True)


@SETTINGS
@given(long_text, long_text)
def test_different_long_strings_never_collide(a: str, b: str) -> None:
    ka = cache_key(json.dumps({"messages": [a]}).encode(), "m", "openai", "t")
    kb = cache_key(json.dumps({"messages": [b]}, ensure_ascii=False).encode(), "m", "openai", "t")
    assert (ka == kb) == (a == b)

"""Scrub secrets from text before it reaches a client, a span, a metric label or a log line.

Two nets:

- the exact values the loaded policies carry (provider keys, secret header values, ``base_url``
  credentials), registered at every policy load (``register_policy_secrets``), each also in the
  forms a JSON encoder may write it (``/`` as ``\\/``, non-ASCII as ``\\uXXXX``);
- patterns for text that looks like a credential whoever it belongs to: the value after
  ``Authorization:``, ``Bearer``, ``x-api-key:``, ``api-key:``, ``api_key=``, ``password=``, …
  (the label is kept, the value goes), vendor key shapes (``sk-…`` including ``sk-ant-…`` and
  ``sk-proj-…``, ``gsk_…``, ``xai-…``, ``AIza…``, and edgeproxy's own virtual keys ``epk_…``), and 32 hex digits (Azure's key shape) shortly
  after a word such as ``key``, ``token`` or ``secret``.

``redact`` is one ``str.replace`` per registered value present plus one regex pass; a 64 KiB
error body costs well under a millisecond (docs/observability.md has the figure). The request
path calls it only on text that came from an upstream's error or a failure detail, never per
chunk of a successful stream.

Registration keeps the values of the last ``GENERATIONS`` loads, not only the newest: requests
started on the previous snapshot may still be in flight (and a rotated key is exactly the one an
upstream quotes back in its 401), and ``policy diff`` loads two policies at once. A reload with
the same values adds nothing, so the set is bounded by ``GENERATIONS`` times the values of one
policy, however often the policy is reloaded.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

import orjson

if TYPE_CHECKING:
    from edgeproxy.snapshot import Policy

REDACTED: Final = "[REDACTED]"
FLEET_REDIS_ENV: Final = "EDGEPROXY_FLEET_REDIS"  # the fleet's Redis URL (may hold a password)

# Shorter values are too likely to match ordinary text (and too weak to be real keys).
MIN_SECRET_LENGTH: Final = 8
# How many policy loads' values stay registered (the newest and the ones before it).
GENERATIONS: Final = 4
# Trigger words examined per text: the patterns are a best-effort net (the registered values,
# always searched in full, are the guarantee), and a body made of nothing but trigger words must
# not cost the event loop more than about a millisecond.
MAX_PATTERN_TRIES: Final = 256

# The patterns, each anchored at a trigger word found with ``str.find`` in the lower-cased text:
# a regex tried at every position of a 64 KiB body costs milliseconds in CPython, a ``find`` per
# trigger word tens of microseconds, and a regex only where a trigger occurs next to nothing.
_VALUE = r"(?P<value>[^\s\"'`,;}&<>\\]{3,}[^\s\"'`,;}&<>\\.])"  # 4+ chars, not ending in "."
_QUOTE = r"(?:\\?[\"'])?"  # a quote, JSON-escaped or not, around a label or a value
# ``Authorization: Bearer X``, ``"api_key": "X"``, ``x-api-key=X``, ``client_secret: X``: the
# label and separator are kept, the value goes. (Matched from the distinctive word on, so
# ``x-api-key`` and ``access_token`` are found by their ``api-key`` and ``token``.)
_LABELLED = re.compile(
    r"(?:authorization|api[_-]?key|apikey|token|secret(?:[_-]?key)?|passw(?:or)?d"
    rf"|subscription[_-]?key){_QUOTE}\s*[:=]\s*{_QUOTE}(?:(?:bearer|basic|token)\s+)?{_VALUE}",
    re.IGNORECASE,
)
_BEARER = re.compile(rf"bearer\s+{_VALUE}", re.IGNORECASE)
# Vendor key shapes, wherever they appear (not inside a longer word).
_NOT_AFTER_WORD = r"(?<![A-Za-z0-9_])"
_SHAPES = {
    "sk-": re.compile(
        rf"{_NOT_AFTER_WORD}(?P<value>sk-[A-Za-z0-9_-]{{8,}})"
    ),  # also sk-ant-, sk-proj-
    "gsk_": re.compile(rf"{_NOT_AFTER_WORD}(?P<value>gsk_[A-Za-z0-9]{{16,}})"),
    "xai-": re.compile(rf"{_NOT_AFTER_WORD}(?P<value>xai-[A-Za-z0-9_-]{{16,}})"),
    "aiza": re.compile(rf"{_NOT_AFTER_WORD}(?P<value>AIza[0-9A-Za-z_-]{{35}})"),
    # edgeproxy's own virtual keys (``edgeproxy keys create``: docs/keys.md).
    "epk_": re.compile(rf"{_NOT_AFTER_WORD}(?P<value>epk_[A-Za-z0-9]{{16,}})"),
}
# Azure-style keys: 32 hex digits shortly after a word that says what they are.
_HEX_KEY = re.compile(
    r"(?:key|token|secret|passw(?:or)?d|credential)[^\n]{0,40}?\b(?P<value>[0-9a-f]{32})\b",
    re.IGNORECASE,
)
# Trigger word (lower case) -> the patterns tried where it occurs.
_TRIGGERS: Final[tuple[tuple[str, tuple[re.Pattern[str], ...]], ...]] = (
    ("authorization", (_LABELLED,)),
    ("api", (_LABELLED,)),
    ("token", (_LABELLED, _HEX_KEY)),
    ("secret", (_LABELLED, _HEX_KEY)),
    ("passw", (_LABELLED, _HEX_KEY)),
    ("subscription", (_LABELLED,)),
    ("bearer", (_BEARER,)),
    ("key", (_HEX_KEY,)),
    ("credential", (_HEX_KEY,)),
    *((prefix, (pattern,)) for prefix, pattern in _SHAPES.items()),
)

_lock = threading.Lock()
_generations: deque[frozenset[str]] = deque(maxlen=GENERATIONS)
# Every registered value and its encoded forms, longest first (a longer value that contains a
# shorter one is replaced whole).
_exact: tuple[str, ...] = ()
# Moves whenever ``_exact`` does: ``redact_name``'s remembered answers are for one set of secrets.
_generation = 0


def _forms(secret: str) -> Iterator[str]:
    """``secret`` as it may appear in text: raw, and JSON-escaped the ways encoders do it."""
    yield secret
    for escaped in (orjson.dumps(secret).decode()[1:-1], json.dumps(secret)[1:-1]):
        yield escaped
        yield escaped.replace("/", "\\/")


def register_secrets(values: Iterable[str]) -> None:
    """Register the secret values of one policy load (one generation; see the module doc)."""
    global _exact, _generation
    fresh = frozenset(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH)
    with _lock:
        if fresh in _generations:
            if _generations[-1] == fresh:
                return
            _generations.remove(fresh)  # seen again: it is the newest now
        _generations.append(fresh)
        forms = {form for generation in _generations for v in generation for form in _forms(v)}
        _exact = tuple(sorted(forms, key=len, reverse=True))
        _generation += 1


def clear_secrets() -> None:
    """Forget the registered values (tests)."""
    global _exact, _generation
    with _lock:
        _generations.clear()
        _exact = ()
        _generation += 1


def registered_count() -> int:
    """How many forms of registered values ``redact`` replaces (bounded; see the module doc)."""
    return len(_exact)


def policy_secrets(policy: Policy) -> set[str]:
    """The secret values a policy sends upstream: every credential header value (and the token
    after its scheme), and the user and password of any URL with credentials in it."""
    found: set[str] = set()
    # Every candidate the proxy may send to: chains, task chains, auto pools and pins, evals.
    candidates = [c for route in policy.routes.values() for c in route.candidates]
    for candidate in (*candidates, *policy.evals.pool.values()):
        for name, value in candidate.headers.items():
            if _secret_header(name):
                found.add(value)
                scheme, _, token = value.partition(" ")
                if token and scheme.lower() in ("bearer", "basic", "token"):
                    found.add(token.strip())
        for url in (candidate.base_url, candidate.chat_url, candidate.health_check_url):
            found.update(_url_credentials(url))
    found.update(_url_credentials(policy.fleet.redis))  # the fleet's Redis password
    # ... or the one the environment gives when the policy names no Redis (docs/fleet.md).
    found.update(_url_credentials(os.environ.get(FLEET_REDIS_ENV)))
    return found


def register_policy_secrets(policy: Policy) -> None:
    """At every policy load: register what ``policy_secrets`` finds (one generation)."""
    register_secrets(policy_secrets(policy))


_SECRET_HEADER_WORDS: Final = ("auth", "key", "token", "secret", "password", "cookie", "signature")


def _secret_header(name: str) -> bool:
    lower = name.lower()
    return any(word in lower for word in _SECRET_HEADER_WORDS)


def _url_credentials(url: str | None) -> set[str]:
    if not url or "@" not in url:
        return set()
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return set()
    found = set()
    for value in (user, password):
        if value:
            found.update({value, unquote(value)})
    if user and password:
        found.add(f"{user}:{password}")
    return found


_Triggers = tuple[tuple[str, tuple[re.Pattern[str], ...]], ...]


def _spans(text: str, triggers: _Triggers = _TRIGGERS) -> list[tuple[int, int]]:
    """Where the secrets in ``text`` are: (start, end) of each value to replace."""
    found = []
    for secret in _exact:
        i = text.find(secret)
        while i != -1:
            found.append((i, i + len(secret)))
            i = text.find(secret, i + 1)
    # Lower case for the trigger words, index for index (U+0130 is the one character whose
    # lower case is longer than itself).
    lower = text.replace("\u0130", "I").lower()
    budget = MAX_PATTERN_TRIES
    for trigger, patterns in triggers:
        i = lower.find(trigger)
        while i != -1 and budget > 0:
            budget -= 1
            resume = i + 1
            for pattern in patterns:
                match = pattern.match(text, i)
                if match is not None:
                    found.append(match.span("value"))
                    resume = max(resume, match.end())  # never rescan a value: linear time
            i = lower.find(trigger, resume)
    return found


def redact(text: str, triggers: _Triggers = _TRIGGERS) -> str:
    """``text`` with every registered value and every credential-shaped value replaced."""
    spans = _spans(text, triggers)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    done = 0  # text[:done] is written or replaced
    for start, end in spans:
        if start > done or not out:
            out.append(text[done:start])
            out.append(REDACTED)
        # else: it overlaps (or touches) the value just replaced, which grows to cover it
        done = max(done, end)
    out.append(text[done:])
    return "".join(out)


# A JSON escape of a character keys are made of (``\\u0073`` for ``s``, ``\\/``): text that is
# not valid JSON is un-escaped this far before it is scrubbed, so escapes cannot hide a key.
_KEY_CHAR_ESCAPE: Final = re.compile(
    r"\\u00(2[bdef]|3[0-9d]|[46][1-9a-f]|[57][0-9a]|5f|7e)|\\/", re.I
)


@functools.lru_cache(maxsize=1024)
def _redact_name(text: str, generation: int) -> str:
    return redact(text)


def redact_name(text: str) -> str:
    """``redact`` for the short strings that repeat on every request (model names): remembered
    per text until the registered secrets change (``generation``), so a request does not scan
    its model name for every known key again."""
    if len(text) > 256:
        return redact(text)
    return _redact_name(text, _generation)


def _unescape_key_chars(text: str) -> str:
    return _KEY_CHAR_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else "/", text)


def redact_body(body: bytes) -> bytes:
    """An upstream's body (an error, an in-band error event) scrubbed for the client.

    JSON is decoded first, so a key written with escapes (``\\u0073k-…``) is found like any
    other, and the result stays valid JSON. Other text is scrubbed as it is (bytes that are not
    UTF-8 kept). A body with nothing to scrub comes back byte for byte.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:  # not JSON, or JSON orjson refuses (depth, huge numbers)
        text = _unescape_key_chars(body.decode("utf-8", "surrogateescape"))
        scrubbed = redact(text)
        return body if scrubbed == text else scrubbed.encode("utf-8", "surrogateescape")
    # The compact re-encoding, scrubbed in one pass: nothing found is the usual answer.
    dump = orjson.dumps(parsed).decode()
    scrubbed = redact(dump)
    if scrubbed == dump:
        return body
    try:
        orjson.loads(scrubbed)
    except orjson.JSONDecodeError:
        # A replacement broke the structure (an unquoted value after a credential's name, a
        # registered value spanning a quote): scrub string by string instead.
        lower = dump.lower()
        present = tuple(t for t in _TRIGGERS if t[0] in lower)
        return orjson.dumps(_scrub_tree(parsed, present))
    return scrubbed.encode()


def redact_text_body(data: str) -> str:
    """``redact_body`` for a body already decoded to text (an SSE event's data)."""
    return redact_body(data.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass")


# A JSON member name whose value is a credential: ``api_key``, ``x-api-key``, ``access_token``,
# ``client_secret``, ``password`` (not ``max_tokens``).
_LABEL_KEY: Final = re.compile(
    r"(?:.*[_-])?(?:authorization|api[_-]?key|apikey|token|secret(?:[_-]?key)?|passw(?:or)?d"
    r"|subscription[_-]?key)",
    re.IGNORECASE,
)


def _scrub_tree(root: object, triggers: _Triggers) -> object:
    """Every string of a decoded JSON document scrubbed in place, and every scalar value of a
    credential-named member replaced (no recursion: a document may nest 1,024 levels deep)."""
    if isinstance(root, str):
        return redact(root, triggers)
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in list(node):
                value = node[key]
                if isinstance(value, dict | list):
                    stack.append(value)
                elif _LABEL_KEY.fullmatch(key) is not None and value not in (None, ""):
                    value = REDACTED
                elif isinstance(value, str):
                    value = redact(value, triggers)
                clean = redact(key, triggers)
                if clean != key:
                    del node[key]
                node[clean] = value
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str):
                    node[i] = redact(value, triggers)
                elif isinstance(value, dict | list):
                    stack.append(value)
    return root

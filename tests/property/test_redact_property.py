"""Property tests: a registered secret never survives the redactor, wherever it sits in whatever
text, raw or JSON-escaped, and the redactor never breaks the JSON it scrubs."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy.telemetry.redact import (
    GENERATIONS,
    REDACTED,
    clear_secrets,
    redact,
    redact_body,
    register_secrets,
    registered_count,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What provider keys are made of (base64url, base64, hex, and the punctuation some vendors use).
KEY_ALPHABET = string.ascii_letters + string.digits + "-_.~+/="
secrets_ = st.text(alphabet=KEY_ALPHABET, min_size=8, max_size=60)
# Anything around it: every Unicode character but lone surrogates (not text).
texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=200)


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


@SETTINGS
@given(secret=secrets_, before=texts, after=texts)
def test_a_registered_secret_never_survives_in_text(secret: str, before: str, after: str) -> None:
    register_secrets([secret])
    assert secret not in redact(before + secret + after)


@SETTINGS
@given(secret=secrets_, before=texts, after=texts, ascii_only=st.booleans())
def test_a_registered_secret_never_survives_json_escaped(
    secret: str, before: str, after: str, ascii_only: bool
) -> None:
    """The text as a JSON string, by the encoders upstreams use (non-ASCII escaped or not, ``/``
    escaped or not): neither the escaped nor the decoded secret survives. (``redact`` is for
    text: it may cut through an escape such as ``\\u0090`` next to the secret, so the result
    is decoded only when it still is JSON; ``redact_body`` keeps JSON whole.)"""
    register_secrets([secret])
    encoded = json.dumps(before + secret + after, ensure_ascii=ascii_only)
    for escaped in (encoded, encoded.replace("/", "\\/")):
        out = redact(escaped)
        assert json.dumps(secret, ensure_ascii=ascii_only)[1:-1] not in out
        assert secret not in out
        try:
            decoded = json.loads(out)
        except json.JSONDecodeError:
            continue
        assert secret not in decoded


@SETTINGS
@given(
    secret=secrets_,
    before=texts,
    after=texts,
    member=st.sampled_from(["message", "code", "param", "type"]),
    escape_all=st.booleans(),
)
def test_redact_body_scrubs_json_however_it_is_escaped(
    secret: str, before: str, after: str, member: str, escape_all: bool
) -> None:
    """An upstream error body quoting the key, even with every character of the key written as
    a ``\\uXXXX`` escape, comes back valid JSON with no trace of it."""
    register_secrets([secret])
    inner = json.dumps(before, ensure_ascii=False)[1:-1]
    key = "".join(f"\\u{ord(c):04x}" for c in secret) if escape_all else secret.replace("/", "\\/")
    tail = json.dumps(after, ensure_ascii=False)[1:-1]
    body = f'{{"error": {{"{member}": "{inner}{key}{tail}", "other": "x"}}}}'.encode()
    out = redact_body(body)
    decoded = orjson.loads(out)  # still JSON
    assert secret not in json.dumps(decoded, ensure_ascii=False)
    assert secret not in out.decode()


@SETTINGS
@given(value=texts)
def test_redact_body_of_clean_json_is_byte_for_byte(value: str) -> None:
    """Nothing registered, nothing credential-shaped: the upstream's bytes pass unchanged."""
    body = json.dumps({"error": {"message": value}}).encode()
    if redact(json.loads(body)["error"]["message"]) == value:
        assert redact_body(body) == body


@SETTINGS
@given(text=texts)
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@SETTINGS
@given(
    token=st.text(
        alphabet=string.ascii_letters + string.digits + "-._~+/", min_size=4, max_size=80
    ),
    label=st.sampled_from(
        [
            "Authorization: Bearer ",
            "authorization: bearer ",
            "Authorization=Basic ",
            "x-api-key: ",
            "api-key: ",
            "api_key=",
            '"api_key": "',
            "Bearer ",
            "password=",
            "client_secret: ",
        ]
    ),
    before=texts,
)
def test_a_credential_after_its_label_is_redacted_whole(
    token: str, label: str, before: str
) -> None:
    """Unregistered credentials after the usual labels are replaced entirely (the label stays):
    ``Authorization: Bearer X`` no longer keeps X."""
    token = token.rstrip(".") or "abcd"
    if len(token) < 4:
        token += "wxyz"
    out = redact(f"{before} {label}{token} tail")
    assert f"{label}{token}" not in out
    # The label stays, unless the text before it ends with a label of its own ("... BEARER
    # Authorization: Bearer X"): then the first label's redaction takes the second one too.
    if not before.rstrip().lower().endswith(("bearer", "basic", "key", "token", "secret")):
        assert f"{label}{REDACTED}" in out


def test_registration_is_bounded_over_many_reloads() -> None:
    """Each load is a generation; only the last few stay: a thousand reloads with a rotating
    key hold a bounded set, the newest keys are always there and the oldest are gone."""
    sizes = []
    for n in range(1000):
        register_secrets([f"rotating-{n:06d}", "steady-value-1"])
        sizes.append(registered_count())
    assert max(sizes) == sizes[-1] == GENERATIONS + 1  # one form each: nothing to escape
    assert redact("new rotating-000999, old rotating-000997") == f"new {REDACTED}, old {REDACTED}"
    assert redact("older rotating-000995") == "older rotating-000995"
    assert redact("steady-value-1") == REDACTED
    register_secrets(["rotating-000999", "steady-value-1"])  # the same load again adds nothing
    assert registered_count() == GENERATIONS + 1


def test_a_remembered_name_is_scrubbed_again_once_a_secret_is_registered() -> None:
    from edgeproxy.telemetry.redact import clear_secrets, redact_name

    name = "model-with-zx81-internal-token-qq77ww"
    try:
        assert redact_name(name) == name  # remembered as clean
        register_secrets(["zx81-internal-token-qq77ww"])
        assert "qq77ww" not in redact_name(name)  # a new secret: not the remembered answer
        clear_secrets()
        assert redact_name(name) == name
    finally:
        clear_secrets()

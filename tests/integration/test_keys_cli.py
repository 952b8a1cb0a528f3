"""``edgeproxy keys`` as an operator meets it: a key shown once and never again, readable errors
for what they mistype (never a traceback), the Redis password never printed, ``--help`` with
examples. In process (``edgeproxy.cli.main``) against a SQLite store, or a Redis URL that
cannot be used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeproxy.cli import main
from edgeproxy.keys import SqliteStore, digest_of

POLICY = """
version: 1
STORE
providers:
  alpha:
    kind: openai
    api_key: sk-alpha-secret
    regions: {one: {base_url: "http://127.0.0.1:9"}}
    models: {m: {}}
routes:
  m: {chain: [alpha/one/m]}
"""
KEY = re.compile(r"epk_[A-Za-z0-9]{32}")


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("STORE", "keys: {store: keys.sqlite}"))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["keys", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_key_is_printed_once_and_stored_as_its_digest(
    policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "create", "--policy", str(policy), "--name", "ci", "--rpm", "5")
    assert code == 0
    (key,) = KEY.findall(out)
    assert not KEY.findall(err)
    raw = (policy.parent / "keys.sqlite").read_bytes()
    assert key.encode() not in raw and key[4:].encode() not in raw
    assert SqliteStore(policy.parent / "keys.sqlite").keys()[0].digest == digest_of(key)
    for argv in (["list"], ["list", "--json"], ["usage"], ["usage", "--json"]):
        code, out, err = run(capsys, *argv, "--policy", str(policy))
        assert code == 0
        assert key not in out + err and key[-8:] not in out + err, argv
    code, out, err = run(capsys, "revoke", "--policy", str(policy), "ci")
    assert code == 0 and key not in out + err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--budget", "50usd"], "<amount>usd/<period>"),
        (["--budget", "50eur/month"], "<amount>usd/<period>"),
        (["--budget=-5usd/month"], "<amount>usd/<period>"),
        (["--expires", "tomorrow"], "--expires takes a date"),
        (["--expires", "2020-01-01"], "in the past"),
        (["--expires", "2026-02-30"], "--expires takes a date"),
        (["--rpm", "0"], "limits.rpm must be >= 1"),
        (["--tpm", "-1"], "limits.tpm must be >= 1"),
        (["--routes", "nope"], "no route nope"),
    ],
)
def test_a_mistyped_flag_is_a_readable_error(
    policy: Path, capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    code, out, err = run(capsys, "create", "--policy", str(policy), "--name", "x", *flags)
    assert code == 2
    assert says in err and "Traceback" not in err
    assert not KEY.findall(out + err)  # nothing was made
    assert SqliteStore(policy.parent / "keys.sqlite").keys() == []


def test_a_policy_without_a_store_says_how_to_give_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEPROXY_FLEET_REDIS", raising=False)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("STORE", ""))
    code, _, err = run(capsys, "list", "--policy", str(path))
    assert code == 2 and "keys.store" in err and "fleet.redis" in err


@pytest.mark.parametrize(
    "url",
    [
        "redis://:cli-pass-9876@127.0.0.1:notaport/0",  # not a URL redis-py can use
        "redis://:cli-pass-9876@127.0.0.1:1/0",  # nothing listens there
    ],
)
def test_a_bad_or_unreachable_redis_is_an_error_without_its_password(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
) -> None:
    monkeypatch.setenv("EDGEPROXY_FLEET_REDIS", url)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("STORE", ""))
    code, out, err = run(capsys, "list", "--policy", str(path))
    assert code != 0
    assert "edgeproxy keys:" in err and "Traceback" not in err
    assert "cli-pass-9876" not in out + err


def test_the_policy_check_refuses_a_redis_url_redis_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("STORE", 'fleet: {redis: "redis://:pw-4321-x@h:port/0"}'))
    code = main(["policy", "check", str(path)])
    out, err = capsys.readouterr()
    assert code != 0 and "port is a number" in out + err
    assert "pw-4321-x" not in out + err


@pytest.mark.parametrize("sub", ["create", "list", "revoke", "usage"])
def test_every_subcommands_help_shows_examples(
    capsys: pytest.CaptureFixture[str], sub: str
) -> None:
    with pytest.raises(SystemExit):
        main(["keys", sub, "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and f"edgeproxy keys {sub} --policy" in out


def test_the_environments_redis_password_is_registered_with_the_redactor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgeproxy.policy import load_policy_text
    from edgeproxy.telemetry.redact import policy_secrets

    monkeypatch.setenv("EDGEPROXY_FLEET_REDIS", "redis://:env-pass-2468@redis:6379/0")
    policy = load_policy_text(POLICY.replace("STORE", ""), "p.yaml", {})
    assert "env-pass-2468" in policy_secrets(policy)

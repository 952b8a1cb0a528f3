"""The policy loader against input that cannot work or means harm (issue 15, items 9 and 11).

Upstream URLs that would fail every request are refused at load, located, without quoting the
URL; files that are too large, expand without bound, block, or are not a policy at all are
refused with a located problem, never a hang, never a line of the file quoted back.
"""

from __future__ import annotations

import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from edgeproxy.errors import PolicyError
from edgeproxy.policy import files, load_policy, load_policy_text
from edgeproxy.policy.describe import describe_policy
from edgeproxy.policy.diff import diff_policies, render_text
from edgeproxy.policy.explain import explain
from edgeproxy.policy.explain import render_text as render_explain
from edgeproxy.policy.files import FileRefused, read_key_file

POLICY = """\
version: 1
providers:
  p:
    kind: openai
    api_key: sk-the-provider-key
    health_check: {kind: models}
    regions:
      r: {base_url: "BASE_URL"}
    models:
      m:
  q:
    kind: openai
    regions: {x: {base_url: "http://127.0.0.1:2/v1"}}
    models:
      m:
routes:
  m: {chain: [p/r/m, q/x/m]}
"""


def problems_of(text: str, source: str = "t.yaml", **kwargs: object) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, source, {}, **kwargs)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:99999/v1", "has port 99999, outside 1-65535"),
        ("http://127.0.0.1:0/v1", "has port 0, outside 1-65535"),
        ("http://127.0.0.1:80a/v1", "has a port that is not a number"),
        ("http://[::1", "has an unbalanced [ or ]"),
        ("http://[::1/v1", "has an unbalanced [ or ]"),
        ("http://::1]/v1", "has an unbalanced [ or ]"),
        ("http://[::zz]/v1", "has an IPv6 host that is not an IPv6 address"),
        ("http://example.com/v1/modèles", "has non-ASCII characters in its path: percent-encode"),
        ("http://a\ufffdb.example/v1", "has a host that is not a valid internationalised domain"),
        (f"http://{'a' * 64}.example.com/v1", "has a host name label longer than 63 characters"),
        ("http://a..example/v1", "has an empty label in its host name"),
        ("http://a<b>.example/v1", "has characters a host name cannot hold"),
        ("http:///v1", "has no host"),
        ("http://:8000/v1", "has no host"),
        ("ftp://files.example/v1", "must start with http:// or https://"),
        ("api.example.com/v1", "must start with http:// or https://"),
        ("https://api.example.com/v1?api-version=1", "must not have a query (?...): put query"),
        ("https://api.example.com/v1#frag", "must not have a fragment"),
        ("https://api.example.com/ v1", "must not contain spaces or control characters"),
    ],
)
def test_base_urls_that_cannot_work_are_refused_at_their_line(url: str, reason: str) -> None:
    (problem,) = problems_of(POLICY.replace("BASE_URL", url))
    assert problem.startswith("t.yaml:8:11: providers.p.regions.r.base_url: "), problem
    assert reason in problem
    assert url not in problem


def test_base_url_credentials_are_refused_without_echoing_them() -> None:
    url = "https://svc-user:hunter2-password@api.example.com/v1"
    (problem,) = problems_of(POLICY.replace("BASE_URL", url))
    assert "providers.p.regions.r.base_url: must not carry credentials" in problem
    assert "api_key, api_key_file or headers" in problem
    assert "hunter2" not in problem and "svc-user" not in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:8000/v1",
        "https://bücher.example/v1",
        "http://vllm.llm.svc.cluster.local:8000/v1",
        "http://my_host.internal:8080",
        "https://example.openai.azure.com/openai/deployments/gpt-4o-mini",
        "https://api.example.com/v1/caf%C3%A9",
    ],
)
def test_base_urls_that_work_are_accepted(url: str) -> None:
    policy = load_policy_text(POLICY.replace("BASE_URL", url), "t.yaml", {})
    assert policy.routes["m"].chain[0].base_url == url


def test_a_health_check_url_gets_the_same_checks() -> None:
    text = POLICY.replace("BASE_URL", "http://127.0.0.1:1/v1").replace(
        "{kind: models}", '{kind: url, url: "http://probe:secret@127.0.0.1:99999/health"}'
    )
    (problem,) = problems_of(text)
    assert "providers.p.health_check.url: must not carry credentials" in problem
    assert "secret" not in problem


def test_no_view_of_a_policy_prints_url_credentials() -> None:
    """Second line of defence: a snapshot holding credentials in a URL (the loader refuses
    them, but a snapshot can be built by other code) never shows them."""
    from dataclasses import replace
    from types import MappingProxyType

    old = load_policy_text(POLICY.replace("BASE_URL", "http://127.0.0.1:1/v1"), "a", {})
    route = old.routes["m"]
    leaky = replace(
        route.chain[0],
        base_url="https://user:hunter2@127.0.0.1:1/v1",
        health_check_url="https://probe:hunter3@127.0.0.1:1/health",
    )
    new_route = replace(route, chain=(leaky, *route.chain[1:]))
    new = replace(old, routes=MappingProxyType({"m": new_route}), version="b")
    shown = [
        repr(describe_policy(new)),
        render_text(old, new, diff_policies(old, new)),
        render_explain(explain(new, {"model": "m", "messages": []})),
        repr(explain(new, {"model": "m", "messages": []}).as_dict()),
    ]
    for text in shown:
        assert "hunter2" not in text and "hunter3" not in text
        assert "sk-the-provider-key" not in text
    assert "https://127.0.0.1:1/v1" in shown[0]


# -- size, expansion and nesting --------------------------------------------------------------


def test_a_policy_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as f:
        f.write("version: 1\n")
        line = "key_%07d: value value value value value value value value value\n"
        for i in range(150_000):  # ~10 MB
            f.write(line % i)
    assert path.stat().st_size > 9_000_000
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (problem,) = info.value.problems
    assert str(problem) == f"{path}: the policy is larger than 1 MiB, the limit: refused"
    # The same limit holds for text handed over directly.
    assert problems_of(path.read_text()) == [
        "t.yaml: the policy is larger than 1 MiB, the limit: refused"
    ]


def _billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    lines.append(f"version: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_without_being_expanded() -> None:
    text = _billion_laughs()  # 9^9 = 387 million strings once expanded
    assert len(text) < 1024
    tracemalloc.start()
    try:
        found = problems_of(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == [
        "t.yaml:2:9: the policy expands to more than 100000 values (YAML aliases repeating "
        "each other?): refused"
    ] or found[0].endswith("(YAML aliases repeating each other?): refused")
    assert len(found) == 1
    assert peak < 64 * 1024 * 1024, f"the expansion was built: {peak / 2**20:.0f} MiB"


def test_a_merge_key_bomb_is_refused_and_merge_keys_still_work() -> None:
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    for i in range(1, 12):
        refs = ", ".join(f"*m{i - 1}" for _ in range(8))
        lines.append(f"m{i}: &m{i} {{<<: [{refs}], k{i}: {i}}}")
    found = problems_of("\n".join(lines) + "\nversion: 1\n")
    assert len(found) == 1 and "expands to more than 100000 values" in found[0]
    # An ordinary use: one region's settings shared, the key written beside it wins.
    shared = POLICY.replace("BASE_URL", "http://127.0.0.1:1/v1").replace(
        '    regions: {x: {base_url: "http://127.0.0.1:2/v1"}}',
        '    regions:\n      x: &x {base_url: "http://127.0.0.1:2/v1", tags: {zone: a}}\n'
        '      y: {<<: *x, base_url: "http://127.0.0.1:3/v1"}',
    )
    chain = load_policy_text(shared, "t.yaml", {}).routes["m"].chain
    assert [(c.region, c.base_url, dict(c.tags)) for c in chain[1:]] == [
        ("x", "http://127.0.0.1:2/v1", {"zone": "a"}),
    ]
    spread = shared.replace("q/x/m]", "q/*/m]")
    chain = load_policy_text(spread, "t.yaml", {}).routes["m"].chain
    assert [(c.region, c.base_url, dict(c.tags)) for c in chain[1:]] == [
        ("x", "http://127.0.0.1:2/v1", {"zone": "a"}),
        ("y", "http://127.0.0.1:3/v1", {"zone": "a"}),
    ]


def test_deep_nesting_is_refused() -> None:
    deep = "version: 1\nx:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(40))
    (problem,) = problems_of(deep + "  " * 41 + "v: 1\n")
    assert "nested deeper than 32 levels: refused" in problem
    flow = "version: " + "[" * 5000 + "]" * 5000 + "\n"
    (problem,) = problems_of(flow)
    assert "invalid YAML" in problem or "nested deeper" in problem


def test_problems_are_capped() -> None:
    text = "version: 1\n" + "".join(f"unknown_{i}: 1\n" for i in range(300))
    found = problems_of(text)
    assert len(found) == 51
    assert found[-1].endswith("... and 252 more problems")


# -- files the policy names -------------------------------------------------------------------


def _key_file_policy(tmp_path: Path, key_path: str) -> Path:
    text = POLICY.replace("BASE_URL", "http://127.0.0.1:1/v1").replace(
        "    api_key: sk-the-provider-key\n", f"    api_key_file: {key_path}\n"
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: os.mkfifo(d / "key") or "key", "is a FIFO, not a regular file: refused"),
        (lambda d: (d / "key").mkdir() or "key", "is a directory, not a regular file: refused"),
        (lambda d: "/dev/zero", "is a device, not a regular file: refused"),
        (
            lambda d: (d / "key").write_bytes(b"k" * (65 * 1024)) and "key",
            "is larger than 64 KiB, the limit: refused",
        ),
    ],
    ids=["fifo", "directory", "device", "too-large"],
)
def test_a_key_file_that_is_not_a_small_regular_file_is_refused(
    tmp_path: Path, make: object, reason: str
) -> None:
    key = make(tmp_path)  # type: ignore[operator]
    path = _key_file_policy(tmp_path, key)
    for mode in ("error", "warn"):  # linting does not excuse it: no reading can make it work
        with pytest.raises(PolicyError) as info:
            load_policy(path, missing_secrets=mode)  # type: ignore[arg-type]
        (problem,) = info.value.problems
        assert problem.path == "providers.p.api_key_file" and problem.line == 5
        assert reason in problem.message


def test_a_key_file_read_that_hangs_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def stuck(path: Path, limit: int, what: str) -> bytes:  # a read on a hung network mount
        release.wait(30)
        return b"never used"

    monkeypatch.setattr(files, "_read", stuck)
    try:
        with pytest.raises(FileRefused, match=r"reading the key file '.*' took longer than"):
            read_key_file(tmp_path / "key", timeout=0.05)
    finally:
        release.set()


def test_a_policy_path_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError) as info:
        load_policy(fifo)
    assert str(info.value) == f"{fifo}: the policy is a FIFO, not a regular file: refused"


# -- a file that is not a policy --------------------------------------------------------------

PASSWD_LIKE = """\
root:x:0:0:root:/root:/bin/bash: login
alice:x:1000:1000:Alice Liddell, Room 1: /home/alice
sk-live-0123456789abcdefghijklmnop: rotated
aws_secret_access_key_AKIAIOSFODNN7EXAMPLE_wJalrXUtnFEMI: 1
password: hunter2
"""


def test_a_file_that_is_not_a_policy_is_not_quoted_back(tmp_path: Path) -> None:
    target = tmp_path / "passwd"
    target.write_text(PASSWD_LIKE)
    link = tmp_path / "policy.yaml"
    link.symlink_to(target)
    with pytest.raises(PolicyError) as info:
        load_policy(link)
    text = str(info.value)
    for secret in ("root:x", "Alice", "0123456789abcdef", "AKIAIOSFODNN7", "hunter2", "/bin/bash"):
        assert secret not in text, text
    # Keys that look like keys are still named (a typo stays easy to find); the rest by line.
    assert f"{link}:1:1: <key>: unknown key a key at line 1 (expected one of:" in text
    assert "unknown key a key at line 3" in text and "unknown key a key at line 4" in text
    assert f"{link}:5:1: password: unknown key 'password'" in text


def test_yaml_errors_do_not_quote_long_document_text() -> None:
    alias = "x" * 200
    (problem,) = problems_of(f"version: 1\nproviders: *{alias}\n")
    assert "invalid YAML" in problem and alias not in problem
    found = problems_of(f"version: 1\nroutes:\n  {'k' * 300}: {{chain: [a/b/c]}}\n")
    assert all("k" * 70 not in p for p in found)

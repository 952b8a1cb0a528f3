"""Policy loading: what SREs write, what the proxy serves from, and how mistakes are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy, load_policy_text
from edgeproxy.policy.units import parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[2]
POLICY_FILES = sorted((ROOT / "policies").rglob("*.yaml"))
ENV = {
    "OPENAI_API_KEY": "sk-openai-test",
    "AZURE_OPENAI_API_KEY": "azure-test",
    "GEMINI_API_KEY": "gemini-test",
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "FIREWORKS_API_KEY": "fw-test",
}

MINIMAL = """\
version: 1
providers:
  p:
    kind: openai
    api_key: ${P_KEY}
    regions:
      r1: {base_url: "http://127.0.0.1:1/v1"}
      r2: {base_url: "http://127.0.0.1:2/v1"}
    models:
      m:
  q:
    kind: openai
    regions: {x: {base_url: "https://q.example/v1"}}
    models: {qm: {upstream_name: org/qm-instruct, context_window: 8192}}
routes:
  m:
    chain: [p/*/m, q/x/qm]
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "t.yaml", env if env is not None else {"P_KEY": "k"})
    return [str(p) for p in info.value.problems]


def test_every_shipped_policy_loads(tmp_path: Path) -> None:
    assert len(POLICY_FILES) >= 4
    for path in POLICY_FILES:
        text = path.read_text()
        # The multi-provider example reads a key file from a mounted secret; point it at one.
        key_file = tmp_path / "key"
        key_file.write_text("together-test\n")
        text = text.replace("/run/secrets/together-api-key", str(key_file))
        # Files a policy names (the tasks example's model) are relative to the policy file.
        policy = load_policy_text(text, str(path), ENV, path.parent)
        assert policy.route_names, path
        for name in policy.route_names:
            assert policy.routes[name].chain, (path, name)


def test_default_policy_is_the_demo_shape() -> None:
    policy = load_policy(ROOT / "policies" / "default.yaml", environ={})
    providers = {c.provider for n in policy.route_names for c in policy.routes[n].chain}
    regions = {(c.provider, c.region) for n in policy.route_names for c in policy.routes[n].chain}
    assert len(providers) >= 2 and len(regions) >= 3
    assert policy.route_for("default") is policy.route_for("gpt-4o-mini")


def test_star_region_expands_in_written_order_and_defaults_apply() -> None:
    policy = load_policy_text(MINIMAL, "t.yaml", {"P_KEY": "k"})
    route = policy.routes["m"]
    assert [c.key for c in route.chain] == ["p/r1/m", "p/r2/m", "q/x/qm"]
    assert route.chain[2].upstream_model == "org/qm-instruct"
    assert route.chain[2].chat_url == "https://q.example/v1/chat/completions"
    assert route.max_attempts == 3
    assert route.timeouts.first_token == 60.0
    assert route.on_midstream_failure == "resume"  # where a prefill-capable model allows
    assert policy.max_body_bytes == 4 * 1024 * 1024


def test_env_expansion_sets_the_key_and_repr_never_shows_it() -> None:
    policy = load_policy_text(MINIMAL, "t.yaml", {"P_KEY": "sk-very-secret"})
    candidate = policy.routes["m"].chain[0]
    assert candidate.headers["Authorization"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in repr(candidate)
    assert "sk-very-secret" not in repr(policy)
    # q has no key: no Authorization header at all.
    assert "Authorization" not in policy.routes["m"].chain[2].headers


def test_env_default_and_escape() -> None:
    text = MINIMAL.replace("${P_KEY}", "${P_KEY:-fallback}").replace(
        '"http://127.0.0.1:1/v1"}', '"http://127.0.0.1:1/v1", tags: {note: "x=$${literal}"}}'
    )
    policy = load_policy_text(text, "t.yaml", {})
    chain = policy.routes["m"].chain
    assert chain[0].headers["Authorization"] == "Bearer fallback"
    assert chain[0].tags["note"] == "x=${literal}"


def test_unset_env_is_an_error_with_its_line_or_a_warning_when_linting() -> None:
    assert problems(MINIMAL, env={}) == [
        "t.yaml:5:5: providers.p.api_key: environment variable P_KEY is not set "
        "(write ${P_KEY:-default} for a default)"
    ]
    policy = load_policy_text(MINIMAL, "t.yaml", {}, missing_secrets="warn")
    assert any("P_KEY is not set" in w for w in policy.warnings)


def test_extra_headers_are_checked_without_quoting_their_values() -> None:
    text = MINIMAL.replace(
        "    api_key: ${P_KEY}\n",
        "    api_key: ${P_KEY}\n"
        "    headers:\n"
        "      X Bad Name: one\n"
        "      Host: other.example\n"
        "      authorization: Bearer sk-header-secret\n"
        '      X-Break: "sk-value-secret\\r\\nX-Injected: 1"\n'
        "      X-Fine: ok\n",
    )
    found = problems(text)
    joined = "\n".join(found)
    assert "'X Bad Name' is not a header name" in joined
    assert "Host is set by the proxy" in joined
    assert "authorization would be sent twice" in joined
    assert "X-Break" in joined and "line break" in joined
    assert "X-Fine" not in joined
    assert "secret" not in joined
    assert len(found) == 4
    # The key becomes a header value too: a line break in it is refused, not sent.
    (bad_key,) = problems(MINIMAL, {"P_KEY": "sk-key-secret\nX-Injected: 1"})
    assert "api_key" in bad_key and "cannot be sent as a header value" in bad_key
    assert "secret" not in bad_key
    # Without a key, the policy may carry its own Authorization header.
    keyless = MINIMAL.replace(
        "    api_key: ${P_KEY}\n", "    headers: {Authorization: Bearer custom}\n"
    )
    policy = load_policy_text(keyless, "t.yaml", {})
    assert policy.routes["m"].chain[0].headers["Authorization"] == "Bearer custom"


def test_api_key_file_is_read_relative_to_the_policy(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("sk-from-file\n")
    text = MINIMAL.replace(
        "api_key: ${P_KEY}", "api_key_file: secret.txt\n    auth_header: api-key"
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    policy = load_policy(path)
    assert policy.routes["m"].chain[0].headers["api-key"] == "sk-from-file"
    path.write_text(text.replace("secret.txt", "missing.txt"))
    with pytest.raises(
        PolicyError, match=r"policy.yaml:5:\d+: providers.p.api_key_file: cannot read"
    ):
        load_policy(path)


def test_unknown_keys_get_a_did_you_mean_at_their_line() -> None:
    text = MINIMAL.replace("    chain:", "    chian: []\n    chain:").replace(
        "r1: {base_url", "r1: {tagz: {}, base_url"
    )
    found = problems(text)
    assert (
        "t.yaml:7:12: providers.p.regions.r1.tagz: unknown key 'tagz' (did you mean 'tags'?)"
        in found
    )
    assert "t.yaml:17:5: routes.m.chian: unknown key 'chian' (did you mean 'chain'?)" in found


def test_chain_references_are_checked() -> None:
    text = MINIMAL.replace(
        "[p/*/m, q/x/qm]", "[p/r9/m, nope/x/m, q/x/missing, p/r1/m, p/r1/m, bad]"
    )
    found = problems(text)
    # A malformed entry does not hide the others' unknown names: one pass (the duplicate needs
    # a valid chain to be seen, and comes once the shape is fixed).
    assert found == [
        "t.yaml:17:60: routes.m.chain[5]: write a candidate as provider/region/model "
        "(region may be *), got 'bad'",
        "t.yaml:17:13: routes.m.chain[0]: provider 'p' has no region 'r9' (known: r1, r2)",
        "t.yaml:17:21: routes.m.chain[1]: unknown provider 'nope' (known: p, q)",
        "t.yaml:17:31: routes.m.chain[2]: provider 'q' has no model 'missing' (known: qm)",
    ]
    assert problems(text.replace(", bad]", "]")) == [
        "t.yaml:17:13: routes.m.chain[0]: provider 'p' has no region 'r9' (known: r1, r2)",
        "t.yaml:17:21: routes.m.chain[1]: unknown provider 'nope' (known: p, q)",
        "t.yaml:17:31: routes.m.chain[2]: provider 'q' has no model 'missing' (known: qm)",
        "t.yaml:17:52: routes.m.chain[4]: p/r1/m appears twice in the chain",
    ]


def test_alias_clash_and_bad_values() -> None:
    text = MINIMAL + "  other:\n    aliases: [m]\n    chain: [q/x/qm]\n"
    assert any("the model name 'm' is already served by route 'm'" in p for p in problems(text))
    text = MINIMAL.replace(
        "routes:", "defaults:\n  max_attempts: 0\n  timeouts: {idle: soon}\nroutes:"
    )
    found = problems(text)
    assert any("defaults.max_attempts: must be at least 1" in p for p in found)
    assert any("defaults.timeouts.idle: expected a duration" in p for p in found)


def test_invalid_yaml_and_wrong_shapes() -> None:
    assert problems("version: 1\nproviders: [\n")[0].startswith("t.yaml:3:1: invalid YAML")
    assert problems("") == ["t.yaml:1:1: the policy is empty"]
    assert "must be a mapping" in problems("- 1\n- 2\n")[0]
    assert problems("version: 2\nproviders: {}\n") == [
        "t.yaml:1:1: version: must be 1 (the only policy schema version this proxy reads)",
        "t.yaml:2:1: providers: must not be empty",
        "t.yaml:1:1: routes: this required key is missing",
    ]
    dup = problems(MINIMAL.replace("routes:\n", "routes:\n  m:\n    chain: [q/x/qm]\n"))
    assert any("duplicate key 'm'" in p for p in dup)


def test_single_provider_chain_warns() -> None:
    policy = load_policy_text(MINIMAL.replace(", q/x/qm]", "]"), "t.yaml", {"P_KEY": "k"})
    assert any("a provider-wide outage has no fallback" in w for w in policy.warnings)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        (2, 2.0),
        (0.5, 0.5),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["0s", "-1s", "soon", True, "5 parsecs", None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_sizes() -> None:
    assert parse_size("4MiB") == 4 * 1024 * 1024
    assert parse_size("512KiB") == 512 * 1024
    assert parse_size("1MB") == 1_000_000
    assert parse_size(65536) == 65536
    with pytest.raises(ValueError):
        parse_size("4 lots")

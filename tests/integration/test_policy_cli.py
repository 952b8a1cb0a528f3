"""``edgeproxy policy check | explain | diff | schema`` as SREs and CI run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproxy.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
POLICIES = FIXTURES / "policies"
SHIPPED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "policies").rglob("*.yaml"))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("EDGEPROXY_TEST_UNSET_KEY", raising=False)


def test_check_accepts_every_shipped_policy_by_file_and_by_directory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "policies/examples/eu-only.yaml" in SHIPPED
    code, out, _ = cli(capsys, "policy", "check", *SHIPPED)
    assert code == 0, out
    code, out_dir, _ = cli(capsys, "policy", "check", "policies")
    assert code == 0, out_dir
    for path in SHIPPED:
        assert f"{path}: ok" in out and f"{path}: ok" in out_dir
    code, out, _ = cli(capsys, "policy", "check", "--format", "json", "policies")
    results = json.loads(out)
    assert sorted(r["path"] for r in results) == SHIPPED
    assert all(r["ok"] and r["errors"] == [] for r in results)


def test_check_reports_residency_and_context_window_violations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    eu = str(POLICIES / "eu-violation.yaml")
    code, out, _ = cli(capsys, "policy", "check", eu)
    assert code == 1
    assert (
        f"error: {eu}:24:9: routes.eu-chat.chain[1]: azure/eastus/gpt-4o-mini is outside this "
        "route's residency requirement (jurisdiction=eu): region 'eastus' has jurisdiction=us"
    ) in out
    assert f"{eu}:25:9: routes.eu-chat.chain[2]: local/node/llama is outside" in out
    assert "region 'node' has no jurisdiction tag" in out
    small = str(POLICIES / "small-context.yaml")
    code, out, _ = cli(capsys, "policy", "check", "--format", "json", small)
    assert code == 1
    (result,) = json.loads(out)
    assert [(p["line"], p["column"], p["path"]) for p in result["problems"]] == [
        (19, 25, "routes.summarize.chain[1]"),
        (19, 40, "routes.summarize.chain[2]"),
    ]
    assert (
        "holds 8192 tokens, fewer than this route's min_context_window of 100000"
        in (result["problems"][0]["message"])
    )
    assert "has no context_window" in result["problems"][1]["message"]


def test_check_reports_references_typos_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    refs, typo, warn = (
        str(POLICIES / n) for n in ("unknown-refs.yaml", "typo.yaml", "warnings.yaml")
    )
    code, out, _ = cli(capsys, "policy", "check", refs, typo, warn)
    assert code == 1
    assert (
        f"{refs}:11:40: routes.chat.chain[1]: unknown provider 'opneai' (did you mean 'openai'?)"
        in out
    )
    assert f"{refs}:11:67: routes.chat.chain[2]: provider 'openai' has no model 'gpt-5-mini'" in out
    assert (
        f"{typo}:11:5: routes.chat.max_atempts: unknown key 'max_atempts' (did you mean 'max_attempts'?)"
        in out
    )
    assert (
        f"warning: {warn}:6:5: providers.openai.api_key: environment variable EDGEPROXY_TEST_UNSET_KEY is not set"
        in out
    )
    assert "a provider-wide outage has no fallback" in out
    assert f"{warn}: ok" in out
    # Warnings alone pass, unless --strict.
    assert cli(capsys, "policy", "check", warn)[0] == 0
    code, out, _ = cli(capsys, "policy", "check", "--strict", warn)
    assert code == 1 and "warnings are errors" in out


def test_explain_with_regions_down(capsys: pytest.CaptureFixture[str]) -> None:
    request = str(FIXTURES / "requests" / "short.json")
    code, out, _ = cli(
        capsys,
        "policy",
        "explain",
        "policies/default.yaml",
        "--request",
        request,
        "--down",
        "alpha/us-east",
    )
    assert code == 0, out
    assert "request: model 'default' -> route 'gpt-4o-mini'" in out
    lines = out.splitlines()
    row = {line.split()[1]: line for line in lines if line[:1].isdigit()}
    assert "skip" in row["alpha/us-east/gpt-4o-mini"]
    assert "down (simulated by --down alpha/us-east)" in row["alpha/us-east/gpt-4o-mini"]
    assert "try 1" in row["alpha/eu-west/gpt-4o-mini"]
    assert "try 2" in row["beta/local/llama-3.1-8b"]
    assert "outcome: served by alpha/eu-west/gpt-4o-mini" in out
    assert "budget" not in out  # no note about a feature the proxy does not have


def test_explain_eu_only_fails_closed_and_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    request = tmp_path / "req.json"
    request.write_text(
        json.dumps({"model": "eu-chat", "messages": [{"role": "user", "content": "hi"}]})
    )
    policy = "policies/examples/eu-only.yaml"
    code, out, _ = cli(
        capsys, "policy", "explain", policy, "--request", str(request), "--format", "json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["constraints"] == "require_tags jurisdiction=eu; min_context_window 32000"
    verdicts = [(c["candidate"], c["verdict"]) for c in data["candidates"]]
    assert verdicts == [
        ("azure/swedencentral/gpt-4o-mini", "try"),
        ("azure/francecentral/gpt-4o-mini", "try"),
        ("vllm/eu-cluster/llama-3.1-8b", "try"),
        ("azure/eastus/gpt-4o-mini", "excluded"),
    ]
    # Everything in the EU down: the request fails closed rather than leave the EU.
    code, out, _ = cli(
        capsys,
        "policy",
        "explain",
        policy,
        "--request",
        str(request),
        "--down",
        "azure",
        "--down",
        "vllm",
    )
    assert code == 1
    assert (
        "fails closed" in out and "excluded  residency: region 'eastus' has jurisdiction=us" in out
    )


def test_explain_long_prompt_skips_small_windows(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    request = tmp_path / "long.json"
    # Well over 32k tokens, counted exactly (edgeproxy.tokens) or by the chars/4 estimate.
    request.write_text(
        json.dumps(
            {
                "model": "batch",
                "max_tokens": 1000,
                "messages": [{"role": "user", "content": "lorem ipsum dolor sit amet " * 12000}],
            }
        )
    )
    code, out, _ = cli(
        capsys,
        "policy",
        "explain",
        str(POLICIES / "diff-old.yaml"),
        "--request",
        str(request),
        "--format",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["prompt_tokens"] > 32768
    by_key = {c["candidate"]: c for c in data["candidates"]}
    assert by_key["beta/local/small"]["verdict"] == "skip"
    assert "context window" in by_key["beta/local/small"]["reasons"][0]
    assert by_key["alpha/us/m"]["verdict"] == "try"


def test_explain_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    unknown = str(FIXTURES / "requests" / "unknown-model.json")
    code, out, _ = cli(capsys, "policy", "explain", "policies/default.yaml", "--request", unknown)
    assert code == 1 and "404 model_not_found" in out and "gpt-4o-mini" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = cli(capsys, "policy", "explain", "policies/default.yaml", "--request", str(bad))
    assert code == 2 and "is not JSON" in err
    code, _, err = cli(
        capsys, "policy", "explain", str(POLICIES / "typo.yaml"), "--request", unknown
    )
    assert code == 2 and "max_atempts" in err
    short = str(FIXTURES / "requests" / "short.json")
    code, _, err = cli(
        capsys, "policy", "explain", "policies/default.yaml", "--request", short, "--down", "alpah"
    )
    assert code == 0 and "--down alpah matches no candidate" in err


def test_diff_table_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    old, new = str(POLICIES / "diff-old.yaml"), str(POLICIES / "diff-new.yaml")
    code, out, _ = cli(capsys, "policy", "diff", old, new)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{old} (version ") and f"-> {new} (version " in lines[0]
    assert lines[2].split() == ["scope", "what", "old", "new"]

    def row(scope: str, what: str) -> str:
        return next(line for line in lines if line.startswith(scope) and f" {what} " in line)

    assert row("route chat", "chain").split()[-5:] == [
        "alpha/eu/m",
        ">",
        "alpha/us/m",
        ">",
        "beta/local/small",
    ]
    assert row("route chat", "max_attempts").split()[-2:] == ["3", "2"]
    assert row("route chat", "timeouts.first_token").split()[-2:] == ["30s", "20s"]
    assert "removed" in row("route legacy", "removed")
    assert "added" in row("route reports", "added")
    assert lines[-1] == "14 change(s)"
    code, out, _ = cli(capsys, "policy", "diff", "--format", "json", old, new)
    assert code == 1 and len(json.loads(out)["changes"]) == 14
    code, out, _ = cli(capsys, "policy", "diff", old, old)
    assert code == 0 and "no change for traffic" in out
    code, _, err = cli(capsys, "policy", "diff", old, str(POLICIES / "typo.yaml"))
    assert code == 2 and "max_atempts" in err


def test_schema_command_matches_the_checked_in_file() -> None:
    # As CI and the docs run it: a real process.
    result = subprocess.run(
        [sys.executable, "-m", "edgeproxy.cli", "policy", "schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "policies" / "schema.json").read_text(), (
        "policies/schema.json is stale: run `edgeproxy policy schema > policies/schema.json`"
    )


def test_diff_reports_resilience_changes_and_fails_the_gate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The change the CI gate used to pass as "no change for traffic": hedging and caching on, a
    # breaker opening on one failure for 10 minutes, no retry budget.
    base = (ROOT / "policies" / "default.yaml").read_text()
    changed = base.replace(
        "providers:\n",
        "outlier_detection: {consecutive_failures: 1, base_ejection_time: 600s, "
        "max_ejection_time: 600s}\nretry_budget: {budget_percent: 0}\nproviders:\n",
        1,
    ).replace("  timeouts:\n", "  cache: {ttl: 1m}\n  timeouts:\n", 1)
    assert base.rstrip().endswith("alpha/*/gpt-4o")  # the last route: claude-sonnet
    changed += "    hedge: {delay: 300ms}\n"
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(base)
    new.write_text(changed)
    code, out, _ = cli(capsys, "policy", "diff", "--format", "json", str(old), str(new))
    assert code == 1
    rows = {(c["scope"], c["what"]): (c["old"], c["new"]) for c in json.loads(out)["changes"]}
    assert rows[("policy", "outlier_detection.consecutive_failures")] == ("5", "1")
    assert rows[("policy", "outlier_detection.base_ejection_time")] == ("30s", "10m")
    assert rows[("policy", "outlier_detection.max_ejection_time")] == ("5m", "10m")
    assert rows[("policy", "retry_budget.budget_percent")] == ("20%", "0%")
    assert rows[("route gpt-4o-mini", "cache.enabled")] == ("false", "true")
    assert rows[("route claude-sonnet", "hedge.delay")] == ("-", "300ms")
    code, out, _ = cli(capsys, "policy", "diff", str(old), str(new))
    assert code == 1 and "no change for traffic" not in out


def test_docs_command_prints_and_updates_the_reference_tables(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = cli(capsys, "policy", "docs")
    assert code == 0
    assert "| `outlier_detection.quota_ejection_time` | duration | `1h` |" in out
    page = tmp_path / "policies.md"
    shipped = (ROOT / "docs" / "policies.md").read_text()
    page.write_text(shipped.replace("| `max_in_flight` | int ≥ 1 | `512` |", "| stale |"))
    code, _, _ = cli(capsys, "policy", "docs", "--update", str(page))
    assert code == 0 and page.read_text() == shipped
    page.write_text("# a page without the markers\n")
    code, _, err = cli(capsys, "policy", "docs", "--update", str(page))
    assert code == 1 and "no generated block 'top'" in err


def test_explain_shows_the_route_settings_a_request_runs_under(
    capsys: pytest.CaptureFixture[str],
) -> None:
    request = str(FIXTURES / "requests" / "short.json")
    code, out, _ = cli(
        capsys,
        "policy",
        "explain",
        "policies/default.yaml",
        "--request",
        request,
        "--format",
        "json",
    )
    assert code == 0
    settings = json.loads(out)["route_settings"]
    assert settings["timeouts"] == {
        "connect": 2.0,
        "first_token": 30.0,
        "idle": 30.0,
        "response": 120.0,
        "total": 300.0,
    }
    assert settings["max_attempts"] == 3 and settings["hedge"] is None
    assert settings["cache"]["enabled"] is False

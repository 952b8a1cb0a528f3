"""The ``auto`` commands on the simulated market: ``edgeproxy eval schedule`` writes the next
scorecard and a running proxy picks it up by itself; ``edgeproxy auto status`` reads the
decisions at 80 columns (and as JSON, and behind the admin token); ``edgeproxy eval compare``
says what the auto route's rule makes of a new scorecard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgeproxy.cli import main
from edgeproxy.evals.scorecard import Scorecard, load_scorecard, save_scorecard
from edgeproxy.policy import load_policy
from edgeproxy.server.runner import ProxyServer
from fixtures.automarket import PRICE_RISE, TASKS, Desk, served_per_task, status
from fixtures.reloadkit import wait_until
from harness import LoopThread


def test_a_scheduled_eval_is_picked_up_by_a_running_proxy(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    desk.write_policy(auto={"min_samples": 30})
    proxy = desk.proxy(watch=True)
    assert status(proxy)["routes"] == {}  # no evidence yet: the route's chain serves
    argv = ["eval", "schedule", "--policy", str(desk.policy_path), "--once", "--repeats", "3"]
    assert main([*argv, "--concurrency", "16"]) == 0
    out = capsys.readouterr().out
    written = sorted(desk.cards.glob("market-*.json"))
    assert len(written) == 1 and f"wrote {written[0]}" in out
    assert not list(desk.cards.glob("*.progress.jsonl"))  # a finished run leaves no progress
    card = load_scorecard(written[0])
    assert card.complete and card.repeats == 3 and len(card.cells) == 24
    wait_until(
        lambda: set(status(proxy)["routes"].get("auto", {})) == set(TASKS),
        timeout=15,
        what="the proxy to read the scheduled scorecard",
    )
    assert all(len(models) == 1 for models in served_per_task(proxy).values())
    # Right after a run the next is not due: --once does nothing.
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"not due: the next run is at \S+ \S+Z \(in (14d|13d 23h \d+m)\)\n", out)
    assert len(list(desk.cards.glob("market-*.json"))) == 1


def test_auto_status_reads_at_80_columns(
    desk: Desk, auto_evals: dict[str, Scorecard], capsys: pytest.CaptureFixture[str]
) -> None:
    desk.write_policy(price_factors=PRICE_RISE)
    desk.publish(auto_evals["baseline"], "1")
    proxy = desk.proxy()
    desk.publish(auto_evals["risen"], "2")
    desk.refresh(proxy)
    assert main(["auto", "status", "--url", proxy.url]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "auto / qa: cost_per_success, min_quality 0.85 (mean)" in text
    assert "incumbent:  reasoner/local/reasoner-1" in text
    assert "challenger: openweight/local/llama-70b at 5% (step 1/2" in text
    assert "why: openweight/local/llama-70b" in text and "intervals apart" in text
    assert "(quality 0.5" in text or "< min_quality 0.85" in text  # why the others may not
    assert main(["auto", "status", "--url", proxy.url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["routes"]["auto"]["qa"]["ramp"]["challenger"] == "openweight/local/llama-70b"


def test_admin_auto_needs_the_admin_token_when_one_is_set(
    loop_thread: LoopThread,
    desk: Desk,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    desk.write_policy()
    proxy = ProxyServer(load_policy(desk.policy_path), port=0, admin_token="s3cret-admin")
    loop_thread.run(proxy.start())
    try:
        refused = httpx.get(f"{proxy.url}/admin/auto", timeout=10)
        assert refused.status_code == 401 and "s3cret" not in refused.text
        monkeypatch.delenv("EDGEPROXY_ADMIN_TOKEN", raising=False)
        assert main(["auto", "status", "--url", proxy.url]) == 2
        assert "Unauthorized" in capsys.readouterr().err
        monkeypatch.setenv("EDGEPROXY_ADMIN_TOKEN", "s3cret-admin")
        assert main(["auto", "status", "--url", proxy.url]) == 0
        assert "edgeproxy auto" in capsys.readouterr().out
    finally:
        loop_thread.run(proxy.stop())


def test_compare_says_what_the_auto_rule_makes_of_a_new_scorecard(
    tmp_path: Path, auto_evals: dict[str, Scorecard], capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    save_scorecard(auto_evals["baseline"], old)
    save_scorecard(auto_evals["risen"], new)
    assert main(["eval", "compare", str(old), str(new), "--min-quality", "0.85"]) == 0
    report = capsys.readouterr().out
    assert "| task | old winner | new winner | decision | auto route (margin 5%) |" in report
    qa = next(line for line in report.splitlines() if line.startswith("| qa |"))
    assert "| switch | switch (" in qa and "intervals apart" in qa
    extraction = next(line for line in report.splitlines() if line.startswith("| extraction |"))
    assert extraction.endswith("| keep | keep |")
    # A margin larger than the gain: the rule holds where the winner changed.
    assert (
        main(["eval", "compare", str(old), str(new), "--min-quality", "0.85", "--margin", "500"])
        == 0
    )
    qa = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| qa |"))
    assert "| switch | hold (" in qa and "< margin 500%" in qa


def test_the_auto_tour_does_what_it_says(loop_thread: LoopThread) -> None:
    from edgeproxy.auto_tour import auto_tour

    lines: list[str] = []
    assert loop_thread.run(auto_tour(lines.append), timeout=120)
    text = "\n".join(lines)
    assert "   qa          served by reasoner/local/reasoner-1" in text
    assert "   qa: switch: openweight/local/llama-70b" in text and "intervals apart" in text
    assert "promote: openweight/local/llama-70b" in text
    assert "   qa          served by openweight/local/llama-70b" in text
    assert "extraction: replace: specialist/local/extract-ft no longer qualifies" in text
    assert "The Auto tour passed." in text
    assert all(
        len(line) <= 100 or "why:" in line or ": switch:" in line or ": replace:" in line
        for line in lines
    )

"""Keeps the locust scenarios from rotting: every locustfile imports, and a 3-second headless run
of the steady-chat scenario goes through the real stack (sim + proxy) without a failure.

Skipped when locust is not installed (it comes with the optional `load` extra).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None,
    reason="locust is not installed (pip install -e '.[load]' or make loadtest)",
)

SCENARIOS = ["steady_chat", "steady_stream", "spike", "failover", "reload", "mixed_api"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "EDGEPROXY_LOADTEST_RESULTS": str(tmp_path),
    }


def test_locustfiles_import(tmp_path: Path) -> None:
    # In a child process: locust monkeypatches the standard library with gevent on import.
    code = "import locust\n" + "".join(f"import loadtests.{name}\n" for name in SCENARIOS)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_three_second_headless_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtests.run", "steady-chat", "--seconds", "3", "--users", "4"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "latest.md").read_text()
    assert "- [x] requests were made" in summary
    assert "- [x] failure ratio" in summary
    # One count everywhere: the table's total, the check, and the timeline (issue 17: locust's
    # CSV, written once a second, left out the last second).
    total = int(re.search(r"^\| all \| HTTP requests[^|]*\| (\d+) \|", summary, re.M).group(1))  # type: ignore[union-attr]
    assert f"- [x] requests were made ({total})" in summary
    timeline = re.findall(r"^\| \d+ \| (\d+) \| (\d+) \|", summary, re.M)
    assert sum(int(ok) + int(failed) for ok, failed in timeline) == total
    runs = [p for p in tmp_path.iterdir() if p.name.startswith("steady-chat-")]
    assert runs and (runs[0] / "report.html").exists()
    assert (runs[0] / "locust_stats.csv").exists()

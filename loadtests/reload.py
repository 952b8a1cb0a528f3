"""Reload under load: the policy file is rewritten mid-run (the chain of gpt-4o-mini starts in
eu-west instead of us-east at 40% of the run, and goes back at 70%) and the proxy is told to
reload: ``POST /admin/reload`` when the proxy serves it, else SIGHUP when the proxy catches it.

``loadtests/run.py`` checks that one of the two exists before the run and skips the scenario
with a message otherwise. In-flight requests finish on the policy they started with, so the
run should show no failures, two policy versions in ``x-edgeproxy-policy-version``, and traffic
moving from alpha/us-east to alpha/eu-west and back.
"""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import gevent
import yaml
from locust import events

from loadtests.common import RECORD, ChatUser, StreamUser, run_seconds

ROUTE = "gpt-4o-mini"


class ReloadChat(ChatUser):
    weight = 3


class ReloadStream(StreamUser):
    weight = 1


def trigger_reload(proxy_url: str, pid: int | None) -> str:
    """Ask the proxy to reload; return how ('admin', 'sighup') or raise if it cannot."""
    req = urllib.request.Request(f"{proxy_url}/admin/reload", data=b"", method="POST")
    token = os.environ.get("EDGEPROXY_ADMIN_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return f"admin ({resp.status})"
    except urllib.error.HTTPError as exc:
        if exc.code not in (404, 405):
            return f"admin ({exc.code}: {exc.read()[:200]!r})"
    if pid is not None and _catches_sighup(pid):
        os.kill(pid, signal.SIGHUP)
        return "sighup"
    raise RuntimeError("the proxy has no POST /admin/reload and does not catch SIGHUP")


def _catches_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def _rewrite(path: Path, original: str, swapped: bool) -> None:
    if not swapped:
        text = original
    else:
        data = yaml.safe_load(original)
        chain = data["routes"][ROUTE]["chain"]
        chain[0], chain[1] = chain[1], chain[0]
        text = yaml.safe_dump(data, sort_keys=False)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: a watcher never sees half a file


def _timeline() -> None:
    path = Path(os.environ["EDGEPROXY_POLICY_PATH"])
    proxy = os.environ["EDGEPROXY_PROXY_URL"]
    pid = int(os.environ["EDGEPROXY_PROXY_PID"]) if os.environ.get("EDGEPROXY_PROXY_PID") else None
    original = path.read_text()
    total = run_seconds()
    elapsed = 0.0
    for at, swapped in ((0.4, True), (0.7, False)):
        gevent.sleep(max(0.0, at * total - elapsed))
        elapsed = at * total
        _rewrite(path, original, swapped)
        try:
            how = trigger_reload(proxy, pid)
        except (RuntimeError, OSError) as exc:
            how = f"failed: {exc}"
        RECORD.mark("reload", first_region="eu-west" if swapped else "us-east", how=how)


@events.test_start.add_listener
def _start(environment: Any, **_: Any) -> None:
    if os.environ.get("EDGEPROXY_POLICY_PATH"):
        gevent.spawn(_timeline)

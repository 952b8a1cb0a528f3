"""Failover under load: the first region of the chain is broken live through the simulator's
control API (503s at 30% of the run, connection refused from 50%), then healed at 70%.

The proxy should move traffic to the next candidate with no client-visible failures: every
failure is before the first byte, so it may fail over. ``events.json`` has who served each
5-second bucket; the summary shows traffic leaving alpha/us-east and coming back.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from typing import Any

import gevent
from locust import events

from loadtests.common import RECORD, ChatUser, StreamUser, run_seconds

TARGET = os.environ.get("EDGEPROXY_FAILOVER_TARGET", "alpha-us-east")
STEPS: list[tuple[float, str, dict[str, Any] | None]] = [
    (0.3, "PUT", {"mode": "status", "status": 503}),
    (0.5, "PUT", {"mode": "refuse"}),
    (0.7, "DELETE", None),
]


class FailoverChat(ChatUser):
    weight = 3


class FailoverStream(StreamUser):
    weight = 1


def _control(method: str, fault: dict[str, Any] | None) -> int:
    url = f"{os.environ['EDGEPROXY_SIM_CONTROL']}/sims/{TARGET}/fault"
    data = json.dumps(fault).encode() if fault is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


def _timeline() -> None:
    total = run_seconds()
    elapsed = 0.0
    for at, method, fault in STEPS:
        gevent.sleep(max(0.0, at * total - elapsed))
        elapsed = at * total
        status = _control(method, fault)
        RECORD.mark(
            "heal" if method == "DELETE" else "break",
            target=TARGET,
            fault=fault,
            control_status=status,
        )


@events.test_start.add_listener
def _start(environment: Any, **_: Any) -> None:
    if os.environ.get("EDGEPROXY_SIM_CONTROL"):
        gevent.spawn(_timeline)


@events.test_stop.add_listener
def _heal(environment: Any, **_: Any) -> None:
    if os.environ.get("EDGEPROXY_SIM_CONTROL"):
        with contextlib.suppress(OSError):
            _control("DELETE", None)

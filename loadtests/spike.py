"""Spike: a baseline of users (3 chat : 1 stream), a sudden x5 jump for 30% of the run, then the
baseline again. Watch the failure count (should stay 0) and how fast latency recovers."""

from __future__ import annotations

import os

from locust import LoadTestShape

from loadtests.common import RECORD, ChatUser, StreamUser, run_seconds

BASE_USERS = int(os.environ.get("EDGEPROXY_LOADTEST_USERS", "10"))
FACTOR = int(os.environ.get("EDGEPROXY_SPIKE_FACTOR", "5"))


class SpikeChat(ChatUser):
    weight = 3


class SpikeStream(StreamUser):
    weight = 1


class Spike(LoadTestShape):
    def __init__(self) -> None:
        super().__init__()
        self.phase = ""

    def tick(self) -> tuple[int, float] | None:
        total = run_seconds()
        t = self.get_run_time()
        if t >= total:
            return None
        if 0.3 * total <= t < 0.6 * total:
            phase, users, rate = "spike", BASE_USERS * FACTOR, float(BASE_USERS * FACTOR)
        else:
            phase, users, rate = "baseline", BASE_USERS, float(BASE_USERS * FACTOR)
        if phase != self.phase:
            self.phase = phase
            RECORD.mark(phase, users=users)
        return users, rate

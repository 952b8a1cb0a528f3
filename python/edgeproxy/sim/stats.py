"""Per-provider counters, so tests and the demo can see what the simulator did."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class SimStats:
    """``outcomes`` keys: ``ok``, ``bad_request``, ``unauthorized`` or the fault mode applied."""

    requests_total: int = 0
    in_flight: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    client_disconnects: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def record(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def to_dict(self) -> dict[str, object]:
        return {
            "requests_total": self.requests_total,
            "in_flight": self.in_flight,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "client_disconnects": self.client_disconnects,
            "outcomes": dict(self.outcomes),
        }

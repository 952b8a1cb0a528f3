"""What the request listener knows of one upstream attempt, keyed by its number."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeproxy.cost import Usage
from edgeproxy.events import AttemptKind, ContextCompacted
from edgeproxy.snapshot import Candidate

if TYPE_CHECKING:
    from edgeproxy.telemetry.spans import AttemptSpan


class AttemptRecord:
    """What the listener knows of one attempt (keyed by its number)."""

    __slots__ = (
        "bytes",
        "candidate",
        "chunks",
        "committed",
        "compaction",
        "cost",
        "detail",
        "ended",
        "key",
        "kind",
        "labels",
        "number",
        "outcome",
        "relay",
        "response_model",
        "skipped_events",
        "span",
        "started",
        "status",
        "ttfc",
        "usage",
    )

    def __init__(
        self, number: int, candidate: Candidate, kind: AttemptKind, started: float
    ) -> None:
        self.number = number
        self.candidate = candidate
        self.key = candidate.key  # a property of Candidate: read once
        self.kind = kind
        self.started = started
        self.outcome: str | None = None  # "ok", a failure class, or "abandoned"
        self.status: int | None = None
        self.detail = ""
        self.response_model: str | None = None
        self.usage: Usage | None = None
        self.cost = 0.0
        self.ttfc: float | None = None
        self.committed = False
        self.relay: str | None = None  # the relay's outcome, once it ended
        self.chunks = 0
        self.bytes = 0
        self.skipped_events = 0
        self.ended = False
        self.span: AttemptSpan | None = None
        self.labels: tuple[str, ...] = ()  # operation, provider, upstream model, candidate key
        self.compaction: ContextCompacted | None = None  # its conversation, compacted

"""The frozen policy snapshot and the settings it carries: the proxy's leaf types.

Everything that serves a request reads these; nothing here imports the packages that do (policy,
resilience, upstreams, telemetry, server), so they can all depend on it without import cycles
(``tools/import_graph.py`` checks the graph in ``make lint``).
"""

from __future__ import annotations

from edgeproxy.snapshot.policy import (
    DEFAULT_BODY_READ_TIMEOUT,
    DEFAULT_CACHE_MAX_BYTES,
    DEFAULT_CACHE_MAX_ENTRIES,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BODY_BYTES,
    Candidate,
    EvalSettings,
    Excluded,
    Policy,
    Route,
)
from edgeproxy.snapshot.settings import (
    DEFAULT_MAX_BYTES,
    DEFAULT_ON_MIDSTREAM_FAILURE,
    NOT_COUNTED,
    BackoffSettings,
    BreakerSettings,
    Cacheable,
    CacheSettings,
    EngineSettings,
    Hedge,
    MidstreamPolicy,
    Price,
    ProbeMode,
    ProberSettings,
    RetryBudgetSettings,
    ShedSettings,
    Timeouts,
)
from edgeproxy.snapshot.tasks import (
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_TASK,
    ModelFile,
    Range,
    ResponseFormat,
    TaskClassifier,
    TaskRule,
    Tasks,
)

__all__ = [
    "DEFAULT_BODY_READ_TIMEOUT",
    "DEFAULT_CACHE_MAX_BYTES",
    "DEFAULT_CACHE_MAX_ENTRIES",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MIN_CONFIDENCE",
    "DEFAULT_ON_MIDSTREAM_FAILURE",
    "DEFAULT_TASK",
    "NOT_COUNTED",
    "BackoffSettings",
    "BreakerSettings",
    "CacheSettings",
    "Cacheable",
    "Candidate",
    "EngineSettings",
    "EvalSettings",
    "Excluded",
    "Hedge",
    "MidstreamPolicy",
    "ModelFile",
    "Policy",
    "Price",
    "ProbeMode",
    "ProberSettings",
    "Range",
    "ResponseFormat",
    "RetryBudgetSettings",
    "Route",
    "ShedSettings",
    "TaskClassifier",
    "TaskRule",
    "Tasks",
    "Timeouts",
]

"""LEGACY re-exports: what the request path imports today (``server/*``).

Delete with ``telemetry/legacy.py`` once the request path emits events and imports
``telemetry.process`` (``Telemetry``, ``get_telemetry``) and ``telemetry.listener``
(``RequestTelemetry``) instead.
"""

from __future__ import annotations

from edgeproxy.telemetry.legacy import AttemptTelemetry, RelayTelemetry, RequestSummary
from edgeproxy.telemetry.legacy import HopByHopTelemetry as RequestTelemetry
from edgeproxy.telemetry.process import Telemetry, get_telemetry, set_telemetry

__all__ = [
    "AttemptTelemetry",
    "RelayTelemetry",
    "RequestSummary",
    "RequestTelemetry",
    "Telemetry",
    "get_telemetry",
    "set_telemetry",
]

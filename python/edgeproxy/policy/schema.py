"""The policy document as SREs write it (YAML), validated by pydantic: every key declared once.

This is the *written* form: optional fields stay optional here (``None``: not written), and
``compile.py`` resolves defaults and references into the frozen snapshot the proxy serves from.
Each key is declared with :func:`~edgeproxy.policy.keys.key`: its doc line and where its value
lives in the snapshot (``At``), from which its default, the JSON Schema, the docs tables,
``describe`` and ``diff`` are derived (see ``keys.py`` and ``catalog.py``). Field names borrow
Envoy's vocabulary where one exists (timeouts, max_attempts, outlier detection).

Each section of the document is declared in its own module of ``policy/spec/`` (process-wide
settings, keys and the fleet, defaults, providers, tasks, candidates, auto, routes, evals); this
module assembles the top level (``PolicySpec``) and is where the rest of the code imports from.
"""

from __future__ import annotations

from typing import Any, Literal

from edgeproxy.policy.keys import key
from edgeproxy.policy.spec.auto import (
    AutoObjectiveSpec,
    AutoRampSpec,
    AutoRollbackSpec,
    AutoShadowSpec,
    AutoSpec,
    AutoTaskSpec,
)
from edgeproxy.policy.spec.base import TASK_NAME, CandidateKey, _Spec
from edgeproxy.policy.spec.candidates import CandidateSpec, ChainEntry
from edgeproxy.policy.spec.defaults import CacheSpec, DefaultsSpec, HedgeSpec
from edgeproxy.policy.spec.evals import EvalScheduleSpec, EvalsSpec
from edgeproxy.policy.spec.keys import (
    BudgetText,
    FleetSpec,
    KeysSpec,
    ProviderLimitsSpec,
    RouteLimitsSpec,
    TeamSpec,
)
from edgeproxy.policy.spec.process import (
    HealthCheckSpec,
    LimitsSpec,
    OutlierDetectionSpec,
    RetryBudgetSpec,
    RetryPolicySpec,
    TelemetrySpec,
    TimeoutsSpec,
)
from edgeproxy.policy.spec.providers import (
    ModelSpec,
    PriceSpec,
    ProviderHealthSpec,
    ProviderSpec,
    RegionSpec,
    WireKind,
)
from edgeproxy.policy.spec.routes import (
    AffinitySpec,
    ContextSpec,
    PromptCacheSpec,
    RouteSpec,
    RouteTaskSpec,
)
from edgeproxy.policy.spec.tasks import RangeSpec, TaskClassifierSpec, TaskRuleSpec, TasksSpec

__all__ = [
    "TASK_NAME",
    "AffinitySpec",
    "AutoObjectiveSpec",
    "AutoRampSpec",
    "AutoRollbackSpec",
    "AutoShadowSpec",
    "AutoSpec",
    "AutoTaskSpec",
    "BudgetText",
    "CacheSpec",
    "CandidateKey",
    "CandidateSpec",
    "ChainEntry",
    "ContextSpec",
    "DefaultsSpec",
    "EvalScheduleSpec",
    "EvalsSpec",
    "FleetSpec",
    "HealthCheckSpec",
    "HedgeSpec",
    "KeysSpec",
    "LimitsSpec",
    "ModelSpec",
    "OutlierDetectionSpec",
    "PolicySpec",
    "PriceSpec",
    "PromptCacheSpec",
    "ProviderHealthSpec",
    "ProviderLimitsSpec",
    "ProviderSpec",
    "RangeSpec",
    "RegionSpec",
    "RetryBudgetSpec",
    "RetryPolicySpec",
    "RouteLimitsSpec",
    "RouteSpec",
    "RouteTaskSpec",
    "TaskClassifierSpec",
    "TaskRuleSpec",
    "TasksSpec",
    "TeamSpec",
    "TelemetrySpec",
    "TimeoutsSpec",
    "WireKind",
    "policy_json_schema",
]


class PolicySpec(_Spec):
    """A policy file."""

    version: Literal[1] = key("The policy schema version.", required=True)
    limits: LimitsSpec = key("Request limits and load shedding.", spec_default=LimitsSpec())
    defaults: DefaultsSpec = key("What every route inherits.", spec_default=DefaultsSpec())
    outlier_detection: OutlierDetectionSpec = key(
        "Circuit breakers per candidate.", spec_default=OutlierDetectionSpec()
    )
    retry_policy: RetryPolicySpec = key(
        "Retries of the same candidate, once no other is left.", spec_default=RetryPolicySpec()
    )
    retry_budget: RetryBudgetSpec = key(
        "Retries as a share of live requests.", spec_default=RetryBudgetSpec()
    )
    health_check: HealthCheckSpec = key("Active health probes.", spec_default=HealthCheckSpec())
    telemetry: TelemetrySpec = key("What goes into traces.", spec_default=TelemetrySpec())
    tasks: TasksSpec = key(
        "Task categories and the rules that assign them.", spec_default=TasksSpec()
    )
    evals: EvalsSpec = key("Evals, their judge and scorecards.", spec_default=EvalsSpec())
    keys: KeysSpec = key("Virtual keys and key auth.", spec_default=KeysSpec())
    teams: dict[str, TeamSpec] = key(
        "Limits per team (the team a key is made for): RPM, TPM, USD per period.",
        spec_default={},
        type_text="mapping team → limits",
    )
    fleet: FleetSpec = key(
        "The fleet tier on Redis (off unless `redis` is set).", spec_default=FleetSpec()
    )
    providers: dict[str, ProviderSpec] = key(
        "Upstreams and their regions and models.", required=True, min_length=1
    )
    routes: dict[str, RouteSpec] = key(
        "Keyed by the model name the app asks for.",
        required=True,
        min_length=1,
        type_text="mapping model name → route",
    )


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file, for editors (``policies/schema.json``).

    Generated from ``PolicySpec``, so it cannot drift from what the loader accepts; a test
    fails when the checked-in file is stale. The loader stays the reference: it also checks
    what a schema cannot (references between providers and routes, residency, key files).
    """
    schema = PolicySpec.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edgeproxy policy",
        "description": "Failover policy for the edgeproxy sidecar. Generated by "
        "`edgeproxy policy schema`; see docs/policies.md.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }

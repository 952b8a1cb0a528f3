"""The policy document as SREs write it (YAML), validated by pydantic.

This is the *written* form: optional fields stay optional here. ``compile.py`` resolves defaults
and references into the frozen snapshot the proxy serves from. Field names borrow Envoy's
vocabulary where one exists (timeouts, max_attempts, outlier detection later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from edgeproxy.policy.units import ByteSize, Duration


@dataclass(frozen=True)
class _AlsoAccepts:
    """JSON Schema only: the field also accepts this shorthand (a validator turns it into the
    model). Without it, editors would flag ``alpha/us-east/gpt-4o`` or ``gpt-4o-mini:`` as wrong."""

    alternative: dict[str, Any]

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [self.alternative, handler(core_schema)]}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeoutsSpec(_Spec):
    """Per-attempt and per-request time limits. Unset fields inherit ``defaults.timeouts``."""

    connect: Duration | None = Field(None, description="TCP/TLS connect to the upstream.")
    first_token: Duration | None = Field(
        None, description="Stream: from sending the request to the first event from upstream."
    )
    idle: Duration | None = Field(
        None, description="Stream: the longest silence allowed between two upstream events."
    )
    response: Duration | None = Field(
        None, description="Non-stream: one attempt, from sending the request to the whole answer."
    )
    total: Duration | None = Field(
        None, description="The whole request: every attempt and the stream relay share it."
    )


MidstreamPolicy = Literal["error", "resume"]


class LimitsSpec(_Spec):
    max_body_bytes: ByteSize | None = Field(None, description="Largest request body accepted.")
    body_read_timeout: Duration | None = Field(
        None, description="The whole request body must arrive within this time (else 408)."
    )
    max_in_flight: int | None = Field(
        None, ge=1, description="Requests served at once; more wait in a short queue."
    )
    max_queued: int | None = Field(
        None, ge=0, description="Requests waiting for a slot; beyond it: 503 + Retry-After."
    )
    max_queue_wait: Duration | None = Field(
        None, description="Longest wait in the queue before a 503 + Retry-After."
    )
    max_hedge_percent: float | None = Field(
        None, ge=0, le=100, description="Hedged requests, as a percentage of all requests."
    )
    cache_max_bytes: ByteSize | None = Field(
        None, description="The prompt-hash cache's size, all routes together (read at start)."
    )
    cache_max_entries: int | None = Field(
        None, ge=1, description="The most answers the cache holds (read at start)."
    )


class OutlierDetectionSpec(_Spec):
    """Circuit breakers per candidate, in Envoy's outlier-detection vocabulary."""

    consecutive_failures: int | None = Field(None, ge=1)
    failure_percentage_threshold: float | None = Field(
        None, gt=0, le=100, description="Eject when this percentage of requests in `interval` fail."
    )
    failure_percentage_request_volume: int | None = Field(
        None, ge=1, description="The percentage trigger needs at least this many requests."
    )
    interval: Duration | None = Field(None, description="The window the percentage is taken over.")
    base_ejection_time: Duration | None = None
    max_ejection_time: Duration | None = None
    half_open_max_requests: int | None = Field(None, ge=1)
    quota_ejection_time: Duration | None = Field(
        None,
        description="How long a candidate whose quota is exhausted (429 insufficient_quota) "
        "stays out.",
    )


class RetryPolicySpec(_Spec):
    """Retries of the same candidate, once no other candidate is left."""

    base_interval: Duration | None = None
    max_interval: Duration | None = None
    max_retries_per_candidate: int | None = Field(None, ge=0, le=10)
    max_retry_after: Duration | None = Field(
        None, description="A longer upstream Retry-After is not waited out."
    )
    min_attempt_time: Duration | None = Field(
        None, description="No attempt starts with less than this left of the deadline."
    )


class RetryBudgetSpec(_Spec):
    """Retries (every attempt after a request's first) as a share of live requests."""

    budget_percent: float | None = Field(None, ge=0, le=100)
    min_retries_per_second: float | None = Field(None, ge=0)
    ttl: Duration | None = Field(None, description="The window the budget is counted over.")


class HealthCheckSpec(_Spec):
    """Active health probes of every region (GET <base_url>/models by default: never billed)."""

    enabled: bool | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    unhealthy_threshold: int | None = Field(None, ge=1)
    healthy_threshold: int | None = Field(None, ge=1)
    max_probes_per_second: float | None = Field(None, gt=0)


class ProviderHealthSpec(_Spec):
    kind: Literal["models", "tcp", "url", "completion"] = Field(
        "models",
        description="models: GET <base_url>/models; tcp: a connect; url: GET `url`; "
        "completion: a 1-token completion (billed: only when asked for).",
    )
    url: str | None = None


class PriceSpec(_Spec):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)


class HedgeSpec(_Spec):
    """Start the next candidate when the first has not produced a token after a delay."""

    delay: Duration | None = Field(None, description="A fixed delay.")
    percentile: float | None = Field(
        None,
        gt=0,
        le=100,
        description="Or: this percentile of the candidate's recent TTFT (after 20 samples).",
    )


class CacheSpec(_Spec):
    """The prompt-hash cache for a route (docs/cache.md)."""

    enabled: bool = Field(True, description="Answer identical requests from the cache.")
    ttl: Duration | None = Field(None, description="How long an answer is served (default 5m).")
    cacheable: Literal["deterministic", "all"] | None = Field(
        None,
        description="deterministic: only requests with temperature or top_p 0 (default); "
        "all: every request (one sampled answer is replayed until the TTL ends).",
    )


class DefaultsSpec(_Spec):
    timeouts: TimeoutsSpec = TimeoutsSpec()
    cache: CacheSpec | None = Field(None, description="The cache of every route (off if unset).")
    max_attempts: int | None = Field(None, ge=1, le=20)
    on_midstream_failure: MidstreamPolicy | None = None


class TelemetrySpec(_Spec):
    capture_content: bool = Field(
        False, description="Put prompt and completion text on spans (off: they never leave)."
    )


class RegionSpec(_Spec):
    base_url: str = Field(
        description="The API root of this region, e.g. https://api.openai.com/v1",
        pattern=r"^https?://[^\s/]+(/\S*)?$",
    )
    tags: dict[str, str] = {}


def _none_as_empty(value: Any) -> Any:
    # ``gpt-4o-mini:`` with nothing after it reads as null in YAML; treat it as "no settings".
    return {} if value is None else value


class ModelSpec(_Spec):
    upstream_name: str | None = Field(
        None, description="The name sent to the provider, when it differs from the key."
    )
    context_window: int | None = Field(None, ge=1, description="Tokens the model can hold.")
    price: PriceSpec | None = Field(None, description="USD per million tokens, for cost.")
    tokenizer: Literal["cl100k_base", "o200k_base", "estimate"] | None = Field(
        None, description="How the proxy counts this model's tokens (default: from the name)."
    )
    max_output_tokens: int | None = Field(
        None,
        ge=1,
        description="max_tokens sent to an Anthropic-wire model when the client gave none "
        "(Anthropic requires it; default 4096).",
    )
    assistant_prefill: bool = Field(
        False,
        description="The model continues a trailing assistant message (vLLM, Anthropic): "
        "a stream cut mid-answer may be resumed on it.",
    )


class ProviderSpec(_Spec):
    kind: Literal["openai", "anthropic"] = Field(
        description="The wire the provider speaks. 'openai' covers OpenAI, Azure OpenAI, "
        "Gemini's OpenAI-compatible endpoint, vLLM, Ollama and LocalAI; 'anthropic' is "
        "Anthropic's Messages API (requests and streams are translated as needed)."
    )
    api_key: str | None = Field(
        None, description="The provider key, usually written as ${ENV_VAR}. Never logged."
    )
    api_key_file: str | None = Field(
        None, description="A file holding the provider key (e.g. a mounted secret)."
    )
    auth_header: Literal["authorization", "api-key", "none"] = Field(
        "authorization",
        description="How the key is sent: 'Authorization: Bearer KEY' or Azure's 'api-key: KEY'.",
    )
    headers: dict[str, str] = Field({}, description="Extra headers sent on every request.")
    health_check: ProviderHealthSpec = ProviderHealthSpec()
    query: dict[str, str] = Field(
        {}, description="Query parameters added to every request (e.g. Azure's api-version)."
    )
    regions: dict[str, RegionSpec] = Field(min_length=1)
    models: dict[
        str,
        Annotated[
            ModelSpec,
            BeforeValidator(_none_as_empty),
            _AlsoAccepts({"type": "null", "description": "No settings."}),
        ],
    ] = Field(min_length=1)


def _candidate_from_string(value: Any) -> Any:
    # "provider/region/model"; region "*" means every region in the order written. The model may
    # itself contain slashes (e.g. meta-llama/Llama-3.1-8B-Instruct on vLLM).
    if isinstance(value, str):
        parts = value.split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"write a candidate as provider/region/model (region may be *), got {value!r}"
            )
        provider, region, model = parts
        return {"provider": provider, "region": None if region == "*" else region, "model": model}
    return value


class CandidateSpec(_Spec):
    provider: str
    region: str | None = Field(None, description="Omitted or '*': every region of the provider.")
    model: str


class RouteSpec(_Spec):
    aliases: list[str] = Field([], description="Other model names the app may ask for.")
    chain: list[
        Annotated[
            CandidateSpec,
            BeforeValidator(_candidate_from_string),
            _AlsoAccepts(
                {
                    "type": "string",
                    "pattern": "^[^/\\s]+/[^/\\s]+/\\S+$",
                    "description": "provider/region/model; region * means every region.",
                }
            ),
        ]
    ] = Field(min_length=1, description="Candidates in the order they are tried.")
    timeouts: TimeoutsSpec = TimeoutsSpec()
    max_attempts: int | None = Field(None, ge=1, le=20)
    on_midstream_failure: MidstreamPolicy | None = None
    require_tags: dict[str, str] = Field(
        {},
        description="Residency: every candidate's region must carry all of these tags "
        "(e.g. {jurisdiction: eu}). Failover never leaves this set.",
    )
    min_context_window: int | None = Field(
        None,
        ge=1,
        description="Every candidate's model must hold at least this many tokens "
        "(its context_window must be set and at least this large).",
    )
    hedge: HedgeSpec | None = Field(
        None, description="Opt-in hedging of slow first tokens (streams)."
    )
    cache: CacheSpec | None = Field(None, description="The prompt-hash cache for this route.")


class PolicySpec(_Spec):
    version: Literal[1] = Field(description="The policy schema version.")
    limits: LimitsSpec = LimitsSpec()
    defaults: DefaultsSpec = DefaultsSpec()
    outlier_detection: OutlierDetectionSpec = OutlierDetectionSpec()
    retry_policy: RetryPolicySpec = RetryPolicySpec()
    retry_budget: RetryBudgetSpec = RetryBudgetSpec()
    health_check: HealthCheckSpec = HealthCheckSpec()
    telemetry: TelemetrySpec = TelemetrySpec()
    providers: dict[str, ProviderSpec] = Field(min_length=1)
    routes: dict[str, RouteSpec] = Field(
        min_length=1, description="Keyed by the model name the app asks for."
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
        **{k: v for k, v in schema.items() if k != "title"},
    }

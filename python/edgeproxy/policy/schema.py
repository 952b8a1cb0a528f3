"""The policy document as SREs write it (YAML), validated by pydantic: every key declared once.

This is the *written* form: optional fields stay optional here (``None``: not written), and
``compile.py`` resolves defaults and references into the frozen snapshot the proxy serves from.
Each key is declared with :func:`~edgeproxy.policy.keys.key`: its doc line and where its value
lives in the snapshot (``At``), from which its default, the JSON Schema, the docs tables,
``describe`` and ``diff`` are derived (see ``keys.py`` and ``catalog.py``). Field names borrow
Envoy's vocabulary where one exists (timeouts, max_attempts, outlier detection).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetJsonSchemaHandler,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from edgeproxy.policy.keys import FROM_SNAPSHOT, At, Prose, key
from edgeproxy.policy.shown import (
    header_names,
    masked_query,
    query_of,
    quoted_name,
    wire_name,
    without_userinfo,
)
from edgeproxy.policy.units import ByteSize, Duration
from edgeproxy.policy.urls import url_problem
from edgeproxy.snapshot import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_ON_MIDSTREAM_FAILURE,
    DEFAULT_TASK,
    AutoObjective,
    AutoSettings,
    Candidate,
    FloorOn,
    MidstreamPolicy,
    ModelFile,
    Optimize,
    Overflow,
    Policy,
    ResponseFormat,
    Route,
    ShadowSettings,
    Strategy,
    TaskRule,
)
from edgeproxy.snapshot.context import AffinitySettings, Breakpoints, GroupBy, Spread
from edgeproxy.snapshot.limits import Budget, Limits
from edgeproxy.wires import UPSTREAM_WIRES


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


def _url(value: str) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# A task's name (docs/tasks.md): also what the x-edgeproxy-task header may say.
TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_TASK_NAME_SCHEMA = {"pattern": TASK_NAME}


# A candidate named outside a chain (an eval's judge, a route's summariser): an explicit region.
_CANDIDATE_KEY = r"^[^/\s]+/[^/\s*]+/\S+$"


def _candidate_key(value: str) -> str:
    parts = value.split("/", 2)
    if len(parts) != 3 or not all(parts) or parts[1] == "*":
        raise ValueError(
            f"write a candidate as provider/region/model with an explicit region, got "
            f"{quoted_name(value)}"
        )
    return value


CandidateKey = Annotated[str, AfterValidator(_candidate_key)]


# -- time limits ------------------------------------------------------------------------------


class TimeoutsSpec(_Spec):
    """Per-attempt and per-request time limits. Unset fields inherit ``defaults.timeouts``."""

    connect: Duration | None = key(
        "TCP (and TLS) connect to the upstream.", at=At(Route, "timeouts.connect")
    )
    first_token: Duration | None = key(
        "Stream: from sending the request to the first token (headers, and events that carry "
        "only the role, included). Long because reasoning models think before they speak.",
        at=At(Route, "timeouts.first_token"),
    )
    idle: Duration | None = key(
        "Stream: the longest silence between two upstream reads after the first token.",
        at=At(Route, "timeouts.idle"),
    )
    response: Duration | None = key(
        "Non-stream: one attempt, from sending the request to the whole answer.",
        at=At(Route, "timeouts.response"),
    )
    total: Duration | None = key(
        "The whole request: every attempt and the stream relay share it.",
        at=At(Route, "timeouts.total"),
    )


# -- process-wide settings ------------------------------------------------------------------------


class LimitsSpec(_Spec):
    """Request limits and load shedding."""

    max_body_bytes: ByteSize | None = key(
        "Larger request bodies (counted once `gzip`/`deflate` is decoded) are refused with 413 "
        "before anything is parsed or forwarded.",
        at=At(Policy, "max_body_bytes"),
        default=DEFAULT_MAX_BODY_BYTES,
    )
    body_read_timeout: Duration | None = key(
        "The whole request body must arrive within this time of its head; else 408 and the "
        "connection is closed. The body is read before the request takes a concurrency slot.",
        at=At(Policy, "body_read_timeout"),
    )
    max_in_flight: int | None = key(
        "Requests served at once; more wait in a short queue.",
        at=At(Policy, "engine.shed.max_in_flight"),
        ge=1,
    )
    max_queued: int | None = key(
        "Requests waiting for a slot; beyond it the answer is 503 + `Retry-After` at once.",
        at=At(Policy, "engine.shed.max_queue"),
        ge=0,
    )
    max_queue_wait: Duration | None = key(
        "The longest wait in the queue before a 503 + `Retry-After`.",
        at=At(Policy, "engine.shed.max_queue_wait"),
    )
    max_hedge_percent: float | None = key(
        "Hedged requests as a share of all requests (a hedge can bill twice).",
        at=At(Policy, "engine.max_hedge_ratio"),
        percent=True,
        ge=0,
        le=100,
    )
    cache_max_bytes: ByteSize | None = key(
        "The prompt-hash cache's size, all routes together (read at start).",
        at=At(Policy, "cache_max_bytes"),
    )
    cache_max_entries: int | None = key(
        "The most answers the cache holds (read at start).",
        at=At(Policy, "cache_max_entries"),
        ge=1,
    )


class OutlierDetectionSpec(_Spec):
    """Circuit breakers per candidate, in Envoy's outlier-detection vocabulary."""

    consecutive_failures: int | None = key(
        "Failures in a row that open a candidate's breaker.",
        at=At(Policy, "engine.breaker.consecutive_failures"),
        ge=1,
    )
    failure_percentage_threshold: float | None = key(
        "Or: this percentage of failed requests in `interval` opens it.",
        at=At(Policy, "engine.breaker.failure_ratio"),
        percent=True,
        gt=0,
        le=100,
    )
    failure_percentage_request_volume: int | None = key(
        "The percentage trigger needs at least this many requests in `interval`.",
        at=At(Policy, "engine.breaker.min_requests"),
        ge=1,
    )
    interval: Duration | None = key(
        "The window the percentage is taken over.", at=At(Policy, "engine.breaker.window")
    )
    base_ejection_time: Duration | None = key(
        "The first ejection; it grows with each consecutive one.",
        at=At(Policy, "engine.breaker.base_ejection_time"),
    )
    max_ejection_time: Duration | None = key(
        "The longest ejection.", at=At(Policy, "engine.breaker.max_ejection_time")
    )
    half_open_max_requests: int | None = key(
        "Trial requests at once when an ejection ends.",
        at=At(Policy, "engine.breaker.half_open_max_trials"),
        ge=1,
    )
    quota_ejection_time: Duration | None = key(
        "How long a candidate whose quota is exhausted (429 `insufficient_quota`), whose key "
        "the provider refuses (401/403) or whose model it does not serve (404) stays out.",
        at=At(Policy, "engine.quota_ejection"),
    )


class RetryPolicySpec(_Spec):
    """Retries of the same candidate, once no other candidate is left."""

    base_interval: Duration | None = key(
        "Full-jitter backoff: the first retry waits up to this.",
        at=At(Policy, "engine.backoff.base"),
    )
    max_interval: Duration | None = key(
        "No jittered wait beyond this (an upstream `Retry-After` is a floor).",
        at=At(Policy, "engine.backoff.cap"),
    )
    max_retries_per_candidate: int | None = key(
        "Retries of one candidate after its first attempt.",
        at=At(Policy, "engine.backoff.max_retries_per_candidate"),
        ge=0,
        le=10,
    )
    max_retry_after: Duration | None = key(
        "A longer upstream `Retry-After` is not waited out.",
        at=At(Policy, "engine.backoff.max_retry_after"),
    )
    min_attempt_time: Duration | None = key(
        "No attempt starts with less than this left of the deadline.",
        at=At(Policy, "engine.backoff.min_attempt_time"),
    )


class RetryBudgetSpec(_Spec):
    """Retries (of the same candidate, or onto a failing one) as a share of live requests;
    failover onto a healthy candidate is free."""

    budget_percent: float | None = key(
        "Retries as a share of requests: retries of the same candidate, failovers onto failing "
        "candidates, hedges (failover onto a healthy candidate is free).",
        at=At(Policy, "engine.budget.ratio"),
        percent=True,
        ge=0,
        le=100,
    )
    min_retries_per_second: float | None = key(
        "Retries always allowed, so a quiet app can still fail over.",
        at=At(Policy, "engine.budget.min_retries_per_second"),
        ge=0,
    )
    ttl: Duration | None = key(
        "The window the budget is counted over.", at=At(Policy, "engine.budget.window")
    )
    failing_percent: float | None = key(
        "A candidate failing at least this share of its recent requests (its breaker window) is "
        "failing: failing over onto it spends the budget; `0` budgets every failover (Envoy's "
        "and Linkerd's accounting).",
        at=At(Policy, "engine.budget.failing_ratio"),
        percent=True,
        ge=0,
        le=100,
    )


class HealthCheckSpec(_Spec):
    """Active health probes of every region (GET <base_url>/models by default: never billed)."""

    enabled: bool | None = key(
        "Probe every region's base URL.", at=At(Policy, "engine.probes_enabled")
    )
    interval: Duration | None = key(
        "Between two probes of one URL (with 20 % jitter).", at=At(Policy, "engine.probe.interval")
    )
    timeout: Duration | None = key(
        "A slower probe counts as failed.", at=At(Policy, "engine.probe.timeout")
    )
    unhealthy_threshold: int | None = key(
        "Failed probes in a row that open the breakers behind the URL.",
        at=At(Policy, "engine.probe.unhealthy_threshold"),
        ge=1,
    )
    healthy_threshold: int | None = key(
        "Passing probes in a row that move an open breaker to half-open.",
        at=At(Policy, "engine.probe.healthy_threshold"),
        ge=1,
    )
    max_probes_per_second: float | None = key(
        "All probes together.", at=At(Policy, "engine.probe.max_probes_per_second"), gt=0
    )


class TelemetrySpec(_Spec):
    """What goes into traces."""

    capture_content: bool = key(
        "Put prompt and completion text on spans; off, they never leave the proxy.",
        at=At(Policy, "capture_content"),
        spec_default=FROM_SNAPSHOT,
    )


# -- keys, limits and budgets (docs/keys.md), the fleet (docs/fleet.md) ------------------------


def _budget(value: str) -> str:
    Budget.parse(value)  # raises ValueError with the format in words
    return value


BudgetText = Annotated[
    str,
    AfterValidator(_budget),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*\d+(\.\d+)?\s*[uU][sS][dD]\s*/\s*(day|week|month)\s*$",
            "description": "USD per calendar period (UTC): 50usd/month, 0.5usd/day.",
        }
    ),
]

_RPM_DOC = "Requests per minute (a rate: up to this many at once, then one every 60/N s)."
_TPM_DOC = (
    "Tokens per minute: the prompt's exact count plus `max_tokens` (else the model's "
    "`max_output_tokens`) are reserved before the call and settled on the real usage."
)
_BUDGET_DOC = (
    "USD per calendar period (UTC), e.g. `50usd/month`: the worst-case cost is reserved "
    "before the call and the real cost settled after."
)


class RouteLimitsSpec(_Spec):
    """Limits on every request of a route together (all keys, all sidecars of a fleet)."""

    rpm: int | None = key(_RPM_DOC, at=At(Route, "limits.rpm"), ge=1)
    tpm: int | None = key(_TPM_DOC, at=At(Route, "limits.tpm"), ge=1)
    budget: BudgetText | None = key(
        _BUDGET_DOC, at=At(Route, "limits.budget"), show=str, type_text="`<n>usd/<period>`"
    )


class ProviderLimitsSpec(_Spec):
    """The provider's own limits on one candidate (each region of the model has its own)."""

    rpm: int | None = key(
        "Requests per minute the provider allows: at this rate the candidate is skipped "
        "(`provider_limit`) and the request fails over, before the provider would say 429.",
        at=At(Candidate, "limits.rpm"),
        ge=1,
    )
    tpm: int | None = key(
        "Tokens per minute the provider allows (prompt plus `max_tokens` reserved, settled on "
        "the real usage).",
        at=At(Candidate, "limits.tpm"),
        ge=1,
    )


def _shown_teams(teams: Mapping[str, Limits]) -> dict[str, str]:
    return {name: limits.describe() for name, limits in teams.items()}


_TEAMS = At(Policy, "teams")
_NO_LIMIT = Prose("no limit")


class TeamSpec(_Spec):
    """The limits of every key of one team together."""

    rpm: int | None = key(
        _RPM_DOC, at=_TEAMS, view="teams", show=_shown_teams, default=_NO_LIMIT, ge=1
    )
    tpm: int | None = key(
        _TPM_DOC, at=_TEAMS, view="teams", show=_shown_teams, default=_NO_LIMIT, ge=1
    )
    budget: BudgetText | None = key(
        _BUDGET_DOC,
        at=_TEAMS,
        view="teams",
        show=_shown_teams,
        default=_NO_LIMIT,
        type_text="`<n>usd/<period>`",
    )


class KeysSpec(_Spec):
    """Virtual keys (docs/keys.md): made with `edgeproxy keys create`, stored hashed."""

    auth: bool | None = key(
        "Requests need a valid virtual key (`Authorization: Bearer` from OpenAI clients, "
        "`x-api-key` from Anthropic clients); off, a loopback sidecar trusts its app.",
        at=At(Policy, "keys.auth"),
    )
    store: str | None = key(
        "The embedded key store: a SQLite file, relative to this policy (made on first use). "
        "With `fleet.redis` the keys and their usage live in Redis instead.",
        at=At(Policy, "keys.store"),
        type_text="path",
    )
    refresh: Duration | None = key(
        "How often the key table is checked for changes (a revoked key stops working within "
        "it; lookups never wait on the store).",
        at=At(Policy, "keys.refresh"),
    )


def _redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
    if any(ch.isspace() for ch in value):
        raise ValueError("a Redis URL has no spaces")
    try:
        urlsplit(value).port  # noqa: B018 - read for its check: a port that is not a number
    except ValueError:
        raise ValueError("a Redis URL's port is a number (redis://host:6379/0)") from None
    return value


class FleetSpec(_Spec):
    """The fleet tier on Redis (docs/fleet.md): a shared cache level, shared counters and
    shared health for every sidecar that names the same Redis."""

    redis: Annotated[str, AfterValidator(_redis_url)] | None = key(
        "The Redis URL (`redis://host:port/db`; a password belongs in `${VARIABLE}`); unset, "
        "`EDGEPROXY_FLEET_REDIS` may give it; neither: no fleet.",
        at=At(Policy, "fleet.redis"),
        show=without_userinfo,
        type_text="URL",
    )
    timeout: Duration | None = key(
        "The longest a request waits on Redis per call; then local state answers (never an error).",
        at=At(Policy, "fleet.timeout"),
    )
    retry_interval: Duration | None = key(
        "After a failed call Redis is left alone this long (a ping checks it); meanwhile every "
        "call answers from local state at once.",
        at=At(Policy, "fleet.retry_interval"),
    )
    prefix: str | None = key(
        "Every Redis key the fleet writes starts with `<prefix>:` (several fleets, one Redis).",
        at=At(Policy, "fleet.prefix"),
    )
    cache: bool | None = key(
        "The prompt cache's shared second level (the local LRU stays in front).",
        at=At(Policy, "fleet.cache"),
    )
    health: bool | None = key(
        "Publish this sidecar's ejections and take the others': the fleet stops sending to a "
        "dead region after the first sidecar finds it.",
        at=At(Policy, "fleet.health"),
    )


# -- what routes inherit ----------------------------------------------------------------------


class HedgeSpec(_Spec):
    """Streams: when the first candidate has produced no token after a delay, the next one
    starts too; the first to produce a token wins and the other is cancelled. Capped by
    ``limits.max_hedge_percent``. Set exactly one of ``delay`` and ``percentile``."""

    delay: Duration | None = key("A fixed delay.", at=At(Route, "hedge.delay"))
    percentile: float | None = key(
        "Or: this percentile of the first candidate's recent time to first token (after 20 "
        "observations).",
        at=At(Route, "hedge.percentile"),
        gt=0,
        le=100,
    )


class CacheSpec(_Spec):
    """The prompt-hash cache for a route (docs/cache.md)."""

    enabled: bool = key(
        "Answer identical requests from the cache (a written cache block is on unless this "
        "says otherwise).",
        at=At(Route, "cache.enabled"),
        spec_default=True,
    )
    ttl: Duration | None = key("How long an answer is served.", at=At(Route, "cache.ttl"))
    cacheable: Literal["deterministic", "all"] | None = key(
        "`deterministic`: only requests with `temperature` or `top_p` 0; `all`: every request "
        "(one sampled answer is replayed until the TTL ends).",
        at=At(Route, "cache.cacheable"),
    )


class DefaultsSpec(_Spec):
    """What every route inherits unless it says otherwise."""

    timeouts: TimeoutsSpec = key(
        "Inherited field by field by each route.", spec_default=TimeoutsSpec()
    )
    cache: CacheSpec | None = key("The cache of every route (off if unset).")
    max_attempts: int | None = key(
        "Attempts per request across the whole chain.",
        at=At(Route, "max_attempts"),
        default=DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=20,
    )
    on_midstream_failure: MidstreamPolicy | None = key(
        "What happens when a committed stream fails. `error`: an in-band error event in the "
        "client's format, then the stream ends (never with `[DONE]`). `resume`: another "
        "candidate whose model has `assistant_prefill` continues the text already sent (plain "
        "text of one choice only; never inside a tool call); if none can, `error`. The default "
        "resumes where a model of the chain declares `assistant_prefill` (docs/failover.md).",
        at=At(Route, "on_midstream_failure"),
        default=DEFAULT_ON_MIDSTREAM_FAILURE,
    )
    default_task: str | None = key(
        "The task of a request that no explicit name, rule or confident classifier decided "
        f"(docs/tasks.md); a declared task or `{DEFAULT_TASK}`.",
        at=At(Route, "default_task"),
        default=DEFAULT_TASK,
        schema=_TASK_NAME_SCHEMA,
    )


# -- providers --------------------------------------------------------------------------------


class ProviderHealthSpec(_Spec):
    """How the prober checks this provider's regions."""

    kind: Literal["models", "tcp", "url", "completion"] = key(
        "`models`: `GET <base_url>/models` (free); `tcp`: a connect; `url`: `GET url`; "
        "`completion`: a 1-token completion (billed: only when asked for).",
        at=At(Candidate, "health_check"),
        spec_default=FROM_SNAPSHOT,
    )
    url: str | None = key(
        "With `kind: url`: the URL probed.",
        at=At(Candidate, "health_check_url"),
        show=without_userinfo,
        type_text="URL",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else _url(value)


class PriceSpec(_Spec):
    """USD per million tokens."""

    input: float = key("Prompt tokens.", at=At(Candidate, "price.input"), required=True, ge=0)
    output: float = key("Completion tokens.", at=At(Candidate, "price.output"), required=True, ge=0)
    cached_input: float | None = key(
        "Prompt tokens read from the provider's cache.",
        at=At(Candidate, "price.cached_input"),
        default=Prose("`input`"),
        ge=0,
    )
    cache_write: float | None = key(
        "Prompt tokens written to the provider's cache (Anthropic).",
        at=At(Candidate, "price.cache_write"),
        default=Prose("`input`"),
        ge=0,
    )


class RegionSpec(_Spec):
    """Where a provider can be reached."""

    base_url: str = key(
        "The API root: the proxy posts to `<base_url>/chat/completions` (Anthropic: "
        "`<base_url>/messages`; Gemini: `<base_url>/models/<model>:generateContent`, e.g. "
        "`https://generativelanguage.googleapis.com/v1beta`). For Azure, the deployment URL "
        "(`https://X.openai.azure.com/openai/deployments/NAME`). No credentials, query or "
        "fragment: keys go in `api_key`, `api_key_file` or `headers`, parameters in `query`.",
        at=At(Candidate, "base_url"),
        required=True,
        show=without_userinfo,
        type_text="`http(s)://host[:port]/path`",
        schema={"format": "uri", "pattern": r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"},
    )
    tags: dict[str, str] = key(
        'Labels such as `jurisdiction: eu` or `self_hosted: "true"`; a route\'s '
        "`require_tags` matches them.",
        at=At(Candidate, "tags"),
        spec_default={},
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return _url(value)


def _none_as_empty(value: Any) -> Any:
    # ``gpt-4o-mini:`` with nothing after it reads as null in YAML; treat it as "no settings".
    return {} if value is None else value


class ModelSpec(_Spec):
    """A model the provider serves, by the name routes use. May be written with no settings
    (``gpt-4o-mini:``)."""

    upstream_name: str | None = key(
        "The name sent to the provider, when it differs (e.g. "
        "`meta-llama/Llama-3.1-8B-Instruct` on vLLM).",
        at=At(Candidate, "upstream_model"),
        default=Prose("the key"),
    )
    context_window: int | None = key(
        "Tokens the model can hold; checked against a route's `min_context_window`, and by "
        "`policy explain` against a request's prompt. An upstream's `context_length_exceeded` "
        "sends the request on only to candidates with a larger window.",
        at=At(Candidate, "context_window"),
        ge=1,
    )
    price: PriceSpec | None = key(
        "USD per million tokens; every answer's cost (and every failed attempt's) is computed "
        "from it."
    )
    tokenizer: Literal["cl100k_base", "o200k_base", "estimate"] | None = key(
        "How the proxy counts this model's tokens (exact for the two OpenAI encodings; "
        "`estimate` for models without a public tokenizer).",
        at=At(Candidate, "tokenizer"),
        default=Prose("from the model name"),
    )
    max_output_tokens: int | None = key(
        "`max_tokens` sent to an Anthropic-wire model when the client gave none (Anthropic "
        "requires it).",
        at=At(Candidate, "max_output_tokens"),
        ge=1,
    )
    assistant_prefill: bool = key(
        "The model continues a trailing assistant message (vLLM, Anthropic): a stream cut "
        "mid-answer may be resumed on it.",
        at=At(Candidate, "assistant_prefill"),
        spec_default=FROM_SNAPSHOT,
    )
    dimensions: int | None = key(
        "An embedding model's vector length. Every candidate of a route that declares it must "
        "declare the same (a fallback must produce vectors of the primary's length), and a "
        "vector of another length from the upstream fails the attempt (docs/embeddings.md).",
        at=At(Candidate, "dimensions"),
        ge=1,
    )
    max_batch_inputs: int | None = key(
        "Inputs one embeddings request to this model may carry; the proxy splits a larger "
        "request into batches (a self-hosted server's own limit, lower than the wire's).",
        at=At(Candidate, "max_batch_inputs"),
        default=Prose("the wire's limit (OpenAI 2048, Gemini 100)"),
        ge=1,
    )
    limits: ProviderLimitsSpec | None = key(
        "The provider's own rate limits on each candidate of this model (off if unset)."
    )


_HEADERS = At(Candidate, "headers")


def _registered_wire(name: str) -> str:
    if name not in UPSTREAM_WIRES:
        raise ValueError(f"must be one of {', '.join(repr(n) for n in UPSTREAM_WIRES)}")
    return name


# A provider's ``kind``: any wire registered in ``edgeproxy.wires`` (the registry is the one
# list; the JSON schema's enum is read from it).
WireKind = Annotated[
    str,
    AfterValidator(_registered_wire),
    WithJsonSchema({"type": "string", "enum": list(UPSTREAM_WIRES)}),
]


class ProviderSpec(_Spec):
    """An upstream: its wire, its key, its regions and its models."""

    kind: WireKind = key(
        "The wire the provider speaks (a registered wire plug-in, `edgeproxy.wires`). `openai` "
        "covers OpenAI, Azure OpenAI, Gemini's OpenAI-compatible endpoint, vLLM, Ollama and "
        "LocalAI; `anthropic` is Anthropic's Messages API; `gemini` is Gemini's own API "
        "(`generateContent`, the key in `x-goog-api-key`); `openai_responses` is OpenAI's "
        "Responses API (`POST <base_url>/responses`, stateless: the models served only there, "
        "such as o3-pro and the codex models). Requests and streams are translated as needed.",
        at=At(Candidate, "wire", via=wire_name),
        required=True,
        type_text=", ".join(f"`{name}`" for name in UPSTREAM_WIRES),
    )
    api_key: str | None = key(
        "The provider key, normally written as `${SOME_ENV_VAR}`. Never logged, never in "
        "errors, never taken from clients.",
        at=_HEADERS,
        view="headers",
        show=header_names,
    )
    api_key_file: str | None = key(
        "A file holding the key (a mounted secret), relative to the policy file; a regular "
        "file of at most 64 KiB, read with a timeout. Not with `api_key`.",
        at=_HEADERS,
        view="headers",
        show=header_names,
        type_text="path",
    )
    auth_header: Literal["authorization", "api-key", "none"] = key(
        "How the key is sent: `Authorization: Bearer KEY`, Azure's `api-key: KEY`, or not at all.",
        at=_HEADERS,
        view="headers",
        show=header_names,
        spec_default="authorization",
    )
    headers: dict[str, str] = key(
        "Extra headers on every request (e.g. `OpenAI-Organization`). Names must be HTTP "
        "tokens; the headers the proxy's client writes itself (`Host`, `Content-Length`, ...) "
        "and the key's own header are refused; values may not hold line breaks or NUL and must "
        "be latin-1. Problems name the header, never its value.",
        at=_HEADERS,
        show=header_names,
        spec_default={},
    )
    health_check: ProviderHealthSpec = key(
        "How the prober checks this provider's regions.", spec_default=ProviderHealthSpec()
    )
    query: dict[str, str] = key(
        "Query parameters added to every request (e.g. Azure's `api-version`).",
        at=At(Candidate, "chat_url", via=query_of),
        show=masked_query,
        spec_default={},
    )
    regions: dict[str, RegionSpec] = key(
        "Where the provider can be reached.", required=True, min_length=1
    )
    models: dict[
        str,
        Annotated[
            ModelSpec,
            BeforeValidator(_none_as_empty),
            _AlsoAccepts({"type": "null", "description": "No settings."}),
        ],
    ] = key("The models this provider serves, by the name routes use.", required=True, min_length=1)


# -- tasks ------------------------------------------------------------------------------------

# Every rule key shows as one value, the compiled rules in words: a rule is read as a whole.
_RULES = At(Policy, "tasks.rules")


def _shown_rules(rules: tuple[TaskRule, ...]) -> list[str]:
    return [rule.describe() for rule in rules]


def _shown_model(model_file: ModelFile) -> str:
    return f"{model_file.path} (digest {model_file.digest[:12]})"


def _rule_key(doc: str, **more: Any) -> Any:
    return key(doc, at=_RULES, view="tasks.rules", show=_shown_rules, **more)


class RangeSpec(_Spec):
    """An inclusive range: ``{min: N}``, ``{max: N}`` or both."""

    min: int | None = _rule_key("At least this many.", default=Prose("no lower bound"), ge=0)
    max: int | None = _rule_key("At most this many.", default=Prose("no upper bound"), ge=0)


class TaskRuleSpec(_Spec):
    """One rule: the task it assigns when every condition it sets holds (at least one)."""

    name: str | None = _rule_key(
        "A name for the rule, shown with its index in every decision it makes.",
        default=Prose("none: the index names it"),
        schema={"maxLength": 64},
    )
    task: str = _rule_key(
        "The task it assigns: a declared category.", required=True, schema=_TASK_NAME_SCHEMA
    )
    routes: list[str] | None = _rule_key(
        "The app called one of these model names: a route's name (which covers its aliases) "
        "or an alias.",
        default=Prose("any route"),
        min_length=1,
    )
    tools: bool | None = _rule_key(
        "The request offers tools (`true`), or none (`false`).", default=Prose("not checked")
    )
    response_format: ResponseFormat | None = _rule_key(
        "The request's `response_format`: `json` (either JSON mode), `json_object`, "
        "`json_schema`, or `text` (plain, or none given).",
        default=Prose("not checked"),
    )
    prompt_tokens: RangeSpec | None = _rule_key(
        type_text="range",
        doc="The prompt's token count, counted exactly in `tasks.tokenizer`; checked last (only "
        "when the rule's other conditions hold).",
        default=Prose("not checked"),
    )
    max_tokens: RangeSpec | None = _rule_key(
        type_text="range",
        doc="The answer tokens asked for (`max_completion_tokens`, else `max_tokens`); a request "
        "that asks for none never matches.",
        default=Prose("not checked"),
    )
    messages: RangeSpec | None = _rule_key(
        type_text="range", doc="The number of messages.", default=Prose("not checked")
    )
    system_regex: str | None = _rule_key(
        "A regex found in the system prompt (system and developer messages, first 64 KiB): "
        "Rust `regex` syntax, linear time whatever the pattern; `(?i)` ignores case.",
        default=Prose("not checked"),
        schema={"maxLength": 4096},
    )
    system_keywords: list[str] | None = _rule_key(
        "Any of these words in the system prompt, ignoring case (whole words where a keyword "
        "starts or ends with a letter, digit or `_`).",
        default=Prose("not checked"),
        min_length=1,
    )


class TaskClassifierSpec(_Spec):
    """The learned classifier for the requests no rule decided."""

    model: str = key(
        "The model file (`edgeproxy tasks train`), relative to the policy file; a regular "
        "file of at most 64 MiB, checked on load; its tasks must be declared categories. "
        "Reloading the policy reloads it.",
        at=At(Policy, "tasks.classifier.model_file"),
        required=True,
        show=_shown_model,
        type_text="path",
    )
    min_confidence: float | None = key(
        "Below this probability the classifier's answer is not taken: the route's "
        "`default_task` is.",
        at=At(Policy, "tasks.classifier.min_confidence"),
        default=DEFAULT_MIN_CONFIDENCE,
        ge=0,
        le=1,
    )


class TasksSpec(_Spec):
    """Task categories and how a request gets one (docs/tasks.md): the app's explicit name,
    then the rules in order (first match wins), then the classifier, then the route's
    ``default_task``."""

    categories: list[str] = key(
        f"The task names requests may get (`{DEFAULT_TASK}` is always one).",
        at=At(Policy, "tasks.categories"),
        spec_default=[],
        type_text="list of names",
    )
    explicit: bool = key(
        "The app may name a request's task: the `x-edgeproxy-task` header, else "
        "`metadata.task` in the body; an undeclared name is refused (400).",
        at=At(Policy, "tasks.explicit"),
        spec_default=FROM_SNAPSHOT,
    )
    tokenizer: Literal["cl100k_base", "o200k_base"] | None = key(
        "The encoding `prompt_tokens` conditions count in.", at=At(Policy, "tasks.tokenizer")
    )
    rules: list[TaskRuleSpec] = key(
        "Rules tried in order; the first whose conditions all hold assigns its task.",
        spec_default=[],
        type_text="list of rules",
    )
    classifier: TaskClassifierSpec | None = key(
        "The learned classifier for what the rules leave (off if unset)."
    )

    @field_validator("categories")
    @classmethod
    def _check_categories(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(TASK_NAME, name):
                raise ValueError(
                    f"{quoted_name(name)} is not a task name: 1 to 64 letters, digits, '_', '.' "
                    "or '-', starting with a letter or digit"
                )
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"named twice: {', '.join(twice)}")
        return names


# -- routes -----------------------------------------------------------------------------------


def _candidate_from_string(value: Any) -> Any:
    # "provider/region/model"; region "*" means every region in the order written. The model may
    # itself contain slashes (e.g. meta-llama/Llama-3.1-8B-Instruct on vLLM).
    if isinstance(value, str):
        parts = value.split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"write a candidate as provider/region/model (region may be *), got "
                f"{quoted_name(value)}"
            )
        provider, region, model = parts
        return {"provider": provider, "region": None if region == "*" else region, "model": model}
    return value


class CandidateSpec(_Spec):
    """A chain entry, when written as a mapping rather than provider/region/model."""

    provider: str = key("A provider's name.", required=True)
    region: str | None = key(
        "A region of it; omitted or `*`: every region, in the order the provider lists them.",
        default=Prose("every region"),
    )
    model: str = key("A model of that provider.", required=True)


# A chain entry: ``provider/region/model`` (region ``*``: every region), or a mapping.
ChainEntry = Annotated[
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


# -- auto -------------------------------------------------------------------------------------


# The defaults an auto block's keys take when it is written (``At`` cannot read them through the
# optional ``Route.auto``): the snapshot's own.
_AUTO = AutoSettings()
_SHADOW = ShadowSettings()


def _pins(pins: Mapping[str, Candidate]) -> dict[str, str]:
    return {task: c.key for task, c in pins.items()}


def _percents(ratios: tuple[float, ...]) -> list[float]:
    return [round(r * 100, 9) for r in ratios]


def _of_tasks(field: str, tasks: Mapping[str, AutoObjective]) -> dict[str, Any]:
    return {task: getattr(objective, field) for task, objective in tasks.items()}


def _objective_key(field: str, doc: str, **more: Any) -> Any:
    default = getattr(_AUTO.objective, field)
    return key(
        doc,
        at=At(Route, f"auto.objective.{field}"),
        default=Prose("none") if default is None else default,
        **more,
    )


def _task_key(field: str, doc: str, **more: Any) -> Any:
    # Per task, every field shows as one value: the task -> value mapping, resolved.
    via: Callable[[Any], Any] = partial(_of_tasks, field)
    return key(
        doc,
        at=At(Route, "auto.tasks", via=via),
        view=f"auto.per_task.{field}",
        default=Prose("the route's `auto.objective`"),
        **more,
    )


_OPTIMIZE_DOC = (
    "What is optimised: `cost_per_success` (mean USD per request / success rate), `latency` "
    "(mean seconds per request), `quality` (mean score) or `capability_per_dollar_second` "
    "(quality / (cost x latency)); docs/auto.md has the formulas."
)
_MIN_QUALITY_DOC = "The quality floor (0-1): a candidate under it is never chosen (see `floor_on`)."
_FLOOR_ON_DOC = (
    "Where the floor is applied: the scorecard's `mean` quality, or the `lower_bound` of its "
    "95 % interval (stricter; needs large evals to pass good models: docs/auto.md)."
)


def _limit_doc(what: str) -> str:
    return f"A candidate whose scorecard {what} is above this is not chosen."


class AutoObjectiveSpec(_Spec):
    """The route's objective for every task (a task in ``auto.tasks`` may override it, field
    by field)."""

    optimize: Optimize | None = _objective_key("optimize", _OPTIMIZE_DOC)
    min_quality: float | None = _objective_key("min_quality", _MIN_QUALITY_DOC, ge=0, le=1)
    floor_on: FloorOn | None = _objective_key("floor_on", _FLOOR_ON_DOC)
    max_ttft_p50: Duration | None = _objective_key("max_ttft_p50", _limit_doc("median TTFT"))
    max_ttft_p95: Duration | None = _objective_key("max_ttft_p95", _limit_doc("TTFT p95"))
    max_latency_p50: Duration | None = _objective_key(
        "max_latency_p50", _limit_doc("median latency")
    )
    max_latency_p95: Duration | None = _objective_key("max_latency_p95", _limit_doc("latency p95"))


class AutoTaskSpec(_Spec):
    """One task's objective (unset fields: the route's ``auto.objective``), and its pin."""

    optimize: Optimize | None = _task_key("optimize", _OPTIMIZE_DOC)
    min_quality: float | None = _task_key("min_quality", _MIN_QUALITY_DOC, ge=0, le=1)
    floor_on: FloorOn | None = _task_key("floor_on", _FLOOR_ON_DOC)
    max_ttft_p50: Duration | None = _task_key("max_ttft_p50", _limit_doc("median TTFT"))
    max_ttft_p95: Duration | None = _task_key("max_ttft_p95", _limit_doc("TTFT p95"))
    max_latency_p50: Duration | None = _task_key("max_latency_p50", _limit_doc("median latency"))
    max_latency_p95: Duration | None = _task_key("max_latency_p95", _limit_doc("latency p95"))
    pin: CandidateKey | None = key(
        "`provider/region/model`: this candidate leads the task whatever the scorecards say "
        "(no eval data needed; the route's constraints apply); ranked candidates follow it.",
        at=At(Route, "auto.pins"),
        view="auto.pins",
        show=_pins,
        default=Prose("none"),
        schema={"pattern": _CANDIDATE_KEY},
    )


class AutoRampSpec(_Spec):
    """The canary a new winner goes through before it serves all of a task's requests."""

    steps: list[float] | None = key(
        "The challenger's share of the task's requests at each step, in percent, increasing "
        "(then 100 %); `[]`: it takes over at once.",
        at=At(Route, "auto.ramp.steps"),
        show=_percents,
        default=[5.0, 25.0],
        type_text="list of percentages",
    )
    step_time: Duration | None = key(
        "The least time at each step; a step also waits for `rollback.min_requests` live "
        "requests served by the challenger.",
        at=At(Route, "auto.ramp.step_time"),
        default=_AUTO.ramp.step_time,
    )


class AutoRollbackSpec(_Spec):
    """When a ramping challenger is sent back (its live requests against the incumbent's)."""

    min_requests: int | None = key(
        "Live requests the challenger serves before the rules below judge it.",
        at=At(Route, "auto.rollback.min_requests"),
        default=_AUTO.rollback.min_requests,
        ge=1,
    )
    max_error_rate_increase: float | None = key(
        "Its live error rate may exceed the incumbent's by at most this many points.",
        at=At(Route, "auto.rollback.max_error_rate_increase"),
        default=_AUTO.rollback.max_error_rate_increase,
        percent=True,
        ge=0,
        le=100,
    )
    max_latency_increase: float | None = key(
        "Its live median latency over the incumbent's may exceed the ratio the scorecard "
        "measured by at most this much.",
        at=At(Route, "auto.rollback.max_latency_increase"),
        default=_AUTO.rollback.max_latency_increase,
        percent=True,
        type_text="percent ≥ 0",
        ge=0,
    )


class AutoShadowSpec(_Spec):
    """Opt-in shadow traffic: a share of a task's live requests mirrored to its challenger,
    the answers discarded (never sent to the app) and graded by ``evals.judge``."""

    percent: float | None = key(
        "The share of each task's requests mirrored (after they are served, off their path).",
        at=At(Route, "auto.shadow.share"),
        default=_SHADOW.share,
        percent=True,
        gt=0,
        le=100,
    )
    max_cost: float | None = key(
        "USD that mirrored calls and their judging may spend per `window`.",
        at=At(Route, "auto.shadow.max_cost"),
        default=_SHADOW.max_cost,
        ge=0,
    )
    window: Duration | None = key(
        "The period `max_cost` is counted over.",
        at=At(Route, "auto.shadow.window"),
        default=_SHADOW.window,
    )
    timeout: Duration | None = key(
        "A mirrored call (or its judging) that takes longer is abandoned.",
        at=At(Route, "auto.shadow.timeout"),
        default=_SHADOW.timeout,
    )
    judge: bool = key(
        "Grade mirrored answers with `evals.judge` (a live quality estimate); off: errors and "
        "latency only.",
        at=At(Route, "auto.shadow.judge"),
        spec_default=_SHADOW.judge,
    )


class AutoSpec(_Spec):
    """`auto`: per task, the best candidate of a pool by the latest scorecard leads, ranked
    fallbacks follow; a new winner takes over with hysteresis and a canary ramp."""

    pool: list[ChainEntry] | None = key(
        "The candidates `auto` chooses from, compiled like the chain (residency, context "
        "windows); a candidate with no eval data is never chosen.",
        default=Prose("`evals.candidates` that meet the route's constraints"),
        type_text="list of candidates",
    )
    objective: AutoObjectiveSpec = key(
        "What every task optimises, and the limits a candidate must meet.",
        spec_default=AutoObjectiveSpec(),
    )
    tasks: dict[str, AutoTaskSpec] = key(
        "Per task (a name of `tasks.categories`): its own objective, field by field, and an "
        "optional pin.",
        spec_default={},
    )
    margin: float | None = key(
        "A challenger takes over only when its objective beats the incumbent's by at least "
        "this much (and their intervals are apart, or see `confirmations`).",
        at=At(Route, "auto.margin"),
        default=_AUTO.margin,
        percent=True,
        type_text="percent ≥ 0",
        ge=0,
        le=999,
    )
    confirmations: int | None = key(
        "Or when it beats the incumbent by the margin in this many consecutive scorecards "
        "(intervals overlapping).",
        at=At(Route, "auto.confirmations"),
        default=_AUTO.confirmations,
        ge=1,
        le=100,
    )
    fallbacks: int | None = key(
        "Ranked candidates that follow the leader (other providers first); the route's chain "
        "comes after them.",
        at=At(Route, "auto.fallbacks"),
        default=_AUTO.fallbacks,
        ge=0,
        le=10,
    )
    min_samples: int | None = key(
        "Graded requests a scorecard cell needs before its candidate may be chosen.",
        at=At(Route, "auto.min_samples"),
        default=_AUTO.min_samples,
        ge=1,
    )
    ramp: AutoRampSpec = key("The canary ramp of a new winner.", spec_default=AutoRampSpec())
    rollback: AutoRollbackSpec = key(
        "When a ramping challenger goes back out.", spec_default=AutoRollbackSpec()
    )
    shadow: AutoShadowSpec | None = key("Opt-in shadow traffic (off if unset).")


class RouteTaskSpec(_Spec):
    """A task's own chain on a route (docs/tasks.md)."""

    chain: list[ChainEntry] = key(
        "The candidates that serve this task, in order (written like the route's chain; the "
        "route's residency and context-window constraints apply to them too).",
        required=True,
        min_length=1,
    )


class ContextSpec(_Spec):
    """A conversation too long for a candidate's context window (docs/context.md)."""

    overflow: Overflow | None = key(
        "When the prompt plus `max_tokens` (else the model's `max_output_tokens`) does not fit "
        "a candidate's window: `skip` the candidate, `error` (refuse the request with 400 "
        "`context_length_exceeded`: it must fit the whole chain), or `compact` the conversation "
        "for that candidate only (a larger window still gets it whole).",
        at=At(Route, "context.overflow"),
    )
    strategies: list[Strategy] | None = key(
        "What `compact` does, in order, each only while the conversation is still too long: "
        "`trim_tool_results` (oldest first, to their head and tail with a marker saying how "
        "much was cut), `drop_middle` (whole messages after the first user message, oldest "
        "first, with a marker), `summarize` (those messages replaced by a summary from "
        "`summarizer`). The system prompt, the first and the last user message and the last "
        "`keep_last` messages are never dropped; a tool call never loses its result.",
        at=At(Route, "context.strategies"),
        min_length=1,
        type_text="list of strategies",
    )
    keep_last: int | None = key(
        "Messages at the end that are never dropped or summarised (an assistant's tool calls "
        "and their results count as one).",
        at=At(Route, "context.keep_last"),
        ge=1,
    )
    tool_result_max_tokens: int | None = key(
        "`trim_tool_results` cuts a longer tool result to this many tokens (half head, half tail).",
        at=At(Route, "context.tool_result_max_tokens"),
        ge=64,
    )
    step: int | None = key(
        "`drop_middle` and `summarize` take this many messages at a time (rounded up, as far "
        "as there are any to take): the next turns then keep the same compacted prefix, which "
        "the provider's prompt cache and the summary cache reuse; `1` takes only what must go.",
        at=At(Route, "context.step"),
        ge=1,
    )
    summarizer: CandidateKey | None = key(
        "The model that writes `summarize`'s summaries: `provider/region/model` of a provider "
        "in this policy (its cost is counted with the request's; a summary is reused for the "
        "same history, keyed by the history's prefix hash).",
        at=At(Route, "context.summarizer"),
        schema={"pattern": _CANDIDATE_KEY},
    )
    summary_max_tokens: int | None = key(
        "The longest summary asked for.", at=At(Route, "context.summary_max_tokens"), ge=16
    )
    summary_ttl: Duration | None = key(
        "How long a summary is reused for the same history.", at=At(Route, "context.summary_ttl")
    )


def _off_or_auto(value: Any) -> Any:
    # YAML 1.1 reads an unquoted ``off`` (or ``on``, ``no``, ``yes``) as a boolean.
    if value is False:
        return "off"
    if value is True:
        return "auto"
    return value


class PromptCacheSpec(_Spec):
    """Provider prompt caching as a cost lever (docs/context.md)."""

    breakpoints: Annotated[Breakpoints, BeforeValidator(_off_or_auto)] | None = key(
        "`auto`: a request that carries no `cache_control` of its own gets Anthropic cache "
        "breakpoints on its long stable prefix (the last tool, the system prompt, the "
        "conversation so far) for Anthropic-wire candidates; OpenAI-wire candidates cache "
        "prefixes by themselves and never get the markers. `off`: the client's own markers "
        "only.",
        at=At(Route, "prompt_cache.breakpoints"),
    )
    min_prefix_tokens: int | None = key(
        "No breakpoint on a prompt shorter than this (estimated at four bytes a token): "
        "Anthropic caches nothing under 1,024 tokens, and a write costs more than plain input.",
        at=At(Route, "prompt_cache.min_prefix_tokens"),
        ge=0,
    )


# An affinity block's unset keys take these (a route without the block has no affinity at all).
_AFFINITY = AffinitySettings()


class AffinitySpec(_Spec):
    """Cache-affinity routing over the route's equivalent candidates (docs/context.md)."""

    spread: Spread | None = key(
        "`prefix`: requests sharing a prefix go to the same equivalent candidate (rendezvous "
        "hashing on the prefix hash; its prompt cache stays warm), the next one when it fails "
        "or is hot; `random`: an even spread with no stickiness.",
        at=At(Route, "affinity.spread"),
        default=_AFFINITY.spread,
    )
    group_by: GroupBy | None = key(
        "Which candidates of the chain are equivalent: `provider_model` (the regions of one "
        "provider's model) or `upstream_model` (every candidate sending the same model name, "
        "e.g. replicas of a self-hosted model).",
        at=At(Route, "affinity.group_by"),
        default=_AFFINITY.group_by,
    )
    prefix_messages: int | None = key(
        "The prefix hashed: the tools and the first N messages.",
        at=At(Route, "affinity.prefix_messages"),
        default=_AFFINITY.prefix_messages,
        ge=1,
    )
    load_factor: float | None = key(
        "Bounded load: a candidate with more than this times its fair share of the group's "
        "requests in flight passes new ones to the next (1 = strict balance).",
        at=At(Route, "affinity.load_factor"),
        default=_AFFINITY.load_factor,
        ge=1,
    )


class RouteSpec(_Spec):
    """What the app may ask for, and the chain that serves it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"anyOf": [{"required": ["chain"]}, {"required": ["auto"]}]},
    )

    aliases: list[str] = key(
        "Other model names that reach this route; `GET /v1/models` lists the route names and "
        "aliases.",
        at=At(Route, "aliases"),
        spec_default=[],
    )
    chain: list[ChainEntry] = key(
        "Candidates in the order they are tried: `provider/region/model`, or a mapping. "
        "Required unless the route has `auto`; there it serves the tasks no scorecard ranks "
        "yet, and follows auto's choices as the last resort.",
        spec_default=[],
        type_text="list of candidates",
    )
    timeouts: TimeoutsSpec = key(
        "Per field; unset fields inherit.",
        spec_default=TimeoutsSpec(),
        inherits="defaults.timeouts",
    )
    max_attempts: int | None = key(
        "A cap on attempts; a chain longer than this is cut.",
        at=At(Route, "max_attempts"),
        inherits="defaults.max_attempts",
        ge=1,
        le=20,
    )
    on_midstream_failure: MidstreamPolicy | None = key(
        "What happens when a committed stream fails (see defaults).",
        at=At(Route, "on_midstream_failure"),
        inherits="defaults.on_midstream_failure",
    )
    require_tags: dict[str, str] = key(
        "Residency: every candidate's region must carry all of these tags (e.g. "
        "`{jurisdiction: eu}`). Failover never leaves this set.",
        at=At(Route, "require_tags"),
        spec_default={},
    )
    min_context_window: int | None = key(
        "Every candidate's model must declare a `context_window` of at least this many "
        "tokens; a smaller (or undeclared) one is an error.",
        at=At(Route, "min_context_window"),
        ge=1,
    )
    hedge: HedgeSpec | None = key(
        "Opt-in hedging of slow first tokens (streams): `{delay: D}` or `{percentile: P}`."
    )
    cache: CacheSpec | None = key(
        "The prompt-hash cache for this route.", inherits="defaults.cache"
    )
    default_task: str | None = key(
        "The task of this route's requests that nothing else decided (see defaults).",
        at=At(Route, "default_task"),
        inherits="defaults.default_task",
        schema=_TASK_NAME_SCHEMA,
    )
    context: ContextSpec | None = key(
        "A conversation too long for a candidate's window: skip the candidate, refuse, or "
        "compact it for that candidate (off: `skip`)."
    )
    prompt_cache: PromptCacheSpec | None = key(
        "Provider prompt caching: cache breakpoints the proxy places (off unless written)."
    )
    affinity: AffinitySpec | None = key(
        "Cache-affinity routing over equivalent candidates (off unless written: the chain's order)."
    )
    tasks: dict[str, RouteTaskSpec] = key(
        "Per task (a name of `tasks.categories`): its own chain. A task without one is served "
        "by the route's chain; breakers, the retry budget, the deadline, honest streams and "
        "residency apply to each chain unchanged.",
        spec_default={},
    )
    auto: AutoSpec | None = key(
        "Choose each task's chain from a pool of candidates by the latest eval scorecards "
        "(docs/auto.md); off if unset."
    )
    limits: RouteLimitsSpec | None = key(
        "Limits on every request of this route together: RPM, TPM, USD per period (off if unset)."
    )


# -- evals ------------------------------------------------------------------------------------


class EvalScheduleSpec(_Spec):
    """What ``edgeproxy eval schedule`` runs (docs/evals.md, "Re-evaluation on a schedule")."""

    every: Duration | None = key(
        "Between two runs: the next is due this long after the newest scorecard's date.",
        at=At(Policy, "evals.schedule.every"),
    )
    out: str | None = key(
        "Where each run writes its scorecard, relative to this policy; `{date}` (required) and "
        "`{suite}` are filled in. Match it in `evals.scorecards` so `auto` reads it.",
        at=At(Policy, "evals.schedule.out"),
    )
    repeats: int | None = key(
        "Times each suite item runs per candidate.", at=At(Policy, "evals.schedule.repeats"), ge=1
    )


class EvalsSpec(_Spec):
    """`edgeproxy eval` and the `auto` route (docs/evals.md): who judges, what is evaluated,
    and where scorecards live."""

    judge: CandidateKey | None = key(
        "The LLM judge of `judge` graders: `provider/region/model` of a provider in this "
        "policy (its cost is counted apart from the candidates').",
        at=At(Policy, "evals.judge"),
        schema={"pattern": _CANDIDATE_KEY},
    )
    candidates: list[CandidateKey] = key(
        "The pool `edgeproxy eval run` evaluates when neither `--candidates` nor `--route` is "
        "given: `provider/region/model` of providers in this policy.",
        at=At(Policy, "evals.candidates"),
        spec_default=[],
    )
    suite: str | None = key(
        "The default suite: a file (relative to this policy's directory) or the name of a "
        "suite shipped with edgeproxy (`market`).",
        at=At(Policy, "evals.suite"),
    )
    scorecards: list[str] = key(
        "Scorecard files (or glob patterns, e.g. `scorecards/market-*.json`) the `auto` route "
        "reads, relative to this policy's directory; ordered by their date, the newest is the "
        "evidence. Reloaded when they change.",
        at=At(Policy, "evals.scorecards"),
        spec_default=[],
    )
    max_cost: float | None = key(
        "USD one eval run may spend (candidates and judge together), checked before each "
        "call; `--max-cost` overrides it.",
        at=At(Policy, "evals.max_cost"),
        ge=0,
    )
    schedule: EvalScheduleSpec = key(
        "`edgeproxy eval schedule`: re-run the suite on a schedule.",
        spec_default=EvalScheduleSpec(),
    )


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

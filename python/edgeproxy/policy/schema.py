"""The policy document as SREs write it (YAML), validated by pydantic.

This is the *written* form: optional fields stay optional here. ``compile.py`` resolves defaults
and references into the frozen snapshot the proxy serves from. Field names borrow Envoy's
vocabulary where one exists (timeouts, max_attempts, outlier detection later).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from edgeproxy.policy.units import ByteSize, Duration


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


MidstreamPolicy = Literal["error"]


class DefaultsSpec(_Spec):
    timeouts: TimeoutsSpec = TimeoutsSpec()
    max_attempts: int | None = Field(None, ge=1, le=20)
    on_midstream_failure: MidstreamPolicy | None = None


class LimitsSpec(_Spec):
    max_body_bytes: ByteSize | None = Field(None, description="Largest request body accepted.")


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


class ProviderSpec(_Spec):
    kind: Literal["openai"] = Field(
        description="The wire the provider speaks. 'openai' covers OpenAI, Azure OpenAI, "
        "Gemini's OpenAI-compatible endpoint, vLLM, Ollama and LocalAI."
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
    query: dict[str, str] = Field(
        {}, description="Query parameters added to every request (e.g. Azure's api-version)."
    )
    regions: dict[str, RegionSpec] = Field(min_length=1)
    models: dict[str, Annotated[ModelSpec, BeforeValidator(_none_as_empty)]] = Field(min_length=1)


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
    chain: list[Annotated[CandidateSpec, BeforeValidator(_candidate_from_string)]] = Field(
        min_length=1, description="Candidates in the order they are tried."
    )
    timeouts: TimeoutsSpec = TimeoutsSpec()
    max_attempts: int | None = Field(None, ge=1, le=20)
    on_midstream_failure: MidstreamPolicy | None = None


class PolicySpec(_Spec):
    version: Literal[1] = Field(description="The policy schema version.")
    limits: LimitsSpec = LimitsSpec()
    defaults: DefaultsSpec = DefaultsSpec()
    providers: dict[str, ProviderSpec] = Field(min_length=1)
    routes: dict[str, RouteSpec] = Field(
        min_length=1, description="Keyed by the model name the app asks for."
    )

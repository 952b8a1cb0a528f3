"""Providers, their regions and models in the policy spec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    WithJsonSchema,
    field_validator,
)

from edgeproxy.policy.keys import FROM_SNAPSHOT, At, Prose, key
from edgeproxy.policy.shown import (
    header_names,
    masked_query,
    query_of,
    wire_name,
    without_userinfo,
)
from edgeproxy.policy.spec.base import _AlsoAccepts, _Spec, _url
from edgeproxy.policy.spec.keys import ProviderLimitsSpec
from edgeproxy.snapshot import (
    Candidate,
)
from edgeproxy.wires import UPSTREAM_WIRES

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

"""Keys, limits and budgets (docs/keys.md) and the fleet (docs/fleet.md) in the policy spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    WithJsonSchema,
)

from edgeproxy.policy.keys import At, Prose, key
from edgeproxy.policy.shown import (
    without_userinfo,
)
from edgeproxy.policy.spec.base import _Spec
from edgeproxy.policy.units import Duration
from edgeproxy.snapshot import (
    Candidate,
    Policy,
    Route,
)
from edgeproxy.snapshot.limits import Budget, Limits

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

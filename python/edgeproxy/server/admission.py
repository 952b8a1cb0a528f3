"""Key auth, limits and budgets on the request path (docs/keys.md): the two small steps the
handler and the exchange take, and the process-wide ``Limiter`` they ask.

1. **Auth** (``authenticate``, in ``handler.run_exchange`` before the body is read): when the
   policy turns ``keys.auth`` on, the request's key (``Authorization: Bearer`` or ``x-api-key``)
   must be in the sidecar's key table (``keys.KeyRing``: a dict read, never a store call).
2. **Admission** (``admit``, in the exchange once the plan is made, before any attempt): the
   key's, its team's and the route's RPM, TPM and USD budget are asked of the counters all at
   once (``limits.Counters``: this process's, or the fleet's on Redis). Over a limit: 429 with
   ``Retry-After`` and the limit named, in the client's wire. The provider limits of each
   candidate are asked by the attempt loop itself (``ProviderLimits``), per attempt.
3. **Settling** (``Granted.settle``, when the exchange ends, off the response's path): the TPM
   reservations become the real tokens, the USD reservation the real cost, and the request's
   usage rows are recorded (``keys usage``).

A cached answer costs nothing and takes no limit: the cache is looked up before admission.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edgeproxy.cost import Usage, cost_usd
from edgeproxy.events import KeyAuthenticated, LimitRefused
from edgeproxy.keys import KeyRing, Refused, VirtualKey
from edgeproxy.limits import (
    Admission,
    BudgetAsk,
    Counters,
    RateAsk,
    Settlement,
    Ticket,
    UsageRow,
    Verdict,
    period_bounds,
)
from edgeproxy.limits.local import USD_EPSILON
from edgeproxy.limits.periods import day_name
from edgeproxy.server.ingress import ClientError
from edgeproxy.server.ledger import Ledger
from edgeproxy.server.plan import Plan, answer_room
from edgeproxy.snapshot import Candidate, Limits, Policy, Route
from edgeproxy.telemetry.listener import RequestTelemetry

if TYPE_CHECKING:
    from edgeproxy.server.exchange import Exchange

log = logging.getLogger("edgeproxy.limits")

PRINCIPAL = web.RequestKey("edgeproxy_key", VirtualKey)
LIMIT_HEADER = "x-edgeproxy-limit"

_REFUSALS = {
    "missing": "No API key was given: send a virtual key as `Authorization: Bearer <key>` "
    "(OpenAI clients) or `x-api-key: <key>` (Anthropic clients).",
    "unknown": "The API key is not valid.",
    "revoked": "The API key was revoked.",
    "expired": "The API key has expired.",
}


@dataclass
class Limiter:
    """The process's counters (local, or the fleet's), its key table, and where usage rows go;
    settlements run as background tasks held here."""

    counters: Counters | None = None
    keys: KeyRing | None = None
    record: Callable[[Sequence[UsageRow]], None] | None = None
    wall: Callable[[], float] = time.time
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def settle_later(self, ticket: Ticket, settlement: Settlement) -> None:
        counters = self.counters
        if counters is None:
            return
        task = asyncio.get_running_loop().create_task(counters.settle(ticket, settlement))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a settlement failed", extra={"error": type(task.exception()).__name__})

    async def drain(self) -> None:
        """Wait for the settlements in flight (at a clean stop)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


# -- 1. auth ------------------------------------------------------------------------------


def authenticate(
    request: web.Request, policy: Policy, limiter: Limiter, tel: RequestTelemetry
) -> None:
    """With ``keys.auth`` on: the request's key, or a 401 in the client's wire."""
    if not policy.keys.auth:
        return
    ring = limiter.keys
    if ring is None:  # the server refuses to start like this; a reload cannot get here either
        raise ClientError(
            503, "Key auth is on but no key store is configured.", code="no_key_store"
        )
    try:
        key = ring.authenticate(request.headers)
    except Refused as refused:
        raise ClientError(
            401, _REFUSALS[refused.reason], code="invalid_api_key", type="authentication_error"
        ) from None
    request[PRINCIPAL] = key
    tel.on_event(KeyAuthenticated(key.id, key.name, key.team))


def check_route(key: VirtualKey | None, route: Route) -> None:
    if key is not None and not key.allows(route.name):
        raise ClientError(
            403,
            f"This API key may not use the model {route.name!r}.",
            code="model_not_allowed",
            type="permission_error",
        )


# -- 2. admission -------------------------------------------------------------------------


def _scopes(
    key: VirtualKey | None, policy: Policy, route: Route
) -> list[tuple[str, str, str, Limits]]:
    scopes: list[tuple[str, str, str, Limits]] = []
    if key is not None:
        scopes.append(("key", key.id, f"key {key.name!r}", key.limits))
        if key.team is not None and key.team in policy.teams:
            scopes.append(("team", key.team, f"team {key.team!r}", policy.teams[key.team]))
    scopes.append(("route", route.name, f"route {route.name!r}", route.limits))
    return [s for s in scopes if not s[3].empty]


def worst_cost(
    chain: Sequence[Candidate], answer: Callable[[Candidate], int], prompt: int
) -> float:
    """The most a request can cost: its prompt (written to a provider cache, if that is
    dearer) and its whole answer room (``answer``: ``max_tokens``) on the dearest candidate."""
    worst = 0.0
    for candidate in chain:
        price = candidate.price
        if price is None:
            continue
        written = Usage(0, answer(candidate), 0, prompt)
        plain = Usage(prompt, answer(candidate))
        worst = max(worst, cost_usd(price, written), cost_usd(price, plain))
    return worst


@dataclass(frozen=True, slots=True)
class Asked:
    """What admission needs of a request, whichever endpoint it came in by (a chat exchange,
    ``/v1/embeddings``): its route and key, its prompt's tokens in an encoding (``count``), the
    tokens each candidate may answer with (``answer``), and the ledger its usage is read from."""

    policy: Policy
    route: Route
    key: VirtualKey | None
    count: Callable[[str], Awaitable[int]]
    answer: Callable[[Candidate], int]
    ledger: Ledger
    answer_param: str = "max_tokens"  # what the client lowers when its answer room is too big
    prompt_param: str = "messages"


def chat_asked(exchange: Exchange, request: web.Request) -> Asked:
    body: Mapping[str, Any] = exchange.body
    return Asked(
        exchange.policy,
        exchange.route,
        request.get(PRINCIPAL),
        exchange.prompt.count,
        lambda candidate: answer_room(body, candidate),
        exchange.ledger,
    )


async def admit(exchange: Exchange, request: web.Request, plan: Plan) -> Granted:
    """A chat exchange's admission (``admit_request``)."""
    return await admit_request(exchange.state.limiter, chat_asked(exchange, request), plan.chain)


async def admit_request(limiter: Limiter, asked: Asked, chain: Sequence[Candidate]) -> Granted:
    """The key's, team's and route's limits for this request, or a 429 naming the one hit (a
    400 when the request could never fit one, however long it waited)."""
    key = asked.key
    granted = Granted(asked, limiter)
    counters = limiter.counters
    if counters is None:
        return granted
    scopes = _scopes(key, asked.policy, asked.route)
    if any(limits.tpm or limits.budget for *_, limits in scopes) or _provider_tpm(chain):
        granted.prompt_tokens = await asked.count(chain[0].tokenizer)
    granted.provider = ProviderLimits(asked, granted, counters)
    if not scopes:
        return granted
    room = max(asked.answer(c) for c in chain)
    tokens = granted.prompt_tokens + room
    usd = worst_cost(chain, asked.answer, granted.prompt_tokens)
    wall = limiter.wall()
    rates: list[RateAsk] = []
    budgets: list[BudgetAsk] = []
    for scope, name, label, limits in scopes:
        if limits.rpm is not None:
            rates.append(
                RateAsk(
                    f"{scope}:{name}:rpm",
                    limits.rpm,
                    1,
                    f"{scope}:rpm ({label}: {limits.rpm} requests per minute)",
                )
            )
        if limits.tpm is not None:
            if tokens > limits.tpm:
                raise _never_fits(
                    f"{scope}:tpm",
                    f"This request reserves {tokens} tokens ({granted.prompt_tokens} of prompt, "
                    f"{room} of answer room), more than the whole limit of {label}: "
                    f"{limits.tpm} tokens per minute. It can never be admitted: lower "
                    f"`{asked.answer_param}` (or shorten the prompt).",
                    asked.answer_param if room else asked.prompt_param,
                )
            rates.append(
                RateAsk(
                    f"{scope}:{name}:tpm",
                    limits.tpm,
                    tokens,
                    f"{scope}:tpm ({label}: {limits.tpm} tokens per minute)",
                    tokens=True,
                )
            )
        if limits.budget is not None:
            if limits.budget.usd > 0 and usd > limits.budget.usd + USD_EPSILON:
                raise _never_fits(
                    f"{scope}:budget",
                    f"This request may cost up to {usd:.6f} USD (its prompt and its whole "
                    f"answer room on the dearest model of the route), more than the whole "
                    f"budget of {label}: {limits.budget}. It can never be admitted: lower "
                    f"`{asked.answer_param}` (or shorten the prompt).",
                    asked.answer_param if room else asked.prompt_param,
                )
            start, end, period_id = period_bounds(limits.budget.period, wall)
            budgets.append(
                BudgetAsk(
                    f"{scope}:{name}",
                    scope,
                    name,
                    limits.budget.usd,
                    usd,
                    limits.budget.period,
                    period_id,
                    start,
                    end,
                    f"{scope}:budget ({label}: {limits.budget} in {period_id})",
                )
            )
    admission = Admission(tuple(rates), tuple(budgets), hold=asked.route.timeouts.total + 60)
    verdict = await counters.admit(admission)
    if not verdict.admitted:
        raise _refused(verdict, asked.ledger)
    granted.ticket = verdict.ticket
    return granted


def _provider_tpm(chain: Sequence[Candidate]) -> bool:
    return any(c.limits.tpm is not None for c in chain)


def _never_fits(limit: str, message: str, param: str) -> ClientError:
    """A request above the whole of a limit: no wait would let it in, so not a 429 (a client
    that honours ``Retry-After`` would retry it forever) but a 400 saying what to lower."""
    return ClientError(
        400,
        message,
        code="request_exceeds_limit",
        param=param,
        type="invalid_request_error",
        headers={LIMIT_HEADER: limit, "x-should-retry": "false"},
    )


def _refused(verdict: Verdict, ledger: Ledger) -> ClientError:
    hit = verdict.hit
    assert hit is not None
    wait = max(1, round(verdict.retry_after + 0.499))
    limit = hit.label.split(" ", 1)[0]
    ledger.on_event(LimitRefused(limit, verdict.retry_after))
    what = "budget is spent" if isinstance(hit, BudgetAsk) else "rate limit is reached"
    return ClientError(
        429,
        f"The {what}: {hit.label}. Retry after {wait} s.",
        code="budget_exceeded" if isinstance(hit, BudgetAsk) else "rate_limit_exceeded",
        type="rate_limit_error",
        headers={"Retry-After": str(wait), LIMIT_HEADER: limit, "x-should-retry": "false"},
    )


class ProviderLimits:
    """The attempt loop's ``CandidateLimits``: a candidate's own RPM/TPM (``limits`` of its
    model), asked per attempt; the reservations are settled with the exchange's."""

    def __init__(self, asked: Asked, granted: Granted, counters: Counters) -> None:
        self._asked = asked
        self._granted = granted
        self._counters = counters

    async def take(self, candidate: Candidate) -> tuple[str, float] | None:
        limits = candidate.limits
        if limits.rpm is None and limits.tpm is None:
            return None
        rates: list[RateAsk] = []
        key = candidate.key
        if limits.rpm is not None:
            rates.append(
                RateAsk(f"candidate:{key}:rpm", limits.rpm, 1, f"provider rpm {limits.rpm}")
            )
        if limits.tpm is not None:
            prompt = await self._asked.count(candidate.tokenizer)
            tokens = prompt + self._asked.answer(candidate)
            if tokens > limits.tpm:
                return (
                    f"provider tpm {limits.tpm} is less than this request's {tokens} tokens "
                    "(prompt plus max_tokens)",
                    math.inf,
                )
            rates.append(
                RateAsk(
                    f"candidate:{key}:tpm",
                    limits.tpm,
                    tokens,
                    f"provider tpm {limits.tpm}",
                    tokens=True,
                )
            )
        verdict = await self._counters.admit(Admission(tuple(rates)))
        if verdict.admitted:
            assert verdict.ticket is not None
            self._granted.provider_tickets.append((candidate, verdict.ticket))
            return None
        assert verdict.hit is not None
        wait = verdict.retry_after
        return f"{verdict.hit.label} reached (room again in {wait:.1f}s)", wait


# -- 3. settling --------------------------------------------------------------------------


@dataclass
class Granted:
    """What the exchange holds until it ends: its tickets, settled once with its usage."""

    asked: Asked
    limiter: Limiter
    ticket: Ticket | None = None
    prompt_tokens: int = 0
    provider: ProviderLimits | None = None
    provider_tickets: list[tuple[Candidate, Ticket]] = field(default_factory=list)
    settled: bool = False

    def settle(self, ledger: Ledger) -> None:
        if self.settled:
            return
        self.settled = True
        limiter = self.limiter
        if self.ticket is None and limiter.record is None and not self.provider_tickets:
            return  # no key, no limit, no usage store: nothing to settle (the common sidecar)
        rows = usage_rows(ledger, self.asked.key, self.asked.route.name, limiter.wall())
        tokens = sum(e.input_tokens + e.output_tokens for e in ledger.entries.values())
        if self.ticket is not None:
            limiter.settle_later(self.ticket, Settlement(tokens, ledger.cost, rows))
        elif limiter.record is not None:
            limiter.record(rows)
        per_candidate: dict[str, int] = {}
        for entry in ledger.entries.values():
            key = entry.candidate.key
            per_candidate[key] = (
                per_candidate.get(key, 0) + entry.input_tokens + entry.output_tokens
            )
        for candidate, ticket in self.provider_tickets:
            used = per_candidate.pop(candidate.key, 0)  # the first ticket takes them all
            limiter.settle_later(ticket, Settlement(used, 0.0))


def usage_rows(ledger: Ledger, key: VirtualKey | None, route: str, wall: float) -> list[UsageRow]:
    """One row per model the request's attempts went to; the request counted once, on the model
    that answered (else the last one tried); a compaction's summary cost on that row too."""
    entries = list(ledger.entries.values())
    answered = next((e for e in reversed(entries) if e.outcome == "ok"), None)
    home = answered or (entries[-1] if entries else None)
    by_model: dict[str, list[float]] = {}
    for entry in entries:
        row = by_model.setdefault(entry.candidate.model, [0, 0, 0, 0.0])
        row[1] += entry.input_tokens
        row[2] += entry.output_tokens
        row[3] += entry.cost
    home_model = home.candidate.model if home is not None else ""
    row = by_model.setdefault(home_model, [0, 0, 0, 0.0])
    row[0] = 1
    row[3] += ledger.side_cost
    day = day_name(wall)
    key_id = key.id if key is not None else ""
    team = (key.team or "") if key is not None else ""
    return [
        UsageRow(day, key_id, team, route, model, int(r[0]), int(r[1]), int(r[2]), float(r[3]))
        for model, r in by_model.items()
    ]

"""The plan's context step (docs/context.md): compaction's check and cache-affinity's order.

After ``plan.plan_candidates``: the candidates marked for compaction are checked (those no
strategy can fit are skipped, saying by how much) and the exchange's attempter gets the
``ContextFit`` that builds their compacted bodies; then, on a route with ``affinity``, each group
of equivalent candidates is ordered for this request's prefix, and the member put first is
leased (its in-flight count, for bounded load) until the exchange ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from edgeproxy.cache.control import tenant_scope
from edgeproxy.context.turns import prefix_hash
from edgeproxy.events import AffinityRouted
from edgeproxy.routing.affinity import Lease, order
from edgeproxy.server.compaction import ContextFit
from edgeproxy.server.plan import Plan

if TYPE_CHECKING:
    from edgeproxy.server.exchange import Exchange


async def context_plan(exchange: Exchange, plan: Plan, headers: Mapping[str, str]) -> Plan:
    route = exchange.route
    if plan.compact:
        tenant = tenant_scope(headers)  # summaries are cached per tenant; only then is it asked
        fit = ContextFit(
            state=exchange.state,
            route=route,
            body=exchange.attempter.body,
            body_bytes=len(exchange.raw),
            ledger=exchange.ledger,
            deadline=exchange.deadline,
            rid=exchange.rid,
            tenant=tenant,
        )
        plan = await fit.check(plan)
        exchange.attempter.fit = fit
    if route.affinity is not None and len(plan.chain) > 1:
        plan = affine(exchange, plan)
    return plan


def affine(exchange: Exchange, plan: Plan) -> Plan:
    """Each group of equivalent candidates in this request's order (``routing.affinity``)."""
    settings = exchange.route.affinity
    assert settings is not None
    state = exchange.state
    table = state.context.affinity
    breakers = state.engine.breakers
    prefix = b""
    if settings.spread == "prefix":
        prefix = prefix_hash(exchange.attempter.body, settings.prefix_messages)
    chain, decisions = order(
        plan.chain, settings, prefix, table, lambda key: breakers.get(key).state != "open"
    )
    for decision in decisions:
        lease: Lease = table.lease(decision.chosen)
        exchange.leases.append(lease)
        exchange.ledger.on_event(
            AffinityRouted(decision.group, decision.home, decision.chosen, decision.outcome)
        )
    return Plan(chain, plan.skipped, plan.refused_param, plan.compact, plan.refused_overflow)

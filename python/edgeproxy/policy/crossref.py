"""Chain entries checked against the providers by name, on the raw document.

``compile.py`` checks every chain entry against the validated spec, but it only runs once the
schema has passed. When the schema fails (a misspelt key, a bad value), this check runs on the
raw document instead, so a typo in a provider, region or model name is reported in the same pass
as the schema's problems instead of a second round after those are fixed. Entries the schema
already reported (a malformed ``provider/region/model``), and providers too broken to read
names from, are left alone: a problem is reported once.
"""

from __future__ import annotations

from typing import Any

from edgeproxy.errors import PolicyProblem
from edgeproxy.policy.compile import _hint
from edgeproxy.policy.shown import quoted_name
from edgeproxy.policy.yamlsource import LocatedDocument, format_path


def unknown_references(doc: LocatedDocument, reported: list[PolicyProblem]) -> list[PolicyProblem]:
    """A problem for each chain entry naming a provider, model or region that the document
    does not declare (the same messages as ``compile.py``)."""
    data = doc.data if isinstance(doc.data, dict) else {}
    providers = data.get("providers")
    routes = data.get("routes")
    if not isinstance(providers, dict) or not isinstance(routes, dict):
        return []
    taken = {p.path for p in reported}
    problems: list[PolicyProblem] = []
    for route_name, route in routes.items():
        chain = route.get("chain") if isinstance(route, dict) else None
        if not isinstance(chain, list):
            continue
        for i, entry in enumerate(chain):
            path = ("routes", route_name, "chain", i)
            where = format_path(path)
            if any(p == where or p.startswith((where + ".", where + "[")) for p in taken):
                continue
            names = _names(entry)
            if names is not None:
                message = _unknown(providers, *names)
                if message is not None:
                    problems.append(doc.problem(path, message))
    return problems


def _names(entry: Any) -> tuple[str, str | None, str] | None:
    """(provider, region or None for every region, model), or None if the entry is malformed
    (the schema reports that)."""
    if isinstance(entry, str):
        parts = entry.split("/", 2)
        if len(parts) != 3 or not all(parts):
            return None
        provider, region, model = parts
        return provider, None if region == "*" else region, model
    if not isinstance(entry, dict):
        return None
    named, where, served = entry.get("provider"), entry.get("region"), entry.get("model")
    if not isinstance(named, str) or not isinstance(served, str):
        return None
    if where is not None and not isinstance(where, str):
        return None
    return named, None if where in (None, "*") else where, served


def _unknown(
    providers: dict[Any, Any], provider: str, region: str | None, model: str
) -> str | None:
    spec = providers.get(provider)
    if spec is None:
        return f"unknown provider {quoted_name(provider)} {_hint(provider, map(str, providers))}"
    if not isinstance(spec, dict):
        return None
    models = spec.get("models")
    if isinstance(models, dict) and model not in models:
        return (
            f"provider {provider!r} has no model {quoted_name(model)} "
            f"{_hint(model, map(str, models))}"
        )
    regions = spec.get("regions")
    if region is not None and isinstance(regions, dict) and region not in regions:
        return (
            f"provider {provider!r} has no region {quoted_name(region)} "
            f"{_hint(region, map(str, regions))}"
        )
    return None

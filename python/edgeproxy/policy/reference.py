"""The key reference tables of docs/policies.md, generated from the spec (``catalog.py``).

``edgeproxy policy docs`` prints them; ``edgeproxy policy docs --update docs/policies.md``
rewrites each block between ``<!-- BEGIN GENERATED: NAME -->`` and ``<!-- END GENERATED: NAME
-->`` in place, and a test fails when the checked-in file is stale. The prose around the tables
is written by hand; every key's type, default and doc line come from its one declaration.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from edgeproxy.policy.catalog import KeyInfo, fields_of, strip
from edgeproxy.policy.keys import NOT_GIVEN, Prose
from edgeproxy.policy.schema import (
    AffinitySpec,
    AutoObjectiveSpec,
    AutoShadowSpec,
    AutoSpec,
    AutoTaskSpec,
    CacheSpec,
    CandidateSpec,
    ContextSpec,
    DefaultsSpec,
    EvalScheduleSpec,
    EvalsSpec,
    FleetSpec,
    HedgeSpec,
    KeysSpec,
    LimitsSpec,
    ModelSpec,
    PolicySpec,
    PromptCacheSpec,
    ProviderLimitsSpec,
    ProviderSpec,
    RangeSpec,
    RegionSpec,
    RouteLimitsSpec,
    RouteSpec,
    TaskRuleSpec,
    TasksSpec,
    TeamSpec,
    TelemetrySpec,
    TimeoutsSpec,
)
from edgeproxy.policy.units import format_duration, format_size


@dataclass(frozen=True)
class Table:
    name: str
    model: type[BaseModel]
    only: tuple[str, ...] = ()  # these fields of ``model`` (all when empty)
    flatten: tuple[str, ...] = ()  # blocks whose keys are rows here, as ``block.key``


TABLES = (
    Table("top", PolicySpec),
    Table("limits", LimitsSpec),
    Table(
        "resilience",
        PolicySpec,
        only=("outlier_detection", "retry_policy", "retry_budget", "health_check"),
        flatten=("outlier_detection", "retry_policy", "retry_budget", "health_check"),
    ),
    Table("telemetry", TelemetrySpec),
    Table("evals", EvalsSpec),
    Table("evals-schedule", EvalScheduleSpec),
    Table("defaults", DefaultsSpec),
    Table("timeouts", TimeoutsSpec),
    Table("cache", CacheSpec),
    Table("providers", ProviderSpec, flatten=("health_check",)),
    Table("regions", RegionSpec),
    Table("models", ModelSpec, flatten=("price",)),
    Table("routes", RouteSpec),
    Table("hedge", HedgeSpec),
    Table("context", ContextSpec),
    Table("prompt-cache", PromptCacheSpec),
    Table("affinity", AffinitySpec),
    Table("candidate", CandidateSpec),
    Table("auto", AutoSpec, flatten=("ramp", "rollback")),
    Table("auto-objective", AutoObjectiveSpec),
    Table("auto-task", AutoTaskSpec, only=("pin",)),
    Table("auto-shadow", AutoShadowSpec),
    Table("tasks", TasksSpec, flatten=("classifier",)),
    Table("task-rules", TaskRuleSpec),
    Table("task-range", RangeSpec),
    Table("keys", KeysSpec),
    Table("teams", TeamSpec),
    Table("route-limits", RouteLimitsSpec),
    Table("provider-limits", ProviderLimitsSpec),
    Table("fleet", FleetSpec),
)


_TO = "\u2013"  # an en dash, as the docs write ranges


def _number(value: float) -> str:
    return f"{value:g}"


def _label(model: type[BaseModel]) -> str:
    return model.__name__.removesuffix("Spec").lower()


def type_text(info: KeyInfo) -> str:
    if info.key is not None and info.key.type_text:
        return info.key.type_text
    bounds = info.bounds()
    if info.unit == "percent":
        return f"percent 0{_TO}100"
    if info.unit == "seconds":
        return "duration"
    if info.unit == "bytes":
        return "size"
    hint = strip(info.hint)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return ", ".join(f"`{a}`" for a in typing.get_args(hint))
    if origin is dict:
        inner = strip(typing.get_args(hint)[1])
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return f"mapping name → {_label(inner)}"
        return "mapping string → string"
    if origin is list:
        inner = strip(typing.get_args(hint)[0])
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return f"list of {_label(inner)}s"
        return "list of strings"
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return "mapping"
    base = {bool: "bool", int: "int", float: "number", str: "string"}.get(hint, str(hint))
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if low is not None and high is not None:
        return f"{base} {_number(low)}{_TO}{_number(high)}"
    if "ge" in bounds:
        return f"{base} ≥ {_number(bounds['ge'])}"
    if "gt" in bounds:
        return f"{base} > {_number(bounds['gt'])}"
    return base


def default_text(info: KeyInfo) -> str:
    if info.required:
        return "required, ≥1" if "min_length" in info.bounds() else "required"
    if info.key is not None and info.key.inherits:
        return f"`{info.key.inherits}`"
    if info.block is not None and typing.get_origin(strip(info.hint)) not in (dict, list):
        return "none" if info.optional else "see below"
    return format_default(info, info.documented_default())


def format_default(info: KeyInfo, value: Any) -> str:
    if value is NOT_GIVEN or value is None:
        return "none"
    if isinstance(value, Prose):
        return value.text
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, int | float):
        if info.unit == "seconds":
            return f"`{format_duration(value)}`"
        if info.unit == "bytes":
            return f"`{format_size(int(value))}`"
        return f"`{_number(value)}`"
    if value == {}:
        return "`{}`"
    if isinstance(value, list | tuple):
        return f"`[{', '.join(str(v) for v in value)}]`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(table: Table) -> list[KeyInfo]:
    rows: list[KeyInfo] = []
    for info in fields_of(table.model):
        if table.only and info.name not in table.only:
            continue
        if info.name in table.flatten and info.block is not None:
            if info.optional:  # "price: none" says something the rows under it do not
                rows.append(info)
            rows.extend(fields_of(info.block, (info.name,)))
        else:
            rows.append(info)
    return rows


def render_table(table: Table) -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for info in _rows(table):
        doc = info.key.doc if info.key is not None else (info.field.description or "")
        cells = (f"`{'.'.join(info.path)}`", type_text(info), default_text(info), doc)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN GENERATED: {name} (edgeproxy policy docs --update docs/policies.md) -->",
        f"<!-- END GENERATED: {name} -->",
    )


def render_all() -> str:
    """Every table, each between its markers (what ``edgeproxy policy docs`` prints)."""
    out = []
    for table in TABLES:
        begin, end = _markers(table.name)
        out.append(f"{begin}\n{render_table(table)}{end}\n")
    return "\n".join(out)


def update(markdown: str) -> str:
    """``markdown`` with every generated block replaced by its current table; ValueError if a
    table's markers are missing."""
    for table in TABLES:
        begin, end = _markers(table.name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
        found = pattern.search(markdown)
        if found is None:
            raise ValueError(f"no generated block {table.name!r} (markers: {begin} ... {end})")
        replacement = f"{begin}\n{render_table(table)}{end}"
        markdown = markdown[: found.start()] + replacement + markdown[found.end() :]
    return markdown

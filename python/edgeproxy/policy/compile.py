"""Turn a validated ``PolicySpec`` into the frozen ``Policy`` snapshot.

Resolves defaults, expands ``provider/*/model`` into every region, checks that every chain entry
names something that exists, and reads provider keys (from the document or a file). Settings are
built from each key's declared place in the snapshot (``keys.At``): only what the policy wrote
is passed, so every default comes from the snapshot's dataclasses, written once there.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path as FsPath
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from edgeproxy.policy.catalog import leaf_keys
from edgeproxy.policy.files import FileRefused, read_key_file
from edgeproxy.policy.keys import At, Key
from edgeproxy.policy.schema import (
    AffinitySpec,
    AutoSpec,
    CacheSpec,
    CandidateSpec,
    ContextSpec,
    PolicySpec,
    PriceSpec,
    PromptCacheSpec,
    ProviderLimitsSpec,
    ProviderSpec,
    RouteLimitsSpec,
    RouteSpec,
    TeamSpec,
    TimeoutsSpec,
)
from edgeproxy.policy.shown import quoted_name
from edgeproxy.policy.tasks import compile_tasks
from edgeproxy.policy.yamlsource import LocatedDocument, Path, format_path
from edgeproxy.snapshot import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_ON_MIDSTREAM_FAILURE,
    DEFAULT_TASK,
    AffinitySettings,
    AutoObjective,
    AutoSettings,
    Budget,
    CacheSettings,
    Candidate,
    ContextSettings,
    EvalSettings,
    Excluded,
    Hedge,
    Limits,
    Policy,
    Price,
    PromptCacheSettings,
    RampSettings,
    RollbackSettings,
    Route,
    ScheduleSettings,
    ShadowSettings,
    Timeouts,
)
from edgeproxy.tokens import encoding_for_model
from edgeproxy.upstreams.http1 import header_problem
from edgeproxy.wires import upstream_wire


def content_version(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


_DEFAULT_MAX_OUTPUT_TOKENS: int = At(Candidate, "max_output_tokens").default()


def written(block: BaseModel) -> dict[str, Any]:
    """The keys written in one spec block, by the snapshot attribute each sets (unset ones are
    left out, so the dataclass default, or the inherited value, stays)."""
    out = {}
    for name, field in type(block).model_fields.items():
        value = getattr(block, name)
        declared = field.json_schema_extra
        if value is not None and isinstance(declared, Key) and declared.at is not None:
            out[declared.at.path.rpartition(".")[2]] = value
    return out


def _merge_timeouts(base: Timeouts, spec: TimeoutsSpec) -> Timeouts:
    return replace(base, **written(spec))


def _check_headers(name: str, spec: ProviderSpec, doc: LocatedDocument) -> None:
    """Problems with a provider's extra headers (their values are never quoted: secrets)."""
    keyed = spec.api_key is not None or spec.api_key_file is not None
    for header, value in spec.headers.items():
        where = ("providers", name, "headers", header)
        problem = header_problem(header, value)
        if problem is None and keyed and header.lower() == spec.auth_header:
            problem = f"{header} would be sent twice: the provider's key already sets it"
        if problem is not None:
            doc.problems.append(doc.problem(where, problem))


def _provider_headers(
    name: str, spec: ProviderSpec, doc: LocatedDocument, base_dir: FsPath | None
) -> dict[str, str]:
    _check_headers(name, spec, doc)
    key = spec.api_key
    if spec.api_key_file is not None:
        if key is not None:
            doc.problems.append(
                doc.problem(
                    ("providers", name, "api_key_file"), "set api_key or api_key_file, not both"
                )
            )
        path = FsPath(spec.api_key_file)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            key = read_key_file(path)
        except FileRefused as exc:
            problem = doc.problem(("providers", name, "api_key_file"), str(exc))
            # A key file that is missing in CI is a warning when linting; one that is not a
            # file, too large or hangs is always an error (no reading can make it work).
            missing = doc.missing_secrets == "warn" and exc.missing
            (doc.warnings if missing else doc.problems).append(problem)
    if key and header_problem(spec.auth_header, key) is not None:
        doc.problems.append(
            doc.problem(
                ("providers", name, "api_key"),
                "the key cannot be sent as a header value (a line break, NUL or non-latin-1 text)",
            )
        )
    headers = dict(spec.headers)
    if key and spec.auth_header == "authorization":
        headers["Authorization"] = f"Bearer {key}"
    elif key and spec.auth_header == "api-key":
        headers["api-key"] = key
    return headers


def compile_policy(
    spec: PolicySpec, doc: LocatedDocument, text: str, base_dir: FsPath | None = None
) -> Policy | None:
    """Build the snapshot; append to ``doc.problems`` and return None if anything is wrong."""
    default_timeouts = _merge_timeouts(Timeouts(), spec.defaults.timeouts)
    headers_by_provider = {
        name: _provider_headers(name, p, doc, base_dir) for name, p in spec.providers.items()
    }
    routes: dict[str, Route] = {}
    warnings: list[str] = [str(w) for w in doc.warnings]
    pool = _eval_pool(spec, headers_by_provider, doc)
    for route_name, route_spec in spec.routes.items():
        if route_spec.chain or route_spec.auto is None:
            chain, excluded = _resolve_chain(route_name, route_spec, spec, headers_by_provider, doc)
        else:  # an auto route without a chain of its own
            chain, excluded = [], []
        context = _context(route_name, route_spec.context, doc)
        route = Route(
            name=route_name,
            aliases=tuple(route_spec.aliases),
            chain=tuple(chain),
            timeouts=_merge_timeouts(default_timeouts, route_spec.timeouts),
            max_attempts=route_spec.max_attempts
            or spec.defaults.max_attempts
            or DEFAULT_MAX_ATTEMPTS,
            on_midstream_failure=route_spec.on_midstream_failure
            or spec.defaults.on_midstream_failure
            or DEFAULT_ON_MIDSTREAM_FAILURE,
            require_tags=MappingProxyType(dict(route_spec.require_tags)),
            min_context_window=route_spec.min_context_window,
            excluded=tuple(excluded),
            hedge=_hedge(route_name, route_spec, doc),
            cache=_cache(route_name, route_spec.cache or spec.defaults.cache, doc),
            default_task=route_spec.default_task or spec.defaults.default_task or DEFAULT_TASK,
            task_chains=_task_chains(route_name, route_spec, spec, headers_by_provider, doc),
            auto=_auto(route_name, route_spec, spec, headers_by_provider, pool, doc, warnings),
            context=context,
            summarizers=_summarizers(route_name, context, spec, headers_by_provider, doc),
            prompt_cache=_prompt_cache(route_name, route_spec.prompt_cache, doc),
            affinity=_affinity(route_name, route_spec.affinity, doc),
            limits=_limits(("routes", route_name, "limits"), route_spec.limits, doc),
        )
        for i, name in enumerate((route_name, *route_spec.aliases)):
            if name in routes:
                path = (
                    ("routes", route_name) if i == 0 else ("routes", route_name, "aliases", i - 1)
                )
                doc.problems.append(
                    doc.problem(
                        path,
                        f"the model name {quoted_name(name)} is already served by route "
                        f"{quoted_name(routes[name].name)}",
                    )
                )
            else:
                routes[name] = route
        _check_dimensions(("routes", route_name, "chain"), chain, doc)
        for task, task_chain in route.task_chains.items():
            _check_dimensions(("routes", route_name, "tasks", task, "chain"), task_chain, doc)
        wires = sorted({c.wire.name for c in chain})
        embeddings = any(c.dimensions is not None for c in chain)  # no chat features to lack
        if len(wires) > 1 and not embeddings:
            line, _ = doc.locate(("routes", route_name, "chain"))
            warnings.append(
                f"{doc.source}:{line}: {format_path(('routes', route_name, 'chain'))}: mixes "
                f"wires ({', '.join(wires)}): requests using a feature another wire lacks (n > 1, "
                "logprobs, extended thinking, ...) skip the candidates that cannot carry them "
                "(what each wire carries: docs/anthropic.md, docs/gemini.md, docs/responses.md)"
            )
        if chain and len({c.provider for c in chain}) == 1:
            line, _ = doc.locate(("routes", route_name, "chain"))
            warnings.append(
                f"{doc.source}:{line}: {format_path(('routes', route_name, 'chain'))}: every candidate "
                f"is on provider "
                f"{chain[0].provider!r}: a provider-wide outage has no fallback"
            )
    settings = _policy_settings(spec, doc)
    if spec.keys.auth and spec.keys.store is None and spec.fleet.redis is None:
        line, _ = doc.locate(("keys", "auth"))
        warnings.append(
            f"{doc.source}:{line}: keys.auth: no keys.store and no fleet.redis: `edgeproxy serve` "
            "refuses to start unless EDGEPROXY_FLEET_REDIS names the fleet's Redis (docs/keys.md)"
        )
    tasks = compile_tasks(spec, doc, base_dir)
    warnings.extend(_scorecard_warnings(spec, doc, base_dir))
    if doc.problems or settings is None:
        return None
    evals = settings.get("evals")
    settings["evals"] = replace(
        evals if isinstance(evals, EvalSettings) else EvalSettings(), pool=pool
    )
    return Policy(
        source=doc.source,
        version=content_version(text),
        routes=MappingProxyType(routes),
        route_names=tuple(spec.routes),
        warnings=tuple(warnings),
        tasks=tasks,
        **{"max_body_bytes": DEFAULT_MAX_BODY_BYTES, **settings},  # type: ignore[arg-type]
    )


def _task_chains(
    route_name: str,
    route: RouteSpec,
    spec: PolicySpec,
    headers_by_provider: dict[str, dict[str, str]],
    doc: LocatedDocument,
) -> Mapping[str, tuple[Candidate, ...]]:
    """A route's per-task chains, each resolved like the route's own (its residency and
    context-window constraints included); a task must be one ``tasks.categories`` declares."""
    known = {DEFAULT_TASK, *spec.tasks.categories}
    chains: dict[str, tuple[Candidate, ...]] = {}
    for task, task_spec in route.tasks.items():
        where: Path = ("routes", route_name, "tasks", task)
        if task not in known:
            doc.problems.append(
                doc.problem(
                    where,
                    f"task {quoted_name(task)} is not one of tasks.categories "
                    f"{_hint(task, sorted(known))}",
                )
            )
            continue

        def at(i: int, where: Path = where) -> Path:
            return (*where, "chain", i)

        written = route.model_copy(update={"chain": task_spec.chain})
        chain, _ = _resolve_chain(route_name, written, spec, headers_by_provider, doc, at)
        chains[task] = tuple(chain)
    return MappingProxyType(chains)


def _auto(
    route_name: str,
    route: RouteSpec,
    spec: PolicySpec,
    headers_by_provider: dict[str, dict[str, str]],
    eval_pool: Mapping[str, Candidate],
    doc: LocatedDocument,
    warnings: list[str],
) -> AutoSettings | None:
    """An ``auto`` route's settings: its pool (written, else ``evals.candidates``) compiled
    under the route's constraints, each task's objective resolved, pins compiled like chain
    entries, percentages as ratios (docs/auto.md)."""
    auto = route.auto
    if auto is None:
        return None
    where: Path = ("routes", route_name, "auto")
    excluded: list[Excluded] = []
    if auto.pool is not None:
        if not auto.pool:
            doc.problems.append(doc.problem((*where, "pool"), "the pool is empty"))
            return None

        def in_pool(i: int) -> Path:
            return (*where, "pool", i)

        written_pool = route.model_copy(update={"chain": auto.pool})
        pool, _ = _resolve_chain(route_name, written_pool, spec, headers_by_provider, doc, in_pool)
    else:
        pool, excluded = _default_pool(route, spec, eval_pool)
        if not pool:
            line, _ = doc.locate(where)
            warnings.append(
                f"{doc.source}:{line}: {format_path(where)}: no pool: evals.candidates is empty "
                "or none of them meets the route's constraints; only pins and the route's "
                "chain can serve"
            )
    known = {DEFAULT_TASK, *spec.tasks.categories}
    base = _objective(AutoObjective(), written(auto.objective), (*where, "objective"), doc)
    objectives: dict[str, AutoObjective] = {}
    pins: dict[str, Candidate] = {}
    for task, task_spec in auto.tasks.items():
        at: Path = (*where, "tasks", task)
        if task not in known:
            doc.problems.append(
                doc.problem(
                    at,
                    f"task {quoted_name(task)} is not one of tasks.categories "
                    f"{_hint(task, sorted(known))}",
                )
            )
            continue
        fields = {
            f.name: getattr(task_spec, f.name)
            for f in dataclasses.fields(AutoObjective)
            if getattr(task_spec, f.name) is not None
        }
        objectives[task] = _objective(base, fields, at, doc)
        if task_spec.pin is not None:
            entry = CandidateSpec.model_validate(_candidate_parts(task_spec.pin))

            def pinned(_: int, at: Path = at) -> Path:
                return (*at, "pin")

            written_pin = route.model_copy(update={"chain": [entry]})
            chain, _ = _resolve_chain(
                route_name, written_pin, spec, headers_by_provider, doc, pinned
            )
            if chain:
                pins[task] = chain[0]
    return _auto_settings(auto, tuple(pool), base, objectives, pins, excluded, where, doc)


def _auto_settings(
    auto: AutoSpec,
    pool: tuple[Candidate, ...],
    base: AutoObjective,
    objectives: dict[str, AutoObjective],
    pins: dict[str, Candidate],
    excluded: list[Excluded],
    where: Path,
    doc: LocatedDocument,
) -> AutoSettings | None:
    try:
        given_ramp = written(auto.ramp)
        if auto.ramp.steps is not None:
            given_ramp["steps"] = tuple(step / 100 for step in auto.ramp.steps)
        ramp = RampSettings(**given_ramp)
    except ValueError as exc:
        doc.problems.append(doc.problem((*where, "ramp"), str(exc)))
        return None
    try:
        rollback = RollbackSettings(**_ratios(auto.rollback))
    except ValueError as exc:
        doc.problems.append(doc.problem((*where, "rollback"), str(exc)))
        return None
    shadow = None
    if auto.shadow is not None:
        try:
            shadow = ShadowSettings(**_ratios(auto.shadow))
        except ValueError as exc:
            doc.problems.append(doc.problem((*where, "shadow"), str(exc)))
            return None
    given = _ratios(auto)
    try:
        return AutoSettings(
            pool=pool,
            objective=base,
            tasks=MappingProxyType(objectives),
            pins=MappingProxyType(pins),
            ramp=ramp,
            rollback=rollback,
            shadow=shadow,
            excluded=tuple(excluded),
            **given,
        )
    except ValueError as exc:
        doc.problems.append(doc.problem(where, str(exc)))
        return None


def _ratios(block: BaseModel) -> dict[str, Any]:
    """``written(block)`` with its percentage keys as ratios."""
    out = {}
    for name, field in type(block).model_fields.items():
        value = getattr(block, name)
        declared = field.json_schema_extra
        if value is None or not isinstance(declared, Key) or declared.at is None:
            continue
        if isinstance(value, BaseModel | list | dict):
            continue
        out[declared.at.path.rpartition(".")[2]] = value / 100 if declared.percent else value
    return out


def _objective(
    base: AutoObjective, fields: dict[str, Any], where: Path, doc: LocatedDocument
) -> AutoObjective:
    try:
        return replace(base, **fields)
    except (ValueError, TypeError) as exc:
        doc.problems.append(doc.problem(where, str(exc)))
        return base


def _candidate_parts(key: str) -> dict[str, str]:
    provider, region, model = key.split("/", 2)
    return {"provider": provider, "region": region, "model": model}


def _default_pool(
    route: RouteSpec, spec: PolicySpec, eval_pool: Mapping[str, Candidate]
) -> tuple[list[Candidate], list[Excluded]]:
    """``evals.candidates`` (not the judge) that meet the route's residency and context-window
    constraints; the others are excluded with the reason (an SRE did not write them for this
    route, so they are not errors)."""
    pool: list[Candidate] = []
    excluded: list[Excluded] = []
    for name in dict.fromkeys(spec.evals.candidates):
        candidate = eval_pool.get(name)
        if candidate is None:
            continue  # reported where evals.candidates is compiled
        mismatch = tag_mismatch(route.require_tags, candidate.tags)
        window = candidate.context_window
        if mismatch:
            excluded.append(Excluded(name, f"residency: region {candidate.region!r} {mismatch}"))
        elif route.min_context_window is not None and (
            window is None or window < route.min_context_window
        ):
            excluded.append(
                Excluded(
                    name,
                    f"context window {window or 'undeclared'} < min_context_window "
                    f"{route.min_context_window}",
                )
            )
        else:
            pool.append(candidate)
    return pool, excluded


def _scorecard_warnings(
    spec: PolicySpec, doc: LocatedDocument, base_dir: FsPath | None
) -> list[str]:
    """An ``auto`` route with no scorecard to read, or a schedule whose scorecards the route
    would never read."""
    if not any(r.auto is not None for r in spec.routes.values()):
        return []
    out = []
    patterns = spec.evals.scorecards
    line, _ = doc.locate(("evals", "scorecards"))
    if not patterns:
        out.append(
            f"{doc.source}:{line}: evals.scorecards: empty, so auto routes have no evidence: "
            "they serve only pins and their chains (docs/auto.md)"
        )
        return out
    schedule = spec.evals.schedule
    if schedule.out is not None or schedule.every is not None:  # the policy plans a schedule
        scheduled = schedule.out or ScheduleSettings().out
        sample = scheduled.replace("{suite}", spec.evals.suite or "suite").replace(
            "{date}", "20250101T000000Z"
        )
        if not any(
            fnmatch.fnmatch(_normal(sample, base_dir), _normal(p, base_dir)) for p in patterns
        ):
            out.append(
                f"{doc.source}:{line}: evals.scorecards: no entry matches where "
                f"evals.schedule.out writes ({scheduled}): auto would not read scheduled evals"
            )
    return out


def _normal(path: str, base_dir: FsPath | None) -> str:
    """A path as the proxy reads it: relative ones from the policy's directory."""
    written = FsPath(path)
    if base_dir is not None and not written.is_absolute():
        written = base_dir / written
    return str(written).removeprefix("./")


def _eval_pool(
    spec: PolicySpec, headers_by_provider: dict[str, dict[str, str]], doc: LocatedDocument
) -> MappingProxyType[str, Candidate]:
    """``evals.judge`` and ``evals.candidates`` compiled like chain entries (so an eval sends to
    them exactly as the proxy would), by candidate key."""
    pool: dict[str, Candidate] = {}
    entries: list[tuple[str, Path]] = [
        (name, ("evals", "candidates", i)) for i, name in enumerate(spec.evals.candidates)
    ]
    if spec.evals.judge is not None:
        entries.append((spec.evals.judge, ("evals", "judge")))
    for name, path in entries:

        def at(_: int, path: Path = path) -> Path:
            return path

        chain, _ = _resolve_chain(
            "evals", RouteSpec.model_validate({"chain": [name]}), spec, headers_by_provider, doc, at
        )
        pool.update((c.key, c) for c in chain)
    return MappingProxyType(pool)


def _spec_value(spec: BaseModel, path: Path) -> Any:
    value: Any = spec
    for part in path:
        value = getattr(value, str(part))
    return value


def _policy_settings(spec: PolicySpec, doc: LocatedDocument) -> dict[str, object] | None:
    """The ``Policy`` fields the process-wide keys set (limits, outlier_detection, retry_policy,
    retry_budget, health_check, telemetry), each nested settings block checked as a whole (e.g.
    base <= max), its problem reported at the block the policy wrote."""
    given: dict[str, tuple[object, Path]] = {}
    for info in leaf_keys():
        if info.scope != "policy" or info.at is None or info.key is None:
            continue
        if info.path[0] == "tasks":  # rules, patterns and a model file: policy/tasks.py
            continue
        if info.path[0] == "teams":  # a mapping of named limits: _teams below
            continue
        value = _spec_value(spec, info.path)
        if value is None:
            continue
        if info.key.percent:
            value = value / 100
        given[info.at.path] = (value, info.path)
    built = _build(Policy, given, doc)
    if built is not None and spec.teams:
        built["teams"] = MappingProxyType(
            {name: _limits(("teams", name), team, doc) for name, team in spec.teams.items()}
        )
    return built


def _limits(
    where: Path, spec: RouteLimitsSpec | ProviderLimitsSpec | TeamSpec | None, doc: LocatedDocument
) -> Limits:
    """A limits block (route, team or a provider's model) as the snapshot's ``Limits``."""
    if spec is None:
        return Limits()
    budget = getattr(spec, "budget", None)
    try:
        return Limits(
            rpm=spec.rpm,
            tpm=spec.tpm,
            budget=Budget.parse(budget) if budget is not None else None,
        )
    except ValueError as exc:
        doc.problems.append(doc.problem(where, str(exc)))
        return Limits()


def _build(
    cls: type[Any], given: dict[str, tuple[object, Path]], doc: LocatedDocument
) -> dict[str, object] | None:
    """Keyword arguments for dataclass ``cls`` from dotted attribute paths; the dataclasses
    nested in it are built here, so their own checks (``__post_init__``) run."""
    kwargs: dict[str, object] = {}
    nested: dict[str, dict[str, tuple[object, Path]]] = {}
    for dotted, item in given.items():
        head, _, rest = dotted.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = item
        else:
            kwargs[head] = item[0]
    ok = True
    hints = typing.get_type_hints(cls)
    for head, values in nested.items():
        inner: type[Any] = hints[head]
        assert dataclasses.is_dataclass(inner), (cls, head)
        inner_kwargs = _build(inner, values, doc)
        if inner_kwargs is None:
            ok = False
            continue
        try:
            kwargs[head] = inner(**inner_kwargs)
        except ValueError as exc:
            first_key = next(iter(values.values()))[1]
            doc.problems.append(doc.problem(first_key[:-1], str(exc)))
            ok = False
    return kwargs if ok else None


def _resolve_chain(
    route_name: str,
    route: RouteSpec,
    spec: PolicySpec,
    headers_by_provider: dict[str, dict[str, str]],
    doc: LocatedDocument,
    where: Callable[[int], Path] | None = None,
) -> tuple[list[Candidate], list[Excluded]]:
    """The route's chain, checked against its constraints (problems located at ``where(i)``
    for entry ``i``: the route's chain by default; the evals section resolves its candidates
    here too).

    A candidate written with an explicit region that breaks ``require_tags`` is an error: failover
    must never leave the allowed set, and a policy saying otherwise is a mistake to catch in
    review. A ``*`` region expands to the provider's *allowed* regions only; the others are kept
    in ``excluded`` so explain can show them. A model too small for ``min_context_window`` is an
    error either way (every region serves the same model).
    """
    chain: list[Candidate] = []
    excluded: list[Excluded] = []
    seen: set[str] = set()
    invalid_before = len(doc.problems)
    if not route.chain:
        doc.problems.append(
            doc.problem(
                ("routes", route_name, "chain") if where is None else where(0),
                "a route needs a chain of at least one candidate (or auto: docs/auto.md)",
            )
        )
        return chain, excluded
    for i, entry in enumerate(route.chain):
        path = where(i) if where is not None else ("routes", route_name, "chain", i)
        provider = spec.providers.get(entry.provider)
        if provider is None:
            doc.problems.append(
                doc.problem(
                    path,
                    f"unknown provider {quoted_name(entry.provider)} "
                    f"{_hint(entry.provider, spec.providers)}",
                )
            )
            continue
        model = provider.models.get(entry.model)
        if model is None:
            doc.problems.append(
                doc.problem(
                    path,
                    f"provider {entry.provider!r} has no model {quoted_name(entry.model)} "
                    f"{_hint(entry.model, provider.models)}",
                )
            )
            continue
        if entry.region is not None and entry.region not in provider.regions:
            doc.problems.append(
                doc.problem(
                    path,
                    f"provider {entry.provider!r} has no region {quoted_name(entry.region)} "
                    f"{_hint(entry.region, provider.regions)}",
                )
            )
            continue
        if route.min_context_window is not None:
            window = model.context_window
            if window is None:
                doc.problems.append(
                    doc.problem(
                        path,
                        f"model {entry.provider}/{entry.model} has no context_window, so it cannot "
                        f"be shown to hold this route's min_context_window of "
                        f"{route.min_context_window} tokens (set providers.{entry.provider}"
                        f".models.{entry.model}.context_window)",
                    )
                )
                continue
            if window < route.min_context_window:
                doc.problems.append(
                    doc.problem(
                        path,
                        f"model {entry.provider}/{entry.model} holds {window} tokens, fewer than "
                        f"this route's min_context_window of {route.min_context_window}",
                    )
                )
                continue
        regions = [entry.region] if entry.region is not None else list(provider.regions)
        wire = upstream_wire(provider.kind)
        for region_name in regions:
            region = provider.regions[region_name]
            mismatch = tag_mismatch(route.require_tags, region.tags)
            if mismatch:
                key = f"{entry.provider}/{region_name}/{entry.model}"
                if entry.region is not None:
                    doc.problems.append(
                        doc.problem(
                            path,
                            f"{key} is outside this route's residency requirement "
                            f"({format_tags(route.require_tags)}): region {region_name!r} {mismatch}",
                        )
                    )
                else:
                    excluded.append(Excluded(key, f"residency: region {region_name!r} {mismatch}"))
                continue
            candidate = Candidate(
                provider=entry.provider,
                region=region_name,
                model=entry.model,
                upstream_model=model.upstream_name or entry.model,
                wire=wire,
                base_url=region.base_url,
                chat_url=wire.endpoint_url(region.base_url, provider.query),
                context_window=model.context_window,
                tags=MappingProxyType(dict(region.tags)),
                headers=MappingProxyType(headers_by_provider[entry.provider]),
                price=_price(model.price),
                tokenizer=model.tokenizer or encoding_for_model(model.upstream_name or entry.model),
                assistant_prefill=model.assistant_prefill,
                max_output_tokens=model.max_output_tokens or _DEFAULT_MAX_OUTPUT_TOKENS,
                health_check=provider.health_check.kind,
                health_check_url=provider.health_check.url,
                dimensions=model.dimensions,
                max_batch_inputs=model.max_batch_inputs,
                limits=_limits(
                    ("providers", entry.provider, "models", entry.model, "limits"),
                    model.limits,
                    doc,
                ),
            )
            if candidate.key in seen:
                doc.problems.append(
                    doc.problem(path, f"{candidate.key} appears twice in the chain")
                )
                continue
            seen.add(candidate.key)
            chain.append(candidate)
    if not chain and len(doc.problems) == invalid_before:
        doc.problems.append(
            doc.problem(
                ("routes", route_name, "chain"),
                f"no candidate satisfies this route's residency requirement "
                f"({format_tags(route.require_tags)}): it could never be served",
            )
        )
    return chain, excluded


def _check_dimensions(where: Path, chain: Iterable[Candidate], doc: LocatedDocument) -> None:
    """An embedding route's candidates (any declares ``dimensions``) must all declare the same
    length and speak a wire with an embeddings API: a fallback producing vectors of another
    length would break every index they go into (docs/embeddings.md)."""
    chain = tuple(chain)
    first = next((c for c in chain if c.dimensions is not None), None)
    if first is None:
        return
    for candidate in chain:
        if candidate.dimensions != first.dimensions:
            has = candidate.dimensions if candidate.dimensions is not None else "no"
            doc.problems.append(
                doc.problem(
                    where,
                    f"{candidate.key} declares {has} dimensions but {first.key} declares "
                    f"{first.dimensions}: an embedding model's fallbacks must produce vectors "
                    "of the same length (set models.<name>.dimensions on every one)",
                )
            )
            return
        if candidate.wire.embeddings is None:
            doc.problems.append(
                doc.problem(
                    where,
                    f"{candidate.key} is an embedding model on the {candidate.wire.name!r} wire, "
                    "which has no embeddings API",
                )
            )
            return


def _price(spec: PriceSpec | None) -> Price | None:
    if spec is None:
        return None
    return Price(spec.input, spec.output, spec.cached_input, spec.cache_write)


def _cache(route_name: str, spec: CacheSpec | None, doc: LocatedDocument) -> CacheSettings:
    if spec is None:
        return CacheSettings()
    try:
        return CacheSettings(**written(spec))
    except ValueError as exc:
        doc.problems.append(doc.problem(("routes", route_name, "cache"), str(exc)))
        return CacheSettings()


def _context(route_name: str, spec: ContextSpec | None, doc: LocatedDocument) -> ContextSettings:
    if spec is None:
        return ContextSettings()
    try:
        return ContextSettings(**written(spec))
    except ValueError as exc:
        doc.problems.append(doc.problem(("routes", route_name, "context"), str(exc)))
        return ContextSettings()


def _summarizers(
    route_name: str,
    context: ContextSettings,
    spec: PolicySpec,
    headers_by_provider: dict[str, dict[str, str]],
    doc: LocatedDocument,
) -> Mapping[str, Candidate]:
    """``context.summarizer`` compiled like a chain entry (its provider, region and model must
    exist), by candidate key."""
    if context.summarizer is None:
        return MappingProxyType({})
    where: Path = ("routes", route_name, "context", "summarizer")

    def at(_: int) -> Path:
        return where

    chain, _ = _resolve_chain(
        route_name,
        RouteSpec.model_validate({"chain": [context.summarizer]}),
        spec,
        headers_by_provider,
        doc,
        at,
    )
    return MappingProxyType({c.key: c for c in chain})


def _prompt_cache(
    route_name: str, spec: PromptCacheSpec | None, doc: LocatedDocument
) -> PromptCacheSettings:
    if spec is None:
        return PromptCacheSettings()
    try:
        return PromptCacheSettings(**written(spec))
    except ValueError as exc:
        doc.problems.append(doc.problem(("routes", route_name, "prompt_cache"), str(exc)))
        return PromptCacheSettings()


def _affinity(
    route_name: str, spec: AffinitySpec | None, doc: LocatedDocument
) -> AffinitySettings | None:
    if spec is None:
        return None
    try:
        return AffinitySettings(**written(spec))
    except ValueError as exc:
        doc.problems.append(doc.problem(("routes", route_name, "affinity"), str(exc)))
        return None


def _hedge(route_name: str, route: RouteSpec, doc: LocatedDocument) -> Hedge | None:
    spec = route.hedge
    if spec is None:
        return None
    if (spec.delay is None) == (spec.percentile is None):
        doc.problems.append(
            doc.problem(
                ("routes", route_name, "hedge"),
                "set exactly one of delay (fixed) or percentile (of recent time to first token)",
            )
        )
        return None
    return Hedge(**written(spec))


def _hint(name: str, known: Iterable[str]) -> str:
    """``(did you mean 'x'?)`` for a near miss, else the list of known names."""
    names = list(known)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"(did you mean {close[0]!r}?)"
    return f"(known: {', '.join(names)})"


def tag_mismatch(required: Mapping[str, str], tags: Mapping[str, str]) -> str:
    """Why ``tags`` fails ``required`` in words, or "" when every required tag matches."""
    wrong = []
    for name, value in required.items():
        have = tags.get(name)
        if have is None:
            wrong.append(f"has no {name} tag")
        elif have != value:
            wrong.append(f"has {name}={have}")
    return " and ".join(wrong)


def format_tags(tags: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in tags.items()) or "none"

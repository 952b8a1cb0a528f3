"""Turn a validated ``PolicySpec`` into the frozen ``Policy`` snapshot.

Resolves defaults, expands ``provider/*/model`` into every region, checks that every chain entry
names something that exists, and reads provider keys (from the document or a file).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path as FsPath
from types import MappingProxyType

from edgeproxy.policy.schema import (
    CacheSpec,
    PolicySpec,
    PriceSpec,
    ProviderSpec,
    RouteSpec,
    TimeoutsSpec,
)
from edgeproxy.policy.yamlsource import LocatedDocument
from edgeproxy.snapshot import (
    DEFAULT_BODY_READ_TIMEOUT,
    DEFAULT_CACHE_MAX_BYTES,
    DEFAULT_CACHE_MAX_ENTRIES,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BODY_BYTES,
    BackoffSettings,
    BreakerSettings,
    CacheSettings,
    Candidate,
    EngineSettings,
    Excluded,
    Hedge,
    Policy,
    Price,
    ProberSettings,
    RetryBudgetSettings,
    Route,
    ShedSettings,
    Timeouts,
)
from edgeproxy.tokens import encoding_for_model
from edgeproxy.upstreams.anthropic import messages_url
from edgeproxy.upstreams.http1 import header_problem


def content_version(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _merge_timeouts(base: Timeouts, spec: TimeoutsSpec) -> Timeouts:
    return Timeouts(
        connect=spec.connect or base.connect,
        first_token=spec.first_token or base.first_token,
        idle=spec.idle or base.idle,
        response=spec.response or base.response,
        total=spec.total or base.total,
    )


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
            key = path.read_text().strip()
        except OSError as exc:
            problem = doc.problem(
                ("providers", name, "api_key_file"),
                f"cannot read the key file {str(path)!r}: {exc.strerror or exc}",
            )
            (doc.problems if doc.missing_secrets == "error" else doc.warnings).append(problem)
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


def _chat_url(base_url: str, query: dict[str, str]) -> str:
    url = base_url.rstrip("/") + "/chat/completions"
    if query:
        from urllib.parse import urlencode

        url += "?" + urlencode(query)
    return url


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
    for route_name, route_spec in spec.routes.items():
        chain, excluded = _resolve_chain(route_name, route_spec, spec, headers_by_provider, doc)
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
            or "error",
            require_tags=MappingProxyType(dict(route_spec.require_tags)),
            min_context_window=route_spec.min_context_window,
            excluded=tuple(excluded),
            hedge=_hedge(route_name, route_spec, doc),
            cache=_cache(route_spec.cache or spec.defaults.cache),
        )
        for i, name in enumerate((route_name, *route_spec.aliases)):
            if name in routes:
                path = (
                    ("routes", route_name) if i == 0 else ("routes", route_name, "aliases", i - 1)
                )
                doc.problems.append(
                    doc.problem(
                        path,
                        f"the model name {name!r} is already served by route {routes[name].name!r}",
                    )
                )
            else:
                routes[name] = route
        if len({c.kind for c in chain}) > 1:
            line, _ = doc.locate(("routes", route_name, "chain"))
            warnings.append(
                f"{doc.source}:{line}: routes.{route_name}.chain: mixes OpenAI- and "
                "Anthropic-wire candidates: requests using a feature the other wire lacks (n > 1, "
                "logprobs, response_format json_schema, extended thinking, ...) skip the "
                "candidates that cannot carry them (docs/anthropic.md)"
            )
        if chain and len({c.provider for c in chain}) == 1:
            line, _ = doc.locate(("routes", route_name, "chain"))
            warnings.append(
                f"{doc.source}:{line}: routes.{route_name}.chain: every candidate is on provider "
                f"{chain[0].provider!r}: a provider-wide outage has no fallback"
            )
    engine = _engine_settings(spec, doc)
    if doc.problems or engine is None:
        return None
    return Policy(
        source=doc.source,
        version=content_version(text),
        routes=MappingProxyType(routes),
        route_names=tuple(spec.routes),
        max_body_bytes=spec.limits.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        body_read_timeout=spec.limits.body_read_timeout or DEFAULT_BODY_READ_TIMEOUT,
        warnings=tuple(warnings),
        engine=engine,
        capture_content=spec.telemetry.capture_content,
        cache_max_bytes=spec.limits.cache_max_bytes or DEFAULT_CACHE_MAX_BYTES,
        cache_max_entries=spec.limits.cache_max_entries or DEFAULT_CACHE_MAX_ENTRIES,
    )


def _given(**values: object) -> dict[str, object]:
    """Only the settings the policy wrote: the rest keep the dataclass defaults."""
    return {k: v for k, v in values.items() if v is not None}


def _engine_settings(spec: PolicySpec, doc: LocatedDocument) -> EngineSettings | None:
    """The process-wide resilience settings, each block checked as a whole (e.g. base <= max)."""
    od, rp, rb, hc, lim = (
        spec.outlier_detection,
        spec.retry_policy,
        spec.retry_budget,
        spec.health_check,
        spec.limits,
    )
    built: dict[str, object] = {}
    blocks: list[tuple[str, str, type, dict[str, object]]] = [
        (
            "outlier_detection",
            "breaker",
            BreakerSettings,
            _given(
                consecutive_failures=od.consecutive_failures,
                failure_ratio=None
                if od.failure_percentage_threshold is None
                else od.failure_percentage_threshold / 100,
                min_requests=od.failure_percentage_request_volume,
                window=od.interval,
                base_ejection_time=od.base_ejection_time,
                max_ejection_time=od.max_ejection_time,
                half_open_max_trials=od.half_open_max_requests,
            ),
        ),
        (
            "retry_policy",
            "backoff",
            BackoffSettings,
            _given(
                base=rp.base_interval,
                cap=rp.max_interval,
                max_retries_per_candidate=rp.max_retries_per_candidate,
                max_retry_after=rp.max_retry_after,
                min_attempt_time=rp.min_attempt_time,
            ),
        ),
        (
            "retry_budget",
            "budget",
            RetryBudgetSettings,
            _given(
                ratio=None if rb.budget_percent is None else rb.budget_percent / 100,
                min_retries_per_second=rb.min_retries_per_second,
                window=rb.ttl,
            ),
        ),
        (
            "health_check",
            "probe",
            ProberSettings,
            _given(
                interval=hc.interval,
                timeout=hc.timeout,
                unhealthy_threshold=hc.unhealthy_threshold,
                healthy_threshold=hc.healthy_threshold,
                max_probes_per_second=hc.max_probes_per_second,
            ),
        ),
        (
            "limits",
            "shed",
            ShedSettings,
            _given(
                max_in_flight=lim.max_in_flight,
                max_queue=lim.max_queued,
                max_queue_wait=lim.max_queue_wait,
            ),
        ),
    ]
    ok = True
    for block, name, cls, values in blocks:
        try:
            built[name] = cls(**values)
        except ValueError as exc:
            doc.problems.append(doc.problem((block,), str(exc)))
            ok = False
    if not ok:
        return None
    return EngineSettings(
        breaker=built["breaker"],  # type: ignore[arg-type]
        backoff=built["backoff"],  # type: ignore[arg-type]
        budget=built["budget"],  # type: ignore[arg-type]
        probe=built["probe"],  # type: ignore[arg-type]
        probes_enabled=hc.enabled if hc.enabled is not None else True,
        shed=built["shed"],  # type: ignore[arg-type]
        max_hedge_ratio=(lim.max_hedge_percent if lim.max_hedge_percent is not None else 10.0)
        / 100,
        quota_ejection=od.quota_ejection_time or 3600.0,
    )


def _resolve_chain(
    route_name: str,
    route: RouteSpec,
    spec: PolicySpec,
    headers_by_provider: dict[str, dict[str, str]],
    doc: LocatedDocument,
) -> tuple[list[Candidate], list[Excluded]]:
    """The route's chain, checked against its constraints.

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
    for i, entry in enumerate(route.chain):
        path = ("routes", route_name, "chain", i)
        provider = spec.providers.get(entry.provider)
        if provider is None:
            doc.problems.append(
                doc.problem(
                    path,
                    f"unknown provider {entry.provider!r} {_hint(entry.provider, spec.providers)}",
                )
            )
            continue
        model = provider.models.get(entry.model)
        if model is None:
            doc.problems.append(
                doc.problem(
                    path,
                    f"provider {entry.provider!r} has no model {entry.model!r} "
                    f"{_hint(entry.model, provider.models)}",
                )
            )
            continue
        if entry.region is not None and entry.region not in provider.regions:
            doc.problems.append(
                doc.problem(
                    path,
                    f"provider {entry.provider!r} has no region {entry.region!r} "
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
                kind=provider.kind,
                base_url=region.base_url,
                chat_url=(
                    _chat_url(region.base_url, provider.query)
                    if provider.kind == "openai"
                    else messages_url(region.base_url)
                ),
                context_window=model.context_window,
                tags=MappingProxyType(dict(region.tags)),
                headers=MappingProxyType(headers_by_provider[entry.provider]),
                price=_price(model.price),
                tokenizer=model.tokenizer or encoding_for_model(model.upstream_name or entry.model),
                assistant_prefill=model.assistant_prefill,
                max_output_tokens=model.max_output_tokens or 4096,
                health_check=provider.health_check.kind,
                health_check_url=provider.health_check.url,
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


def _price(spec: PriceSpec | None) -> Price | None:
    if spec is None:
        return None
    return Price(spec.input, spec.output, spec.cached_input, spec.cache_write)


def _cache(spec: CacheSpec | None) -> CacheSettings:
    if spec is None:
        return CacheSettings()
    return CacheSettings(
        enabled=spec.enabled, ttl=spec.ttl or 300.0, cacheable=spec.cacheable or "deterministic"
    )


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
    return Hedge(spec.delay, spec.percentile)


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

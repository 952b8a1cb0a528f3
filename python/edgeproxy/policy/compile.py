"""Turn a validated ``PolicySpec`` into the frozen ``Policy`` snapshot.

Resolves defaults, expands ``provider/*/model`` into every region, checks that every chain entry
names something that exists, and reads provider keys (from the document or a file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path as FsPath
from types import MappingProxyType

from edgeproxy.policy.schema import PolicySpec, ProviderSpec, RouteSpec, TimeoutsSpec
from edgeproxy.policy.snapshot import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BODY_BYTES,
    Candidate,
    Policy,
    Route,
    Timeouts,
)
from edgeproxy.policy.yamlsource import LocatedDocument


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


def _provider_headers(
    name: str, spec: ProviderSpec, doc: LocatedDocument, base_dir: FsPath | None
) -> dict[str, str]:
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
        chain = _resolve_chain(route_name, route_spec, spec, headers_by_provider, doc)
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
        if chain and len({c.provider for c in chain}) == 1:
            line, _ = doc.locate(("routes", route_name, "chain"))
            warnings.append(
                f"{doc.source}:{line}: routes.{route_name}.chain: every candidate is on provider "
                f"{chain[0].provider!r}: a provider-wide outage has no fallback"
            )
    if doc.problems:
        return None
    return Policy(
        source=doc.source,
        version=content_version(text),
        routes=MappingProxyType(routes),
        route_names=tuple(spec.routes),
        max_body_bytes=spec.limits.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        warnings=tuple(warnings),
    )


def _resolve_chain(
    route_name: str,
    route: RouteSpec,
    spec: PolicySpec,
    headers_by_provider: dict[str, dict[str, str]],
    doc: LocatedDocument,
) -> list[Candidate]:
    chain: list[Candidate] = []
    seen: set[str] = set()
    for i, entry in enumerate(route.chain):
        path = ("routes", route_name, "chain", i)
        provider = spec.providers.get(entry.provider)
        if provider is None:
            doc.problems.append(
                doc.problem(
                    path,
                    f"unknown provider {entry.provider!r} (known: {', '.join(spec.providers)})",
                )
            )
            continue
        model = provider.models.get(entry.model)
        if model is None:
            doc.problems.append(
                doc.problem(
                    path,
                    f"provider {entry.provider!r} has no model {entry.model!r} "
                    f"(known: {', '.join(provider.models)})",
                )
            )
            continue
        if entry.region is not None and entry.region not in provider.regions:
            doc.problems.append(
                doc.problem(
                    path,
                    f"provider {entry.provider!r} has no region {entry.region!r} "
                    f"(known: {', '.join(provider.regions)})",
                )
            )
            continue
        regions = [entry.region] if entry.region is not None else list(provider.regions)
        for region_name in regions:
            region = provider.regions[region_name]
            candidate = Candidate(
                provider=entry.provider,
                region=region_name,
                model=entry.model,
                upstream_model=model.upstream_name or entry.model,
                kind=provider.kind,
                base_url=region.base_url,
                chat_url=_chat_url(region.base_url, provider.query),
                context_window=model.context_window,
                tags=MappingProxyType(dict(region.tags)),
                headers=MappingProxyType(headers_by_provider[entry.provider]),
            )
            if candidate.key in seen:
                doc.problems.append(
                    doc.problem(path, f"{candidate.key} appears twice in the chain")
                )
                continue
            seen.add(candidate.key)
            chain.append(candidate)
    return chain

"""Each policy key declared once, and ``policy diff`` sees a change of every one of them.

The keys are enumerated from the spec (``catalog.leaf_keys``), never from a list kept here: a key
added to the spec is changed by ``test_diff_reports_a_change_of_every_key`` as soon as it exists,
and the test fails until diff reports it (or, for a string key, until a test value is given).
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from edgeproxy._core import train_task_model
from edgeproxy.policy import load_policy_text
from edgeproxy.policy.catalog import ITEM, NAME, KeyInfo, all_keys, leaf_keys, strip
from edgeproxy.policy.describe import describe_policy
from edgeproxy.policy.diff import diff_policies
from edgeproxy.policy.keys import NOT_GIVEN, Prose, as_percent
from edgeproxy.policy.reference import update
from edgeproxy.policy.shown import NAMED_MAPPINGS
from edgeproxy.snapshot import (
    BackoffSettings,
    BreakerSettings,
    Candidate,
    Policy,
    ProberSettings,
    RetryBudgetSettings,
    Route,
    ShedSettings,
)
from edgeproxy.wires import UPSTREAM_WIRES

ROOT = Path(__file__).resolve().parents[2]

# Every key of this policy can be changed alone and still give a valid policy; the entries each
# change picks are the first ones (p, r1, m, route r) unless only a later one sets the key.
BASE: dict[str, Any] = {
    "version": 1,
    "providers": {
        "p": {
            "kind": "openai",
            "api_key": "${P_KEY}",
            "regions": {
                "r1": {"base_url": "http://127.0.0.1:1/v1", "tags": {"zone": "a"}},
                "r2": {"base_url": "http://127.0.0.1:2/v1", "tags": {"zone": "a"}},
            },
            "models": {
                "m": {"context_window": 100000, "price": {"input": 1.0, "output": 2.0}},
                "m2": {"context_window": 100000},
            },
        },
        "p2": {
            "kind": "openai",
            "regions": {"r1": {"base_url": "http://127.0.0.1:3/v1", "tags": {"zone": "a"}}},
            "models": {
                "m": {"context_window": 100000},
                # An embedding model, alone on its route: its keys change without the route's
                # fallbacks disagreeing on dimensions.
                "emb": {"dimensions": 8, "max_batch_inputs": 10},
            },
        },
        "q": {
            "kind": "openai",
            "api_key_file": "KEY_FILE",
            "regions": {"x": {"base_url": "https://q.example/v1", "tags": {"zone": "a"}}},
            "models": {"qm": {"context_window": 8192}},
        },
    },
    "routes": {
        "r": {
            "chain": [{"provider": "p", "region": "r1", "model": "m"}, "q/x/qm"],
            "tasks": {"qa": {"chain": [{"provider": "p", "region": "r1", "model": "m"}]}},
            "auto": {
                "pool": [{"provider": "p", "region": "r1", "model": "m"}, "q/x/qm"],
                "tasks": {"qa": {"optimize": "latency"}},
            },
        },
        "s": {"aliases": ["s-alias"], "chain": ["q/x/qm", "p/*/m"]},
        "e": {"chain": ["p2/r1/emb"]},
    },
    "tasks": {
        "categories": ["qa", "writing"],
        "rules": [{"task": "qa", "routes": ["r"]}],
        "classifier": {"model": "MODEL_FILE"},
    },
    "teams": {"search": {"rpm": 10}},
}
ENV = {"P_KEY": "sk-first-key"}

# Values for keys whose type cannot say what a valid different value is.
STRING_VALUES: dict[str, Any] = {
    # Another registered wire than the test policy's ``openai``.
    "providers.<name>.kind": next(name for name in UPSTREAM_WIRES if name != "openai"),
    "providers.<name>.api_key": "sk-second-key",
    "providers.<name>.api_key_file": "OTHER_KEY_FILE",
    "providers.<name>.health_check.url": "http://127.0.0.1:9/health",
    "providers.<name>.regions.<name>.base_url": "http://127.0.0.1:1/v2",
    "providers.<name>.models.<name>.upstream_name": "org/m-instruct",
    "routes.<name>.chain[].provider": "p2",
    "routes.<name>.chain[].region": "r2",
    "routes.<name>.chain[].model": "m2",
    # Every region is tagged zone=a: a requirement all of them meet changes no chain.
    "routes.<name>.require_tags": {"zone": "a"},
    # Task names must be declared categories, route names must exist, patterns must compile.
    "defaults.default_task": "qa",
    "routes.<name>.default_task": "writing",
    "tasks.rules[].name": "to-qa",
    "tasks.rules[].task": "writing",
    "tasks.rules[].routes": ["r", "s-alias"],
    "tasks.rules[].prompt_tokens.min": 100,
    "tasks.rules[].prompt_tokens.max": 8000,
    "tasks.rules[].max_tokens.min": 1,
    "tasks.rules[].max_tokens.max": 4096,
    "tasks.rules[].messages.min": 2,
    "tasks.rules[].messages.max": 10,
    "tasks.rules[].system_regex": "(?i)cite",
    "tasks.rules[].system_keywords": ["cite", "sources"],
    "tasks.classifier.model": "OTHER_MODEL_FILE",
    "tasks.classifier.min_confidence": 0.8,  # a probability: 0.6 + 1 is out of bounds
    "evals.judge": "p2/r1/m",
    "evals.candidates": ["p/r1/m", "q/x/qm"],
    "evals.suite": "suites/other.yaml",
    "routes.<name>.tasks.<name>.chain": ["p/r1/m", "q/x/qm"],
    "routes.<name>.tasks.<name>.chain[].provider": "p2",
    "routes.<name>.tasks.<name>.chain[].region": "r2",
    "routes.<name>.tasks.<name>.chain[].model": "m2",
    "routes.<name>.auto.pool": ["p/r1/m", "q/x/qm", "p2/r1/m"],
    "routes.<name>.auto.pool[].provider": "p2",
    "routes.<name>.auto.pool[].region": "r2",
    "routes.<name>.auto.pool[].model": "m2",
    "routes.<name>.auto.tasks.<name>.min_quality": 0.9,
    "routes.<name>.auto.tasks.<name>.max_ttft_p50": "3s",
    "routes.<name>.auto.tasks.<name>.max_ttft_p95": "3s",
    "routes.<name>.auto.tasks.<name>.max_latency_p50": "3s",
    "routes.<name>.auto.tasks.<name>.max_latency_p95": "3s",
    "routes.<name>.auto.tasks.<name>.floor_on": "lower_bound",
    "routes.<name>.auto.tasks.<name>.pin": "p2/r1/m",
    "routes.<name>.auto.ramp.steps": [10, 50],
    "evals.schedule.out": "scorecards/{date}.json",
    # A strategy list of known names; a summariser that exists (a route needs none unless it
    # lists summarize).
    "routes.<name>.context.strategies": ["drop_middle"],
    "routes.<name>.context.summarizer": "p2/r1/m",
    # Keys, limits and the fleet (docs/keys.md, docs/fleet.md).
    "keys.store": "other-keys.sqlite",
    "teams.<name>.rpm": 20,  # a team's keys show as one value: the team's limits in words
    "teams.<name>.tpm": 1000,
    "teams.<name>.budget": "20usd/month",
    "routes.<name>.limits.budget": "5usd/day",
    "fleet.redis": "redis://127.0.0.1:6390/1",
    "fleet.prefix": "other-fleet",
}
NOT_TRAFFIC = {"version"}  # the only value it may have is 1


@pytest.fixture
def key_files(tmp_path: Path) -> dict[str, str]:
    first, second = tmp_path / "key", tmp_path / "other-key"
    first.write_text("sk-file-key\n")
    second.write_text("sk-other-file-key\n")
    # Two task models of the policy's tasks, trained differently (another model file).
    models = {}
    for name, seed in (("MODEL_FILE", 1), ("OTHER_MODEL_FILE", 2)):
        model = train_task_model(
            ["what does it say?", "draft a spec"],
            [0, 1],
            ["qa", "writing"],
            bits=8,
            seed=seed,
            epochs=seed,
        )
        path = tmp_path / f"{name.lower()}.model"
        path.write_bytes(model.to_bytes())
        models[name] = str(path)
    return {"KEY_FILE": str(first), "OTHER_KEY_FILE": str(second), **models}


def _text(data: dict[str, Any], files: dict[str, str]) -> str:
    return _with_files(yaml.safe_dump(data, sort_keys=False), files)


def _with_files(text: str, files: dict[str, str]) -> str:
    for name in sorted(files, key=len, reverse=True):  # OTHER_KEY_FILE before KEY_FILE
        text = text.replace(name, files[name])
    return text


def _load(data: dict[str, Any], files: dict[str, str], source: str = "t.yaml") -> Policy:
    return load_policy_text(_text(data, files), source, ENV)


def _locate(data: dict[str, Any], path: tuple[str, ...]) -> tuple[Any, list[str | int]]:
    """The container holding ``path``'s last step, and the concrete steps taken: a ``<name>``
    becomes the first entry that already sets the rest of the path, else the first entry; a
    list item is the first item."""
    node: Any = data
    steps: list[str | int] = []
    for i, part in enumerate(path[:-1]):
        if part == NAME:
            rest = path[i + 1 :]
            names = list(node)
            chosen = next((n for n in names if _has(node[n], rest)), names[0])
            steps.append(chosen)
            node = node[chosen]
        elif part == ITEM:
            steps.append(0)
            node = node[0]
        else:
            steps.append(part)
            node = node.setdefault(part, {})
    return node, steps


def _has(node: Any, path: tuple[str, ...]) -> bool:
    for i, part in enumerate(path):
        if part == NAME:
            return isinstance(node, dict) and any(_has(v, path[i + 1 :]) for v in node.values())
        if part == ITEM or not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _target(policy: Policy, info: KeyInfo, steps: list[str | int]) -> Any:
    """The compiled object a key shows on, for the entries the change picked."""
    if info.scope == "policy":
        return policy
    if info.scope == "route":
        return policy.routes[str(steps[1]) if steps[0] == "routes" else "r"]
    provider = str(steps[1])
    within = steps[2] if len(steps) > 3 else None
    region = str(steps[3]) if within == "regions" else None
    model = str(steps[3]) if within == "models" else None
    for name in policy.route_names:
        for c in policy.routes[name].chain:
            if c.provider == provider and region in (None, c.region) and model in (None, c.model):
                return c
    raise AssertionError(f"no candidate of {provider} in the base policy")


def _effective(info: KeyInfo, target: Any) -> Any:
    assert info.at is not None
    value = info.at.read(target)
    return as_percent(value) if info.unit == "percent" and value is not None else value


def _new_values(info: KeyInfo, current: Any) -> list[Any]:
    """Valid values different from ``current`` (the key's effective value, in its unit)."""
    if info.dotted in STRING_VALUES:
        return [STRING_VALUES[info.dotted]]
    hint = strip(info.hint)
    if typing.get_origin(hint) is Literal:
        return [v for v in typing.get_args(hint) if v != current]
    if hint is bool:
        return [not current]
    if typing.get_origin(hint) is dict:
        return [{**(current or {}), "x-extra": "1"}]
    if typing.get_origin(hint) is list:
        return [[*(current or []), "another-name"]]
    if info.unit in ("seconds", "bytes"):
        return [current * 2 if current else 2]
    if hint in (int, float):
        bounds = info.bounds()
        low = bounds.get("ge", bounds.get("gt", 0))
        if current is None:
            return [hint(low + 1)]
        high = bounds.get("le")
        return [hint(current + 1) if high is None or current + 1 <= high else hint(current - 1)]
    raise AssertionError(f"{info.dotted}: no test value; add one to STRING_VALUES")


def _changes_of_every_key(files: dict[str, str]) -> list[tuple[KeyInfo, Any]]:
    base = _load(BASE, files)
    cases = []
    for info in leaf_keys():
        if info.dotted in NOT_TRAFFIC:
            continue
        data = copy.deepcopy(BASE)
        node, steps = _locate(data, info.path)
        collection = typing.get_origin(strip(info.hint)) in (dict, list)
        if info.at is not None and info.view == info.relative and not collection:
            current = _effective(info, _target(base, info, steps))
        else:  # a chain entry, a mapping or list as written, or one of several keys' value
            written = info.documented_default()
            current = node.get(info.name, None if written is NOT_GIVEN else written)
        for value in _new_values(info, current):
            changed = copy.deepcopy(data)
            holder, _ = _locate(changed, info.path)
            holder[info.name] = value
            cases.append((info, changed))
    return cases


def test_diff_reports_a_change_of_every_key(key_files: dict[str, str]) -> None:
    base = _load(BASE, key_files, "old.yaml")
    cases = _changes_of_every_key(key_files)
    changed_keys = {info.dotted for info, _ in cases}
    assert changed_keys == {k.dotted for k in leaf_keys()} - NOT_TRAFFIC
    for info, data in cases:
        new = _load(data, key_files, "new.yaml")
        changes = diff_policies(base, new)
        # A chain entry's change is the chain's; an auto pool entry's, the pool's.
        entry = "auto.pool" if "pool" in info.path else "chain"
        expected = entry if info.at is None else info.view
        whats = {c.what for c in changes}
        # A task's chain is reported as tasks.<task>.chain.
        found = any(what == expected or what.endswith(f".{expected}") for what in whats)
        assert found, (info.dotted, holder_of(data, info), changes)
        printed = repr([c.as_dict() for c in changes])
        for secret in ("sk-first-key", "sk-second-key", "sk-file-key", "sk-other-file-key"):
            assert secret not in printed, (info.dotted, printed)


def holder_of(data: dict[str, Any], info: KeyInfo) -> Any:
    node, _ = _locate(copy.deepcopy(data), info.path)
    return {info.name: node.get(info.name)}


def test_the_changes_that_the_issue_found_unreported(key_files: dict[str, str]) -> None:
    # Hedging and caching on, a breaker that opens on one failure for 10 minutes, no retry budget.
    data = copy.deepcopy(BASE)
    data["routes"]["r"]["hedge"] = {"delay": "500ms"}
    data["defaults"] = {"cache": {"ttl": "1m"}}
    data["outlier_detection"] = {
        "consecutive_failures": 1,
        "base_ejection_time": "600s",
        "max_ejection_time": "600s",
    }
    data["retry_budget"] = {"budget_percent": 0, "min_retries_per_second": 0}
    rows = {
        (c.scope, c.what): (c.old, c.new)
        for c in diff_policies(_load(BASE, key_files), _load(data, key_files))
    }
    assert rows[("route r", "hedge.delay")] == ("-", "500ms")
    assert rows[("route s", "cache.enabled")] == ("false", "true")
    assert rows[("route r", "cache.ttl")] == ("5m", "1m")
    assert rows[("policy", "outlier_detection.consecutive_failures")] == ("5", "1")
    assert rows[("policy", "outlier_detection.base_ejection_time")] == ("30s", "10m")
    assert rows[("policy", "retry_budget.budget_percent")] == ("20%", "0%")
    assert rows[("policy", "retry_budget.min_retries_per_second")] == ("1", "0")


def _reordered(node: Any, parent: str = "") -> Any:
    """Every mapping's keys in reverse order, except regions (their order is the ``*`` order)."""
    if isinstance(node, dict):
        items = [(k, _reordered(v, k)) for k, v in node.items()]
        return dict(items if parent == "regions" else reversed(items))
    if isinstance(node, list):
        return [_reordered(v) for v in node]
    return node


def test_the_same_policy_written_differently_shows_no_change(key_files: dict[str, str]) -> None:
    data = copy.deepcopy(BASE)
    data["defaults"] = {"timeouts": {"connect": "2s"}, "cache": {"ttl": "1m"}}
    data["limits"] = {"max_in_flight": 64, "max_hedge_percent": 5}
    data["routes"]["r"]["hedge"] = {"percentile": 90}
    old = _load(data, key_files)
    text = yaml.safe_dump(_reordered(data), sort_keys=False, default_flow_style=True)
    text = "# written another way\n" + text.replace("2s", "2000ms").replace("'1m'", "60")
    new = load_policy_text(_with_files(text, key_files), "other.yaml", ENV)
    assert old.version != new.version
    assert diff_policies(old, new) == []
    assert diff_policies(old, old) == []


def test_every_key_is_declared_with_key_and_its_place_exists() -> None:
    for info in all_keys():
        assert info.key is not None, f"{info.dotted}: declare it with key(...)"
        assert info.key.doc.endswith("."), info.dotted
    for info in leaf_keys():
        if info.at is None:  # only chain entries and the version have no value of their own
            assert info.dotted in NOT_TRAFFIC or info.path[-2] == ITEM, info.dotted


def test_defaults_keys_show_through_the_route_keys_they_set() -> None:
    route_keys = {k.view: k for k in leaf_keys() if k.path[0] == "routes" and k.at is not None}
    for info in leaf_keys():
        if info.inherited and info.at is not None:
            mirror = route_keys.get(info.view)
            assert mirror is not None, info.dotted
            assert mirror.at == info.at, info.dotted


def test_keys_sharing_a_view_share_its_value() -> None:
    seen: dict[tuple[str | None, str], KeyInfo] = {}
    for info in leaf_keys():
        if info.at is None or info.inherited:
            continue
        first = seen.setdefault((info.scope, info.view), info)
        assert first.at == info.at and first.unit == info.unit, (first.dotted, info.dotted)


# Snapshot fields no key sets: structure, what the proxy derives, and constants.
NOT_FROM_KEYS = {
    (Policy, "source"),
    (Policy, "version"),
    (Policy, "routes"),
    (Policy, "route_names"),
    (Policy, "warnings"),
    (Policy, "evals.pool"),  # evals.judge and evals.candidates, compiled
    (Policy, "engine.breaker.not_counted"),  # which failures count is the proxy's rule
    (Policy, "engine.probe.jitter"),
    (Policy, "engine.shed.retry_after"),
    (Route, "name"),
    (Route, "chain"),  # written as routes.<name>.chain; diff compares it as a chain
    (Route, "task_chains"),  # routes.<name>.tasks.<task>.chain; diff compares each as a chain
    (Route, "excluded"),  # derived from the chain and require_tags
    (Route, "auto.pool"),  # routes.<name>.auto.pool; diff compares it as a chain
    (Route, "auto.excluded"),  # evals.candidates the route's constraints rule out of its pool
    (Route, "summarizers"),  # context.summarizer, compiled
    (Route, "cache.max_bytes"),  # the process-wide store's bounds: limits.cache_max_*
    (Route, "cache.max_entries"),
    (Candidate, "provider"),
    (Candidate, "region"),
    (Candidate, "model"),
    (Candidate, "key"),  # provider/region/model, made from the three above
    (Policy, "tasks.classifier.model"),  # the model file's content: classifier.model names it
    (Candidate, "limits.budget"),  # a provider has rate limits, not a budget of ours
}


def _leaf_fields(cls: type[Any], prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = hints[f.name]
        args = [a for a in typing.get_args(inner) if a is not type(None)]
        inner = args[0] if len(args) == 1 else inner
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            out.extend(_leaf_fields(inner, f"{prefix}{f.name}."))
        else:
            out.append(f"{prefix}{f.name}")
    return out


@pytest.mark.parametrize("root", [Policy, Route, Candidate])
def test_every_snapshot_field_is_set_by_a_key_or_said_not_to_be(root: type[Any]) -> None:
    set_by_keys = {k.at.path for k in leaf_keys() if k.at is not None and k.at.root is root}
    # ``chat_url`` holds the base URL, the wire's path and the query: three keys between them.
    set_by_keys |= {"chat_url"} if root is Candidate else set()
    for name in _leaf_fields(root):
        assert name in set_by_keys or (root, name) in NOT_FROM_KEYS, (
            f"{root.__name__}.{name}: no policy key sets it; declare one (key(..., at=At("
            f"{root.__name__}, {name!r}))) or add it to NOT_FROM_KEYS with the reason"
        )


EMPTY = """\
version: 1
providers:
  p:
    kind: openai
    regions: {r: {base_url: "http://127.0.0.1:1/v1"}}
    models:
      m:
routes:
  m: {chain: [p/r/m]}
"""


def _at_view(shown: dict[str, Any], view: str) -> Any:
    for part in view.split("."):
        shown = shown[part] if shown is not None else None
    return shown


def test_documented_defaults_are_what_an_empty_policy_runs_with() -> None:
    """The defaults the schema and the docs state are the values the proxy really uses."""
    shown = describe_policy(load_policy_text(EMPTY, "t.yaml", {}))
    route = shown["routes"]["m"]
    targets = {"policy": shown["settings"], "route": route, "candidate": route["chain"][0]}
    checked = 0
    for info in leaf_keys():
        if info.at is None or info.required or info.path[0] == "routes":
            continue  # route keys inherit: their defaults keys are checked instead
        documented = info.documented_default()
        if isinstance(documented, Prose) or documented is NOT_GIVEN:
            continue
        value = _at_view(targets[str(info.scope)], info.view)
        if info.view == "headers":  # no key, no extra header: none sent
            assert value == [], info.dotted
        elif info.dotted.startswith(("defaults.cache.", "tasks.classifier.")):
            continue  # no such block: the cache is off, no classifier; keys of a written block
        else:
            assert value == documented, info.dotted
        checked += 1
    assert checked > 40


def test_docs_tables_are_up_to_date() -> None:
    text = (ROOT / "docs" / "policies.md").read_text()
    assert update(text) == text, (
        "docs/policies.md is stale: run `edgeproxy policy docs --update docs/policies.md`"
    )


def test_the_mappings_sres_name_are_the_specs_mappings() -> None:
    """Problems print names under these (``providers.<name>``) and field names elsewhere."""
    mappings = {k.name for k in all_keys() if typing.get_origin(strip(k.hint)) is dict}
    assert mappings == NAMED_MAPPINGS


# docs/failover.md explains each resilience default in a table of its own, by the settings'
# runtime names: the numbers there must be the dataclasses' (the sections it names them under).
FAILOVER_SECTIONS = {
    "circuit breaker": BreakerSettings,
    "backoff": BackoffSettings,
    "retry budget": RetryBudgetSettings,
    "health prober": ProberSettings,
    "load shedding": ShedSettings,
}


def test_failover_docs_state_the_settings_defaults() -> None:
    text = (ROOT / "docs" / "failover.md").read_text()
    table = text.split("## Resilience defaults", 1)[1].split("\n### ", 1)[0]
    section: type[Any] | None = None
    checked = 0
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 2 or not line.startswith("|"):
            continue
        heading = cells[0].removeprefix("**").split("**")[0]
        if cells[0].startswith("**"):
            section = FAILOVER_SECTIONS.get(heading)
            continue
        name = cells[0].strip("`")
        fields = {f.name: f for f in dataclasses.fields(section)} if section else {}
        if name in fields and isinstance(fields[name].default, int | float):
            assert float(cells[1]) == fields[name].default, (section, name)
            checked += 1
    assert checked >= 20

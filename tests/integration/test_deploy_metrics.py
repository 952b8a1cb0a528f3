"""The Grafana dashboard and the Prometheus alert rules in deploy/ use only metrics (and labels)
that the proxy really serves: a real proxy is driven through every path that makes a metric
appear (served, failed over, streamed, hedged, shed, priced) and its /metrics is scraped."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import yaml

from edgeproxy.sim import SimConfig
from harness import Stack

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "edgeproxy-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "edgeproxy-alerts.yaml"

POLICY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 5s, idle: 5s, response: 5s, total: 10s}
limits: {max_hedge_percent: 100, max_in_flight: 1, max_queued: 0}
providers:
  alpha:
    kind: openai
    regions:
      one: {base_url: "$alpha_one"}
      two: {base_url: "$alpha_two"}
    models:
      m: {price: {input: 1.0, output: 2.0}}
  beta:
    kind: openai
    regions:
      main: {base_url: "$beta"}
    models:
      m-small: {}
routes:
  m:
    chain: [alpha/one/m, beta/main/m-small]
  hedged:
    chain: [alpha/two/m, beta/main/m-small]
    hedge: {delay: 50ms}
  slow:
    chain: [alpha/two/m]
"""

MESSAGES = [{"role": "user", "content": "hi"}]

# Labels Prometheus adds from its scrape target (relabeling), not the proxy; and histogram buckets.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "le"}
# PromQL's words: functions, aggregations, operators, keywords.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "topk", "bottomk", "abs", "absent", "clamp_min", "clamp_max", "label_values",
}  # fmt: skip


@pytest.fixture
def scraped(make_stack: Callable[..., Stack]) -> dict[str, set[str]]:
    """Sample name -> its label names, from a proxy that went through every metric's path."""
    sims = [
        SimConfig(name=n, ttft=0.0, tokens_per_second=0) for n in ("alpha_one", "alpha_two", "beta")
    ]
    stack = make_stack(POLICY, sims)
    client = stack.client()
    client.chat.completions.create(model="m", messages=MESSAGES)  # served, priced
    for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
        pass  # time to first token
    stack.fault("alpha_one", mode="status", status=503)
    for _ in range(6):  # failovers; the breaker opens
        client.chat.completions.create(model="m", messages=MESSAGES)
    stack.fault("alpha_two", mode="slow_first_token", ttft=2)
    for _ in client.chat.completions.create(model="hedged", messages=MESSAGES, stream=True):
        pass  # beta wins the hedge
    for _ in _shed_one(stack):
        pass
    samples: dict[str, set[str]] = defaultdict(set)
    for line in stack.http.get("/metrics").text.splitlines():
        found = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        if found and not line.startswith("#"):
            samples[found.group(1)] |= set(
                re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', found.group(3) or "")
            )
    return dict(samples)


def _shed_one(stack: Stack) -> Iterator[None]:
    """One request held in flight (max_in_flight: 1), so the next is shed."""
    slow = threading.Thread(
        target=lambda: stack.client(timeout=20).chat.completions.create(
            model="slow", messages=MESSAGES
        )
    )
    slow.start()
    deadline = time.monotonic() + 10
    while stack.http.get("/admin/status").json()["inflight"] < 1:
        assert time.monotonic() < deadline, "the slow request never became in flight"
        time.sleep(0.01)
    with pytest.raises(openai.APIStatusError) as refused:
        stack.client().chat.completions.create(model="m", messages=MESSAGES)
    assert refused.value.status_code == 503
    slow.join(20)
    yield


def promql_names(expr: str) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """(metric names, labels matched per metric, labels grouped by) in a PromQL expression."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    matched: dict[str, set[str]] = defaultdict(set)
    for metric, inner in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", text):
        matched[metric] |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", inner))
    grouped = {
        label.strip()
        for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text)
        for label in clause.split(",")
        if label.strip()
    }
    bare = re.sub(r"\{[^}]*\}", " ", text)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    words = set(re.findall(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    metrics = {w for w in words if w not in PROMQL_WORDS}
    return metrics, dict(matched), grouped


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = re.fullmatch(
                r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"]
            ).groups()  # type: ignore[union-attr]
            queries.append(f"sum by ({label}) ({metric})")
    return queries


def alert_queries() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_the_parser_sees_names_labels_and_groupings() -> None:
    metrics, matched, grouped = promql_names(
        'histogram_quantile(0.95, sum by (le, edgeproxy_candidate) (rate(x_bucket{a="1",b!~"c|d"}[5m])))'
        " / on (pod) y_total > 0.2"
    )
    assert metrics == {"x_bucket", "y_total"}
    assert matched == {"x_bucket": {"a", "b"}}
    assert grouped == {"le", "edgeproxy_candidate", "pod"}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_and_label_used_is_served(scraped: dict[str, set[str]], source: str) -> None:
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    assert len(queries) >= 8
    problems = []
    used: set[str] = set()
    for expr in queries:
        metrics, matched, grouped = promql_names(expr)
        assert metrics, expr
        used |= metrics
        for metric in metrics - scraped.keys():
            problems.append(f"{metric} is not on /metrics ({expr.strip()[:80]})")
        for metric, labels in matched.items():
            for label in labels - scraped.get(metric, set()):
                problems.append(f"{metric} has no label {label}")
        offered = set().union(*(scraped.get(m, set()) for m in metrics)) | TARGET_LABELS
        for label in grouped - offered:
            problems.append(f"no metric of {sorted(metrics)} has the label {label}")
    assert not problems, problems
    # The views cover the proxy's own families, not just one or two.
    families = {"requests", "failovers", "breaker_state", "requests_shed"}
    if source == "dashboard":
        families |= {"attempts", "hedges", "cost_usd", "cache_lookups", "client_connections"}
    assert all(any(f"edgeproxy_{f}" in m for m in used) for f in families), used


def test_a_misspelt_metric_would_be_caught(scraped: dict[str, set[str]]) -> None:
    metrics, _, _ = promql_names("sum(rate(edgeproxy_request_total[5m]))")
    assert metrics - scraped.keys() == {"edgeproxy_request_total"}


def test_alert_rules_are_well_formed() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    names = [rule["alert"] for group in groups for rule in group["rules"]]
    assert len(names) == len(set(names)) and all(n.startswith("Edgeproxy") for n in names)
    for group in groups:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= set(rule["annotations"])
            assert re.fullmatch(r"\d+[smh]", rule["for"])
            assert rule["expr"].count("(") == rule["expr"].count(")")


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "edgeproxy" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].count("(") == target["expr"].count(")")

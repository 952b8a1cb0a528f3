"""deploy/ checked offline: the Kubernetes manifests against the Kubernetes API's own schema (the
models of the official `kubernetes` client: every key known, every value of its type, required
fields present) and against what the proxy needs; the systemd unit with systemd-analyze; the
Containerfile's promises; and every EDGEPROXY_* variable they set is a real setting."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from edgeproxy.cli import build_parser
from edgeproxy.commands.options import resolve_settings
from edgeproxy.policy import load_policy_text

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KINDS = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}


# -- the Kubernetes schema, from the client's generated models ------------------------------------


def schema_problems(value: Any, kind: str, path: str = "") -> list[str]:
    """Where ``value`` does not fit the API type ``kind`` (a model name, ``List[...]``,
    ``Dict[str, ...]`` or a primitive): unknown keys, wrong types, missing required fields."""
    if kind.startswith("List["):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [
            p
            for i, item in enumerate(value)
            for p in schema_problems(item, kind[5:-1], f"{path}[{i}]")
        ]
    if kind.startswith("Dict["):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        inner = kind[kind.index(",") + 1 : -1].strip()
        return [p for k, v in value.items() for p in schema_problems(v, inner, f"{path}.{k}")]
    primitive = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str}
    if kind in primitive:
        ok = isinstance(value, primitive[kind]) and not (kind == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {kind}, got {value!r}"]
    if kind in ("object", "bytes"):  # IntOrString, Quantity and free-form fields
        return []
    model = getattr(k8s, kind)
    if not isinstance(value, dict):
        return [f"{path}: expected a {kind} mapping"]
    by_key = {json_key: attr for attr, json_key in model.attribute_map.items()}
    problems = [f"{path}.{key}: not a field of {kind}" for key in value if key not in by_key]
    for key, item in value.items():
        if key in by_key:
            problems += schema_problems(item, model.openapi_types[by_key[key]], f"{path}.{key}")
    if not problems:
        try:  # the models (pydantic) refuse missing required fields
            model.from_dict(value)
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
    return problems


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in manifests() if d["kind"] == kind]
    return found


def test_the_schema_check_catches_mistakes() -> None:
    deployment = one("Deployment")
    assert schema_problems(deployment, "V1Deployment") == []
    spec = deployment["spec"]["template"]["spec"]
    broken = {**spec, "initContainers": [{**spec["initContainers"][0], "readynessProbe": {}}]}
    assert any("readynessProbe: not a field" in p for p in schema_problems(broken, "V1PodSpec"))
    broken = {**spec, "terminationGracePeriodSeconds": "120"}
    assert any("expected int" in p for p in schema_problems(broken, "V1PodSpec"))
    broken = {**spec, "containers": [{"image": "x"}]}  # no name
    assert any("name" in p for p in schema_problems(broken, "V1PodSpec"))


def test_every_manifest_fits_the_kubernetes_schema() -> None:
    docs = manifests()
    assert {d["kind"] for d in docs} == {"Deployment", "ConfigMap", "Secret", "NetworkPolicy"}
    for doc in docs:
        kind = KINDS[(doc["apiVersion"], doc["kind"])]
        assert schema_problems(doc, kind, doc["kind"]) == []


def test_kustomization_lists_every_manifest_and_builds() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the rest of this file checks the same offline)")
    # kubectl's --dry-run=client needs an API server for discovery; kustomize does not.
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    )
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(built.stdout) if d)
    assert kinds == sorted(d["kind"] for d in manifests())


# -- what the proxy needs -------------------------------------------------------------------------


def sidecar() -> dict[str, Any]:
    spec = one("Deployment")["spec"]["template"]["spec"]
    (proxy,) = [c for c in spec["initContainers"] if c["name"] == "edgeproxy"]
    return proxy


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def serve_variables() -> set[str]:
    """Every variable `edgeproxy serve` reads: its settings' and the tokens."""
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    settings = serve.get_default("_edgeproxy_settings")
    return {s.env for s in settings if s.env} | {"EDGEPROXY_ADMIN_TOKEN", "EDGEPROXY_METRICS_TOKEN"}


def duration(text: str) -> float:
    return float(text)


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_the_sidecar_starts_first_and_stops_last_with_time_to_drain() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    proxy = sidecar()
    assert proxy["restartPolicy"] == "Always"  # a native sidecar: up before the app, down after
    env = env_of(proxy)
    assert set(env) <= serve_variables(), set(env) - serve_variables()
    drain = duration(env["EDGEPROXY_DRAIN_DELAY"]) + duration(env["EDGEPROXY_DRAIN_TIMEOUT"])
    app_stop = max(
        c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        for c in pod["containers"]
    )
    # The app's preStop and its own drain happen first, then the proxy's: the grace covers both.
    assert pod["terminationGracePeriodSeconds"] >= app_stop + drain + 10


def test_probes_and_scrape_annotations_point_at_the_proxy() -> None:
    template = one("Deployment")["spec"]["template"]
    proxy = sidecar()
    port = int(env_of(proxy)["EDGEPROXY_PORT"])
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"  # fails at once on SIGTERM
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert proxy["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ports[proxy[probe]["httpGet"]["port"]] == port
    # The kubelet probes the pod's address: the proxy must listen beyond loopback.
    assert env_of(proxy)["EDGEPROXY_HOST"] == "0.0.0.0"
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"
    (app,) = template["spec"]["containers"]
    assert env_of(app)["OPENAI_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
    assert env_of(app)["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{port}"


def test_resources_fit_the_benchmarked_footprint() -> None:
    resources = sidecar()["resources"]
    # docs/benchmarks.md: RSS ~100 MiB idle, ~140 MiB at peak (1,000 streams included).
    assert (
        140
        <= mebibytes(resources["requests"]["memory"])
        <= mebibytes(resources["limits"]["memory"])
    )
    assert mebibytes(resources["limits"]["memory"]) >= 2 * 140
    assert resources["requests"]["cpu"].endswith("m") and "cpu" in resources["limits"]


def test_the_policy_mount_the_secret_and_the_image_agree() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    proxy = sidecar()
    policy_path = Path(env_of(proxy)["EDGEPROXY_POLICY"])
    mounts = {m["mountPath"]: m for m in proxy["volumeMounts"]}
    mount = mounts[str(policy_path.parent)]
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap = one("ConfigMap")
    assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    text = configmap["data"][policy_path.name]
    secret = one("Secret")
    (source,) = proxy["envFrom"]
    assert source["secretRef"]["name"] == secret["metadata"]["name"]
    # Every ${VARIABLE} the policy needs comes from the Secret: with exactly its keys, it loads.
    needed = set(re.findall(r"\$\{(\w+)\}", text))
    assert needed and needed <= set(secret["stringData"])
    policy = load_policy_text(text, "configmap.yaml", environ=dict(secret["stringData"]))
    assert policy.route_names
    # /tmp is the one writable place under a read-only root.
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    # The image's promises: its user, its port, the policy path it reads by default.
    image = containerfile()
    assert image["ENV"]["EDGEPROXY_POLICY"] == str(policy_path)
    assert image["EXPOSE"] == env_of(proxy)["EDGEPROXY_PORT"]
    user, group = image["USER"].split(":")
    security = proxy["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user), int(group))
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == [
        "ALL"
    ]


def test_only_monitoring_reaches_the_proxy_port() -> None:
    policy = one("NetworkPolicy")
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    port = int(env_of(sidecar())["EDGEPROXY_PORT"])
    for rule in policy["spec"]["ingress"]:
        if any(p["port"] == port for p in rule["ports"]):
            assert rule["from"] and all("namespaceSelector" in f for f in rule["from"])


# -- the Containerfile ----------------------------------------------------------------------------


def containerfile() -> dict[str, Any]:
    """The runtime stage's instructions (the last FROM on), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Containerfile").read_text())
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    last = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
    found: dict[str, Any] = {"ENV": {}, "stages": [ln for ln in lines if ln.startswith("FROM ")]}
    for line in lines[last:]:
        word, _, rest = line.partition(" ")
        if word == "ENV":
            found["ENV"].update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        else:
            found[word] = rest.strip()
    return found


def test_the_containerfile_keeps_its_promises() -> None:
    image = containerfile()
    assert len(image["stages"]) >= 3  # build, install, runtime
    user = image["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric: runAsNonRoot can verify it
    assert image["ENTRYPOINT"] == '["edgeproxy"]' and image["CMD"] == '["serve"]'  # exec form
    assert "/healthz" in image["HEALTHCHECK"] and image["STOPSIGNAL"] == "SIGTERM"
    assert {n for n in image["ENV"] if n.startswith("EDGEPROXY_")} <= serve_variables()
    assert image["ENV"]["PYTHONDONTWRITEBYTECODE"] == "1"  # nothing written to a read-only root
    ignored = (ROOT / ".containerignore").read_text().split()
    assert {".venv", "target", "**/*.so"} <= set(ignored)


# -- the systemd unit -----------------------------------------------------------------------------

UNIT = ROOT / "deploy" / "systemd" / "edgeproxy.service"


def unit_entries() -> list[tuple[str, str, str]]:
    section = ""
    entries = []
    for line in UNIT.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            entries.append((section, key, value))
    return entries


def test_the_systemd_unit_drains_reloads_and_names_real_settings() -> None:
    service = {k: v for s, k, v in unit_entries() if s == "Service" and k != "Environment"}
    assert service["ExecStart"].endswith("/edgeproxy serve")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    defaults = build_parser().parse_args(["serve"])
    assert resolve_settings(defaults, {}) is None
    assert int(service["TimeoutStopSec"]) > defaults.drain_delay + defaults.drain_timeout
    environment = dict(v.split("=", 1) for s, k, v in unit_entries() if k == "Environment")
    assert set(environment) <= serve_variables()
    example = ROOT / "deploy" / "systemd" / "edgeproxy.env.example"
    for line in example.read_text().splitlines():
        name = line.lstrip("#").split("=")[0]
        if name.startswith("EDGEPROXY_"):
            assert name in serve_variables(), name


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify wants ExecStart to exist: point it at an executable that does.
    unit = tmp_path / "edgeproxy.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgeproxy/bin/edgeproxy", "/bin/true"))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("KillSignal=", "KilSignal="))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key 'KilSignal'" in result.stderr  # the check can fail


def test_configparser_reads_the_env_example() -> None:
    # The EnvironmentFile's lines are plain NAME=value (no quotes, no export).
    parser = configparser.ConfigParser()
    parser.read_string("[env]\n" + (ROOT / "deploy/systemd/edgeproxy.env.example").read_text())
    assert all(not v.startswith(("'", '"')) for v in parser["env"].values())

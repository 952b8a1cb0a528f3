"""The ``edgeproxy`` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from edgeproxy.builtin import default_policy_path
from edgeproxy.cli import DEFAULT_PORT

ROOT = Path(__file__).resolve().parents[2]
EDGEPROXY = [sys.executable, "-m", "edgeproxy.cli"]


def run(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEPROXY, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_policy_check_accepts_every_shipped_policy() -> None:
    paths = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "policies").rglob("*.yaml"))
    result = run("policy", "check", *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    for path in paths:
        assert f"{path}: ok" in result.stdout


def test_policy_check_reports_file_line_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nproviders:\n  p:\n    kind: openai\n    regions: {r: {base_url: 'http://x/v1'}}\n"
        "    models: {m: {}}\nroutes:\n  m:\n    chain: [p/r/m]\n    timeout: {connect: 1s}\n"
    )
    result = run("policy", "check", str(bad))
    assert result.returncode == 1
    assert (
        f"{bad}:10:5: routes.m.timeout: unknown key 'timeout' (did you mean 'timeouts'?)"
        in result.stdout
    )
    as_json = json.loads(run("policy", "check", "--format", "json", str(bad)).stdout)
    assert as_json[0]["ok"] is False and "timeouts" in as_json[0]["errors"][0]


def test_serve_refuses_an_invalid_policy_without_printing_secrets(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text(
        (ROOT / "policies/default.yaml")
        .read_text()
        .replace("max_attempts: 3", "max_attempts: zero")
    )
    result = run(
        "serve", "--policy", str(bad), "--port", "0", env={"ALPHA_API_KEY": "sk-canary-123"}
    )
    assert result.returncode == 2
    assert "max_attempts" in result.stderr
    assert "sk-canary-123" not in result.stderr + result.stdout


def test_demo_check_runs_the_tour_on_free_ports() -> None:
    result = run("demo", "--check", "--ttft", "0.01", "--tps", "1000")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "curl -s http://127.0.0.1:" in out and "from openai import OpenAI" in out
    # --check moves everything to free ports: a running `make demo` (or another test) is no
    # obstacle, and the policy's own ports are not taken.
    for fixed in (DEFAULT_PROXY_PORT, *DEFAULT_SIM_PORTS):
        assert f"127.0.0.1:{fixed}" not in out
    lines = [line for line in out.splitlines() if "->" in line]
    assert len(lines) == 7
    assert "alpha/us-east/gpt-4o-mini after 1 attempt(s)" in lines[0]
    assert "alpha/eu-west/gpt-4o-mini after 2 attempt(s)" in lines[1]  # primary answering 503
    assert "alpha/eu-west/gpt-4o-mini after 2 attempt(s)" in lines[2]  # primary refusing
    assert "alpha/us-east/gpt-4o-mini after 1 attempt(s)" in lines[3]  # healed
    assert "gamma/us/claude-sonnet after 1 attempt(s)" in lines[4]  # Anthropic wire, translated
    assert "alpha/us-east/gpt-4o after 2 attempt(s)" in lines[5]  # Claude 529: OpenAI takes over
    assert "gamma/us/claude-sonnet after 1 attempt(s)" in lines[6]
    assert all("streamed, complete" in line for line in lines)
    assert "from anthropic import Anthropic" in out
    assert out.rstrip().endswith("demo check: passed")


def test_a_port_clash_names_the_port_and_the_way_out(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proxy = run("demo", "--check", "--port", str(port))
        assert proxy.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proxy.stdout
        assert "--port 0" in proxy.stdout
        control = run("demo", "--check", "--control-port", str(port))
        assert control.returncode == 2
        assert f"simulator control API cannot listen on 127.0.0.1:{port}" in control.stdout
        assert "--control-port 0" in control.stdout
        # A simulator's port comes from the policy: no proxy flag can move it, --sim-ports can.
        policy = tmp_path / "p.yaml"
        policy.write_text(_moved_policy({DEFAULT_SIM_PORTS[0]: port}))
        sim = run("demo", "--check", "--policy", str(policy), "--sim-ports", "policy")
        assert sim.returncode == 2
        assert f"simulator alpha-us-east cannot listen on 127.0.0.1:{port}" in sim.stdout
        assert "--sim-ports free" in sim.stdout
        served = run("serve", "--policy", str(policy), "--port", str(port))
        assert served.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}" in served.stderr and "--port" in served.stderr
    # The same policy with its simulators moved to free ports runs the tour.
    moved = run("demo", "--check", "--policy", str(policy), "--ttft", "0", "--tps", "0")
    assert moved.returncode == 0, moved.stdout + moved.stderr


# The demo's ports (the built-in policy's simulators, the proxy's default): never bound by tests.
DEFAULT_PROXY_PORT = DEFAULT_PORT
DEFAULT_SIM_PORTS = tuple(
    sorted({int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", default_policy_path().read_text())})
)


def _moved_policy(ports: dict[int, int] | None = None) -> str:
    """The built-in policy with every loopback port moved: to ``ports[old]`` where given, to
    a free port otherwise."""
    text = (ROOT / "policies/default.yaml").read_text()
    found = sorted({int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)})
    assert len(DEFAULT_SIM_PORTS) == 4 and set(DEFAULT_SIM_PORTS) <= set(found)
    mapping = {old: (ports or {}).get(old) or free_port() for old in found}
    return re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{mapping[int(m.group(1))]}", text)


def test_serve_and_sim_processes_work_together(tmp_path: Path) -> None:
    # `edgeproxy sim` and `edgeproxy serve` as separate processes, as an operator runs them.
    control = free_port()
    path = tmp_path / "policy.yaml"
    path.write_text(_moved_policy())
    assert not any(f":{port}/" in path.read_text() for port in DEFAULT_SIM_PORTS)
    proxy_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sim = subprocess.Popen(
        [
            *EDGEPROXY,
            "sim",
            "--policy",
            str(path),
            "--control-port",
            str(control),
            "--ttft",
            "0",
            "--tps",
            "0",
            "--fault",
            "alpha-us-east=status:503",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    serve = subprocess.Popen(
        [*EDGEPROXY, "serve", "--policy", str(path), "--port", str(proxy_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{proxy_port}/readyz")
        _wait_for(f"http://127.0.0.1:{control}/health")
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{proxy_port}/v1", api_key="x", max_retries=0
        )
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-edgeproxy-region"] == "eu-west"
        assert raw.headers["x-edgeproxy-attempts"] == "2"
        assert raw.headers["server"] == "edgeproxy"  # not Python's and aiohttp's versions
    finally:
        for process in (serve, sim):
            process.send_signal(signal.SIGTERM)
        serve_out = serve.communicate(timeout=20)[0]
        sim.communicate(timeout=20)
    assert serve.returncode == 0, serve_out
    # The JSON access log recorded the failed attempt, by class, without the provider key.
    assert '"failure":"server_error: HTTP 503 from upstream' in serve_out
    assert "sim-key-alpha" not in serve_out


def test_serve_is_configured_by_environment(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(_moved_policy())
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "EDGEPROXY_POLICY": str(path),
        "EDGEPROXY_HOST": "127.0.0.1",
        "EDGEPROXY_PORT": str(port),
        "EDGEPROXY_LOG_LEVEL": "debug",
        "EDGEPROXY_LOG_FORMAT": "text",
        "EDGEPROXY_MAX_CONNECTIONS": "40",
        "EDGEPROXY_KEEPALIVE_TIMEOUT": "12",
        "EDGEPROXY_HEADER_TIMEOUT": "3",
        "EDGEPROXY_ALLOWED_HOSTS": "edgeproxy.internal",
        "EDGEPROXY_ADMIN_TOKEN": "admin-secret",
    }
    # A flag wins over its variable.
    serve = subprocess.Popen(
        [*EDGEPROXY, "serve", "--max-connections", "41"],
        cwd=tmp_path,  # outside the repository: nothing is read relative to it
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/readyz")
        metrics = httpx.get(
            f"http://127.0.0.1:{port}/metrics",
            headers={"Host": "edgeproxy.internal", "Authorization": "Bearer admin-secret"},
        )
        assert metrics.status_code == 200
        assert "edgeproxy_client_connections_limit 41" in metrics.text
        admin = httpx.get(f"http://127.0.0.1:{port}/admin/policy")
        assert admin.status_code == 401  # the admin token from the environment is in force
        assert admin.json()["error"]["code"] == "invalid_admin_token"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"NOT HTTP\r\n\r\n")  # answered 400, logged at debug level only
            assert b" 400 " in sock.recv(100)
    finally:
        serve.send_signal(signal.SIGTERM)
        out = serve.communicate(timeout=20)[0]
    assert serve.returncode == 0, out
    assert f"policy {path}" in out
    assert " DEBUG " in out and "bad HTTP request" in out  # text format, at debug level
    assert "keepalive_timeout=12.0" in out and "header_timeout=3.0" in out
    assert "admin-secret" not in out


def test_a_bad_variable_is_named() -> None:
    result = run("serve", "--port", "0", env={"EDGEPROXY_DRAIN_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "EDGEPROXY_DRAIN_TIMEOUT='soon': expected seconds as a number" in result.stderr


def test_the_wheel_needs_no_repository(tmp_path: Path) -> None:
    # From a directory that is not the repository, the built-in policy is the packaged one.
    result = subprocess.run(
        [*EDGEPROXY, "demo", "--check", "--ttft", "0", "--tps", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,  # a guard against a hang, not a timing: the tour is slow on a busy machine
        env={**os.environ, "PYTHONPATH": str(ROOT / "python")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "edgeproxy/data/default.yaml" in result.stdout


def _wait_for(url: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not come up within {seconds}s")
        time.sleep(0.05)


def test_status_renders_a_running_proxy(stack) -> None:  # type: ignore[no-untyped-def]
    stack.fault("alpha_one", mode="status", status=503)
    client = stack.client()
    for _ in range(5):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

    def probed() -> bool:
        candidates = stack.http.get("/admin/status").json()["candidates"]
        return all(c["probe"] and c["probe"]["ok"] is not None for c in candidates)

    deadline = time.monotonic() + 20
    while not probed():
        assert time.monotonic() < deadline, "the prober never reported"
        time.sleep(0.05)
    result = run("status", "--url", stack.proxy.url, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert stack.policy.version in out
    rows = {
        line.split()[0]: line for line in out.splitlines() if line.startswith(("alpha/", "beta/"))
    }
    assert set(rows) == {"alpha/one/m", "alpha/two/m", "beta/main/m-small"}
    assert "open" in rows["alpha/one/m"]  # alpha_one's breaker
    # Every simulator answers its probe (a 503 fault only hits completions): the real payload's
    # probe state reads "ok" (it read "unhealthy" for every candidate before).
    assert all(" ok " in row for row in rows.values()), out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    as_json = json.loads(run("status", "--url", stack.proxy.url, "--json").stdout)
    states = {c["key"]: c["breaker"]["state"] for c in as_json["candidates"]}
    assert states["alpha/one/m"] == "open" and states["alpha/two/m"] == "closed"

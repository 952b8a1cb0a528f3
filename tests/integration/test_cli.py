"""The ``edgeproxy`` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

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


def test_demo_check_runs_the_tour() -> None:
    result = run(
        "demo", "--check", "--port", "0", "--control-port", "0", "--ttft", "0.01", "--tps", "1000"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "curl -s http://127.0.0.1:" in out and "from openai import OpenAI" in out
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


def test_serve_and_sim_processes_work_together(tmp_path: Path) -> None:
    # `edgeproxy sim` and `edgeproxy serve` as separate processes, as an operator runs them.
    control, p1, p2, p3 = free_port(), free_port(), free_port(), free_port()
    policy = (ROOT / "policies/default.yaml").read_text()
    for old, new in (("18101", p1), ("18102", p2), ("18103", p3)):
        policy = policy.replace(old, str(new))
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
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
    finally:
        for process in (serve, sim):
            process.send_signal(signal.SIGTERM)
        serve_out = serve.communicate(timeout=20)[0]
        sim.communicate(timeout=20)
    assert serve.returncode == 0, serve_out
    # The JSON access log recorded the failed attempt, by class, without the provider key.
    assert '"failure":"server_error: HTTP 503 from upstream' in serve_out
    assert "sim-key-alpha" not in serve_out


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
    result = run("status", "--url", stack.proxy.url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert stack.policy.version in out
    for key in ("alpha/one/m", "alpha/two/m", "beta/main/m-small"):
        assert key in out
    assert "open" in out  # alpha_one's breaker
    as_json = json.loads(run("status", "--url", stack.proxy.url, "--json").stdout)
    states = {c["key"]: c["breaker"]["state"] for c in as_json["candidates"]}
    assert states["alpha/one/m"] == "open" and states["alpha/two/m"] == "closed"

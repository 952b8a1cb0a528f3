"""The system under load: simulated providers (`edgeproxy sim`) and the proxy (`edgeproxy serve`),
started on their own loopback ports from a copy of a policy, and stopped again.

The copy moves the simulator ports (18101.. in policies/default.yaml) to a free range so a load
test does not collide with a `make demo` someone else is running on the same machine.
"""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from bench.procutil import EDGEPROXY, REPO, Proc, free_port, serve_argv, wait_port


def remap_policy(
    source: Path, dest: Path, *, port_base: int, overrides: dict[str, Any] | None = None
) -> dict[int, int]:
    """Copy a policy, moving every loopback port to port_base+N; return the old->new port map."""
    text = source.read_text()
    ports = sorted({int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)})
    mapping = {old: port_base + i + 1 for i, old in enumerate(ports)}
    text = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{mapping[int(m.group(1))]}", text)
    if overrides:
        data = yaml.safe_load(text)
        _merge(data, overrides)
        text = yaml.safe_dump(data, sort_keys=False)
    dest.write_text(text)
    return mapping


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@dataclass
class Stack:
    out: Path
    policy: Path
    proxy_port: int
    control_port: int
    ttft: float = 0.05
    tps: float = 200.0
    procs: list[Proc] = field(default_factory=list)
    proxy: Proc | None = None
    sims: Proc | None = None
    proxy_env: dict[str, str] = field(default_factory=dict)
    # The simulators' loopback ports (the policy's upstreams), set by start().
    sim_ports: list[int] = field(default_factory=list)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def start(self, sim_ports: list[int]) -> None:
        self.sim_ports = list(sim_ports)
        self.sims = Proc(
            "sim",
            [
                *EDGEPROXY,
                "sim",
                "--policy",
                str(self.policy),
                "--control-port",
                str(self.control_port),
                "--ttft",
                str(self.ttft),
                "--tps",
                str(self.tps),
                "--log-level",
                "warning",
            ],
            self.out / "sim.log",
        )
        self.procs.append(self.sims)
        for port in [self.control_port, *sim_ports]:
            wait_port(port, 30, self.sims.popen)
        self.proxy = Proc(
            "proxy",
            serve_argv(self.policy, self.proxy_port),
            self.out / "proxy.log",
            env=self.proxy_env,
        )
        self.procs.append(self.proxy)
        wait_port(self.proxy_port, 30, self.proxy.popen)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def start_stack(
    out: Path,
    *,
    ttft: float = 0.05,
    tps: float = 200.0,
    overrides: dict[str, Any] | None = None,
    proxy_env: dict[str, str] | None = None,
) -> Stack:
    out.mkdir(parents=True, exist_ok=True)
    control = free_port()
    # Sims need a small contiguous range; pick one above the ephemeral-looking ports in use.
    base = _free_range(4)
    policy = out / "policy.yaml"
    mapping = remap_policy(
        REPO / "policies" / "default.yaml", policy, port_base=base - 1, overrides=overrides
    )
    stack = Stack(
        out=out,
        policy=policy,
        proxy_port=free_port(),
        control_port=control,
        ttft=ttft,
        tps=tps,
        proxy_env=dict(proxy_env or {}),
    )
    try:
        stack.start(sorted(mapping.values()))
    except BaseException:
        stack.stop()
        raise
    return stack


def _free_range(n: int) -> int:
    import socket

    for base in range(28100, 40000, 17):
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free loopback port range")


def control(
    url: str, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")

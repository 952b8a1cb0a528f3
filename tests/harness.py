"""A real proxy in front of real simulated providers, on loopback sockets, for the tests.

The servers run on a uvloop event loop in a background thread so the tests can drive them with
the official *synchronous* OpenAI SDK, exactly as an app would. Faults are switched through the
simulator's HTTP control API, the way an operator (or locust) does it.
"""

from __future__ import annotations

import asyncio
import string
import threading
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import httpx
import openai
import uvloop
import yaml

from edgeproxy.clock import Clock
from edgeproxy.policy import load_policy_text
from edgeproxy.server.runner import ProxyServer
from edgeproxy.sim import SimCluster, SimConfig
from edgeproxy.sim.config import SimWire
from edgeproxy.snapshot import Policy
from edgeproxy.telemetry.process import Telemetry

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def sim_wires(policy_template: str) -> dict[str, SimWire]:
    """Which wire each ``$name`` simulator must speak: its provider's ``kind`` in the policy
    (each simulator speaks one wire, as a provider's endpoint does)."""
    document = yaml.safe_load(policy_template) or {}
    wires: dict[str, SimWire] = {}
    for provider in (document.get("providers") or {}).values():
        kind = provider.get("kind", "openai")
        for region in (provider.get("regions") or {}).values():
            url = str(region.get("base_url", ""))
            if url.startswith("$"):
                wires[url[1:].strip("{}")] = kind
    return wires


class Stack:
    """Simulated providers named in ``sims`` plus a proxy serving ``policy_template``.

    The template is a policy YAML with ``$name`` placeholders replaced by each sim's base URL.
    """

    def __init__(
        self,
        loop: LoopThread,
        policy_template: str,
        sims: Iterable[str | SimConfig],
        environ: Mapping[str, str] | None = None,
        telemetry: Telemetry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.loop = loop
        wires = sim_wires(policy_template)
        configs = [
            replace(
                s if isinstance(s, SimConfig) else SimConfig(name=s, ttft=0.0, tokens_per_second=0),
                wire=wires.get(s if isinstance(s, str) else s.name, "openai"),
            )
            for s in sims
        ]
        self.cluster = SimCluster(configs, control_port=0)
        loop.run(self.cluster.start())
        urls = {name: sim.url for name, sim in self.cluster.sims.items()}
        self.policy_text = string.Template(policy_template).substitute(urls)
        self.policy: Policy = load_policy_text(self.policy_text, "test-policy.yaml", environ or {})
        self.proxy = ProxyServer(self.policy, port=0, telemetry=telemetry, clock=clock)
        loop.run(self.proxy.start())
        self.http = httpx.Client(base_url=self.proxy.url, timeout=10)
        self._control = httpx.Client(base_url=self.cluster.control_url, timeout=10)

    @property
    def base_url(self) -> str:
        return f"{self.proxy.url}/v1"

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 10)
        return openai.OpenAI(base_url=self.base_url, api_key="sk-client-not-forwarded", **kwargs)

    def fault(self, sim: str, **fault: Any) -> None:
        response = self._control.put(f"/sims/{sim}/fault", json=fault)
        response.raise_for_status()

    def heal(self, sim: str) -> None:
        self._control.delete(f"/sims/{sim}/fault").raise_for_status()

    def stats(self, sim: str) -> dict[str, Any]:
        stats: dict[str, Any] = self._control.get(f"/sims/{sim}").json()["stats"]
        return stats

    def requests_to(self, sim: str) -> int:
        return int(self.stats(sim)["requests_total"])

    def close(self) -> None:
        self.http.close()
        self._control.close()
        self.loop.run(self.proxy.stop())
        self.loop.run(self.cluster.stop())


# A three-candidate chain over two providers; the shape most tests use.
THREE_WAY = """
version: 1
defaults:
  timeouts: {connect: 1s, first_token: 1s, idle: 1s, response: 2s, total: 10s}
providers:
  alpha:
    kind: openai
    api_key: sk-alpha-secret
    regions:
      one: {base_url: "$alpha_one"}
      two: {base_url: "$alpha_two"}
    models:
      m: {upstream_name: upstream-m}
  beta:
    kind: openai
    api_key: sk-beta-secret
    regions:
      main: {base_url: "$beta"}
    models:
      m-small: {}
routes:
  m:
    aliases: [default]
    chain: [alpha/one/m, alpha/two/m, beta/main/m-small]
"""

THREE_WAY_SIMS = (
    SimConfig(name="alpha_one", ttft=0.0, tokens_per_second=0, require_api_key="sk-alpha-secret"),
    SimConfig(name="alpha_two", ttft=0.0, tokens_per_second=0, require_api_key="sk-alpha-secret"),
    SimConfig(name="beta", ttft=0.0, tokens_per_second=0, require_api_key="sk-beta-secret"),
)

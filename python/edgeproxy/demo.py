"""``edgeproxy demo``: the proxy in front of simulated providers, with a live failover tour.

The simulators listen where the policy's loopback ``base_url``s say (the built-in policy:
127.0.0.1:18101-18104), so ``edgeproxy sim`` and the README's commands match; with
``free_sim_ports`` they take free ports and the demo serves a copy of the policy pointing there,
so a demo can run beside another one (or beside the tests).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy_text
from edgeproxy.server.runner import ProxyServer
from edgeproxy.sim import SimCluster
from edgeproxy.sim.cluster import PortInUse
from edgeproxy.sim_from_policy import plan_sims, repoint_policy_text, sim_name
from edgeproxy.snapshot import Policy, Route


@dataclass
class DemoOptions:
    host: str
    port: int
    control_port: int
    ttft: float
    tokens_per_second: float
    check_only: bool
    # Simulators on free ports (and a copy of the policy pointing at them) instead of the ports
    # the policy names.
    free_sim_ports: bool = False


def _say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo(policy: Policy, options: DemoOptions, policy_text: str | None = None) -> int:
    """Serve ``policy`` in front of its simulators and show the tour; ``policy_text`` (the
    policy file's text) is needed for ``free_sim_ports``."""
    plan = plan_sims(policy, ttft=options.ttft, tokens_per_second=options.tokens_per_second)
    if not plan.configs:
        _say("demo: the policy names no loopback upstreams to simulate")
        return 2
    ports = {} if options.free_sim_ports else plan.ports
    cluster = SimCluster(plan.configs, ports=ports, control_port=options.control_port)
    try:
        await cluster.start()
    except PortInUse as exc:
        _say(f"demo: {exc.strerror}")
        _say(_way_out(exc))
        return 2
    proxy: ProxyServer | None = None
    try:
        if options.free_sim_ports:
            moved = _moved_policy(policy, policy_text, cluster)
            if moved is None:
                return 2
            policy = moved
        proxy = ProxyServer(policy, host=options.host, port=options.port)
        try:
            await proxy.start()
        except OSError as exc:
            _say(f"demo: the proxy {exc.strerror or exc}")
            _say(
                "  another process holds that port (another demo, or `edgeproxy serve`?): stop "
                "it, or pass --port N (make demo PORT=N), or --port 0 for any free port."
            )
            return 2
        _print_intro(policy, proxy, cluster)
        ok = await _tour(policy, proxy, cluster)
        ok = await _auto_tour() and ok
        if options.check_only:
            _say("demo check: passed" if ok else "demo check: FAILED (a request above failed)")
            return 0 if ok else 1
        _say("The proxy keeps running. Press Ctrl-C to stop.")
        await _wait_for_signal()
        return 0
    finally:
        if proxy is not None:
            await proxy.stop()
        await cluster.stop()


def _way_out(exc: PortInUse) -> str:
    if exc.what.startswith("simulator"):
        return (
            "  the policy puts a simulated provider on that port, and another process holds it "
            "(another demo, or `edgeproxy sim`?): stop it, or pass --sim-ports free (the "
            "simulators take free ports and the demo serves a copy of the policy pointing "
            "there; make demo DEMO_ARGS='--sim-ports free')."
        )
    return (
        "  another process holds it (another demo, or `edgeproxy sim`?): stop it, or pass "
        "--control-port N, or --control-port 0 for any free port."
    )


def _moved_policy(policy: Policy, text: str | None, cluster: SimCluster) -> Policy | None:
    if text is None:
        raise ValueError("free_sim_ports needs the policy's text")
    ports = {name: sim.port for name, sim in cluster.sims.items()}
    source = f"{policy.source} (simulators on free ports)"
    try:
        return load_policy_text(
            repoint_policy_text(text, ports), source, base_dir=Path(policy.source).parent
        )
    except PolicyError as exc:  # the copy of a policy that loaded: not expected
        _say(f"demo: the policy with its simulators moved is not valid: {exc}")
        return None


def _print_intro(policy: Policy, proxy: ProxyServer, cluster: SimCluster) -> None:
    route = policy.routes[policy.route_names[0]]
    _say(
        f"edgeproxy is listening on {proxy.url} (policy {policy.source}, version {policy.version})"
    )
    _say("Simulated providers:")
    for name, sim in cluster.sims.items():
        _say(f"  {name:<24} {sim.url}")
    _say(f"Simulator control: {cluster.control_url}/sims")
    _say()
    _say("Call it with curl:")
    _say(
        f"  curl -s {proxy.url}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{route.name}", "messages": [{{"role": "user", "content": "Hello"}}]}}\''
    )
    _say("Or with the OpenAI SDK:")
    _say(
        "  from openai import OpenAI\n"
        f'  client = OpenAI(base_url="{proxy.url}/v1", api_key="unused-by-the-proxy")\n'
        f'  client.chat.completions.create(model="{route.name}", '
        'messages=[{"role": "user", "content": "Hello"}])'
    )
    claude = _other_wire_route(policy, route)
    if claude is not None:
        _say("Or with the Anthropic SDK (its own wire; OpenAI models take over if Claude fails):")
        _say(
            "  from anthropic import Anthropic\n"
            f'  client = Anthropic(base_url="{proxy.url}", api_key="unused-by-the-proxy")\n'
            f'  client.messages.create(model="{claude.name}", max_tokens=256, '
            'messages=[{"role": "user", "content": "Hello"}])'
        )
    first = sim_name(route.chain[0])
    _say("Break a provider live, and heal it:")
    _say(
        f'  curl -X PUT {cluster.control_url}/sims/{first}/fault -d \'{{"mode": "status", "status": 503}}\''
    )
    _say(f"  curl -X DELETE {cluster.control_url}/sims/{first}/fault")
    _say()


def _other_wire_route(policy: Policy, route: Route) -> Route | None:
    """A route whose primary speaks another wire than ``route``'s (the default policy's
    Claude route), to show failover across wires."""
    wire = route.chain[0].wire
    routes = (policy.routes[n] for n in policy.route_names)
    return next((r for r in routes if r.chain[0].wire is not wire), None)


async def _tour(policy: Policy, proxy: ProxyServer, cluster: SimCluster) -> bool:
    """Show failover happening: one request, break the primary, another, heal — then the same
    across wires when the policy has an Anthropic-first route."""
    route = policy.routes[policy.route_names[0]]
    ok = True
    _say("A short tour (an OpenAI-SDK-style streamed request each time):")
    tours = [(route.name, sim_name(route.chain[0]), {"mode": "status", "status": 503})]
    claude = _other_wire_route(policy, route)
    if claude is not None:
        tours.append((claude.name, sim_name(claude.chain[0]), {"mode": "status", "status": 529}))
    async with aiohttp.ClientSession() as session:

        async def fault(sim: str, spec: object) -> None:
            url = f"{cluster.control_url}/sims/{sim}/fault"
            if spec is None:
                await session.delete(url)
            else:
                await session.put(url, data=orjson.dumps(spec))

        for model, primary, failure in tours:
            steps: list[tuple[str, object]] = [
                (f"{model}: all providers healthy", None),
                (f"{model}: {primary} answering {failure['status']}", failure),
            ]
            if model == route.name:
                steps.append((f"{model}: {primary} refusing connections", {"mode": "refuse"}))
            steps.append((f"{model}: {primary} healed", None))
            for label, spec in steps:
                await fault(primary, spec)
                line, good = await _one_request(session, proxy, model)
                ok &= good
                _say(f"  {label:<48} {line}")
    _say()
    return ok


async def _auto_tour() -> bool:
    """The Auto tour (``edgeproxy.auto_tour``): eval, scorecard, ``auto`` serving each task's
    winner, a price rise and a degraded model, re-evals and switches."""
    from edgeproxy.auto_tour import auto_tour

    return await auto_tour(_say)


async def _one_request(
    session: aiohttp.ClientSession, proxy: ProxyServer, model: str
) -> tuple[str, bool]:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}], "stream": True}
    started = asyncio.get_running_loop().time()
    async with session.post(f"{proxy.url}/v1/chat/completions", json=body) as response:
        text = await response.text()
        elapsed = (asyncio.get_running_loop().time() - started) * 1000
        served = "/".join(
            response.headers.get(f"x-edgeproxy-{h}", "?") for h in ("provider", "region", "model")
        )
        attempts = response.headers.get("x-edgeproxy-attempts", "?")
        complete = response.status == 200 and text.rstrip().endswith("data: [DONE]")
        verdict = "streamed, complete" if complete else f"HTTP {response.status}"
        return f"-> {served} after {attempts} attempt(s), {elapsed:.0f} ms, {verdict}", complete


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(file=sys.stderr)

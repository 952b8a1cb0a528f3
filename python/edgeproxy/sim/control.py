"""The control HTTP API of a SimCluster (see the package docstring for the routes)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from .faults import Fault
from .profiles import ModelProfile
from .provider import SimProvider


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": {"message": message}}, status)


def _apply(sim: SimProvider, fault: Fault) -> web.Response:
    try:
        sim.set_fault(fault)
    except OSError as exc:  # healing refuse: the port was taken while it was closed
        return _error(500, f"could not listen again on port {sim.port}: {exc}")
    return _json(sim.describe())


def build_control_app(sims: Mapping[str, SimProvider]) -> web.Application:
    def lookup(request: web.Request) -> SimProvider | None:
        return sims.get(request.match_info["name"])

    async def list_sims(request: web.Request) -> web.Response:
        return _json({"sims": [sim.describe() for sim in sims.values()]})

    async def get_sim(request: web.Request) -> web.Response:
        sim = lookup(request)
        if sim is None:
            return _error(404, f"unknown sim {request.match_info['name']!r}")
        return _json(sim.describe())

    async def put_fault(request: web.Request) -> web.Response:
        sim = lookup(request)
        if sim is None:
            return _error(404, f"unknown sim {request.match_info['name']!r}")
        try:
            fault = Fault.from_dict(orjson.loads(await request.read()))
        except orjson.JSONDecodeError:
            return _error(400, "fault body is not valid JSON")
        except ValueError as exc:
            return _error(400, str(exc))
        return _apply(sim, fault)

    async def delete_fault(request: web.Request) -> web.Response:
        sim = lookup(request)
        if sim is None:
            return _error(404, f"unknown sim {request.match_info['name']!r}")
        return _apply(sim, Fault())

    async def get_profiles(request: web.Request) -> web.Response:
        sim = lookup(request)
        if sim is None:
            return _error(404, f"unknown sim {request.match_info['name']!r}")
        profiles = sim.player.profiles
        return _json({"profiles": {model: p.to_dict() for model, p in profiles.items()}})

    async def set_profile(request: web.Request) -> web.Response:
        """PUT replaces a model's profile; PATCH changes only the fields it gives (e.g. one
        task's quality), starting from the current profile."""
        sim = lookup(request)
        if sim is None:
            return _error(404, f"unknown sim {request.match_info['name']!r}")
        model = request.match_info["model"]
        current = sim.player.profiles.get(model)
        if request.method == "PATCH" and current is None:
            return _error(404, f"sim {sim.config.name!r} has no profile for model {model!r}")
        try:
            data = orjson.loads(await request.read())
            base = current if request.method == "PATCH" and current is not None else None
            profile = base.merged(data) if base is not None else ModelProfile.from_dict(data)
        except orjson.JSONDecodeError:
            return _error(400, "profile body is not valid JSON")
        except ValueError as exc:
            return _error(400, str(exc))
        sim.player.profiles[model] = profile
        return _json({"model": model, "profile": profile.to_dict()})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/sims", list_sims)
    app.router.add_get("/sims/{name}", get_sim)
    app.router.add_put("/sims/{name}/fault", put_fault)
    app.router.add_delete("/sims/{name}/fault", delete_fault)
    app.router.add_get("/sims/{name}/profiles", get_profiles)
    app.router.add_put("/sims/{name}/profiles/{model:.+}", set_profile)
    app.router.add_patch("/sims/{name}/profiles/{model:.+}", set_profile)
    return app

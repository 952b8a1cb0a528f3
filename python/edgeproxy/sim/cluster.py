"""Several simulated providers plus one control server on its own port."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from types import MappingProxyType, TracebackType

from aiohttp import web

from .config import SimConfig
from .control import build_control_app
from .provider import SimProvider


class PortInUse(OSError):
    """A listener could not bind: says which one and on which address (uvloop's own message
    names neither). ``port`` is the one asked for."""

    def __init__(self, errno: int, what: str, host: str, port: int, reason: str) -> None:
        super().__init__(errno, f"{what} cannot listen on {host}:{port}: {reason}")
        self.what = what
        self.port = port


@contextlib.contextmanager
def _naming_the_port(what: str, host: str, port: int) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if isinstance(exc, PortInUse):
            raise
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise PortInUse(exc.errno or 0, what, host, port, reason) from None


class SimCluster:
    """Starts one SimProvider per config and a control API.

    The control server listens on a separate port so it stays reachable while a provider
    refuses connections.
    """

    def __init__(
        self,
        configs: list[SimConfig],
        ports: dict[str, int] | None = None,
        control_port: int | None = None,
        *,
        host: str = "127.0.0.1",
    ) -> None:
        names = [config.name for config in configs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate sim name(s): {', '.join(duplicates)}")
        unknown = sorted(set(ports or {}) - set(names))
        if unknown:
            raise ValueError(f"ports given for unknown sim(s): {', '.join(unknown)}")
        self._sims = {config.name: SimProvider(config) for config in configs}
        self._ports = dict(ports or {})
        self._control_port = control_port or 0
        self._host = host
        self._control: web.AppRunner | None = None
        self._control_site: web.TCPSite | None = None

    @property
    def sims(self) -> Mapping[str, SimProvider]:
        return MappingProxyType(self._sims)

    @property
    def control_url(self) -> str:
        """``http://host:port`` of the control API (empty before start)."""
        if self._control_site is None:
            return ""
        host = self._host if self._host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._control_site.port}"

    async def start(self) -> None:
        try:
            for name, sim in self._sims.items():
                port = self._ports.get(name, 0)
                with _naming_the_port(f"simulator {name}", self._host, port):
                    await sim.start(self._host, port)
            runner = web.AppRunner(
                build_control_app(self.sims), handle_signals=False, access_log=None
            )
            await runner.setup()
            self._control = runner
            site = web.TCPSite(runner, self._host, self._control_port)
            with _naming_the_port("the simulator control API", self._host, self._control_port):
                await site.start()
            self._control_site = site
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        control, self._control, self._control_site = self._control, None, None
        if control is not None:
            await control.cleanup()
        for sim in self._sims.values():
            with contextlib.suppress(Exception):
                await sim.stop()

    async def __aenter__(self) -> SimCluster:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

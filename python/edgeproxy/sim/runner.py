"""Running a SimCluster until told to stop (used by the ``edgeproxy sim`` CLI and the demo)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from .cluster import SimCluster

log = logging.getLogger(__name__)


async def run_forever(
    cluster: SimCluster,
    stop: asyncio.Event | None = None,
    on_start: Callable[[SimCluster], None] | None = None,
) -> None:
    """Start ``cluster``, log its URLs and serve until SIGINT/SIGTERM, ``stop`` or cancellation.

    ``on_start`` runs once the sims listen (e.g. to set the faults they start with). The cluster
    is always stopped on the way out.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Only possible in the main thread of a Unix process; elsewhere rely on cancellation.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await cluster.start()
        if on_start is not None:
            on_start(cluster)
        for name, sim in cluster.sims.items():
            log.info("sim %s listening on %s (fault: %s)", name, sim.url, sim.fault.mode)
        log.info("sim control API on %s", cluster.control_url)
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await cluster.stop()

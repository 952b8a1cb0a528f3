"""Process facts for ``GET /admin/debug/runtime``: what a leak hunt (the soak) needs to see.

Everything here is cheap (no walk over the heap): counts of asyncio tasks (also by coroutine
name, so a leaking kind stands out), open fds and RSS from ``/proc/self`` where there is one,
threads, garbage-collector counters, the upstream pool's connections, the cache's size, and the
uptime. Fields that cannot be read on this platform are ``null``.

``allocated_blocks`` (``sys.getallocatedblocks()``) counts the Python objects' memory blocks
alive: unlike RSS it does not move with allocator fragmentation, so a steady climb of it under a
steady load is a Python-level leak. With tracemalloc on (``PYTHONTRACEMALLOC=1`` in the proxy's
environment; ``python -m loadtests.soak --tracemalloc`` does that), ``?tracemalloc=top`` adds the
allocation sites that grew most since the previous such call (the first call compares with the
start of tracing).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import resource
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from edgeproxy.upstreams.http1 import Http1Pool

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TOP_TASK_KINDS = 15


def _task_kind(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or type(coro).__name__
    module = getattr(getattr(coro, "cr_code", None), "co_filename", "")
    if module:
        module = Path(module).stem
        return f"{module}.{name}"
    return str(name)


def task_counts() -> tuple[int, dict[str, int]]:
    """All tasks of the running loop, and the most common coroutines among them."""
    tasks = asyncio.all_tasks()
    kinds = collections.Counter(_task_kind(t) for t in tasks)
    return len(tasks), dict(kinds.most_common(_TOP_TASK_KINDS))


def open_fds() -> int | None:
    try:
        # The listing's own directory fd is open while it is read; do not count it.
        return len(os.listdir("/proc/self/fd")) - 1
    except OSError:
        return None


def rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def pool_connections(http: Http1Pool | None) -> dict[str, Any] | None:
    """Idle keep-alive and in-use connections of the proxy's one upstream client (attempts and
    health probes share it): the soak's fd check allows that many."""
    if http is None:
        return None
    stats = http.stats()
    idle_by_host: dict[str, int] = dict(stats["idle_by_host"])
    return {
        "idle": sum(idle_by_host.values()),
        "in_use": stats["in_use"],
        "idle_by_host": idle_by_host,
    }


_last_snapshot: list[tracemalloc.Snapshot] = []


def tracemalloc_facts(top: int = 0) -> dict[str, Any] | None:
    """Traced totals, and with ``top`` the sites that grew most since the previous call."""
    if not tracemalloc.is_tracing():
        return None
    current, peak = tracemalloc.get_traced_memory()
    data: dict[str, Any] = {"traced_bytes": current, "peak_bytes": peak}
    if top > 0:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            )
        )
        if _last_snapshot:
            stats = snapshot.compare_to(_last_snapshot[0], "lineno")
        else:
            stats = [
                tracemalloc.StatisticDiff(s.traceback, s.size, s.size, s.count, s.count)
                for s in snapshot.statistics("lineno")
            ]
        _last_snapshot[:] = [snapshot]
        data["top_growth"] = [
            {
                "site": str(s.traceback[0]),
                "size_diff": s.size_diff,
                "size": s.size,
                "count_diff": s.count_diff,
            }
            for s in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:top]
        ]
    return data


def runtime_facts(
    *,
    started: float,
    http: Http1Pool | None = None,
    cache: dict[str, int] | None = None,
    inflight: int | None = None,
    tracemalloc_top: int = 0,
) -> dict[str, Any]:
    tasks, by_kind = task_counts()
    loop = type(asyncio.get_running_loop())
    return {
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "event_loop": f"{loop.__module__}.{loop.__qualname__}",
        "uptime_seconds": round(time.monotonic() - started, 3),
        "asyncio_tasks": tasks,
        "asyncio_tasks_by_coroutine": by_kind,
        "open_fds": open_fds(),
        "rss_bytes": rss_bytes(),
        "max_rss_bytes": max_rss_bytes(),
        "allocated_blocks": sys.getallocatedblocks(),
        "threads": threading.active_count(),
        "gc": {
            "counts": list(gc.get_count()),
            "collections": [s["collections"] for s in gc.get_stats()],
            "collected": [s["collected"] for s in gc.get_stats()],
            "uncollectable": [s["uncollectable"] for s in gc.get_stats()],
            "garbage": len(gc.garbage),
        },
        "upstream_pool": pool_connections(http),
        "requests_in_flight": inflight,
        "cache": cache,
        "tracemalloc": tracemalloc_facts(tracemalloc_top),
    }

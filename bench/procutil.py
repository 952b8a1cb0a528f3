"""Process helpers shared by the benchmark, the load tests and the soak: start a server as a
child process, wait for its port, stop it, and read its RSS, open fds and CPU time from /proc.

Only loopback addresses are ever used.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# ``edgeproxy`` of this interpreter's install (every harness runs the CLI this way).
EDGEPROXY = [sys.executable, "-m", "edgeproxy.cli"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def serve_argv(policy: Path, port: int, log_level: str = "warning") -> list[str]:
    """``edgeproxy serve`` of this interpreter's install on ``port``; quiet (no access log)
    unless ``log_level`` is ``info``."""
    return [
        *EDGEPROXY,
        *("serve", "--policy", str(policy), "--port", str(port), "--log-level", log_level),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Proc:
    """A child process in its own session, logging to a file, stopped by its own pid only."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                # Only this process's own group (it was started in a new session by us).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ProcSample:
    rss_bytes: int
    fds: int
    threads: int
    cpu_seconds: float
    utime: float = 0.0
    stime: float = 0.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def sample(pid: int, *, tree: bool = False) -> ProcSample:
    """RSS, open fds, threads and CPU seconds (user+system) of a process (or its whole tree)."""
    pids = process_tree(pid) if tree else [pid]
    rss = fds = threads = 0
    utime = stime = 0.0
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            # fields after the comm: state=0, ... utime=11, stime=12, num_threads=17, rss=21
            utime += int(stat[11]) / CLK_TCK
            stime += int(stat[12]) / CLK_TCK
            threads += int(stat[17])
            rss += int(stat[21]) * PAGE
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (OSError, IndexError, ValueError):
            continue
    return ProcSample(rss, fds, threads, utime + stime, utime, stime)


def fd_kinds(pid: int) -> dict[str, int]:
    """Open fds by kind; TCP sockets by state and remote port (from /proc/PID/net/tcp)."""
    import collections

    tcp: dict[str, str] = {}
    states = {"01": "established", "06": "time_wait", "08": "close_wait", "0A": "listen"}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            remote_port = int(f[2].split(":")[1], 16)
            tcp[f[9]] = f"tcp {states.get(f[3], f[3])} remote:{remote_port}"
    kinds: collections.Counter[str] = collections.Counter()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                kinds[tcp.get(target[8:-1], "socket (not tcp/ipv4)")] += 1
            elif target.startswith("/"):
                kinds["file " + target.rsplit("/", 1)[-1]] += 1
            else:
                kinds["pipe" if target.startswith("pipe:") else target] += 1
    return dict(kinds)


def catches_signal(pid: int, signum: int) -> bool:
    """Whether the process installed a handler for the signal (SigCgt in /proc/PID/status).

    Sending SIGHUP to a process that does not catch it would kill it; this checks first.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except OSError:
        pass
    return False


def machine_description() -> dict[str, str]:
    info: dict[str, str] = {"cores": str(os.cpu_count())}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    with contextlib.suppress(OSError):
        info["kernel"] = Path("/proc/sys/kernel/osrelease").read_text().strip()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    return info

"""Reading the files a policy names (the policy itself, provider key files), boundedly.

A reload runs unattended, so nothing a file is can stall it or take the process down: only a
regular file is read (a FIFO, a device or a directory is refused without blocking: it is opened
non-blocking and checked before any read), at most ``limit`` bytes of it, within ``timeout``
seconds (a file on a hung network mount). The read runs in a daemon thread so that a read that
never returns is abandoned rather than waited for, at reload time or at exit.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from edgeproxy.errors import EdgeProxyError

MAX_POLICY_BYTES = 1024 * 1024  # a large policy is tens of KiB
MAX_KEY_FILE_BYTES = 64 * 1024  # a key is under 1 KiB; a PEM bundle a few KiB
READ_TIMEOUT = 5.0  # seconds; a local file reads in microseconds


class FileRefused(EdgeProxyError):
    """The file cannot be used; the message says why (never what the file holds)."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing  # it does not exist (or cannot be opened): CI may lack it


def _describe_size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit < 1024 * 1024 else f"{limit // (1024 * 1024)} MiB"


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise FileRefused(f"cannot read {what}: {exc.strerror or exc}", missing=True) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(info.st_mode)
                else "a FIFO"
                if stat.S_ISFIFO(info.st_mode)
                else "a device"
                if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
                else "a socket"
                if stat.S_ISSOCK(info.st_mode)
                else "not a regular file"
            )
            raise FileRefused(f"{what} is {kind}, not a regular file: refused")
        too_large = f"{what} is larger than {_describe_size(limit)}, the limit: refused"
        if info.st_size > limit:
            raise FileRefused(too_large)
        chunks = []
        size = 0
        while size <= limit:  # the size may have grown since fstat: read one byte past it
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(too_large)
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused(f"cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_bounded(path: Path, limit: int, what: str, timeout: float = READ_TIMEOUT) -> bytes:
    """The bytes of regular file ``path`` (at most ``limit``), or ``FileRefused``."""
    result: list[bytes | BaseException] = []

    def run() -> None:
        try:
            result.append(_read(path, limit, what))
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    reader = threading.Thread(target=run, name="edgeproxy-file-read", daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        raise FileRefused(f"reading {what} took longer than {timeout:g}s: refused")
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def read_policy_file(path: Path, timeout: float = READ_TIMEOUT) -> str:
    data = read_bounded(path, MAX_POLICY_BYTES, "the policy", timeout)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused("the policy is not UTF-8 text") from None


def read_key_file(path: Path, timeout: float = READ_TIMEOUT) -> str:
    shown = f"the key file {str(path)!r}"
    data = read_bounded(path, MAX_KEY_FILE_BYTES, shown, timeout)
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise FileRefused(f"{shown} is not UTF-8 text") from None

"""The scorecards a policy names (``evals.scorecards``), as ``auto`` reads them.

Entries are files or glob patterns (``scorecards/market-*.json``), relative to the policy's
directory. ``refresh`` (blocking file reads: run it in a thread) re-reads the files whose
identity (inode, size, modification time) changed since the last read:

- a good file replaces what was known of its path;
- a file that is not a scorecard this code reads (truncated, another program's JSON, a newer
  version: ``ScorecardError``) keeps **the last good content of that path**, and its problem is
  logged and shown in the status, until a good version replaces it; a path that never held a
  good scorecard gives no evidence;
- a deleted file, or one no pattern matches any more, is forgotten;
- an incomplete scorecard (a run the cost cap stopped) is kept but not used: a partial run does
  not move traffic.

``cards()`` are the usable ones, oldest first by their ``created`` date (then path): the last is
the newest evidence. ``watched_dirs()`` are the directories to watch for changes.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edgeproxy.auto.evidence import CardRef
from edgeproxy.evals.scorecard import (
    MAX_SCORECARD_BYTES,
    Scorecard,
    ScorecardError,
    parse_scorecard,
)

log = logging.getLogger("edgeproxy.auto")

Fingerprint = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Loaded:
    ref: CardRef
    card: Scorecard


@dataclass
class FileState:
    path: Path
    fingerprint: Fingerprint | None = None
    good: Loaded | None = None  # the last good content of this path
    problem: str | None = None  # what is wrong with its current content, if anything

    def as_dict(self) -> dict[str, object]:
        good = self.good
        status = "ok"
        if self.problem is not None:
            status = "kept the last good one" if good is not None else "unreadable"
        elif good is not None and not good.card.complete:
            status = f"ignored: incomplete ({good.card.stopped or 'interrupted'})"
        return {
            "path": str(self.path),
            "status": status,
            "problem": self.problem,
            "created": good.ref.created if good else None,
            "suite": f"{good.card.suite.name} {good.card.suite.hash[:12]}" if good else None,
            "id": good.ref.id if good else None,
        }


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _is_pattern(entry: str) -> bool:
    return any(ch in entry for ch in "*?[")


class ScorecardStore:
    """The policy's scorecards, read and re-read (see the module docstring)."""

    def __init__(self, patterns: tuple[str, ...] = (), base_dir: Path | None = None) -> None:
        self.patterns = patterns
        self.base_dir = base_dir or Path.cwd()
        self.files: dict[Path, FileState] = {}

    def configure(self, patterns: tuple[str, ...], base_dir: Path) -> bool:
        """A policy's entries; True when they changed (a refresh is then due)."""
        if patterns == self.patterns and base_dir == self.base_dir:
            return False
        self.patterns, self.base_dir = patterns, base_dir
        return True

    def _absolute(self, entry: str) -> Path:
        path = Path(entry)
        return path if path.is_absolute() else self.base_dir / path

    def matching(self) -> list[Path]:
        """The files the entries name now (a plain entry names its file, present or not)."""
        found: dict[Path, None] = {}
        for entry in self.patterns:
            target = self._absolute(entry)
            if _is_pattern(entry):
                for name in sorted(glob.glob(str(target))):
                    if os.path.isfile(name):
                        found[Path(name)] = None
            else:
                found[target] = None
        return list(found)

    def watched_dirs(self) -> list[Path]:
        dirs: dict[Path, None] = {}
        for entry in self.patterns:
            parent = self._absolute(entry).parent
            if not _is_pattern(str(parent)):
                dirs[parent] = None
        return list(dirs)

    def refresh(self) -> list[str]:
        """Re-read what changed (blocking: call it from a thread); the new problems."""
        problems: list[str] = []
        wanted = self.matching()
        for gone in set(self.files) - set(wanted):
            del self.files[gone]
        for path in wanted:
            state = self.files.setdefault(path, FileState(path))
            fingerprint = _fingerprint(path)
            if fingerprint is not None and fingerprint == state.fingerprint:
                continue
            state.fingerprint = fingerprint
            if fingerprint is None:
                state.problem = "missing"
                if state.good is None:
                    continue
                # A file that was good and is gone: no evidence from it any more.
                state.good = None
                continue
            problem = self._read(state)
            if problem is not None:
                problems.append(problem)
        return problems

    def _read(self, state: FileState) -> str | None:
        path = state.path
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_SCORECARD_BYTES + 1)
            if len(data) > MAX_SCORECARD_BYTES:
                raise ScorecardError(f"{path}: larger than {MAX_SCORECARD_BYTES} bytes")
            card = parse_scorecard(data, str(path))
        except (OSError, ScorecardError) as exc:
            state.problem = str(exc) if isinstance(exc, ScorecardError) else f"{path}: {exc}"
            kept = "; the last good one is kept" if state.good is not None else ""
            log.error("scorecard rejected%s: %s", kept, state.problem)
            return state.problem
        digest = hashlib.blake2b(data, digest_size=8).hexdigest()
        created = card.created.isoformat()
        label = f"{path.name} ({card.created:%Y-%m-%d %H:%M})"
        state.good = Loaded(CardRef(digest, str(path), created, label, card.suite.hash), card)
        state.problem = None
        return None

    def cards(self) -> list[Loaded]:
        """The usable scorecards (complete, good), oldest first by date."""
        good = [s.good for s in self.files.values() if s.good is not None and s.good.card.complete]
        return sorted(good, key=lambda loaded: (loaded.card.created, loaded.ref.path))

    def status(self) -> list[dict[str, object]]:
        return [self.files[p].as_dict() for p in sorted(self.files)]

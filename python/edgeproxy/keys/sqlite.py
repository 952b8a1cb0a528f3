"""The embedded key store: one SQLite file holding the keys (hashed) and their daily usage.

For one sidecar (and the ``edgeproxy keys`` command beside it); a fleet keeps both in Redis
(``fleet.keystore``). Every method opens its own short connection (WAL mode, a busy timeout),
so the CLI and a running sidecar can use the file at once; the sidecar calls them in a worker
thread (``fetch_*``, ``UsageWriter``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgeproxy.keys.model import VirtualKey
from edgeproxy.limits.asks import BudgetAsk, UsageRow
from edgeproxy.limits.periods import day_name

log = logging.getLogger("edgeproxy.keys")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, digest TEXT UNIQUE NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
  day TEXT NOT NULL, key_id TEXT NOT NULL, team TEXT NOT NULL, route TEXT NOT NULL,
  model TEXT NOT NULL, requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL, usd REAL NOT NULL,
  PRIMARY KEY (day, key_id, team, route, model)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('version', 0);
"""
_SCOPE_COLUMNS = {"key": "key_id", "team": "team", "route": "route"}


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._ready = False

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            if not self._ready:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                self._ready = True
            yield db
        finally:
            db.close()

    # -- keys -------------------------------------------------------------------------------

    def create(self, key: VirtualKey) -> None:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO keys (id, digest, name, record) VALUES (?, ?, ?, ?)",
                (key.id, key.digest, key.name, key.to_json().decode()),
            )
            db.execute("UPDATE meta SET value = value + 1 WHERE name = 'version'")
            db.execute("COMMIT")

    def keys(self) -> list[VirtualKey]:
        return self.load()[1]

    def version(self) -> int:
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
            return int(row[0]) if row else 0

    def load(self) -> tuple[int, list[VirtualKey]]:
        with self._db() as db:
            db.execute("BEGIN")
            row = db.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
            records = db.execute("SELECT record FROM keys ORDER BY rowid").fetchall()
            db.execute("COMMIT")
        out = []
        for (record,) in records:
            try:
                out.append(VirtualKey.from_json(record))
            except (ValueError, KeyError, TypeError):
                log.warning("a key record could not be read; it is ignored")
        return (int(row[0]) if row else 0), out

    def revoke(self, which: str, now: float) -> list[VirtualKey]:
        """Revoke the key with this id, or the keys with this name; the revoked records."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute(
                "SELECT record FROM keys WHERE id = ? OR name = ?", (which, which)
            ).fetchall()
            done = []
            for (record,) in rows:
                key = VirtualKey.from_json(record)
                if key.revoked is None:
                    key = key.revoke(now)
                    db.execute(
                        "UPDATE keys SET record = ? WHERE id = ?", (key.to_json().decode(), key.id)
                    )
                done.append(key)
            db.execute("UPDATE meta SET value = value + 1 WHERE name = 'version'")
            db.execute("COMMIT")
        return done

    # -- usage ------------------------------------------------------------------------------

    def add_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                """INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (day, key_id, team, route, model) DO UPDATE SET
                   requests = requests + excluded.requests,
                   input_tokens = input_tokens + excluded.input_tokens,
                   output_tokens = output_tokens + excluded.output_tokens,
                   usd = usd + excluded.usd""",
                [
                    (
                        r.day,
                        r.key_id,
                        r.team,
                        r.route,
                        r.model,
                        r.requests,
                        r.input_tokens,
                        r.output_tokens,
                        r.usd,
                    )
                    for r in rows
                ],
            )
            db.execute("COMMIT")

    def spent(self, scope: str, name: str, start: float, end: float) -> float:
        """USD spent by a key, a team or a route from ``start`` to ``end`` (epoch, whole days)."""
        column = _SCOPE_COLUMNS[scope]
        with self._db() as db:
            row = db.execute(
                f"SELECT COALESCE(SUM(usd), 0) FROM usage WHERE {column} = ? AND day >= ? "
                "AND day < ?",
                (name, day_name(start), day_name(end)),
            ).fetchone()
        return float(row[0])

    def usage(self, start: float, end: float) -> list[UsageRow]:
        """Usage from ``start`` to ``end`` (epoch, whole days), one row per key, team, route and
        model (``day`` is the first day)."""
        with self._db() as db:
            rows = db.execute(
                """SELECT key_id, team, route, model, SUM(requests), SUM(input_tokens),
                   SUM(output_tokens), SUM(usd) FROM usage WHERE day >= ? AND day < ?
                   GROUP BY key_id, team, route, model ORDER BY SUM(usd) DESC""",
                (day_name(start), day_name(end)),
            ).fetchall()
        first = day_name(start)
        return [UsageRow(first, *row) for row in rows]

    # -- for the event loop -------------------------------------------------------------------

    async def fetch_version(self) -> int | None:
        return await asyncio.to_thread(self.version)

    async def fetch_all(self) -> tuple[int, list[VirtualKey]]:
        return await asyncio.to_thread(self.load)

    async def fetch_spent(self, ask: BudgetAsk) -> float:
        return await asyncio.to_thread(
            self.spent, ask.scope, ask.name, ask.period_start, ask.period_end
        )

"""The SQLite backend (WAL, synchronous=FULL): one service process per database file.

One connection behind a lock (SQLite serialises writers anyway). Since only one process uses the file, every
job left running at start was the last process's: all go back to the queue, without waiting for a lease.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from .store import ADDED_COLUMNS, QUEUED, RUNNING, SCHEMA, Db, Store, T

TYPES = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"}


class SqliteStore(Store):
    def __init__(self, path: Path, owner: str = "", lease: float = 60.0) -> None:
        super().__init__(owner, lease)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an answered event is on disk before the 202
        self._db.executescript(SCHEMA.format(**TYPES))
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in columns:  # a database made before replicas existed
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind.format(**TYPES)}")

    def write(self, body: Callable[[Db], T]) -> T:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = body(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def read(self, body: Callable[[Db], T]) -> T:
        with self._lock:
            return body(self._db)

    def ping(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1").fetchone()[0] == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def recover(self) -> int:
        """At start: every job left running goes back to the queue (no other process shares this file)."""
        return self.write(
            lambda db: db.execute("UPDATE jobs SET state = ?, owner = '' WHERE state = ?", (QUEUED, RUNNING)).rowcount
        )

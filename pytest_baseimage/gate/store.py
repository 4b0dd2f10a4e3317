"""Jobs and verdicts in SQLite (WAL): a job answered with a 2xx survives a crash of the service.

One row per (repository, digest, profile): a second push of the same digest (another tag, a retried
notification) merges into it. States: queued -> running -> done. `attempts` counts claims, so a job that
kills its worker every time ends with an error verdict after `max_attempts` instead of looping forever.

Several replicas: the same statements run on PostgreSQL (the claim becomes `... FOR UPDATE SKIP LOCKED`);
see the README. SQLite is the tested path, and one service process owns a database file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUEUED, RUNNING, DONE = "queued", "running", "done"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    profile TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL DEFAULT 'event',
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    verdict TEXT NOT NULL DEFAULT '',
    exit_code INTEGER,
    message TEXT NOT NULL DEFAULT '',
    directory TEXT NOT NULL DEFAULT '',
    promoted TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    UNIQUE (registry, repository, digest, profile)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_digest ON jobs (digest);
CREATE TABLE IF NOT EXISTS scans (
    id TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    mime_type TEXT NOT NULL DEFAULT '',
    tag TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
"""


@dataclass
class Job:
    id: int
    registry: str
    repository: str
    digest: str
    profile: str
    target: str
    tags: list[str]
    source: str
    state: str
    attempts: int
    verdict: str
    exit_code: int | None
    message: str
    directory: str
    promoted: list[str]
    created: float
    started: float | None
    finished: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        data["tags"] = json.loads(data["tags"])
        data["promoted"] = json.loads(data["promoted"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """What /v1/verdicts shows about the job itself (no secrets: the store never holds any)."""
        return {
            "id": self.id,
            "repository": self.repository,
            "digest": self.digest,
            "profile": self.profile,
            "tags": self.tags,
            "state": self.state,
            "attempts": self.attempts,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "message": self.message,
            "promoted_to": self.promoted,
        }


@dataclass(frozen=True)
class NewJob:
    registry: str
    repository: str
    digest: str
    profile: str
    target: str = ""
    tags: tuple[str, ...] = ()
    source: str = "event"


@dataclass
class Counts:
    by_state: dict[str, int] = field(default_factory=dict)
    done_by_verdict: dict[str, int] = field(default_factory=dict)


class Store:
    """A thread-safe handle: one connection, one lock (SQLite serialises writers anyway)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an answered event is on disk before the 202
        self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def recover(self) -> int:
        """At start: jobs left running by a crash go back to the queue (their attempt is already counted)."""
        with self._tx() as db:
            return db.execute("UPDATE jobs SET state = ? WHERE state = ?", (QUEUED, RUNNING)).rowcount

    def enqueue(self, new: NewJob) -> tuple[Job, bool]:
        """Add a job, or merge into the existing one (its tags grow); returns (job, created)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE registry = ? AND repository = ? AND digest = ? AND profile = ?",
                (new.registry, new.repository, new.digest, new.profile),
            ).fetchone()
            if row is None:
                cursor = db.execute(
                    "INSERT INTO jobs (registry, repository, digest, profile, target, tags, source, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_key(new), new.target, json.dumps(sorted(set(new.tags))), new.source, time.time()),
                )
                created = db.execute("SELECT * FROM jobs WHERE id = ?", (cursor.lastrowid,)).fetchone()
                return Job.from_row(created), True
            job = Job.from_row(row)
            tags = sorted(set(job.tags) | set(new.tags))
            if tags != job.tags:
                # A new tag on a finished, compatible job is promoted by requeueing it (certification is cached
                # in its directory: the worker only promotes).
                state = QUEUED if job.state == DONE and job.verdict == "compatible" else job.state
                db.execute("UPDATE jobs SET tags = ?, state = ? WHERE id = ?", (json.dumps(tags), state, job.id))
                job.tags, job.state = tags, state
            return job, False

    def claim(self) -> Job | None:
        """The oldest queued job, now running, with its attempt counted (atomically: one worker per job)."""
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, started = ? "
                "WHERE id = (SELECT id FROM jobs WHERE state = ? ORDER BY id LIMIT 1) RETURNING *",
                (RUNNING, time.time(), QUEUED),
            ).fetchone()
            return Job.from_row(row) if row else None

    def set_directory(self, job_id: int, directory: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET directory = ? WHERE id = ?", (directory, job_id))

    def requeue(self, job_id: int, message: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = ?, message = ? WHERE id = ?", (QUEUED, message, job_id))

    def finish(
        self, job_id: int, verdict: str, exit_code: int | None, message: str, promoted: list[str], tags: list[str]
    ) -> None:
        """Done, unless a tag merged in while it ran (then queued again, to promote that tag too)."""
        with self._tx() as db:
            current = json.loads(db.execute("SELECT tags FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
            state = QUEUED if verdict == "compatible" and promoted and set(current) - set(tags) else DONE
            db.execute(
                "UPDATE jobs SET state = ?, verdict = ?, exit_code = ?, message = ?, promoted = ?, finished = ? "
                "WHERE id = ?",
                (state, verdict, exit_code, message, json.dumps(promoted), time.time(), job_id),
            )

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def by_digest(self, digest: str) -> list[Job]:
        """Every job for a digest, the most recently created first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE digest = ? ORDER BY id DESC", (digest,)).fetchall()
        return [Job.from_row(row) for row in rows]

    def all_jobs(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        return [Job.from_row(row) for row in rows]

    def add_scan(self, scan_id: str, job_id: int, mime_type: str, tag: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO scans (id, job_id, mime_type, tag, created) VALUES (?, ?, ?, ?, ?)",
                (scan_id, job_id, mime_type, tag, time.time()),
            )

    def scan(self, scan_id: str) -> tuple[Job, str, str] | None:
        """The job behind a Harbor scan id, with the artifact's mime type and tag as Harbor sent them."""
        with self._lock:
            row = self._db.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        if row is None:
            return None
        job = self.get(row["job_id"])
        return (job, row["mime_type"], row["tag"]) if job else None

    def counts(self) -> Counts:
        with self._lock:
            states = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
            verdicts = self._db.execute(
                "SELECT verdict, COUNT(*) FROM jobs WHERE state = ? GROUP BY verdict", (DONE,)
            ).fetchall()
        return Counts({s: n for s, n in states}, {v: n for v, n in verdicts})


def _key(new: NewJob) -> tuple[str, str, str, str]:
    return new.registry, new.repository, new.digest, new.profile

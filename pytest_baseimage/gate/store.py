"""Jobs and verdicts in a database: a job answered with a 2xx survives a crash of the service.

One row per (registry, repository, digest, profile): a second push of the same digest (another tag, a retried
notification) merges into it. States: queued -> running -> done. `attempts` counts claims, so a job that
kills its worker every time ends with an error verdict after `max_attempts` instead of looping forever.

Every rule lives here once, as SQL both backends run (store_sqlite.py: one service per file; store_pg.py:
several replicas on PostgreSQL); a backend only opens the connection, runs a transaction and names its locks.
A running job carries its `owner` (one replica) and a `heartbeat`; a job whose heartbeat is older than the
lease is requeued by any replica (`expire`), and only the owner of a claim may finish or requeue it.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..errors import BaseImageError

QUEUED, RUNNING, DONE = "queued", "running", "done"
T = TypeVar("T")

# `{id}` and `{real}` are the two types the backends spell differently.
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id {id},
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
    created {real} NOT NULL,
    started {real},
    finished {real},
    owner TEXT NOT NULL DEFAULT '',
    heartbeat {real},
    not_before {real} NOT NULL DEFAULT 0,
    UNIQUE (registry, repository, digest, profile)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_digest ON jobs (digest);
CREATE TABLE IF NOT EXISTS scans (
    id TEXT PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id),
    mime_type TEXT NOT NULL DEFAULT '',
    tag TEXT NOT NULL DEFAULT '',
    created {real} NOT NULL
);
"""
# Not in databases made before them. not_before: a retried job waits until then (the database's clock).
ADDED_COLUMNS = {"owner": "TEXT NOT NULL DEFAULT ''", "heartbeat": "{real}", "not_before": "{real} NOT NULL DEFAULT 0"}
EXPIRED = "requeued: the replica running it stopped heartbeating"


class StoreUnavailable(BaseImageError):
    """The database cannot be reached (after bounded retries); one line, never a password."""


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
    owner: str = ""
    heartbeat: float | None = None
    not_before: float = 0.0

    @classmethod
    def from_row(cls, row: Any) -> Job:
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
            "owner": self.owner,
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


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """What the rules need of a connection: `execute` with `?` placeholders; rows read by column name."""

    def execute(self, sql: str, params: Any = ()) -> Cursor: ...


def new_owner() -> str:
    """This replica's id: host, process and a random part (a restarted process is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Store(ABC):
    """The job rules over a backend's transactions; thread-safe (a backend serialises its connection)."""

    CLAIM_LOCK = ""  # appended to the claim's inner SELECT (PostgreSQL: FOR UPDATE SKIP LOCKED)
    ROW_LOCK = ""  # appended to the merge's SELECT (PostgreSQL: FOR UPDATE)
    # The database's clock in Unix seconds: heartbeats and their expiry are compared on one clock, so replicas
    # whose clocks disagree cannot take each other's jobs early.
    NOW = "(julianday('now') - 2440587.5) * 86400.0"

    def __init__(self, owner: str = "", lease: float = 60.0) -> None:
        self.owner = owner or new_owner()
        self.lease = lease

    # -- what a backend provides -----------------------------------------------------------------------
    @abstractmethod
    def write(self, body: Callable[[Db], T]) -> T:
        """Run `body` in one write transaction (retried whole by a backend that may lose its connection)."""

    def read(self, body: Callable[[Db], T]) -> T:
        return self.write(body)

    @abstractmethod
    def ping(self) -> bool:
        """One quick round trip, no retries: what /healthz reports."""

    @abstractmethod
    def close(self) -> None: ...

    # -- the rules ---------------------------------------------------------------------------------------
    def recover(self) -> int:
        """At start: requeue the running jobs no live replica heartbeats."""
        return self.expire()

    def expire(self) -> int:
        """Requeue running jobs whose heartbeat is older than the lease (their attempt is already counted)."""
        return self.write(
            lambda db: (
                db.execute(
                    "UPDATE jobs SET state = ?, owner = '', message = ? "
                    f"WHERE state = ? AND (heartbeat IS NULL OR heartbeat < {self.NOW} - ?)",
                    (QUEUED, EXPIRED, RUNNING, self.lease),
                ).rowcount
            )
        )

    def heartbeat(self, job_ids: Collection[int]) -> int:
        """Mark these jobs, still ours and running, as alive now; returns how many still are."""
        if not job_ids:
            return 0
        marks = ", ".join("?" * len(job_ids))
        return self.write(
            lambda db: (
                db.execute(
                    f"UPDATE jobs SET heartbeat = {self.NOW} WHERE owner = ? AND state = ? AND id IN ({marks})",
                    (self.owner, RUNNING, *job_ids),
                ).rowcount
            )
        )

    def enqueue(self, new: NewJob) -> tuple[Job, bool]:
        """Add a job, or merge into the existing one (its tags grow); returns (job, created).

        The insert does nothing on a conflict, and the row is then read under a lock: two replicas that get
        the same event at once make one job, and both tags survive.
        """
        return self.write(lambda db: self._enqueue(db, new))

    def _enqueue(self, db: Db, new: NewJob) -> tuple[Job, bool]:
        row = db.execute(
            "INSERT INTO jobs (registry, repository, digest, profile, target, tags, source, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (registry, repository, digest, profile) DO NOTHING RETURNING *",
            (*_key(new), new.target, json.dumps(sorted(set(new.tags))), new.source, time.time()),
        ).fetchone()
        if row is not None:
            return Job.from_row(row), True
        row = db.execute(
            "SELECT * FROM jobs WHERE registry = ? AND repository = ? AND digest = ? AND profile = ?" + self.ROW_LOCK,
            _key(new),
        ).fetchone()
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
        """The oldest queued job, now running and ours, with its attempt counted (one claimer per job)."""
        row = self.write(
            lambda db: db.execute(
                f"UPDATE jobs SET state = ?, attempts = attempts + 1, started = ?, owner = ?, heartbeat = {self.NOW} "
                f"WHERE id = (SELECT id FROM jobs WHERE state = ? AND not_before <= {self.NOW} "
                f"ORDER BY id LIMIT 1{self.CLAIM_LOCK}) RETURNING *",
                (RUNNING, time.time(), self.owner, QUEUED),
            ).fetchone()
        )
        return Job.from_row(row) if row else None

    def set_directory(self, job_id: int, directory: str) -> None:
        self.write(lambda db: db.execute("UPDATE jobs SET directory = ? WHERE id = ?", (directory, job_id)))

    def requeue(self, job_id: int, message: str, delay_s: float = 0.0) -> bool:
        """Back to the queue, claimable again `delay_s` from now, if the job is still ours (False: its lease
        expired and another replica has it)."""
        return self.write(
            lambda db: (
                db.execute(
                    f"UPDATE jobs SET state = ?, owner = '', message = ?, not_before = {self.NOW} + ? "
                    "WHERE id = ? AND owner = ? AND state = ?",
                    (QUEUED, message, float(delay_s), job_id, self.owner, RUNNING),
                ).rowcount
                == 1
            )
        )

    def finish(
        self, job_id: int, verdict: str, exit_code: int | None, message: str, promoted: list[str], tags: list[str]
    ) -> bool:
        """Done, unless a tag merged in while it ran (then queued again, to promote that tag too).

        Only the owner of the claim finishes it: False when the lease expired and the job moved on.
        """
        return self.write(lambda db: self._finish(db, job_id, verdict, exit_code, message, promoted, tags))

    def _finish(
        self, db: Db, job_id: int, verdict: str, exit_code: int | None, message: str, promoted: list[str],
        tags: list[str],
    ) -> bool:  # fmt: skip
        row = db.execute(
            "SELECT tags FROM jobs WHERE id = ? AND owner = ? AND state = ?" + self.ROW_LOCK,
            (job_id, self.owner, RUNNING),
        ).fetchone()
        if row is None:
            return False
        current = json.loads(row["tags"])
        state = QUEUED if verdict == "compatible" and promoted and set(current) - set(tags) else DONE
        db.execute(
            "UPDATE jobs SET state = ?, verdict = ?, exit_code = ?, message = ?, promoted = ?, finished = ? "
            "WHERE id = ?",
            (state, verdict, exit_code, message, json.dumps(promoted), time.time(), job_id),
        )
        return True

    def get(self, job_id: int) -> Job | None:
        row = self.read(lambda db: db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return Job.from_row(row) if row else None

    def by_digest(self, digest: str) -> list[Job]:
        """Every job for a digest, the most recently created first."""
        rows = self.read(
            lambda db: db.execute("SELECT * FROM jobs WHERE digest = ? ORDER BY id DESC", (digest,)).fetchall()
        )
        return [Job.from_row(row) for row in rows]

    def all_jobs(self) -> list[Job]:
        rows = self.read(lambda db: db.execute("SELECT * FROM jobs ORDER BY id").fetchall())
        return [Job.from_row(row) for row in rows]

    def add_scan(self, scan_id: str, job_id: int, mime_type: str, tag: str) -> None:
        self.write(
            lambda db: db.execute(
                "INSERT INTO scans (id, job_id, mime_type, tag, created) VALUES (?, ?, ?, ?, ?)",
                (scan_id, job_id, mime_type, tag, time.time()),
            )
        )

    def scan(self, scan_id: str) -> tuple[Job, str, str] | None:
        """The job behind a Harbor scan id, with the artifact's mime type and tag as Harbor sent them."""
        row = self.read(lambda db: db.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone())
        if row is None:
            return None
        job = self.get(row["job_id"])
        return (job, row["mime_type"], row["tag"]) if job else None

    def counts(self) -> Counts:
        def both(db: Db) -> tuple[list[Any], list[Any]]:
            states = db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
            verdicts = db.execute(
                "SELECT verdict, COUNT(*) AS n FROM jobs WHERE state = ? GROUP BY verdict", (DONE,)
            ).fetchall()
            return states, verdicts

        states, verdicts = self.read(both)
        return Counts({r["state"]: r["n"] for r in states}, {r["verdict"]: r["n"] for r in verdicts})


def _key(new: NewJob) -> tuple[str, str, str, str]:
    return new.registry, new.repository, new.digest, new.profile

"""The gate's job store, one contract for both backends: SQLite (a file) and a real PostgreSQL server.

Each test opens handles through `open_handle`; two handles on one database are two replicas (two connections,
two owners), so the concurrency tests race real transactions.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import pytest
from postgres_server import PostgresServer, server_binaries, shared_postgres

from pytest_baseimage.gate.store import DONE, EXPIRED, QUEUED, RUNNING, SCHEMA, NewJob, Store, StoreUnavailable
from pytest_baseimage.gate.store_pg import PgStore
from pytest_baseimage.gate.store_sqlite import TYPES, SqliteStore
from pytest_baseimage.secret import Secret

D1, D2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64
Opener = Callable[..., Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_handle(request, tmp_path) -> Opener:
    """Opens another handle (another replica) on this test's own database."""
    opened: list[Store] = []
    if request.param == "sqlite":

        def make(**kwargs) -> Store:
            return SqliteStore(tmp_path / "gate.db", **kwargs)
    else:
        server = shared_postgres(request)
        url = server.create_database()

        def make(**kwargs) -> Store:
            return PgStore(url, Secret(server.password), **kwargs)

    def opener(**kwargs) -> Store:
        store = make(**kwargs)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def postgres(request) -> PostgresServer:
    return shared_postgres(request)


def new(digest: str = D1, tag: str = "v1") -> NewJob:
    return NewJob("http://r", "staging/app", digest, "p", "certified/app", (tag,))


def run_together(calls: list[Callable[[], object]]) -> list[object]:
    """Start every call at once (a barrier), in threads; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def one(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_second_push_of_a_digest_merges_its_tag_into_the_one_job(open_handle):
    store = open_handle()
    first, created = store.enqueue(new())
    again, created_again = store.enqueue(new(tag="v2"))
    assert created and not created_again and first.id == again.id
    assert [j.tags for j in store.all_jobs()] == [["v1", "v2"]]


def test_the_same_event_at_two_replicas_at_once_makes_one_job_with_every_tag(open_handle):
    replicas = [open_handle(), open_handle()]
    tags = [f"v{n}" for n in range(8)]
    results = run_together([lambda n=n: replicas[n % 2].enqueue(new(tag=tags[n])) for n in range(8)])
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert [j.tags for j in replicas[0].all_jobs()] == [sorted(tags)]


def test_a_job_requeued_with_a_wait_is_not_claimed_before_it_on_the_databases_clock(open_handle):
    store = open_handle()
    job = store.enqueue(new())[0]
    assert store.claim().id == job.id
    assert store.requeue(job.id, "registry away", delay_s=30)
    assert store.claim() is None  # queued, but not yet due
    store.write(lambda db: db.execute("UPDATE jobs SET not_before = not_before - 31"))  # as 31 s later
    again = store.claim()
    assert again is not None and again.id == job.id and again.attempts == 2


def test_claims_by_two_replicas_at_once_give_each_job_to_one_and_count_the_attempt(open_handle):
    replicas = [open_handle(), open_handle()]
    ids = sorted(replicas[0].enqueue(new(digest))[0].id for digest in (D1, D2))
    claimed = run_together([lambda n=n: replicas[n % 2].claim() for n in range(8)])
    jobs = [job for job in claimed if job is not None]
    assert sorted(job.id for job in jobs) == ids
    assert all(job.attempts == 1 and job.state == RUNNING for job in jobs)
    owners = {r.owner for r in replicas}
    assert {job.owner for job in jobs} <= owners and len(owners) == 2
    counts = replicas[1].counts()
    assert counts.by_state == {RUNNING: 2} and counts.done_by_verdict == {}


def test_a_job_whose_heartbeat_stops_is_requeued_after_the_lease_and_a_heartbeated_one_is_not(open_handle):
    dead, live = open_handle(lease=2), open_handle(lease=2)
    for digest in (D1, D2):
        dead.enqueue(new(digest))
    lost = dead.claim()
    kept = live.claim()
    assert lost is not None and kept is not None
    assert live.expire() == 0  # both heartbeats are fresh
    time.sleep(2.2)  # past the lease; the heartbeat below and the expiry then have 2 s between them
    assert live.heartbeat([kept.id]) == 1
    assert live.expire() == 1
    by_id = {j.id: j for j in live.all_jobs()}
    assert by_id[lost.id].state == QUEUED and by_id[lost.id].message == EXPIRED
    assert by_id[kept.id].state == RUNNING and by_id[kept.id].owner == live.owner
    # The replica that lost its lease can no longer settle the job; the one that takes it over can.
    assert not dead.finish(lost.id, "compatible", 0, "", [], ["v1"])
    assert dead.heartbeat([lost.id]) == 0
    again = live.claim()
    assert again is not None and again.id == lost.id and again.attempts == 2 and again.owner == live.owner
    assert live.finish(lost.id, "compatible", 0, "", [], ["v1"])
    assert live.get(lost.id).state == DONE


def test_a_replica_whose_clock_is_an_hour_ahead_takes_no_live_replicas_job(open_handle, monkeypatch):
    """Heartbeats and their expiry use the database's clock, not each replica's."""
    live, skewed = open_handle(lease=60), open_handle(lease=60)
    live.enqueue(new())
    job = live.claim()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # what this process (the skewed replica) reads
    assert skewed.expire() == 0
    assert skewed.get(job.id).state == RUNNING


def test_only_the_owner_of_a_claim_requeues_it(open_handle):
    first, second = open_handle(), open_handle()
    job, _ = first.enqueue(new())
    first.claim()
    assert not second.requeue(job.id, "not mine")
    assert first.requeue(job.id, "engine away")
    job = first.get(job.id)
    assert job.state == QUEUED and job.message == "engine away" and job.owner == ""


def test_a_new_tag_on_a_certified_job_queues_it_again_to_promote_the_tag(open_handle):
    store = open_handle()
    job, _ = store.enqueue(new())
    store.claim()
    assert store.finish(job.id, "compatible", 0, "", ["certified/app:v1"], ["v1"])
    again, _ = store.enqueue(new(tag="v2"))
    assert again.state == QUEUED and again.verdict == "compatible"


def test_a_tag_merged_in_while_the_job_ran_sends_it_back_to_the_queue(open_handle):
    store = open_handle()
    job, _ = store.enqueue(new())
    store.claim()
    store.enqueue(new(tag="v2"))  # while it runs
    store.finish(job.id, "compatible", 0, "", ["certified/app:v1"], ["v1"])
    assert [j.state for j in store.all_jobs()] == [QUEUED]


def test_finished_jobs_are_counted_by_verdict_and_found_by_digest_and_scan(open_handle):
    store = open_handle()
    for digest in (D1, D2):
        store.enqueue(new(digest))
    first = store.claim()
    store.finish(first.id, "not compatible", 1, "python: 2.7", [], ["v1"])
    store.add_scan("scan-1", first.id, "application/vnd.oci.image.manifest.v1+json", "v1")
    counts = store.counts()
    assert counts.by_state == {DONE: 1, QUEUED: 1} and counts.done_by_verdict == {"not compatible": 1}
    assert [j.id for j in store.by_digest(first.digest)] == [first.id]
    job, mime, tag = store.scan("scan-1")
    assert job.message == "python: 2.7" and mime.endswith("manifest.v1+json") and tag == "v1"
    assert store.scan("scan-2") is None and store.get(10**6) is None


def test_sqlite_a_restart_requeues_every_running_job_at_once(tmp_path):
    """One service per SQLite file: what it left running is requeued at its next start, without a lease."""
    store = SqliteStore(tmp_path / "gate.db")
    for digest in (D1, D2):
        store.enqueue(new(digest))
    store.claim()
    store.claim()
    store.close()
    reopened = SqliteStore(tmp_path / "gate.db")  # as after kill -9: the file is all there is
    assert {j.state for j in reopened.all_jobs()} == {RUNNING}
    assert reopened.recover() == 2
    job = reopened.claim()
    assert job is not None and job.attempts == 2 and job.owner == reopened.owner
    reopened.close()


def test_sqlite_a_database_made_before_replicas_gets_the_owner_and_heartbeat_columns(tmp_path):
    old = "\n".join(
        line for line in SCHEMA.format(**TYPES).splitlines() if not line.strip().startswith(("owner", "heartbeat"))
    )
    with sqlite3.connect(tmp_path / "gate.db") as db:
        db.executescript(old)
        db.execute(
            "INSERT INTO jobs (registry, repository, digest, profile, state, attempts, created) "
            "VALUES ('http://r', 'staging/app', ?, 'p', 'running', 1, 0)",
            (D1,),
        )
    store = SqliteStore(tmp_path / "gate.db")
    try:
        assert store.recover() == 1
        job = store.claim()
        assert job is not None and job.owner == store.owner and job.heartbeat and job.attempts == 2
        assert store.heartbeat([job.id]) == 1
    finally:
        store.close()


def test_postgresql_a_start_requeues_only_jobs_whose_lease_expired(postgres):
    """Unlike SQLite, a starting replica leaves the running jobs of live replicas alone."""
    url = postgres.create_database()
    live = PgStore(url, Secret(postgres.password))
    starting = None
    try:
        live.enqueue(new())
        live.claim()
        starting = PgStore(url, Secret(postgres.password))
        assert starting.recover() == 0
        assert [(j.state, j.owner) for j in starting.all_jobs()] == [(RUNNING, live.owner)]
    finally:
        live.close()
        if starting:
            starting.close()


def test_postgresql_a_dropped_connection_is_reopened_and_the_call_retried(postgres):
    store = PgStore(postgres.create_database(), Secret(postgres.password))
    try:
        store.enqueue(new())
        assert postgres.end_gate_sessions() >= 1
        assert [j.digest for j in store.all_jobs()] == [D1]
    finally:
        store.close()


def test_postgresql_errors_are_one_line_and_never_show_the_password(postgres):
    url = postgres.create_database()
    wrong = "WrongPw-" + postgres.password
    with pytest.raises(StoreUnavailable) as failed:
        PgStore(url, Secret(wrong))
    message = str(failed.value)
    assert "password authentication failed" in message and "\n" not in message
    assert wrong not in message and postgres.password not in message
    closed = url.replace(f":{postgres.port}/", ":1/")
    with pytest.raises(StoreUnavailable, match=r"database 127\.0\.0\.1:1/gate_\w+: .*refused") as failed:
        PgStore(closed, Secret(postgres.password))
    assert postgres.password not in str(failed.value)


def test_postgresql_an_unreachable_server_while_running_is_store_unavailable(postgres):
    """After the bounded retries a call raises StoreUnavailable (the workers log it and wait), not psycopg's error."""
    store = PgStore(postgres.create_database(), Secret(postgres.password))
    store.url = store.url.replace(f":{postgres.port}/", ":1/")  # where it would reconnect: nothing listens
    try:
        assert postgres.end_gate_sessions() >= 1
        with pytest.raises(StoreUnavailable, match="refused"):
            store.claim()
        assert not store.ping()
    finally:
        store.close()


def test_missing_postgresql_binaries_fail_the_test_and_name_the_package(tmp_path):
    """Never a skip: a machine without the server is told what to install."""
    with pytest.raises(pytest.fail.Exception, match="install Debian's `postgresql` package"):
        server_binaries(tmp_path)
    assert server_binaries().name == "bin" and (server_binaries() / "initdb").exists()

"""Several `baseimage-gate serve` replicas on one real PostgreSQL database and one shared data_dir.

No registry traffic: the engine is a socket path that does not exist, so each check ends at once with the
plugin's own "could not be checked" verdict (max_attempts = 1: one claim per job). What is looked at is what
the replicas share: one job per pushed digest, each claimed once, and verdicts served by either replica.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gate_service import DB_PASSWORD_VAR, GateService, SilentEngine, database_replica, gate_command, push_event
from postgres_server import ROLE, PostgresServer, shared_postgres
from psycopg import sql
from registry_server import _free_port

NO_ENGINE = "unix:///nonexistent/docker.sock"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
def postgres(request) -> PostgresServer:
    return shared_postgres(request)


UNUSED_REGISTRY = f"http://127.0.0.1:{_free_port()}"  # the same for every replica: a job's key includes it


def replica(root: Path, postgres: PostgresServer, url: str, shared: Path, token: str, **kwargs) -> GateService:
    return database_replica(root, url, postgres.password, shared, token, registry_url=UNUSED_REGISTRY, **kwargs)


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.3)


def burst(n: int) -> list[dict]:
    """n digests, each pushed under two tags, one push repeated, a pull and a delete; shuffled."""
    events = []
    for i in range(n):
        d = digest(0x700 + i)
        events += [push_event("staging/app", d, "v1"), push_event("staging/app", d, "v2")]
        events += [push_event("staging/app", d, "v1"), push_event("staging/app", d, "", action="pull")]
        events += [push_event("staging/app", d, "", action="delete"), push_event("certified/app", d, "v1")]
    random.Random(17).shuffle(events)
    return events


def test_two_replicas_given_the_same_burst_at_once_make_one_job_per_digest_each_claimed_once(tmp_path, postgres):
    url, shared, token = postgres.create_database(), tmp_path / "shared", f"Tok-{time.time_ns()}-NeverPrint"
    replicas = [
        replica(tmp_path / name, postgres, url, shared, token, workers=2, max_attempts=1, docker_host=NO_ENGINE)
        for name in ("a", "b")
    ]
    events = burst(6)
    try:
        for service in replicas:
            service.start()
        with ThreadPoolExecutor(4) as pool:  # each replica gets the whole burst twice, all four at once
            answers = list(pool.map(lambda s: s.post_events(events), [*replicas, *replicas]))
        assert [a.status for a in answers] == [202] * 4
        created = [job_id for answer in answers for job_id in answer.json()["queued"]]
        assert len(created) == len(set(created)) == 6, created
        wanted = {digest(0x700 + i) for i in range(6)}
        wait_for(lambda: {j["state"] for j in replicas[0].jobs()} == {"done"}, "every job done")
        jobs = replicas[1].jobs()
        assert sorted(j["id"] for j in jobs) == sorted(created)
        assert sorted(j["digest"] for j in jobs) == sorted(wanted)
        assert {j["repository"] for j in jobs} == {"staging/app"}
        assert all(j["tags"] == ["v1", "v2"] and j["attempts"] == 1 for j in jobs), jobs
        assert {j["verdict"] for j in jobs} == {"could not be checked"}
        logs = {service.owner_pid: service.log() for service in replicas}
        for job in jobs:
            ran_by = job["owner"].split(":")[1]
            assert ran_by in logs, job
            settled = [pid for pid, log in logs.items() for _ in re.finditer(rf"job {job['id']} \(\S+\): could", log)]
            assert settled == [ran_by], (job, settled)  # settled once, by the replica that owns it
            other = next(s for s in replicas if s.owner_pid != ran_by)
            answer = other.get(f"/v1/verdicts/{job['digest']}")
            assert answer.status == 200, answer.body[:300]
            assert answer.json()["verdict"] == "could not be checked"
            assert answer.body == (shared / "jobs" / str(job["id"]) / "verdict.json").read_bytes()
    finally:
        codes = [service.stop() for service in replicas]
    for service in replicas:
        assert postgres.password not in service.log() and token not in service.log()
    assert all(code in (0, -15) for code in codes), codes


def test_a_replica_stopped_while_it_runs_a_job_gives_it_back_and_another_takes_it_without_waiting_for_the_lease(
    tmp_path, postgres
):
    """SIGTERM (a rolling restart): the interrupted check's job is requeued at once, not after lease_s (600 s)."""
    engine = SilentEngine()  # a check there waits until it is stopped
    url, shared, token = postgres.create_database(), tmp_path / "shared", "Tok-rolling-NeverPrint"
    a, b = (replica(tmp_path / n, postgres, url, shared, token, lease_s=600, docker_host=engine.url) for n in "ab")

    def state(asked: GateService) -> tuple[str, str, int]:
        job = asked.jobs()[0]
        return job["state"], job["owner"].split(":")[1] if job["owner"] else "", job["attempts"]

    try:
        a.start()  # alone at first, so that a claims the job
        assert a.post_events([push_event("staging/app", digest(0xA00), "v1")]).status == 202
        wait_for(lambda: state(a) == ("running", a.owner_pid, 1), "a runs the job", 60)
        b.start()
        assert a.stop() in (0, -15)
        wait_for(lambda: state(b) == ("running", b.owner_pid, 2), "b takes the job over", 30)
        assert b.jobs()[0]["message"] == "interrupted: the service running it stopped"
    finally:
        a.stop()
        b.stop()
        engine.close()


def test_a_check_that_outlasts_the_lease_stays_with_its_live_replica(tmp_path, postgres):
    """The lease thread heartbeats what the workers run: with lease_s = 2, a check still running after 8 s is
    still the first replica's, on its first attempt, while the second replica scans for expired jobs."""
    engine = SilentEngine()
    url, shared, token = postgres.create_database(), tmp_path / "shared", "Tok-outlast-NeverPrint"
    a, b = (replica(tmp_path / n, postgres, url, shared, token, lease_s=2, docker_host=engine.url) for n in "ab")
    try:
        a.start()
        assert a.post_events([push_event("staging/app", digest(0xB00), "v1")]).status == 202
        wait_for(lambda: [j["state"] for j in a.jobs()] == ["running"], "a runs the job", 60)
        b.start()
        time.sleep(8)  # four leases
        [job] = b.jobs()
        assert (job["state"], job["owner"].split(":")[1], job["attempts"]) == ("running", a.owner_pid, 1), job
        assert "stopped heartbeating" not in a.log() + b.log()
    finally:
        a.stop()
        b.stop()
        engine.close()


def test_a_replica_whose_database_goes_away_says_so_on_healthz_and_carries_on_when_it_is_back(tmp_path, postgres):
    url = postgres.create_database()
    name = url.rsplit("/", 1)[1]
    service = replica(
        tmp_path / "a", postgres, url, tmp_path / "shared", "Tok-db-away-NeverPrint", docker_host=NO_ENGINE
    )

    def allow(value: bool) -> None:
        with postgres.admin() as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(sql.Identifier(name), sql.Literal(value))
            )

    try:
        service.start()
        allow(False)
        postgres.end_gate_sessions()  # as a server restart would: and no new session is let in
        wait_for(lambda: service.get("/healthz", auth=False).status == 503, "healthz unhealthy", 30)
        health = service.get("/healthz", auth=False).json()
        assert health["database"] is False and health["status"] == "degraded"
        assert service.post_events([push_event("staging/app", digest(0x800), "v1")]).status == 503
        wait_for(lambda: "cannot claim a job: database 127.0.0.1" in service.log(), "the outage logged", 30)
        assert service.process.poll() is None
        allow(True)
        wait_for(lambda: service.get("/healthz", auth=False).status == 200, "healthy again", 30)
        answer = service.post_events([push_event("staging/app", digest(0x801), "v1")])
        assert answer.status == 202 and len(answer.json()["queued"]) == 1
    finally:
        allow(True)
        service.stop()
    log = service.log()
    assert "Traceback" not in log and postgres.password not in log


def serve(config: Path, env: dict[str, str], *, hide_driver: bool = False) -> subprocess.CompletedProcess:
    argv = [*gate_command(), "serve", "--config", str(config)]
    if hide_driver:  # as without the gate-postgres extra: `import psycopg` fails
        code = "import sys; sys.modules['psycopg'] = None; from pytest_baseimage.gate.cli import main; sys.exit(main())"
        argv = [sys.executable, "-c", code, "serve", "--config", str(config)]
    return subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=60)


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("password in the URL", 4, "a password in the database URL is refused"),
        ("password in the query", 4, "a password in the database URL is refused"),
        ("variable unset", 4, f"{DB_PASSWORD_VAR} is not set"),
        ("driver missing", 4, "pip install 'pytest-baseimage[gate-postgres]'"),
        ("nothing listens", 2, "Connection refused"),
        ("wrong password", 2, 'password authentication failed for user "gate"'),
        ("role may not create tables", 2, "permission denied for schema public"),
    ],
)
def test_a_bad_database_is_one_line_and_a_nonzero_exit_never_the_password(tmp_path, postgres, case, code, message):
    url = postgres.create_database("postgres" if case == "role may not create tables" else ROLE)
    password = postgres.password
    env = {"GATE_TOKEN": "Tok-bad-database-NeverPrint", DB_PASSWORD_VAR: password}
    if case == "password in the URL":
        url = url.replace("gate@", f"gate:{password}@")
    elif case == "password in the query":
        url += f"?password={password}"
    elif case == "variable unset":
        env.pop(DB_PASSWORD_VAR)
    elif case == "nothing listens":
        url = url.replace(f":{postgres.port}/", f":{_free_port()}/")
    elif case == "wrong password":
        env[DB_PASSWORD_VAR] = f"Wrong-{password}"
    config = tmp_path / "gate.toml"
    config.write_text(
        f'listen = "127.0.0.1:{_free_port()}"\ndatabase = "{url}"\ndatabase_password_env = "{DB_PASSWORD_VAR}"\n'
        f'token_env = "GATE_TOKEN"\n'
    )
    proc = serve(config, env, hide_driver=case == "driver missing")
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert password not in proc.stderr + proc.stdout


def test_the_database_password_never_reaches_a_check(tmp_path, postgres):
    """The check is a child of the service: its environment has neither the variable nor PGPASSWORD."""
    url = postgres.create_database()
    service = replica(tmp_path / "a", postgres, url, tmp_path / "shared", "Tok-env-NeverPrint", max_attempts=1)
    service.extra_env["PGPASSWORD"] = postgres.password
    probe = tmp_path / "env.json"
    # The check's interpreter is the service's: a sitecustomize in its path records the environment it got.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import json, os, sys\n"
        "if '--base-image-profile' in ' '.join(sys.argv) or any('--base-image=' in a for a in sys.argv):\n"
        f"    open({str(probe)!r}, 'w').write(json.dumps(dict(os.environ)))\n"
    )
    service.extra_env["PYTHONPATH"] = str(site)
    service.configure(
        registry_url=UNUSED_REGISTRY, database=url, data_dir=str(tmp_path / "shared"),
        top=f'database_password_env = "{DB_PASSWORD_VAR}"\n', max_attempts=1, docker_host=NO_ENGINE,
    )  # fmt: skip
    try:
        service.start()
        assert service.post_events([push_event("staging/app", digest(0x900), "v1")]).status == 202
        service.wait_done(digest(0x900), 120)
    finally:
        service.stop()
    seen = json.loads(probe.read_text())
    assert "DOCKER_HOST" in seen  # the probe saw the check's environment
    assert DB_PASSWORD_VAR not in seen and "PGPASSWORD" not in seen
    assert postgres.password not in json.dumps(seen)

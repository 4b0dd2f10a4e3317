"""Two gate replicas on one PostgreSQL database, a real registry and real checks: a replica killed with SIGKILL
while it certifies loses its lease, and the other replica takes the job over, finishes it and promotes once."""

from __future__ import annotations

import time

import pytest
from conftest import leaked_containers
from gate_service import GateService, certifying_children, database_replica, manifest_digest, wait_gone
from postgres_server import shared_postgres
from registry_server import _free_port, start_registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leaks")]

DEADLINE = 180  # seconds from a push to a verdict (as in test_gate_service_docker.py)
LEASE = 10  # seconds: the take-over comes soon, and a busy machine does not make a live replica miss it


def test_a_replica_killed_while_it_certifies_is_taken_over_after_its_lease_and_the_image_promoted_once(
    tmp_path, request, docker_client, images
):
    postgres = shared_postgres(request)
    url, shared, token = postgres.create_database(), tmp_path / "shared", f"Tok-{time.time_ns()}-NeverPrint"
    port_a = _free_port()  # replica a's: where the registry notifies
    registry = start_registry(notify_url=f"http://127.0.0.1:{port_a}/v1/events", notify_authorization=f"Bearer {token}")
    replicas: list[GateService] = []
    try:
        for name, port in (("a", port_a), ("b", 0)):
            service = database_replica(
                tmp_path / name, url, postgres.password, shared, token, lease_s=LEASE, port=port, registry=registry,
                workers=1,
            )  # fmt: skip
            replicas.append(service)
        for service in replicas:
            service.start()
        reference = registry.push(docker_client, images("good"), "staging/takeover", "v1")
        digest = reference.split("@", 1)[1]
        deadline = time.monotonic() + DEADLINE
        runner, children = None, []
        while runner is None:
            for service in replicas:
                children = certifying_children(service.process.pid)
                if children:
                    runner = service
                    break
            else:
                assert time.monotonic() < deadline, f"no certification started: {[s.log()[-2000:] for s in replicas]}"
                time.sleep(0.1)
        survivor = next(s for s in replicas if s is not runner)
        killed_pid = runner.owner_pid
        runner.kill()
        # The orphaned check got SIGTERM (PR_SET_PDEATHSIG) and removes its own container.
        assert all(wait_gone(pid, 60) for pid in children)
        assert leaked_containers(docker_client) == []
        assert manifest_digest(registry, "certified/takeover", "v1") is None

        verdict = survivor.wait_done(digest, DEADLINE + 2 * LEASE, repository="staging/takeover")
        assert verdict["verdict"] == "compatible"
        job = next(j for j in survivor.jobs() if j["repository"] == "staging/takeover")
        assert job["attempts"] == 2 and job["owner"].split(":")[1] == survivor.owner_pid != killed_pid, job
        assert job["promoted_to"] == [f"certified/takeover@{digest}", "certified/takeover:v1"]
        assert manifest_digest(registry, "certified/takeover", "v1") == digest
        assert "requeued 1 job(s) whose replica stopped heartbeating" in survivor.log()
        # The registry's access log: manifests written (201) to certified/takeover, once by digest, once by tag.
        log = (registry.root / "registry.log").read_text(errors="replace").splitlines()
        puts = [line for line in log if '"PUT /v2/certified/takeover/manifests/' in line and " 201 " in line]
        assert len(puts) == 2, puts

        # The killed replica, started again, serves the verdict its peer wrote into the shared data_dir.
        runner.start()
        answer = runner.get(f"/v1/verdicts/{digest}?repository=staging/takeover")
        assert answer.status == 200 and answer.json()["verdict"] == "compatible"
        assert answer.json() == verdict
    finally:
        codes = [service.stop() for service in replicas]
        registry.remove_local_references(docker_client)
        registry.stop()
    for service in replicas:
        assert postgres.password not in service.log() and token not in service.log()
    assert all(code in (0, -15) for code in codes), codes

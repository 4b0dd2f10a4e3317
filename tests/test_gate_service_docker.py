"""The gate service end to end: a real registry notifies the real service, which certifies and promotes.

Debian's docker-registry (htpasswd, `notifications:` pointed at the service) and `baseimage-gate serve` as a
subprocess; images are the fixture images pushed through the real engine.
"""

from __future__ import annotations

import json
import re
import signal
import time

import pytest
from conftest import leaked_containers
from gate_service import GateService, basic, certifying_children, check_contract, manifest_digest, wait_gone
from registry_server import RegistryServer, start_registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leaks")]

DEADLINE = 180  # seconds from the end of a push to a verdict: a pull of ~400 MB and a 3 s check, with room


@pytest.fixture(scope="module")
def gate_root(tmp_path_factory):
    return tmp_path_factory.mktemp("gate")


@pytest.fixture(scope="module")
def service(gate_root, docker_client):
    """A registry that notifies a gate; the gate running; both stopped (and their images untagged) at the end."""
    gate = GateService(gate_root)
    registry = start_registry(notify_url=gate.events_url, notify_authorization=f"Bearer {gate.token}")
    try:
        gate.configure(registry, workers=1)
        gate.start()
        yield gate
    finally:
        code = gate.stop()
        registry.remove_local_references(docker_client)
        registry.stop()
    # uvicorn re-raises the SIGTERM it handled once its shutdown is done: -15 is a clean stop
    assert code in (0, -signal.SIGTERM), gate.log()[-3000:]


@pytest.fixture
def registry(service) -> RegistryServer:
    assert service.registry is not None
    return service.registry


def no_secrets(service: GateService) -> None:
    """Neither the token nor the registry password in the log, any verdict, report or the database."""
    assert service.registry is not None
    texts = [service.log()]
    for path in service.root.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode(errors="replace"))
    for secret in (service.token, service.registry.password):
        assert not any(secret in text for text in texts), "a secret leaked"


def test_a_passing_image_pushed_to_staging_appears_under_certified_with_the_same_digest(
    service, registry, docker_client, images
):
    reference = registry.push(docker_client, images("good"), "staging/good", "v1")
    digest = reference.split("@", 1)[1]
    verdict = service.wait_done(digest, DEADLINE)
    assert verdict["verdict"] == "compatible", verdict
    assert verdict["exit_code"] == 0
    assert verdict["images"][0]["info"]["digest"].endswith(digest)
    assert manifest_digest(registry, "certified/good", "v1") == digest
    assert manifest_digest(registry, "certified/good", digest) == digest
    job = [j for j in service.jobs() if j["digest"] == digest]
    assert len(job) == 1 and job[0]["promoted_to"] == ["certified/good@" + digest, "certified/good:v1"]
    report = service.get(f"/v1/verdicts/{digest}/report")
    assert report.status == 200 and report.headers["content-type"].startswith("text/html")
    assert b"COMPATIBLE" in report.body.upper()
    no_secrets(service)


def test_the_same_digest_pushed_under_a_new_tag_is_promoted_under_it_by_the_same_job(
    service, registry, docker_client, images
):
    digest = registry.push(docker_client, images("good"), "staging/good", "v2").split("@", 1)[1]
    deadline = time.monotonic() + DEADLINE
    while manifest_digest(registry, "certified/good", "v2") != digest:
        assert time.monotonic() < deadline, f"certified/good:v2 did not appear: {service.jobs()}"
        time.sleep(0.2)
    jobs = [j for j in service.jobs() if j["repository"] == "staging/good"]
    assert len(jobs) == 1 and jobs[0]["tags"] == ["v1", "v2"]
    assert manifest_digest(registry, "certified/good", "v1") == digest
    assert service.get(f"/v1/verdicts/{digest}/attestation").status == 404  # [attest] is off


def test_metrics_count_the_finished_jobs_by_verdict_and_hold_no_secret(service, registry, docker_client, images):
    certified(service, registry, docker_client, images, "good", "staging/good")
    text = service.get("/metrics", auth=False).body.decode()
    done = re.search(r'^baseimage_gate_jobs_done\{verdict="compatible"\} (\S+)$', text, re.M)
    assert done and float(done.group(1)) >= 1
    assert 'baseimage_gate_job_duration_seconds_count{verdict="compatible"}' in text
    assert service.token not in text and service.registry.password not in text
    assert "staging/" not in text


def test_a_failing_image_is_never_promoted_and_its_verdict_says_why(service, registry, docker_client, images):
    reference = registry.push(docker_client, images("wrong-python"), "staging/wrong", "v1")
    digest = reference.split("@", 1)[1]
    verdict = service.wait_done(digest, DEADLINE)
    assert verdict["verdict"] == "not compatible", verdict
    assert verdict["exit_code"] == 1
    failed = {r["stage"] for r in verdict["images"][0]["results"] if r["status"] == "fail"}
    assert "python" in failed
    job = next(j for j in service.jobs() if j["digest"] == digest)
    assert job["promoted_to"] == [] and "python" in job["message"]
    assert manifest_digest(registry, "certified/wrong", "v1") is None
    assert manifest_digest(registry, "certified/wrong", digest) is None
    assert leaked_containers(docker_client) == []
    no_secrets(service)


def test_a_tag_moved_to_a_failing_image_after_the_push_does_not_slip_into_certified(
    service, registry, docker_client, images
):
    good = registry.push(docker_client, images("good"), "staging/moved", "v1").split("@", 1)[1]
    bad = registry.push(docker_client, images("wrong-python"), "staging/moved", "v1").split("@", 1)[1]
    assert manifest_digest(registry, "staging/moved", "v1") == bad  # the tag now names the failing image
    assert service.wait_done(good, DEADLINE, repository="staging/moved")["verdict"] == "compatible"
    assert service.wait_done(bad, DEADLINE, repository="staging/moved")["verdict"] == "not compatible"
    assert manifest_digest(registry, "certified/moved", "v1") == good
    assert manifest_digest(registry, "certified/moved", bad) is None


HARBOR_REQUEST = "application/vnd.scanner.adapter.scan.request+json; version=1.1"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OLD_REPORT = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"


def harbor_scan(service: GateService, registry: RegistryServer, repository: str, digest: str) -> str:
    body = {
        "registry": {"url": f"http://{registry.address}", "authorization": ""},
        "artifact": {"repository": repository, "digest": digest, "tag": "v1",
                     "mime_type": "application/vnd.docker.distribution.manifest.v2+json"},
    }  # fmt: skip
    answer = service.request(
        "POST", "/api/v1/scan", body=json.dumps(body).encode(), headers={"Content-Type": HARBOR_REQUEST}
    )
    return check_contract("AcceptScanRequest", answer)["id"]


def certified(service, registry, docker_client, images, image: str, repository: str) -> str:
    """The digest of `image` pushed to `repository:v1` and judged: pushed here unless a test above did (a test
    run alone, or its module split over xdist workers, each with a registry and a service of its own)."""
    if f"{repository}:v1" not in registry.digests:
        registry.push(docker_client, images(image), repository, "v1")
    digest = registry.digests[f"{repository}:v1"].split("@", 1)[1]
    service.wait_done(digest, DEADLINE)
    return digest


def test_harbor_report_of_a_failing_image_lists_the_failed_stage_at_high(service, registry, docker_client, images):
    digest = certified(service, registry, docker_client, images, "wrong-python", "staging/wrong")
    scan_id = harbor_scan(service, registry, "staging/wrong", digest)
    answer = service.get(f"/api/v1/scan/{scan_id}/report", headers={"Accept": OLD_REPORT})
    report = check_contract("GetScanReport", answer)
    assert answer.headers["content-type"] == OLD_REPORT
    assert report["artifact"] == {"repository": "staging/wrong", "digest": digest, "mime_type": MANIFEST_V2}
    assert report["severity"] == "High"
    finding = next(v for v in report["vulnerabilities"] if v["id"] == "BASEIMAGE-PYTHON")
    verdict = service.get(f"/v1/verdicts/{digest}").json()
    python = next(r for r in verdict["images"][0]["results"] if r["stage"] == "python")
    assert finding["severity"] == "High"
    assert finding["description"] == python["observed"] and finding["fix_version"] == python["remediation"]


def test_harbor_scan_of_an_unconfigured_registry_pulls_with_the_credentials_harbor_sent(
    service, registry, docker_client, images
):
    """Harbor names its registry by a URL the config does not list: its robot credentials are the only way in."""
    certified(service, registry, docker_client, images, "wrong-python", "staging/wrong")
    certified(service, registry, docker_client, images, "good", "staging/good")
    port = registry.address.rsplit(":", 1)[1]
    cases = {"with": ("staging/wrong", basic(registry.username, registry.password)), "without": ("staging/good", "")}
    ids = {}
    try:
        for case, (repository, authorization) in cases.items():
            digest = registry.digests[f"{repository}:v1"].split("@", 1)[1]
            body = {
                "registry": {"url": f"http://localhost:{port}", "authorization": authorization},
                "artifact": {"repository": repository, "digest": digest, "mime_type": MANIFEST_V2},
            }
            answer = service.request(
                "POST", "/api/v1/scan", body=json.dumps(body).encode(), headers={"Content-Type": HARBOR_REQUEST}
            )
            ids[case] = check_contract("AcceptScanRequest", answer)["id"]
        reports = {case: wait_report(service, scan_id) for case, scan_id in ids.items()}
    finally:
        untag(docker_client, f"localhost:{port}/")
    assert "BASEIMAGE-PYTHON" in {v["id"] for v in reports["with"]["vulnerabilities"]}
    assert reports["with"]["severity"] == "High"
    # Without credentials the pull is refused: could not be checked, one Unknown finding, nothing at High.
    findings = [(v["id"], v["severity"]) for v in reports["without"]["vulnerabilities"]]
    assert findings == [("BASEIMAGE-IMAGE", "Unknown")]
    job = next(j for j in service.jobs() if j["id"] == max(j["id"] for j in service.jobs()))
    assert job["repository"] == "staging/good" and job["verdict"] == "could not be checked"
    assert f"docker login localhost:{port}" in job["message"]  # the plugin's pull error: no credentials
    assert job["attempts"] == 3  # exit 2 is retried, up to max_attempts
    no_secrets(service)


def untag(client, prefix: str) -> None:
    for image in client.images.list():
        for ref in [*image.tags, *(image.attrs.get("RepoDigests") or [])]:
            if ref.startswith(prefix):
                client.images.remove(ref)


def wait_report(service: GateService, scan_id: str) -> dict:
    deadline = time.monotonic() + DEADLINE
    while True:
        answer = service.get(f"/api/v1/scan/{scan_id}/report")
        if answer.status != 302:
            return check_contract("GetScanReport", answer)
        assert time.monotonic() < deadline, f"no report for {scan_id}: {service.jobs()}"
        time.sleep(float(answer.headers["refresh-after"]) / 4)


def test_harbor_report_of_a_passing_image_has_no_high_finding(service, registry, docker_client, images):
    digest = certified(service, registry, docker_client, images, "good", "staging/good")
    scan_id = harbor_scan(service, registry, "staging/good", digest)
    report = check_contract("GetScanReport", service.get(f"/api/v1/scan/{scan_id}/report"))
    assert all(v["severity"] not in ("High", "Critical") for v in report["vulnerabilities"]), report
    assert report["severity"] not in ("High", "Critical")


def test_a_job_running_when_the_service_is_killed_completes_after_a_restart_and_is_promoted_once(
    service, registry, docker_client, images
):
    assert service.process is not None
    reference = registry.push(docker_client, images("good"), "staging/killed", "v1")
    digest = reference.split("@", 1)[1]
    deadline = time.monotonic() + DEADLINE
    while not (children := certifying_children(service.process.pid)):
        assert time.monotonic() < deadline, f"no certification started: {service.log()[-3000:]}"
        time.sleep(0.1)
    service.kill()
    # The orphaned check got SIGTERM (PR_SET_PDEATHSIG) and removes its own container.
    assert all(wait_gone(pid, 60) for pid in children)
    assert leaked_containers(docker_client) == []
    assert manifest_digest(registry, "certified/killed", "v1") is None
    service.start()
    verdict = service.wait_done(digest, DEADLINE, repository="staging/killed")
    assert verdict["verdict"] == "compatible"
    job = next(j for j in service.jobs() if j["repository"] == "staging/killed")
    assert job["attempts"] == 2, job
    assert job["promoted_to"] == [f"certified/killed@{digest}", "certified/killed:v1"]
    assert manifest_digest(registry, "certified/killed", "v1") == digest
    # The registry's access log: manifests written (201) to certified/killed, once by digest and once by tag.
    puts = [
        line for line in registry_log(registry) if '"PUT /v2/certified/killed/manifests/' in line and " 201 " in line
    ]
    assert len(puts) == 2, puts


def registry_log(registry: RegistryServer) -> list[str]:
    return (registry.root / "registry.log").read_text(errors="replace").splitlines()

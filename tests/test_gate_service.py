"""The gate service's HTTP side, against the real service (a subprocess) and no registry traffic.

The service's engine is a TCP listener that accepts and never answers, so a job once claimed stays running
(deterministically) and no Docker work happens: these tests look at what is queued and what is answered.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT
from gate_service import (
    EVENTS_TYPE,
    GateService,
    SilentEngine,
    basic,
    check_contract,
    gate_command,
    push_event,
)

HARBOR_REQUEST = "application/vnd.scanner.adapter.scan.request+json; version=1.1"
REPORT_TYPE = "application/vnd.security.vulnerability.report; version=1.1"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture(scope="module")
def silent_engine():
    engine = SilentEngine()
    yield engine.url
    engine.close()


@pytest.fixture(scope="module")
def gate(tmp_path_factory, silent_engine):
    service = GateService(tmp_path_factory.mktemp("gate"))
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers there
    service.configure(registry_url=f"http://127.0.0.1:{unused.getsockname()[1]}", docker_host=silent_engine)
    service.start()
    yield service
    service.stop()
    unused.close()
    assert service.token not in service.log() and service.registry_password not in service.log()


def queued(gate: GateService) -> set[tuple[str, str]]:
    return {(job["repository"], job["digest"]) for job in gate.jobs()}


def test_a_burst_of_30_events_gives_exactly_one_job_per_distinct_pushed_digest(gate):
    before = queued(gate)
    events = []
    for n in range(1, 4):  # three digests in staging/app, each pushed under two tags and twice each
        events += [push_event("staging/app", digest(n), tag) for tag in ("v1", "latest", "v1", "latest")]
    events += [push_event("staging/other", digest(4), "v1")] * 3  # the same digest in another repository
    events += [push_event("staging/app", digest(n), "v1", action="pull") for n in range(5, 9)]
    events += [push_event("staging/app", digest(n), "", action="delete") for n in range(9, 11)]
    events += [push_event("staging/app", digest(11), "", media_type="application/octet-stream")]  # a blob
    events += [push_event("staging/app", digest(12), "")]  # a manifest without a tag (an index's child)
    events += [push_event("certified/app", digest(13), "v1")]  # no rule: our own promotions land here
    events += [push_event("staging/app", digest(n), "v1", action="pull") for n in range(1, 4)]  # pulls of pushed ones
    events += [push_event("staging/app", digest(n), "v1", action="mount") for n in (14, 15)]
    events += [push_event("staging/app", digest(1), "v1", action="delete")]
    assert len(events) == 30
    batches = [events[i : i + 5] for i in range(0, 30, 5)]
    with ThreadPoolExecutor(len(batches)) as pool:
        answers = list(pool.map(gate.post_events, batches))
    assert [a.status for a in answers] == [202] * len(batches)
    new = queued(gate) - before
    expected = {("staging/app", digest(n)) for n in range(1, 4)} | {("staging/other", digest(4))}
    assert new == expected
    jobs = [j for j in gate.jobs() if (j["repository"], j["digest"]) in expected]
    assert len(jobs) == 4
    assert all(sorted(j["tags"]) == (["latest", "v1"] if j["repository"] == "staging/app" else ["v1"]) for j in jobs)


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("malformed JSON", 400),
        ("an event without a target", 400),
        ("a bad digest after a good push", 400),
        ("wrong media type", 415),
        ("body over the limit", 413),
        ("no token", 401),
        ("wrong token", 401),
        ("basic auth not configured", 401),
    ],
)
def test_bad_events_are_refused_with_a_4xx_and_queue_nothing(gate, case, status):
    before = gate.jobs()
    good = push_event("staging/bad", digest(100), "v1")
    headers = {"Content-Type": EVENTS_TYPE}
    body = json.dumps({"events": [good]}).encode()
    auth: bool | str = True
    if case == "malformed JSON":
        body = b'{"events": [' + body
    elif case == "an event without a target":
        body = json.dumps({"events": [good, {"action": "push"}]}).encode()
    elif case == "a bad digest after a good push":
        body = json.dumps({"events": [good, push_event("staging/bad", "sha256:nothex", "v1")]}).encode()
    elif case == "wrong media type":
        headers["Content-Type"] = "application/json"
    elif case == "body over the limit":
        body = json.dumps({"events": [good], "pad": "x" * (2 << 20)}).encode()
    elif case == "no token":
        auth = False
    elif case == "wrong token":
        auth = "Bearer not-the-token"
    elif case == "basic auth not configured":
        auth = basic("gate", gate.token)
    if case == "body over the limit":
        answer = gate.post_unread("/v1/events", body, headers)
    else:
        answer = gate.request("POST", "/v1/events", body=body, headers=headers, auth=auth)
    assert answer.status == status, answer.body
    assert gate.jobs() == before
    assert gate.get("/healthz", auth=False).status == 200
    assert gate.token.encode() not in answer.body


def test_refused_events_are_counted_in_the_metrics_by_reason(gate):
    gate.request("POST", "/v1/events", body=b"{}", headers={"Content-Type": EVENTS_TYPE}, auth=False)
    answer = gate.get("/metrics", auth=False)
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.body.decode()
    assert 'baseimage_gate_events_rejected_total{reason="unauthorized"}' in text
    assert 'baseimage_gate_jobs{state="queued"}' in text
    assert "baseimage_gate_job_duration_seconds" in text


def test_harbor_metadata_answers_as_the_contract_says(gate):
    body = check_contract("GetMetadata", gate.get("/api/v1/metadata"))
    capability = body["capabilities"][0]
    assert capability["type"] == "vulnerability"
    assert set(capability["consumes_mime_types"]) == {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
    assert REPORT_TYPE in capability["produces_mime_types"]
    assert gate.get("/api/v1/metadata", auth=False).status == 401


def scan_request(repository: str, digest_: str, **artifact: str) -> bytes:
    return json.dumps(
        {
            "registry": {"url": "http://harbor.invalid:8080", "authorization": "Basic cm9ib3Q6c2VjcmV0"},
            "artifact": {
                "repository": repository,
                "digest": digest_,
                "tag": "v1",
                "mime_type": "application/vnd.docker.distribution.manifest.v2+json",
                **artifact,
            },
            "enabled_capabilities": [{"type": "vulnerability"}],
        }
    ).encode()


def test_harbor_scan_is_accepted_and_its_report_asks_to_come_back_until_ready(gate):
    answer = gate.request(
        "POST", "/api/v1/scan", body=scan_request("library/app", digest(200)), headers={"Content-Type": HARBOR_REQUEST}
    )
    scan_id = check_contract("AcceptScanRequest", answer)["id"]
    report = gate.get(f"/api/v1/scan/{scan_id}/report", headers={"Accept": REPORT_TYPE})
    assert report.status == 302
    check_contract("GetScanReport", report)
    assert int(report.headers["refresh-after"]) == 2
    assert ("library/app", digest(200)) in queued(gate)


@pytest.mark.parametrize(
    ("case", "status"),
    [("not JSON", 400), ("a bad digest", 422), ("an unknown artifact type", 501), ("only sbom", 501)],
)
def test_harbor_scan_refusals_answer_as_the_contract_says(gate, case, status):
    before = gate.jobs()
    body = scan_request("library/app", digest(300))
    if case == "not JSON":
        body = b"{not json"
    elif case == "a bad digest":
        body = scan_request("library/app", "md5:abc")
    elif case == "an unknown artifact type":
        body = scan_request("library/app", digest(300), mime_type="application/vnd.cncf.helm.config.v1+json")
    elif case == "only sbom":
        data = json.loads(body)
        data["enabled_capabilities"] = [{"type": "sbom"}]
        body = json.dumps(data).encode()
    answer = gate.request("POST", "/api/v1/scan", body=body, headers={"Content-Type": HARBOR_REQUEST})
    assert answer.status == status
    assert check_contract("AcceptScanRequest", answer)["error"]["message"]
    assert gate.jobs() == before


def test_harbor_report_of_an_unknown_scan_id_is_404(gate):
    answer = gate.get("/api/v1/scan/no-such-scan/report", headers={"Accept": REPORT_TYPE})
    assert answer.status == 404
    check_contract("GetScanReport", answer)


def test_a_verdict_for_an_unknown_digest_is_404_and_a_bad_digest_400(gate):
    assert gate.get(f"/v1/verdicts/{digest(999)}").status == 404
    assert gate.get("/v1/verdicts/sha256:zz").status == 400
    assert gate.get(f"/v1/verdicts/{digest(999)}", auth=False).status == 401


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('listen = "127.0.0.1:1"\n', "token_env or basic_username"),
        ('token_env = "GATE_TOKEN_UNSET_HERE"\n', "GATE_TOKEN_UNSET_HERE is not set"),
        ('token_env = "T"\npassword = "inline"\n', "password"),
        ('token_env = "T"\n[[promote]]\nfrom = "a/*"\nto = "b/{name}"\nprofile = "x"\n', "[[registries]]"),
        ("token_env = [", "not TOML"),
    ],
)
def test_a_bad_config_is_one_line_and_exit_4(tmp_path, config, message):
    path = tmp_path / "gate.toml"
    path.write_text(config)
    env = {"PATH": "/usr/bin:/bin", "T": "token-value"}
    proc = subprocess.run(
        [*gate_command(), "serve", "--config", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 4, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_check_that_could_not_run_is_retried_after_a_growing_wait(tmp_path):
    """The registry refuses every pull (nothing listens there): each attempt ends "could not be checked" at
    once, and the next waits retry_backoff, then twice that (before: three attempts within a second)."""
    service = GateService(tmp_path)
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    service.configure(registry_url=f"http://127.0.0.1:{unused.getsockname()[1]}", max_attempts=3, retry_backoff=2)
    seen: dict[int, float] = {}
    try:
        service.start()
        assert service.post_events([push_event("staging/away", digest(800), "v1")]).status == 202
        deadline = time.monotonic() + 90
        while not (seen and service.jobs()[0]["state"] == "done"):
            assert time.monotonic() < deadline, service.jobs()
            attempts = service.jobs()[0]["attempts"]
            seen.setdefault(attempts, time.monotonic())
            time.sleep(0.05)
        job = service.jobs()[0]
        assert job["attempts"] == 3 and job["verdict"] == "could not be checked", job
        assert seen[2] - seen[1] >= 2 and seen[3] - seen[2] >= 4, seen
        assert "retrying in 2 s" in service.log() and "retrying in 4 s" in service.log()
    finally:
        service.stop()
        unused.close()


def test_a_job_that_keeps_crashing_the_service_ends_with_an_error_verdict_after_max_attempts(tmp_path, silent_engine):
    """Each start claims the job (an attempt) and the service is killed while it runs; the third start gives up."""
    import jsonschema

    service = GateService(tmp_path)
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    service.configure(
        registry_url=f"http://127.0.0.1:{unused.getsockname()[1]}", docker_host=silent_engine, max_attempts=2
    )
    try:
        service.start()
        assert service.post_events([push_event("staging/crash", digest(500), "v1")]).status == 202
        for attempt in (1, 2):
            wait_for(lambda: [j["state"] for j in service.jobs()] == ["running"], f"attempt {attempt} running")
            service.kill()
            service.start()
        verdict = service.wait_done(digest(500), 60)
        job = service.jobs()[0]
        assert job["state"] == "done" and job["attempts"] == 3 and job["verdict"] == "could not be checked"
        assert job["message"].startswith("gave up after 2 attempts")
        assert verdict["verdict"] == "could not be checked" and verdict["exit_code"] == 2
        assert verdict["images"][0]["error"].startswith("gave up after 2 attempts")
        schema = json.loads((ROOT / "pytest_baseimage" / "report" / "schema.json").read_text())
        jsonschema.validate(verdict, schema)
    finally:
        service.stop()
        unused.close()


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def test_an_engine_named_by_a_docker_context_is_the_one_its_checks_use(tmp_path):
    """`engines = [{ context = "far" }]`: the context, made with the real docker CLI, decides where the check
    goes, even though the gate's own environment names another engine in DOCKER_HOST."""
    far, near = SilentEngine(), SilentEngine()
    docker_config = tmp_path / "docker-config"
    made = subprocess.run(
        ["docker", "context", "create", "far", "--docker", f"host={far.url}"],
        env={"DOCKER_CONFIG": str(docker_config), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    service = GateService(tmp_path, extra_env={"DOCKER_CONFIG": str(docker_config), "DOCKER_HOST": near.url})
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    service.configure(registry_url=f"http://127.0.0.1:{unused.getsockname()[1]}", workers=1)
    config = service.root / "gate.toml"
    config.write_text(config.read_text().replace('engines = [{ docker_host = "" }]', 'engines = [{ context = "far" }]'))
    try:
        service.start()
        assert service.post_events([push_event("staging/ctx", digest(700), "v1")]).status == 202
        wait_for(lambda: far.held, "a connection to the context's engine")
        time.sleep(1)  # room for a wrong connection to the engine in DOCKER_HOST to show
        assert not near.held
    finally:
        service.stop()
        unused.close()
        far.close()
        near.close()


def test_an_engine_context_that_does_not_exist_is_a_config_error(tmp_path):
    service = GateService(tmp_path, extra_env={"DOCKER_CONFIG": str(tmp_path / "empty-docker-config")})
    service.configure(registry_url="http://127.0.0.1:9", workers=1)
    config = service.root / "gate.toml"
    config.write_text(
        config.read_text().replace('engines = [{ docker_host = "" }]', 'engines = [{ context = "nope" }]')
    )
    proc = subprocess.run(
        [*gate_command(), "serve", "--config", str(config)],
        env=service.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4, proc.stderr
    assert "no docker context 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_workers_are_spread_over_the_configured_engines(tmp_path):
    """Two workers, two engines, two jobs: each engine is asked (worker i uses engine i mod n)."""
    engines = [SilentEngine(), SilentEngine()]
    service = GateService(tmp_path)
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    service.configure(registry_url=f"http://127.0.0.1:{unused.getsockname()[1]}", workers=2)
    config = service.root / "gate.toml"
    urls = ", ".join(f'{{ docker_host = "{engine.url}" }}' for engine in engines)
    config.write_text(config.read_text().replace('engines = [{ docker_host = "" }]', f"engines = [{urls}]"))
    try:
        service.start()
        events = [push_event("staging/spread", digest(600 + n), "v1") for n in range(2)]
        assert service.post_events(events).status == 202
        wait_for(lambda: all(engine.held for engine in engines), "a connection to each engine")
        assert sorted(j["state"] for j in service.jobs()) == ["running", "running"]
    finally:
        service.stop()
        unused.close()
        for engine in engines:
            engine.close()

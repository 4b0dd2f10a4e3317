"""The engine against the real (shared) Docker engine: bounds on a candidate, the keep-alive without `sleep`,
a USER that does not exist, a probe that fails once, and reaping by session lease."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid

import pytest
from conftest import FIXTURE_PROFILE, certify, plugin_argv

from pytest_baseimage import engine as eng
from pytest_baseimage.engine import Candidate, Engine


@pytest.fixture
def engine(docker_client):
    made = Engine()
    yield made
    made.remove_all()


def _cpu_seconds(container) -> float:
    stats = container.stats(stream=False)
    return stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9


def test_candidate_is_bounded_cpu_log_healthcheck(engine, images, no_leaks):
    candidate = Candidate.start(engine, images("good"))
    attrs = engine.client.api.inspect_container(candidate.id)
    host, config = attrs["HostConfig"], attrs["Config"]
    assert host["NanoCpus"] == 1_000_000_000
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "1"}}
    assert config["Healthcheck"]["Test"] == ["NONE"]
    assert host["Memory"] == 2 << 30 and host["PidsLimit"] == 512  # kept from before
    # Disk: bounded by the storage driver where it can, else watched; this engine's driver decides which.
    if host.get("StorageOpt"):
        assert host["StorageOpt"] == {"size": str(eng.DEFAULT_DISK_LIMIT_BYTES)}
    else:
        assert engine.watch_disk() == []  # watched, and a fresh candidate is far under the limit


def test_keep_alive_without_sleep_runs_and_burns_no_cpu(engine, images, no_leaks):
    candidate = Candidate.start(engine, images("engine-no-sleep"))
    assert candidate.running and candidate.keepalive == eng.KEEPALIVE_COMMANDS[1]
    before = _cpu_seconds(candidate.container)
    time.sleep(2.0)
    used = _cpu_seconds(candidate.container) - before
    assert used < 0.2, f"the keep-alive used {used:.2f} CPU-seconds in 2 s"
    assert candidate.exec(["/bin/sh", "-c", "echo alive"]).stdout.strip() == "alive"


@pytest.mark.parametrize(
    ("variant", "cause"),
    [
        ("engine-nosuchuser", "the image's USER nosuchuser does not exist in /etc/passwd"),
        ("engine-foreign-cpu", "the image's programs are built for another CPU (exec format error)"),
    ],
)
def test_why_no_process_can_start_is_named_not_read_as_no_shell(tmp_path, images, no_leaks, variant, cause):
    proc, cases = certify(tmp_path, images(variant))
    assert proc.returncode == 1, proc.stdout
    for stage in ("conda", "python"):
        message = cases[f"test_{stage}"]["message"]
        assert cause in message, message
        assert "no shell" not in message
    assert cases["test_os"]["outcome"] == "passed"  # read from files: no process needed


def test_a_failed_probe_runs_once_for_every_stage(tmp_path, images, docker_client, no_leaks):
    """The image's python3 never ends and ignores SIGTERM: one probe exec, one deadline, the same reason for
    every stage that needs it."""
    timeout = 4
    verdict = tmp_path / "verdict.json"
    argv = plugin_argv(
        f"--base-image={images('engine-hang-python')}",
        f"--profile={FIXTURE_PROFILE}",
        f"--probe-timeout={timeout}",
        f"--compat-json={verdict}",
        "-m",
        "not scoring",
    )
    image_id = docker_client.images.get(images("engine-hang-python")).id
    since = int(time.time()) - 1
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    until = int(time.time()) + 1
    assert "Traceback" not in out + err, out + err
    execs = [  # this run's probe scripts (not the kill that follows a timeout, nor another process's runs)
        event["status"]
        for event in docker_client.events(
            since=since, until=until, decode=True, filters={"type": "container", "event": "exec_create"}
        )
        if event["Actor"]["Attributes"].get(eng.LABEL_ROLE) == "candidate"
        and event["Actor"]["Attributes"].get(eng.LABEL_PID) == str(proc.pid)
        and event["Actor"]["Attributes"].get("image") == image_id
        and "kill -9 -1" not in event["status"]
    ]
    assert len(execs) == 1, execs  # one probe exec; how long it took is the bench's business, not a test's
    results = {r["stage"]: r for r in json.loads(verdict.read_text())["images"][0]["results"]}
    for stage in ("conda", "python"):  # both read the one probe's failure: the image's, judged once
        assert results[stage]["status"] == "fail", results[stage]
        assert f"timed out after {timeout} s running" in results[stage]["observed"], results[stage]
    # the time ran out on conda's command (its stand-in runs the hanging python): python was never reached
    assert results["conda"]["observed"].startswith(f"timed out after {timeout} s running `/opt/conda/bin/conda ")
    assert results["python"]["observed"].startswith("not reached: the probe timed out"), results["python"]
    assert results["os"]["status"] == "pass", results["os"]  # judged from files, as usual


# -- reaping by session lease ----------------------------------------------------------------------------
def _owned(docker_client, image, session, *, role="candidate", name=None, **extra):
    """A created container with the labels of another session (another process, maybe another PID namespace)."""
    labels = {
        eng.LABEL_MANAGED: "1",
        eng.LABEL_SESSION: session,
        eng.LABEL_HOST: socket.gethostname(),
        eng.LABEL_PID: "999999999",  # no such process here
        eng.LABEL_PIDNS: "pid:[4026599999]",  # a CI job container sharing the host's socket
        eng.LABEL_EXPIRES: str(int(time.time()) + 3600),
        eng.LABEL_ROLE: role,
        **extra,
    }
    return docker_client.containers.create(image, entrypoint=["true"], labels=labels, name=name).id


def _remove(docker_client, ids) -> None:
    for container_id in ids:
        if _exists(docker_client, container_id):
            docker_client.api.remove_container(container_id, force=True)


def _exists(docker_client, container_id) -> bool:
    return bool(docker_client.api.containers(all=True, filters={"id": container_id}))


def test_reaping_spares_a_live_session_in_another_pid_namespace_and_removes_a_stale_one(engine, images, docker_client):
    session = f"test{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    made = []
    try:
        made.append(_owned(docker_client, images("good"), session))
        made.append(_owned(docker_client, images("good"), session, role="lease", name=eng.lease_name(session, now)))
        engine.reap_stale()
        assert all(_exists(docker_client, c) for c in made), "a live session's container was reaped"
        docker_client.api.rename(made[1], eng.lease_name(session, now - int(eng.LEASE_STALE_S) - 60))
        engine.reap_stale()
        assert not any(_exists(docker_client, c) for c in made), "a stale session's containers were kept"
    finally:
        _remove(docker_client, made)


def test_malformed_labels_do_not_crash_reaping(engine, images, docker_client):
    session = f"test{uuid.uuid4().hex[:8]}"
    made = []
    try:
        made.append(_owned(docker_client, images("good"), session, **{eng.LABEL_PID: "abc", eng.LABEL_EXPIRES: "x"}))
        made.append(
            _owned(
                docker_client, images("good"), f"{session}b", role="lease", name=f"{eng.LEASE_PREFIX}{session}b-soon"
            )
        )
        engine.reap_stale()  # must not raise
        # Unknown renewal time reads as never renewed: that session is stale; the lease-less young one stays.
        assert _exists(docker_client, made[0])
        assert not _exists(docker_client, made[1])
    finally:
        _remove(docker_client, made)


def test_a_live_run_renews_its_lease(engine, images, no_leaks, monkeypatch):
    monkeypatch.setattr(eng, "LEASE_RENEW_S", 1.0)
    Candidate.start(engine, images("good"))
    lease = engine._lease.container
    first = eng.lease_renewed_at(engine.client.api.inspect_container(lease.id)["Name"])
    time.sleep(2.5)
    later = eng.lease_renewed_at(engine.client.api.inspect_container(lease.id)["Name"])
    assert first is not None and later is not None and later > first


def test_a_candidate_that_writes_past_the_disk_limit_is_stopped(engine, images, no_leaks, monkeypatch):
    """Where the storage driver cannot bound a container's size (overlay2 on ext4), the session watches it."""
    monkeypatch.setattr(eng, "DEFAULT_DISK_LIMIT_BYTES", 8 << 20)
    candidate = Candidate.start(engine, images("good"))
    if engine._storage_opt:
        pytest.skip("this engine's storage driver bounds the size itself (storage_opt size)")
    assert engine.watch_disk() == []
    candidate.exec(["/bin/sh", "-c", "head -c 16777216 /dev/zero > /var/tmp/fill"])
    assert engine.watch_disk() == [candidate.id]
    assert "over the limit of 8 MiB; it was stopped" in engine.stopped_for[candidate.id]
    deadline = time.monotonic() + 10
    while engine.client.api.inspect_container(candidate.id)["State"]["Running"]:
        assert time.monotonic() < deadline, "the candidate still runs"
        time.sleep(0.2)


def test_the_session_sweep_removes_a_container_whose_create_a_signal_cut_off(engine, images, docker_client):
    """A signal during a create request: the engine makes the container, this process never learns its id.
    The sweep at the end finds it by the session's label (and looks again while a create was under way)."""
    orphan = docker_client.api.create_container(
        images("good"), command=["sleep", "60"], labels=engine.labels("candidate")
    )["Id"]
    assert orphan not in engine._live  # as after a cut-off create: untracked
    engine._creating = 1
    try:
        engine.sweep_session(settle_s=0)
    finally:
        engine._creating = 0
    assert not docker_client.containers.list(all=True, filters={"id": orphan})


def test_a_keep_alive_that_dies_after_its_start_is_the_images_fault_and_os_is_still_judged(images, docker_client):
    """A foreign CPU's keep-alive can exit a moment after the engine reported it running; the probe's exec then
    meets a stopped container. That is the image's doing (said from the container's state), never "could not be
    checked", and the stages that read files are judged as usual. Killed by hand here, to be deterministic."""
    from pytest_baseimage.profiles import load
    from pytest_baseimage.target import ImageCheck, Target

    check = ImageCheck(Target(images("good"), load(str(FIXTURE_PROFILE))))
    try:
        docker_client.api.kill(check.candidate.id)
        python = check.result("python")
        assert python.status.value == "fail", python
        assert "cannot run anything in the image: its command `sleep 2147483647` ended (exit code 137)" in (
            python.observed
        )
        assert check.result("os").status.value == "pass"
    finally:
        check.close()

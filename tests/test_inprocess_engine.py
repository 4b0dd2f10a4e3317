"""engine.py's own logic, in process against a stand-in Docker client (tests/fake_docker.py): the bounds and
labels a candidate gets, the session's lease, reaping and sweeping, and how start failures are told apart
(the image's fault or the engine's); exec, archive reads, the engine registry and contexts are in
test_inprocess_engine_io.py. The same paths against the real engine are in test_engine_docker.py."""

from __future__ import annotations

import time

import docker
import pytest
from fake_docker import FakeDocker, Image

from pytest_baseimage import engine as eng
from pytest_baseimage.engine import Candidate, Engine
from pytest_baseimage.errors import EngineError, ImageNotFound


def api_error(message: str) -> docker.errors.APIError:
    return docker.errors.APIError(message)


# -- connecting ------------------------------------------------------------------------------------------
def test_an_engine_that_does_not_answer_is_one_line_naming_where_it_was_looked_for(client, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    client.fail["ping"] = docker.errors.DockerException("Error while fetching server API version: refused")
    with pytest.raises(EngineError, match=r"^cannot reach the Docker engine at unix:///var/run/docker.sock \("):
        Engine(client=client)


def test_a_docker_host_with_no_engine_behind_it_is_an_engine_error(tmp_path):
    where = f"unix://{tmp_path}/no-engine.sock"
    with pytest.raises(EngineError, match=f"cannot reach the Docker engine at {where}"):
        Engine(docker_host=where)


def test_the_host_is_said_as_a_user_writes_it(engine, monkeypatch):
    assert engine.host == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert eng.describe_host(engine.client) == "unix:///run/user/1000/docker.sock"


def test_answers_says_whether_the_engine_still_pings(engine, client):
    assert engine.answers() is True
    client.fail["ping"] = ConnectionError("gone")
    assert engine.answers() is False


# -- images ----------------------------------------------------------------------------------------------
def test_image_info_reads_the_inspect_and_the_digest_of_its_own_repository(engine, client):
    attrs = {
        "RepoDigests": ["other/x@sha256:1", "repo/app@sha256:2"],
        "Size": 1234,
        "Architecture": "amd64",
        "Os": "linux",
        "Config": {"User": "app"},
    }
    client.image_store["repo/app:1"] = Image("sha256:abc", attrs)
    info = engine.image_info("repo/app:1")
    assert (info.image_id, info.digest, info.size_bytes, info.user) == ("sha256:abc", "repo/app@sha256:2", 1234, "app")


def test_image_info_tells_a_missing_image_from_a_failing_engine(engine, client):
    with pytest.raises(ImageNotFound, match="image 'x:1' is not on the Docker engine"):
        engine.image_info("x:1")
    client.fail["images"] = api_error("500 Server Error: boom")
    with pytest.raises(EngineError, match="cannot inspect image 'x:1'"):
        engine.image_info("x:1")


# -- containers: bounds, labels, the lease ---------------------------------------------------------------
def test_a_candidate_is_created_bounded_unprivileged_offline_and_labelled_with_the_session(engine, client):
    box = engine.create("img", role="candidate")
    settings = client.created()[0]
    assert settings["privileged"] is False and settings["network_mode"] == "none"
    assert settings["cap_drop"] == ["ALL"] and settings["security_opt"] == ["no-new-privileges"]
    assert (settings["mem_limit"], settings["pids_limit"]) == (eng.DEFAULT_MEM_LIMIT, eng.DEFAULT_PIDS_LIMIT)
    assert settings["storage_opt"] == {"size": str(eng.DEFAULT_DISK_LIMIT_BYTES)}
    labels = settings["labels"]
    assert labels[eng.LABEL_SESSION] == "sess1" and labels[eng.LABEL_ROLE] == "candidate"
    assert labels[eng.LABEL_MANAGED] == "1" and int(labels[eng.LABEL_EXPIRES]) > time.time()
    assert box.id in client.live


def test_host_mounts_and_privileges_are_refused_before_the_engine_is_asked(engine, client):
    for option in ({"volumes": {"/": {"bind": "/host"}}}, {"mounts": ["m"]}, {"privileged": True}):
        with pytest.raises(ValueError, match="candidates never get"):
            engine.create("img", role="candidate", **option)
    assert client.created() == []


def test_the_first_container_opens_the_sessions_lease_and_the_last_removal_ends_it(engine, client):
    box = engine.create("img", role="candidate")
    engine.settle()  # the lease is made beside the first container, in the background
    lease = client.created()[1]
    assert lease["labels"][eng.LABEL_ROLE] == eng.LEASE_ROLE
    assert lease["name"].startswith(f"{eng.LEASE_PREFIX}sess1-")
    assert len(client.live) == 2
    assert engine.remove(box) is True
    assert client.live == {}  # the lease went with the session's last container


def test_the_lease_is_renewed_by_renaming_it_while_the_session_lives(engine, client, monkeypatch):
    monkeypatch.setattr(eng, "LEASE_RENEW_S", 0.01)
    box = engine.create("img", role="candidate")
    deadline = time.monotonic() + 5
    while not client.called("rename") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.called("rename")[0].startswith(f"{eng.LEASE_PREFIX}sess1-")
    engine.remove(box)


def test_a_storage_driver_without_size_bounds_is_asked_again_without_and_watched(engine, client):
    client.fail["create"] = [api_error("--storage-opt is supported only for overlay over xfs with 'pquota'")]
    engine.create("img", role="candidate")
    assert "storage_opt" not in client.created()[-1]
    client.api.listed = [{"Id": "big", "SizeRw": eng.DEFAULT_DISK_LIMIT_BYTES + 1}, {"Id": "small", "SizeRw": 10}]
    assert engine.watch_disk() == ["big"]
    assert client.called("kill") == ["big"]
    assert "over the limit of 2048 MiB" in engine.stopped_for["big"]


def test_a_bounded_engine_is_not_watched(engine, client):
    engine.create("img", role="candidate")
    assert engine.watch_disk() == []


def test_create_failures_are_one_line_and_tell_a_missing_image(engine, client):
    client.fail["create"] = [docker.errors.ImageNotFound("No such image: img")]
    with pytest.raises(ImageNotFound, match="image 'img' is not on the Docker engine"):
        engine.create("img", role="candidate")
    client.fail["create"] = [api_error("500 Server Error: no space left")]
    with pytest.raises(EngineError, match="cannot create a container from 'img'"):
        engine.create("img", role="candidate")


# -- starting: the image's fault or the engine's -----------------------------------------------------------
def test_a_start_error_that_is_the_images_is_a_start_fault_not_an_exception(engine, client):
    box = engine.create("img", role="candidate")
    client.fail["start"] = api_error("unable to find user bob: no matching entries in passwd file")
    assert engine.start(box) is False
    fault = engine.start_failure(box)
    assert fault.reason == "the image's USER bob does not exist in /etc/passwd" and fault.every_command


def test_a_start_error_of_the_engine_raises(engine, client):
    box = engine.create("img", role="candidate")
    client.fail["start"] = api_error("500 Server Error: the daemon is restarting")
    with pytest.raises(EngineError, match="could not start a container"):
        engine.start(box)


def test_a_keepalive_that_exits_at_once_is_judged_from_its_state_and_log(engine, client):
    box = engine.create("img", role="candidate")
    client.status_after_start = "exited"
    box.exit_state = {"ExitCode": 1, "Error": ""}
    box.log = b"exec /bin/sleep: exec format error\n"
    assert engine.start(box) is False
    assert "built for another CPU" in engine.start_failure(box).reason


def test_an_engine_that_fails_after_the_start_raises(engine, client):
    box = engine.create("img", role="candidate")
    client.fail["reload"] = docker.errors.APIError("500 Server Error")
    with pytest.raises(EngineError, match="failed after starting a container"):
        engine.start(box)


def _keepalives(client: FakeDocker) -> list[list[str]]:
    return [s["entrypoint"] for s in client.created() if s["labels"][eng.LABEL_ROLE] == "candidate"]


def test_without_sleep_the_shell_keepalive_runs_the_candidate(engine, client):
    no_sleep = api_error('exec: "sleep": executable file not found in $PATH')
    client.fail["start"] = lambda box: no_sleep if box.settings["entrypoint"] == eng.KEEPALIVE_COMMANDS[0] else None
    candidate = Candidate.start(engine, "img")
    assert candidate.running and candidate.keepalive == eng.KEEPALIVE_COMMANDS[1]
    assert _keepalives(client) == [eng.KEEPALIVE_COMMANDS[0], eng.KEEPALIVE_COMMANDS[1]]
    assert "c001" not in client.live  # the container whose sleep could not start was removed
    candidate.stop()
    assert client.live == {}


def test_with_neither_keepalive_a_created_container_is_kept_for_the_archive_reads(engine, client):
    client.fail["start"] = api_error('exec: "sleep": executable file not found in $PATH')
    candidate = Candidate.start(engine, "img")
    assert candidate.running is False
    assert candidate.start_error == ""  # a missing program gets the probe's usual note, not a start error
    assert _keepalives(client) == [eng.KEEPALIVE_COMMANDS[0], eng.KEEPALIVE_COMMANDS[1], eng.KEEPALIVE_COMMANDS[0]]
    assert candidate.id in client.live
    candidate.stop()
    assert client.live == {}


def test_a_fault_every_command_shares_stops_trying_other_keepalives(engine, client):
    client.fail["start"] = api_error("exec format error")
    candidate = Candidate.start(engine, "img")
    assert candidate.running is False and "another CPU" in candidate.start_error
    # the sleep attempt, then the created container kept for the archive reads: the shell was never tried
    assert _keepalives(client) == [eng.KEEPALIVE_COMMANDS[0], eng.KEEPALIVE_COMMANDS[0]]


def test_a_candidate_whose_keepalive_died_says_why_once_asked(engine, client):
    candidate = Candidate.start(engine, "img")
    assert candidate.running and candidate.ended() is False
    candidate.container.status = "exited"
    candidate.container.exit_state = {"ExitCode": 137}
    engine.stopped_for[candidate.id] = "it wrote too much"
    assert candidate.ended() is True
    assert (candidate.running, candidate.start_error) == (False, "it wrote too much")
    assert candidate.configured_env() == {"PATH": "/bin"}


# -- removing, sweeping, reaping ---------------------------------------------------------------------------
def test_remove_never_raises_and_says_whether_the_engine_took_it(engine, client):
    box = engine.create("img", role="candidate")
    client.fail["remove"] = docker.errors.NotFound("No such container")
    assert engine.remove(box) is True  # gone already
    other = engine.create("img", role="candidate")
    client.fail["remove"] = api_error("500 Server Error: engine busy")
    assert engine.remove(other) is False


def test_remove_all_of_one_role_leaves_the_others(engine, client):
    engine.create("img", role="candidate")
    engine.create("img", role="scoring")
    engine.settle()  # the lease is made beside the first container, in the background
    engine.remove_all(role="scoring")
    roles = sorted(c.labels[eng.LABEL_ROLE] for c in client.live.values())
    assert roles == ["candidate", eng.LEASE_ROLE]


def test_a_lease_made_after_its_sessions_containers_went_is_removed_at_once(engine, client, monkeypatch):
    """The first container does not wait for the lease; should that container be gone before the lease is
    made (a check that ended at once), the lease must not outlive it."""
    later: list = []
    monkeypatch.setattr(engine, "defer", later.append)
    box = engine.create("img", role="candidate")
    assert [c.labels[eng.LABEL_ROLE] for c in client.live.values()] == ["candidate"]  # returned before the lease
    engine.remove(box)
    for work in later:
        work()
    assert client.live == {}


def test_the_session_sweep_removes_what_carries_its_label_and_its_networks(engine, client):
    client.api.listed = [{"Id": "left1"}, {"Id": "left2"}]
    client.api.networks_listed = [{"Id": "net1"}]
    engine.sweep_session()
    assert client.called("remove_container") == ["left1", "left2"]
    assert client.called("remove_network") == ["net1"]
    assert client.called("containers")[0] == {"label": f"{eng.LABEL_SESSION}=sess1"}


def test_reaping_removes_stale_sessions_containers_before_their_networks_and_never_its_own(engine, client):
    now = time.time()
    stale, mine = "old", "sess1"
    lease = {
        "Id": "lease-old",
        "Names": [f"/{eng.lease_name(stale, int(now - 3600))}"],
        "Labels": {eng.LABEL_ROLE: eng.LEASE_ROLE, eng.LABEL_SESSION: stale},
    }
    client.api.listed = [
        lease,
        {"Id": "box-old", "Labels": {eng.LABEL_SESSION: stale}},
        # expired by its label, yet this session's own: never reaped while the session runs
        {"Id": "box-mine", "Labels": {eng.LABEL_SESSION: mine, eng.LABEL_EXPIRES: str(int(now - 60))}},
    ]
    client.api.networks_listed = [{"Id": "net-old", "Labels": {eng.LABEL_SESSION: stale}}]
    removed = engine.reap_stale()
    assert removed[-1] == "net-old" and sorted(removed[:-1]) == ["box-old", "lease-old"]
    assert "box-mine" not in removed


def test_reaping_an_engine_that_cannot_list_removes_nothing(engine, client):
    client.fail["containers"] = api_error("500")
    assert engine.reap_stale() == []


def test_a_container_block_removes_its_container_whatever_happens(engine, client):
    with pytest.raises(RuntimeError), engine.container("img", role="helper"):
        engine.settle()  # the session's lease, made in the background
        assert len(client.live) == 2
        raise RuntimeError("inside")
    engine.settle()
    assert client.live == {}


def test_put_files_copies_a_tar_and_tells_a_refusal(engine, client):
    box = engine.create("img", role="candidate")
    engine.put_files(box, "/app", {"score.py": b"print(1)"})
    assert box.archives[0][0] == "/app"
    client.put_ok = False
    with pytest.raises(EngineError, match="could not copy files into the container at /app"):
        engine.put_files(box, "/app", {"a": b""})
    client.fail["put_archive"] = api_error("500")
    with pytest.raises(EngineError, match="could not copy files"):
        engine.put_files(box, "/app", {"a": b""})

"""The scoring stage against real server containers: each broken case must end in its named cause, by its
deadline, and leave no container behind."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
from typing import Any

import docker
import pytest
from conftest import FIXTURE_PROFILE, ROOT, certify, managed_containers, plugin_argv, run_pytest, wait_for_container

from pytest_baseimage import profiles, scoring, scoring_route
from pytest_baseimage.engine import LABEL_PID, LABEL_ROLE, LABEL_SESSION
from pytest_baseimage.engines import Engines
from pytest_baseimage.results import StageResult, Status
from pytest_baseimage.target import ImageCheck, Target

pytestmark = pytest.mark.docker

SCRIPTS = ROOT / "fixtures" / "scoring"
SHORT_BOOT_S = 4.0  # the deadline the hang cases get
SLACK_S = 6.0  # container create/remove and the last poll, on a loaded CI machine


@pytest.fixture
def stage(docker_client, images):
    """Run the scoring stage on a fixture image in this process; check afterwards that nothing is left."""
    checks: list[ImageCheck] = []

    def run(
        image: str, options: dict[str, str] | None = None, top: dict[str, Any] | None = None, **scoring_changes: Any
    ) -> StageResult:
        profile = profiles.load(str(FIXTURE_PROFILE))
        profile.data = copy.deepcopy(profile.data)
        profile.data.update(top or {})
        profile.data["scoring"].update(scoring_changes)
        check = ImageCheck(Target(images(image), profile, options={"scoring": options or {}}))
        checks.append(check)
        return check.result("scoring")

    yield run
    for check in checks:
        check.close()
    mine = [
        c.name
        for c in docker_client.containers.list(
            all=True, filters={"label": [f"{LABEL_PID}={os.getpid()}", f"{LABEL_ROLE}=scoring"]}
        )
    ]
    assert mine == [], "a scoring container outlived its stage"


def server_alone(image: str, spec: scoring.ScoringSpec) -> scoring.ScoringObservation:
    """One server run outside a check, on engines cleaned up as a session cleans up its own (its container's
    removal in the background and the session's network included)."""
    engines = Engines()
    try:
        return scoring.run_server(engines.get(None), image, spec)
    finally:
        engines.cleanup()


@pytest.fixture(params=["namespace", "network"])
def host_route(request, monkeypatch) -> str:
    """Both ways this process asks a local server itself: from inside the server's network namespace (root,
    `nsenter`; the server then has no network), and over the session's internal network (everyone else)."""
    if request.param == "network":
        monkeypatch.setattr(scoring_route, "can_enter_namespaces", lambda: False)
    else:
        assert scoring_route.can_enter_namespaces(), "these tests run as root with util-linux's nsenter"
    return request.param


@pytest.fixture
def server_settings(docker_client, monkeypatch) -> list[dict]:
    """The server container's inspect data, taken while it runs (it may be gone before the stage returns)."""
    seen: list[dict] = []
    real = scoring._exercise

    def inspecting(engine, box, *args):
        seen.append(docker_client.api.inspect_container(box.id))
        return real(engine, box, *args)

    monkeypatch.setattr(scoring, "_exercise", inspecting)
    return seen


def fixture_options(script: str = "score.py", **extra: str) -> dict[str, str]:
    return {"score_script": str(SCRIPTS / script), **{k: str(SCRIPTS / v) for k, v in extra.items()}}


def assert_cause(result: StageResult, cause: str) -> None:
    assert result.status is Status.FAIL, result.summary()
    assert result.details["cause"] == cause, result.summary()
    assert result.observed.startswith(f"{cause}: ")
    assert result.remediation
    assert isinstance(result.details["log"], str)
    assert len(result.details["log"].splitlines()) <= scoring.LOG_LINES


# -- in process: ImageCheck.result("scoring") ------------------------------------------------------------------
def test_good_image_scores_the_builtin_sample(stage):
    result = stage("good")
    assert result.status is Status.PASS, result.summary()
    assert 0 < result.details["boot_s"] < 30
    assert 0 < result.details["score_latency_s"] < 5
    assert result.details["server_version"].startswith("azmlinfsrv/")
    assert result.details["swagger_status"] in (200, 404)
    assert result.observed.startswith("healthy after ")


def test_the_server_listens_on_every_address_and_is_asked_by_this_process(stage, host_route, server_settings):
    result = stage("good")
    assert result.status is Status.PASS, result.summary()
    assert result.details["listening_on"] == "0.0.0.0"  # gunicorn's default bind, seen in /proc/net/tcp
    assert result.details["relayed_by_candidate"] is False
    network = server_settings[0]["HostConfig"]["NetworkMode"]
    assert (network == "none") is (host_route == "namespace"), network


def test_where_the_namespace_cannot_be_entered_the_candidate_relays_and_says_why(stage, monkeypatch):
    """Root and nsenter, yet entering fails (a rootless engine's namespaces are not files here): the server
    already runs with no network, so the client goes into its container, and the result says it was relayed."""
    monkeypatch.setattr(scoring_route, "NSENTER", "false")  # found on PATH, and it fails like a refused setns
    result = stage("good")
    assert result.status is Status.PASS, result.summary()
    assert result.details["relayed_by_candidate"] is True
    assert result.details["relay_reason"] == scoring_route.NOT_ENTERED


def test_a_profile_can_give_the_server_egress_and_still_publishes_nothing(stage, docker_client, monkeypatch):
    seen: list[dict] = []
    real = scoring._exercise

    def inspecting(engine, box, *args):
        seen.append(docker_client.api.inspect_container(box.id)["HostConfig"])
        return real(engine, box, *args)

    monkeypatch.setattr(scoring, "_exercise", inspecting)
    result = stage("good", network="bridge")
    assert result.status is Status.PASS, result.summary()
    assert seen[0]["NetworkMode"] == "bridge" and not seen[0].get("PortBindings")


HTTP_SERVER = ["python3", "-m", "http.server", "--bind"]  # GET / answers 200 (a listing); POST is 501


def test_a_server_bound_to_loopback_only_is_named_so(stage, host_route):
    """Asked from inside its namespace, such a server answers: the sockets it listens on still fail it."""
    result = stage("good", command=[*HTTP_SERVER, "127.0.0.1", "{port}"])
    assert_cause(result, "loopback-only")
    assert "listens only on 127.0.0.1" in result.observed and "0.0.0.0" in result.remediation


def test_the_same_server_on_all_addresses_gets_past_that_check(stage, host_route):
    result = stage("good", command=[*HTTP_SERVER, "0.0.0.0", "{port}"])
    assert_cause(result, "wrong-status")  # POST /score -> 501 from http.server
    assert "answered 501" in result.observed


def test_where_requests_are_relayed_an_image_without_python_is_unchecked_not_failed(stage, monkeypatch):
    from pytest_baseimage import scoring_client

    monkeypatch.setattr(scoring_client, "PYTHONS", ("no-such-python",))
    monkeypatch.setattr(scoring_route, "not_local", lambda engine: "a remote engine")  # relayed: the image's python
    result = stage("good")
    assert result.status is Status.ERROR, result.summary()
    assert "no no-such-python on the image's PATH" in result.reason


def test_every_container_is_hardened_and_offline(images, docker_client, monkeypatch, host_route):
    """Inspect the candidate and the scoring server while they run: no privileges, mounts, ports or network.
    The server is inspected from inside the stage (it may be gone before the probe returns)."""
    seen: dict[str, dict] = {}
    real = scoring._exercise

    def inspecting(engine, box, *args):
        seen["scoring"] = docker_client.api.inspect_container(box.id)
        network = seen["scoring"]["HostConfig"]["NetworkMode"]
        if network != "none":
            seen["network"] = docker_client.api.inspect_network(network)
        return real(engine, box, *args)

    monkeypatch.setattr(scoring, "_exercise", inspecting)
    check = ImageCheck(Target(images("good"), profiles.load(str(FIXTURE_PROFILE))))
    check.selected = {"os", "python", "azureml", "scoring"}
    try:
        check.result("os")
        seen["candidate"] = docker_client.api.inspect_container(check.candidate.id)
        assert check.result("scoring").status is Status.PASS
    finally:
        check.close()
    assert {"candidate", "scoring"} <= set(seen)
    for role, attrs in ((r, seen[r]) for r in ("candidate", "scoring")):
        host = attrs["HostConfig"]
        assert attrs["State"]["Running"], role
        assert host["Privileged"] is False, role
        assert not host.get("Binds") and not attrs.get("Mounts"), role
        assert not host.get("PortBindings"), role
        if role == "candidate" or host_route == "namespace":
            assert host["NetworkMode"] == "none", role
        else:  # the server on the session's own network: internal (no egress), gone once released
            assert seen["network"]["Internal"] is True and seen["network"]["Name"] == host["NetworkMode"]
            assert seen["network"]["Labels"][LABEL_SESSION] == check.engine.session_id
            check.engine.release_network()
            with pytest.raises(docker.errors.NotFound):
                docker_client.networks.get(host["NetworkMode"])
        assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"], role
        assert host["Memory"] == 2 << 30 and host["PidsLimit"] == 512, role


def test_users_own_script_model_payload_and_expected_answer(stage):
    options = fixture_options(model_dir="model", payload_file="payload.json", expected_file="expected.json")
    result = stage("good", options)
    assert result.status is Status.PASS, result.summary()
    assert result.details["script"].endswith("fixtures/scoring/score.py")


def test_non_root_image_serves_as_its_own_user(stage):
    assert stage("nonroot").status is Status.PASS


def test_init_raising_is_init_raised_with_the_exception(stage):
    result = stage("good", fixture_options("score_init_raises.py"))
    assert_cause(result, "init-raised")
    assert result.details["exception"] == "RuntimeError: model file is corrupt"
    assert result.details["exit_code"] == 3
    assert "User's init function failed" in result.details["log"]


def test_run_raising_is_run_raised(stage):
    result = stage("good", fixture_options("score_run_raises.py"))
    assert_cause(result, "run-raised")
    assert result.details["exception"] == "ValueError: cannot score this input"
    assert result.details["score_status"] == 500
    assert "boot_s" in result.details  # it did boot: the timing is still reported


def test_run_answering_422_is_wrong_status(stage):
    result = stage("good", fixture_options("score_wrong_status.py"))
    assert_cause(result, "wrong-status")
    assert "answered 422, expected 200" in result.observed


def test_unexpected_answer_is_bad_body(stage):
    result = stage("good", fixture_options("score_bad_body.py", expected_file="expected.json"))
    assert_cause(result, "bad-body")
    assert '"not a number"' in result.observed


def test_blocking_init_times_out_by_its_deadline(stage):
    result = stage("good", fixture_options("score_init_hangs.py"), boot_timeout_s=SHORT_BOOT_S)
    assert_cause(result, "timeout")
    assert result.duration_s < SHORT_BOOT_S + SLACK_S


def test_server_that_never_listens_is_port_never_opened(stage):
    result = stage("good", command=["sleep", "600"], boot_timeout_s=SHORT_BOOT_S)
    assert_cause(result, "port-never-opened")
    assert result.details["polls"] > 5
    assert result.duration_s < SHORT_BOOT_S + SLACK_S


def test_image_without_the_server_is_server_missing(stage):
    # With the azureml stage required, this image is blocked before scoring; switch it off to reach scoring.
    result = stage("no-azureml", top={"azureml": False})
    assert_cause(result, "server-missing")
    assert "azmlinfsrv" in result.observed and "pip install azureml-inference-server-http" in result.remediation


def test_image_without_the_server_package_is_blocked_by_azureml(stage):
    result = stage("no-azureml")
    assert result.status is Status.BLOCKED and result.reason == "blocked by azureml"


def test_unreproducible_server_is_skipped_without_a_container(stage, docker_client):
    before = {c["Id"] for c in managed_containers(docker_client)}
    result = stage("good", reproducible=False, notes="server code not public")
    assert result.status is Status.SKIPPED
    assert "cannot be reproduced offline" in result.reason and "server code not public" in result.reason
    roles = {c["Labels"].get(LABEL_ROLE) for c in managed_containers(docker_client) if c["Id"] not in before}
    assert "scoring" not in roles


# -- answers the tool must not take on trust ------------------------------------------------------------------
def test_a_server_answering_the_old_constant_is_bad_body(stage):
    """An http.server that answers {"result": [4.75, 0.25]} whatever it is given: the drawn model tells it apart."""
    result = stage("scoring-constant-server", top={"azureml": False})
    assert_cause(result, "bad-body")
    assert "[4.75, 0.25]" in result.observed
    sample = result.details["sample"]
    assert len(sample["seed"]) == 16 and len(sample["result"]) == scoring.SAMPLE_ROWS
    assert result.details["relayed_by_candidate"] is False


def test_a_forged_python_cannot_answer_for_a_server_that_is_not_there(stage, host_route):
    """The image's python3 prints a forged success for the request client; no server runs. On this (local)
    engine the requests come from the tool's own process, so nothing answers."""
    result = stage("scoring-forged-python", top={"azureml": False}, boot_timeout_s=SHORT_BOOT_S)
    assert_cause(result, "port-never-opened")
    assert result.details["relayed_by_candidate"] is False


def test_where_the_tool_cannot_reach_the_server_the_answer_says_it_was_relayed(stage, monkeypatch):
    """The limit, stated: on an engine the tool cannot share a network with, the candidate's python relays
    the answer, and the result says so (details and observed text), so a gate can refuse to rely on it."""
    monkeypatch.setattr(
        scoring_route, "not_local", lambda engine: "the engine at tcp://far.example is not on this machine"
    )
    result = stage("scoring-forged-python", top={"azureml": False}, boot_timeout_s=SHORT_BOOT_S)
    assert result.status is Status.PASS, result.summary()  # forged: exactly why it must be flagged
    assert result.details["relayed_by_candidate"] is True
    assert "relayed by the candidate's own python" in result.observed
    assert "tcp://far.example" in result.details["relay_reason"]


def test_a_score_answer_dripping_bytes_is_a_timeout_by_its_deadline(stage):
    """One byte a second, with a 3 s request deadline: each read is quick, the whole answer is not."""
    drip = ["azmlinfsrv", "--port", "{port}", "--drip", "1"]
    result = stage("scoring-constant-server", top={"azureml": False}, command=drip, request_timeout_s=3)
    assert_cause(result, "timeout")
    assert "within 3 s" in result.observed
    assert result.duration_s < 3 * 3 + SLACK_S  # liveness (dripped too) and score, each bounded by 3 s


# -- as a user runs it: pytest --base-image ------------------------------------------------------------------
def test_end_to_end_good_image(tmp_path, images, no_leaks):
    proc, cases = certify(tmp_path, images("good"), "-m", "scoring")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    case = cases["test_scoring"]
    assert case["outcome"] == "passed"
    assert case["props"]["stage"] == "scoring"
    assert case["props"]["observed"].startswith("healthy after ")


def test_end_to_end_users_failing_script(tmp_path, images, no_leaks):
    proc, cases = certify(
        tmp_path, images("good"), f"--score-script={SCRIPTS / 'score_run_raises.py'}", "-m", "scoring"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    case = cases["test_scoring"]
    assert case["outcome"] == "failure"
    assert "run-raised" in case["message"] and "ValueError: cannot score this input" in case["message"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_end_to_end_missing_option_file_is_a_usage_error(tmp_path, images):
    proc = run_pytest(
        f"--base-image={images('good')}",
        f"--profile={FIXTURE_PROFILE}",
        f"--score-script={tmp_path / 'nope.py'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 4
    assert "--score-script" in proc.stderr and "no such file" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_booting_removes_the_server_container(tmp_path, images, docker_client, sig):
    """Ctrl-C (or a CI job's SIGTERM) during the boot wait: the scoring container goes with the run."""
    cmd = plugin_argv(
        f"--base-image={images('good')}",
        f"--profile={FIXTURE_PROFILE}",
        f"--score-script={SCRIPTS / 'score_init_hangs.py'}",
        "-m",
        "scoring",
    )
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_container(docker_client, proc, role="scoring", timeout=120)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, output
    assert managed_containers(docker_client, proc.pid) == []


# -- the image's filesystem: /tmp a regular file (fixture probe-odd-files) ---------------------------------------
def test_where_requests_are_relayed_a_file_at_tmp_does_not_stop_the_client(stage, monkeypatch):
    """The relayed client is copied to the root, not into /tmp, which an image may have made a file."""
    monkeypatch.setattr(scoring_route, "not_local", lambda engine: "a remote engine")
    result = stage("probe-odd-files")
    assert result.status is Status.PASS, result.summary()
    assert result.details["relayed_by_candidate"] is True


def test_an_app_root_under_a_file_is_the_images_fault_with_the_path_named(stage):
    result = stage("probe-odd-files", app_root="/tmp/azureml-app")
    assert_cause(result, "cannot-copy")
    assert result.observed == (
        "cannot-copy: could not copy the entry script into /tmp/azureml-app: "
        "the image's /tmp is a regular file, not a directory"
    )
    assert "bug in pytest-baseimage" not in result.reason


def test_an_engine_that_fails_the_copy_is_not_blamed_on_the_image(stage, monkeypatch):
    """The engine's own copy failures (its disk) stay "could not check"."""

    def full_disk(self, container, directory, files, mode=0o644):
        raise scoring.EngineError(
            f"could not copy files into the container at {directory}: Error processing tar file(exit status 1): "
            "write /var/lib/docker/x: no space left on device"
        )

    monkeypatch.setattr(scoring.Engine, "put_files", full_disk)
    result = stage("good")
    assert result.status is Status.ERROR, result.summary()
    assert "no space left on device" in result.reason


def test_a_server_whose_user_does_not_exist_gets_the_fix_for_that(images, docker_client):
    """Observed and judged directly: in a run the stage is blocked by python, which fails the same way."""
    from pytest_baseimage.facts import Facts

    profile = profiles.load(str(FIXTURE_PROFILE))
    obs = server_alone(images("engine-nosuchuser"), scoring.build_spec(profile))
    result = scoring.check_scoring(Facts(), profile, obs)
    assert_cause(result, "cannot-start")
    assert "USER nosuchuser does not exist" in result.observed
    assert result.remediation.startswith("Create the user in the image (`RUN useradd --create-home nosuchuser`)")


def test_a_profiles_own_script_is_judged_by_its_payload_and_answer(stage):
    """payload and expected_json apply to a profile's own score_script (the shipped profiles no longer carry
    the sample's constants): the right answer passes, a wrong expected answer fails as bad-body."""
    own = {"score_script": str(SCRIPTS / "score.py"), "model_dir": str(SCRIPTS / "model")}
    payload = {"data": [[2, 0, 1], [1, 1, 1]]}  # weights 1, 2, 3 and bias -1: 4 and 5
    result = stage("good", **own, payload=payload, expected_json='{"result": [4, 5]}')
    assert result.status is Status.PASS, result.summary()
    assert "sample" not in result.details
    assert_cause(stage("good", **own, payload=payload, expected_json='{"result": [4, 6]}'), "bad-body")


# A fake server that floods its log (in the `good` image, run by its python) and then fails: its traceback
# is at the very end, after ~6 MiB of output.
FLOOD = (
    "import sys\n"
    "out = sys.stdout\n"
    "{body}\n"
    "out.write('\\nTraceback (most recent call last):\\n  File \"score.py\", line 1\\nRuntimeError: flood done\\n')\n"
    "out.flush()\n"
    "sys.exit(1)\n"
)
FLOODS = {
    "many lines": "for i in range(1500): out.write('%d %s\\n' % (i, 'x' * 4090))",
    "one long line": "out.write('y' * (6 << 20))",
}


@pytest.mark.parametrize("flood", sorted(FLOODS))
def test_a_server_that_floods_its_log_is_read_by_its_end_within_the_bound(images, docker_client, flood):
    from pytest_baseimage.facts import Facts

    profile = profiles.load(str(FIXTURE_PROFILE))
    profile.data = copy.deepcopy(profile.data)
    profile.data["scoring"].update(command=["python3", "-c", FLOOD.format(body=FLOODS[flood])], boot_timeout_s=30)
    obs = server_alone(images("good"), scoring.build_spec(profile))
    assert 0 < len(obs.log.encode()) <= (1 << 20) + 4 * 1024  # ~1 MiB (+ replacement characters, at most)
    assert obs.log.rstrip().endswith("RuntimeError: flood done")
    result = scoring.check_scoring(Facts(), profile, obs)
    assert_cause(result, "server-exited")
    assert result.details["exception"] == "RuntimeError: flood done"

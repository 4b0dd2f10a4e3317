"""Pure logic of the engine and the target: which start errors are the image's, which hint a user gets when
the engine cannot be reached, which containers reaping may remove, and the probe's deadline."""

from __future__ import annotations

import argparse
import logging
import os

import pytest
from conftest import run_pytest

from pytest_baseimage import engine as eng
from pytest_baseimage.engine import Owner, containers_to_reap, image_start_fault, unreachable_message
from pytest_baseimage.probe_options import parse_timeout
from pytest_baseimage.profiles import Profile
from pytest_baseimage.results import Status
from pytest_baseimage.target import ImageCheck, Target, probe_timeout


# -- start errors: the image's, or the engine's -------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            "unable to find user nosuchuser: no matching entries in passwd file",
            "the image's USER nosuchuser does not exist in /etc/passwd",
        ),
        (
            "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container "
            'process: exec: "sleep": executable file not found in $PATH: unknown',
            "`sleep` is not in the image",
        ),
        (
            'OCI runtime create failed: container_linux.go:380: starting container process caused: exec: "/bin/sh": '
            "stat /bin/sh: no such file or directory: unknown",
            "`/bin/sh` is not in the image",
        ),
        (
            "OCI runtime create failed: runc create failed: unable to start container process: exec format error",
            "the image's programs are built for another CPU (exec format error): rebuild it for linux/amd64",
        ),
    ],
)
def test_start_errors_that_are_the_images_own(error, expected):
    fault = image_start_fault(error)
    assert fault is not None and fault.reason == expected
    # A missing command may be answered by the next keep-alive; a USER or a CPU fails them all.
    assert fault.every_command == (" is not in the image" not in expected)


@pytest.mark.parametrize(
    "error",
    [
        "Cannot restart container: daemon is restarting",
        "failed to create task for container: failed to create shim task: OCI runtime create failed: "
        "runc create failed: unable to start container process: error during container init: "
        'error mounting "proc" to rootfs: no space left on device: unknown',
        "write /var/lib/docker/overlay2/abc/merged/x: no space left on device",
        "open /var/lib/docker/overlay2/abc/lower: no such file or directory",
        "dial unix /run/containerd/containerd.sock: connect: connection refused",
    ],
)
def test_start_errors_of_the_engine_are_not_the_images(error):
    assert image_start_fault(error) is None


# -- the engine cannot be reached -------------------------------------------------------------------------
def test_permission_denied_on_the_socket_says_docker_group_not_start_dockerd():
    error = "Error while fetching server API version: ('Connection aborted.', PermissionError(13, 'Permission denied'))"
    message = unreachable_message("unix:///var/run/docker.sock", error)
    assert message.startswith("permission denied on /var/run/docker.sock: add your user to the docker group")
    assert "sudo usermod -aG docker $USER" in message and "dockerd" not in message


def test_a_missing_daemon_still_says_start_it():
    error = "Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2, 'No such file'))"
    message = unreachable_message("unix:///var/run/docker.sock", error)
    assert message.startswith("cannot reach the Docker engine at unix:///var/run/docker.sock")
    assert "start it" in message and "docker group" not in message


# -- reaping ------------------------------------------------------------------------------------------------
NOW = 1_800_000_000.0
HERE = Owner(host="ci-host", pidns="pid:[4026531836]", session="mine", now=NOW)
DEAD_PID = "999999999"


def entry(cid, session, *, role="candidate", name="", created=NOW - 60, **labels):
    base = {
        eng.LABEL_SESSION: session,
        eng.LABEL_ROLE: role,
        eng.LABEL_HOST: "ci-host",
        eng.LABEL_PID: DEAD_PID,
        eng.LABEL_PIDNS: "pid:[4026599999]",
    }
    return {"Id": cid, "Names": [f"/{name or cid}"], "Created": created, "Labels": {**base, **labels}}


def test_a_fresh_lease_keeps_a_session_whose_pid_is_not_ours_to_check():
    entries = [entry("c1", "s1"), entry("l1", "s1", role="lease", name=eng.lease_name("s1", int(NOW) - 30))]
    assert containers_to_reap(entries, HERE) == []


def test_a_lease_not_renewed_marks_its_session_stale():
    entries = [entry("c1", "s1"), entry("l1", "s1", role="lease", name=eng.lease_name("s1", int(NOW) - 600))]
    assert sorted(containers_to_reap(entries, HERE)) == ["c1", "l1"]


def test_a_dead_owner_in_our_own_pid_namespace_is_stale_at_once():
    same = {eng.LABEL_PIDNS: HERE.pidns}
    entries = [
        entry("c1", "s1", **same),
        entry("l1", "s1", role="lease", name=eng.lease_name("s1", int(NOW)), **same),
    ]
    assert sorted(containers_to_reap(entries, HERE)) == ["c1", "l1"]
    alive = {eng.LABEL_PIDNS: HERE.pidns, eng.LABEL_PID: str(os.getpid())}
    assert containers_to_reap([entry("c2", "s2", **alive)], HERE) == []


def test_lease_less_containers_go_only_when_too_old():
    young, old = entry("young", "s1"), entry("old", "s2", created=NOW - eng.MAX_AGE_S - 1)
    expired = entry("expired", "s3", **{eng.LABEL_EXPIRES: str(int(NOW) - 1)})
    assert sorted(containers_to_reap([young, old, expired], HERE)) == ["expired", "old"]


def test_our_own_session_and_tracked_containers_are_never_reaped():
    entries = [entry("c1", "mine", created=0), entry("c2", "s9", created=0)]
    assert containers_to_reap(entries, HERE, keep=frozenset({"c2"})) == []


@pytest.mark.parametrize(
    "labels",
    [
        {eng.LABEL_PID: "abc", eng.LABEL_EXPIRES: "x", eng.LABEL_PIDNS: HERE.pidns},
        {eng.LABEL_PID: "1.5", eng.LABEL_EXPIRES: "nan", eng.LABEL_PIDNS: HERE.pidns},
        {eng.LABEL_PID: "", eng.LABEL_EXPIRES: "inf", eng.LABEL_HOST: ""},
    ],
)
def test_malformed_labels_are_read_as_unknown(labels):
    assert containers_to_reap([entry("c1", "s1", **labels)], HERE) == []
    bad_lease = entry("l1", "s2", role="lease", name=f"{eng.LEASE_PREFIX}s2-later", **labels)
    assert containers_to_reap([bad_lease, {"Id": "x", "Labels": None, "Names": None, "Created": "?"}], HERE) == ["l1"]


# -- the probe's deadline -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon", "", True])
def test_probe_timeout_must_be_a_positive_number(value):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_timeout(value)


def test_probe_timeout_option_overrides_profile_which_overrides_default():
    def target(options, section):
        data = {"probe": section} if section is not None else {}
        return Target("img", Profile("p", "", [], data), options=options)

    assert probe_timeout(target({}, None)) == 30.0
    assert probe_timeout(target({}, {"timeout_s": 12})) == 12.0
    assert probe_timeout(target({"probe": {"timeout_s": 3.5}}, {"timeout_s": 12})) == 3.5


# -- a crashed check keeps its traceback ---------------------------------------------------------------------
def test_a_crashed_check_keeps_a_bounded_traceback_and_logs_it(caplog):
    check = ImageCheck(Target("img", Profile("p", "", [], {})))
    caplog.set_level(logging.DEBUG, logger="pytest_baseimage")
    try:
        raise RuntimeError("x" * 20000)
    except RuntimeError as exc:
        result = check._crashed("conda", exc)
    assert result.status is Status.ERROR and result.reason.startswith("the conda check crashed (RuntimeError: x")
    assert result.details["traceback"].rstrip().endswith("x") and len(result.details["traceback"]) <= 8000
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        short = check._crashed("conda", exc)
    assert short.details["traceback"].startswith("Traceback (most recent call last):")
    assert short.details["traceback"].rstrip().endswith("RuntimeError: boom")
    assert "the conda check crashed" in caplog.text and "RuntimeError" in caplog.text


def test_a_crash_from_the_engine_is_could_not_check_not_a_bug():
    import requests

    check = ImageCheck(Target("img", Profile("p", "", [], {})))
    try:
        raise requests.exceptions.ConnectionError("Connection aborted.")
    except requests.exceptions.ConnectionError as exc:
        result = check._crashed("python", exc)
    assert result.status is Status.ERROR
    assert result.reason == "could not check the image: the Docker engine failed (Connection aborted.)"
    assert "traceback" not in result.details


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_probe_timeout_is_a_one_line_usage_error(tmp_path, value):
    proc = run_pytest("--base-image=x:1", f"--probe-timeout={value}", cwd=tmp_path)
    assert proc.returncode == 4
    assert "--probe-timeout" in proc.stderr and "expected a number of seconds above 0" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_matrix_entry_sets_its_own_probe_timeout(tmp_path):
    from pytest_baseimage import matrix, plugin

    schemas = matrix.part_schemas(plugin.PARTS)
    good = tmp_path / "good.toml"
    good.write_text('[[images]]\nref = "a:1"\n[images.probe]\ntimeout_s = 5\n')
    assert matrix.load(good, schemas).entries[0].settings.options["probe"] == {"timeout_s": 5.0}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[images]]\nref = "a:1"\n[images.probe]\ntimeout_s = 0\n')
    with pytest.raises(matrix.MatrixError, match=r"probe.timeout_s: 0: expected a number of seconds above 0"):
        matrix.load(bad, schemas)


class _GlitchyApi:
    """An engine API whose exec stream loses its framing the first `glitches` times, as docker-py does when the
    first output arrives with the upgrade's headers (docker-py issue 3160)."""

    def __init__(self, glitches: int) -> None:
        self.glitches, self.starts = glitches, 0

    def exec_create(self, *args, **kwargs):
        return {"Id": "e"}

    def exec_start(self, *args, **kwargs):
        self.starts += 1
        if self.starts <= self.glitches:
            raise ValueError("47 is not a valid stream")
        return iter([(b"out", None)])

    def exec_inspect(self, *args):
        return {"ExitCode": 0}


class _Box:
    def __init__(self, api) -> None:
        self.id, self.client = "c", type("Client", (), {"api": api})()


def test_an_exec_whose_stream_lost_its_framing_runs_again_once():
    api = _GlitchyApi(glitches=1)
    result = eng.Engine.exec(object.__new__(eng.Engine), _Box(api), ["true"], timeout=5)
    assert (result.exit_code, result.stdout, api.starts) == (0, "out", 2)


def test_an_exec_that_loses_its_framing_twice_is_an_engine_error_not_a_crash():
    with pytest.raises(eng.EngineError, match="lost the exec stream's framing twice"):
        eng.Engine.exec(object.__new__(eng.Engine), _Box(_GlitchyApi(glitches=2)), ["true"], timeout=5)

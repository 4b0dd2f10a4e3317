"""Reading facts from real candidates that print, store or answer things the probe must not be fooled by:
conda >= 24.11's unterminated JSON, interpreters that hang, flood or lie, files that exist but cannot be
read, a large dpkg database, packages slimmed after install, and images without a shell."""

from __future__ import annotations

import json
import time

import pytest
from conftest import certify

from pytest_baseimage import probe
from pytest_baseimage.engine import Candidate, Engine
from pytest_baseimage.errors import EngineError

pytestmark = pytest.mark.docker


@pytest.fixture
def engine(docker_client, no_leaks):
    """An engine whose candidates are all removed when the test ends."""
    engine = Engine()
    yield engine
    engine.remove_all()


def observed(cases: dict, stage: str) -> str:
    return cases[f"test_{stage}"]["props"].get("observed", "")


@pytest.mark.parametrize(("variant", "conda"), [("probe-conda-modern", "24.11.3"), ("probe-conda-old", "23.11.0")])
def test_conda_with_or_without_a_trailing_newline_leaves_python_found(tmp_path, images, no_leaks, variant, conda):
    proc, cases = certify(tmp_path, images(variant), "-m", "not scoring")
    assert proc.returncode == 0, proc.stdout
    assert observed(cases, "conda").startswith(f"conda {conda} at /opt/conda/bin/conda")
    assert observed(cases, "python").startswith("Python 3.11.")


def test_python_that_ignores_sigterm_is_killed_after_the_deadline_and_grace(images, engine):
    candidate = Candidate.start(engine, images("probe-py-sigterm"))
    started = time.monotonic()
    facts = probe.gather(candidate, timeout_s=3)
    elapsed = time.monotonic() - started
    assert facts.probe_error == "timed out after 3 s running `/opt/conda/bin/python3 -c <probe>`"
    assert elapsed < 3 + probe.KILL_GRACE_S + 6, elapsed
    assert facts.os is not None and facts.os.id == "debian"  # judged from files all the same
    assert facts.conda is not None and facts.conda.version == "24.11.3"  # it answered before python hung
    assert facts.python is None and facts.notes["python"] == facts.probe_error
    # Nothing of the probe is left running in the candidate.
    left = candidate.exec(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"], timeout=10).stdout
    assert "probe_hostile" not in left and "import sys, os, json" not in left, left


def test_without_timeout_in_the_image_the_hosts_deadline_ends_the_probe(images, engine):
    candidate = Candidate.start(engine, images("probe-py-sigterm-no-timeout"))
    started = time.monotonic()
    facts = probe.gather(candidate, timeout_s=3)
    elapsed = time.monotonic() - started
    assert facts.probe_error == "timed out after 3 s running `/opt/conda/bin/python3 -c <probe>`"
    assert elapsed < 3 + probe.KILL_GRACE_S + 6, elapsed
    assert facts.os is not None and facts.python is None
    left = candidate.exec(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"], timeout=10).stdout
    assert "import sys, os, json" not in left, left  # killed from the host side (kill -9 -1 in the candidate)


def test_a_timed_out_probe_fails_the_exec_stages_only(tmp_path, images, no_leaks):
    # The python and azureml stages fail with the reason, os passes (the default deadline, 30 s, is unit-tested
    # in test_engine.py; a short one keeps this test quick).
    proc, cases = certify(tmp_path, images("probe-py-sigterm"), "-m", "not scoring", "--probe-timeout=3")
    assert proc.returncode == 1, proc.stdout
    assert cases["test_os"]["outcome"] == "passed"
    assert observed(cases, "python") == "timed out after 3 s running `/opt/conda/bin/python3 -c <probe>`"
    assert cases["test_azureml"]["outcome"] == "skipped"  # blocked by python


def test_a_flooding_interpreter_is_the_images_failure(tmp_path, images, no_leaks):
    proc, cases = certify(tmp_path, images("probe-py-flood"), "-m", "not scoring")
    assert proc.returncode == 1, proc.stdout
    assert observed(cases, "python") == (
        "printed more than 16 MiB running `/opt/conda/bin/python3 -c <probe>`; the rest was not read"
    )
    assert cases["test_conda"]["outcome"] == "passed"


@pytest.mark.parametrize(
    ("variant", "text"),
    [
        ("probe-py-types", "answered the probe with malformed facts: `version` is a int, not a str"),
        ("probe-py-nested", "gave a malformed answer to the probe: its answer is nested too deeply to read"),
    ],
)
def test_a_malformed_probe_answer_is_the_images_defect(tmp_path, images, no_leaks, variant, text):
    proc, cases = certify(tmp_path, images(variant), "-m", "not scoring")
    assert proc.returncode == 1, proc.stdout
    assert cases["test_python"]["outcome"] == "failure"
    assert text in observed(cases, "python")
    assert "bug in pytest-baseimage" not in proc.stdout


def test_a_fifo_metadata_and_a_file_at_tmp_do_not_break_the_probe(tmp_path, images, no_leaks):
    started = time.monotonic()
    proc, cases = certify(tmp_path, images("probe-odd-files"), "-m", "not scoring")
    assert proc.returncode == 0, proc.stdout
    assert time.monotonic() - started < 60  # a FIFO read blocked for 120 s before
    assert observed(cases, "python").startswith("Python 3.11.")
    assert "azureml-inference-server-http" in observed(cases, "azureml")


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("probe-os-huge", "/etc/os-release cannot be read: too large to read: 2 MiB (the limit is 64 KiB)"),
        ("probe-os-loop", "/etc/os-release cannot be read: a symlink loop"),
        ("probe-os-zero", "/etc/os-release cannot be read: not a regular file (a character device)"),
    ],
)
def test_an_unreadable_etc_os_release_fails_instead_of_falling_back(tmp_path, images, no_leaks, variant, reason):
    # /usr/lib/os-release says Ubuntu 22.04, which the profile accepts: falling back would pass.
    proc, cases = certify(tmp_path, images(variant), "-m", "os")
    assert proc.returncode == 1, proc.stdout
    assert cases["test_os"]["outcome"] == "failure"
    assert observed(cases, "os") == reason


def test_a_dpkg_database_past_64_mib_is_read(tmp_path, images, no_leaks):
    proc, cases = certify(tmp_path, images("probe-dpkg-large"), "-m", "os or apt")
    assert proc.returncode == 0, proc.stdout
    assert observed(cases, "apt").startswith("all present: libcurl4 ")


def test_a_package_listed_but_slimmed_away_fails_apt(tmp_path, images, no_leaks):
    report = tmp_path / "run.json"
    proc, cases = certify(tmp_path, images("probe-slim"), "-m", "os or apt", f"--compat-json={report}")
    assert proc.returncode == 1, proc.stdout
    assert observed(cases, "apt") == (
        "libcurl4 is listed as installed, but /usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0 is missing; "
        "unzip is listed as installed, but /usr/bin/unzip is missing"
    )
    (image,) = json.loads(report.read_text())["images"]
    (apt,) = [r for r in image["results"] if r["stage"] == "apt"]
    assert "/usr/bin/unzip" in apt["details"]["files_checked"]["unzip"]


def test_the_good_image_has_every_required_packages_files(images, engine):
    candidate = Candidate.start(engine, images("good"))
    facts = probe.gather(candidate, probe.ProbeRequest(apt=["libcurl4", "unzip", "runit", "nginx-light"]))
    assert facts.apt_missing == {}
    assert facts.apt_checked["libcurl4"] and facts.apt_checked["unzip"] and facts.apt_checked["runit"]
    assert facts.apt_checked["nginx-light"] == ()  # a transitional package in Debian 12: docs only


def test_python_and_conda_without_a_shell_are_found_on_the_image_path_and_judged(tmp_path, images, no_leaks):
    proc, cases = certify(tmp_path, images("probe-no-sh"), "-m", "not scoring")
    assert proc.returncode == 0, proc.stdout
    assert observed(cases, "python").startswith("Python 3.11.2 at /opt/conda/bin/python3")
    assert observed(cases, "conda").startswith("conda 24.11.3 at /opt/conda/bin/conda")
    assert "azureml-inference-server-http" in observed(cases, "azureml")


def test_engine_failures_in_exec_and_reads_are_engine_errors_not_image_facts(images, engine, docker_client):
    candidate = Candidate.start(engine, images("good"))
    assert candidate.read_file("/nonexistent").absent  # a missing file in a live container: absent
    docker_client.api.remove_container(candidate.id, force=True)  # the engine loses it underneath us
    for attempt in (
        lambda: candidate.read_file("/etc/os-release"),
        lambda: candidate.stat("/etc/os-release"),
        lambda: candidate.exec(["true"]),
        lambda: probe.gather(candidate),
    ):
        with pytest.raises(EngineError, match="No such container"):
            attempt()


def test_an_unreachable_engine_is_one_engine_error_line(images, engine):
    import docker

    candidate = Candidate.start(engine, images("good"))
    real = candidate.container.client
    candidate.container.client = docker.DockerClient(base_url="tcp://127.0.0.1:9", version="1.41", timeout=5)
    try:
        for attempt in (lambda: candidate.read_file("/etc/os-release"), lambda: candidate.exec(["true"])):
            with pytest.raises(EngineError) as raised:
                attempt()
            assert "the Docker engine failed" in str(raised.value) and "\n" not in str(raised.value)
    finally:
        candidate.container.client = real

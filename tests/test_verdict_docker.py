"""Every ending of a run against real images has the right exit code and a verdict that says what it covers.

Each test runs the plugin as a user does (a pytest process of its own) against the fixture images.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FIXTURE_PROFILE, certify, managed_containers, plugin_argv, run_pytest, wait_for_container
from registry_server import run_plugin

from pytest_baseimage.composition import STAGE_ORDER

pytestmark = pytest.mark.docker

DEAD_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/h5-dead-engine.sock"}


def not_reproducible_profile(tmp_path: Path) -> Path:
    """The fixture profile with a scoring server that cannot be run offline, as azureml-2020 has."""
    path = tmp_path / "no-scoring.toml"
    path.write_text(
        'name = "fixture-no-scoring"\n'
        f'extends = "{FIXTURE_PROFILE}"\n'
        "[scoring]\nreproducible = false\n"
        'notes = "the server code is not public"\n'
    )
    return path


def verdict_lines(output: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "base image verdict" in line)
    return lines[start + 1 :]


# -- skipped is not passed ---------------------------------------------------------------------------------
def test_a_stage_that_could_not_be_checked_is_named_in_the_verdict(tmp_path, images, no_leaks):
    out = run_plugin(f"--base-image={images('good')}", f"--profile={not_reproducible_profile(tmp_path)}", cwd=tmp_path)
    assert out.returncode == 0, out.output
    first = verdict_lines(out.stdout)[0]
    assert first.startswith(f"{images('good')}: COMPATIBLE, scoring not checked: azureml-inference-server-http")
    assert "the server code is not public" in first
    image = json.loads(out.files["json"])["images"][0]
    assert [entry["stage"] for entry in image["not_checked"]] == ["scoring"]
    assert 'class="not-checked" data-stage="scoring"' in out.files["html"]


def test_require_all_stages_turns_a_not_checked_stage_into_exit_2(tmp_path, images, no_leaks):
    profile = not_reproducible_profile(tmp_path)
    out = run_plugin(f"--base-image={images('good')}", f"--profile={profile}", "--require-all-stages", cwd=tmp_path)
    assert out.returncode == 2, out.output
    assert verdict_lines(out.stdout)[0].startswith(f"{images('good')}: COULD NOT BE CHECKED, scoring not checked")
    data = json.loads(out.files["json"])
    assert data["exit_code"] == 2 and data["images"][0]["require_all_stages"] is True


def test_a_stage_the_profile_does_not_ask_for_is_not_a_gap_in_the_verdict(tmp_path, images, no_leaks):
    """The fixture profile asks for no gpu stage: "COMPATIBLE", and --require-all-stages still exits 0."""
    out = run_plugin(
        f"--base-image={images('good')}", f"--profile={FIXTURE_PROFILE}", "--require-all-stages", cwd=tmp_path
    )
    assert out.returncode == 0, out.output
    assert verdict_lines(out.stdout)[0] == f"{images('good')}: COMPATIBLE (profile fixture)"
    assert json.loads(out.files["json"])["images"][0]["not_checked"] == []


# -- -k and exit 5 -----------------------------------------------------------------------------------------
def test_with_k_scoring_the_verdict_shows_the_deselected_stage_that_blocked_it(tmp_path, images, no_leaks):
    """Before: "NOT COMPATIBLE" with only "scoring blocked by azureml" shown and azureml nowhere."""
    out = run_plugin(
        f"--base-image={images('no-azureml')}", f"--profile={FIXTURE_PROFILE}", "-k", "scoring", cwd=tmp_path
    )
    assert out.returncode == 1, out.output
    lines = verdict_lines(out.stdout)
    assert lines[0].startswith(f"{images('no-azureml')}: NOT COMPATIBLE, not judged (deselected): os, conda, apt")
    assert any(line.split()[:2] == ["azureml", "fail"] for line in lines), lines
    image = json.loads(out.files["json"])["images"][0]
    assert {r["stage"]: r["status"] for r in image["results"]}["azureml"] == "fail"
    assert image["deselected"] == ["os", "conda", "apt", "deployment", "gpu"]


def test_5_when_k_selects_no_stage_with_one_line_and_a_verdict_file(tmp_path, images, no_leaks):
    out = run_plugin(
        f"--base-image={images('good')}", f"--profile={FIXTURE_PROFILE}", "-k", "no_such_stage", cwd=tmp_path
    )
    assert out.returncode == 5, out.output
    explained = [line for line in out.stdout.splitlines() if line.startswith("pytest-baseimage: nothing selected")]
    assert len(explained) == 1 and "(exit 5)" in explained[0]
    data = json.loads(out.files["json"])
    assert data["exit_code"] == 5 and data["nothing_selected"] is True and data["verdict"] == "could not be checked"


def test_5_when_the_suite_is_asked_for_without_an_image(tmp_path):
    proc = run_pytest("--compliance-suite=always", cwd=tmp_path, env=DEAD_ENGINE, timeout=120)
    assert proc.returncode == 5
    assert "pytest-baseimage: nothing to check: --compliance-suite=always needs --base-image=IMAGE" in proc.stdout


# -- before anything starts --------------------------------------------------------------------------------
def test_collect_only_lists_the_stages_without_an_engine(tmp_path):
    proc = run_pytest(
        "--base-image=pytest-baseimage-fixture/good:latest",
        f"--profile={FIXTURE_PROFILE}",
        "--collect-only",
        "-q",
        cwd=tmp_path,
        env=DEAD_ENGINE,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        f"{len(STAGE_ORDER)} tests collected" in proc.stdout
        and "test_scoring[pytest-baseimage-fixture/good:latest]" in proc.stdout
    )
    assert "cannot reach the Docker engine" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("option", "relative", "message"),
    [
        ("--compat-json", "no-dir/verdict.json", "the directory"),
        ("--compat-html", "a-file/report.html", "the directory"),
        ("--junitxml", "a-file/junit.xml", "is not a directory"),
        ("--compat-json", ".", "is a directory"),
    ],
)
def test_4_for_a_report_path_that_cannot_be_written_before_the_engine_is_asked(tmp_path, option, relative, message):
    (tmp_path / "a-file").write_text("")
    path = tmp_path / relative
    proc = run_pytest(
        "--base-image=pytest-baseimage-fixture/good:latest", f"{option}={path}", cwd=tmp_path, env=DEAD_ENGINE
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: {option}={path}: ") and message in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing else created


def test_4_for_a_report_directory_that_is_not_writable(tmp_path):
    """/proc takes no new file, even from root."""
    proc = run_pytest("--base-image=x:1", "--compat-json=/proc/h5-verdict.json", cwd=tmp_path, env=DEAD_ENGINE)
    assert proc.returncode == 4 and "--compat-json=/proc/h5-verdict.json: cannot write in /proc" in proc.stderr


def test_4_echoes_an_esc_byte_in_an_image_argument_escaped(tmp_path):
    proc = run_pytest("--base-image=x\x1b[2J\x1b]0;pwn\x07:1", cwd=tmp_path, env=DEAD_ENGINE, timeout=120)
    assert proc.returncode == 4
    assert "\x1b" not in proc.stdout + proc.stderr
    assert "--base-image=x\\x1b[2J\\x1b]0;pwn\\x07:1 is not an image reference" in proc.stderr


# -- interrupted -------------------------------------------------------------------------------------------
def test_2_on_sigterm_before_any_stage_finished_writes_an_interrupted_verdict(
    tmp_path, images, docker_client, no_leaks
):
    (tmp_path / "test_slow.py").write_text(
        "import time\ndef test_slow(baseimage_host):\n    time.sleep(120)\n"  # a container, and no stage
    )
    json_path = tmp_path / "verdict.json"
    cmd = plugin_argv(
        f"--base-image={images('good')}", f"--profile={FIXTURE_PROFILE}", f"--compat-json={json_path}", "test_slow.py"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_container(docker_client, proc)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, output
    data = json.loads(json_path.read_text())
    assert data["interrupted"] is True and data["exit_code"] == 2 and data["verdict"] == "could not be checked"
    assert data["images"][0]["results"] == [] and "the run stopped" in data["images"][0]["error"]
    assert managed_containers(docker_client, proc.pid) == []


# -- hostile text ------------------------------------------------------------------------------------------
def test_a_forged_answer_cannot_write_lines_into_the_log_or_the_reports(tmp_path, images, no_leaks):
    """The image's conda answers a version holding CR, LF and ESC that spell "conda pass" and "COMPATIBLE"."""
    proc, cases = certify(
        tmp_path, images("h5-hostile-conda"), f"--compat-html={tmp_path / 'r.html'}", "-rA", "--color=no"
    )
    assert proc.returncode == 1, proc.stdout
    output = proc.stdout + proc.stderr
    assert "\r" not in output and "\x1b" not in output
    assert not [line for line in output.splitlines() if line.lstrip().startswith(("FORGED", "conda    pass"))]
    assert "observed conda 4.1\\r\\nconda    pass\\rFORGED: COMPATIBLE\\n" in output
    assert cases["test_conda"]["outcome"] == "failure"
    assert "4.1\\r\\nconda    pass" in cases["test_conda"]["props"]["observed"]
    for path in (tmp_path / "junit.xml", tmp_path / "r.html"):
        text = path.read_text()
        assert "\r" not in text and "&#13;" not in text and "\x1b" not in text, path

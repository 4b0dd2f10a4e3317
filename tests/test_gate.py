"""Gate mode: the exit codes a CI gate acts on, and the JSON verdict that must say the same thing.

0 compatible, 1 not compatible, 2 could not be checked (pull failed, daemon down, interrupted),
3 internal error (pytest's: a bug), 4 usage error. See errors.ExitCode.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURE_PROFILE, ROOT, plugin_argv, wait_for_container
from registry_server import Outcome, run_plugin, shared_registry

pytestmark = pytest.mark.docker

VERDICT_OF_EXIT = {0: "compatible", 1: "not compatible", 2: "could not be checked", 4: "usage error"}
GATE_SCRIPT = ROOT / "examples" / "gate.sh"


def gate(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Outcome:
    out = run_plugin(*args, "-q", cwd=tmp_path, env=env)
    assert "Traceback" not in out.output, out.output
    return out


def assert_json_agrees(out: Outcome) -> dict:
    """The JSON a gate keeps carries the process's verdict: same exit code, matching verdict text."""
    assert "json" in out.files, f"no --compat-json written for exit {out.returncode}"
    data = json.loads(out.files["json"])
    assert data["exit_code"] == out.returncode
    assert data["verdict"] == VERDICT_OF_EXIT[out.returncode]
    return data


def test_0_compatible(tmp_path, images, no_leaks):
    out = gate(tmp_path, f"--base-image={images('good')}", f"--profile={FIXTURE_PROFILE}")
    assert out.returncode == 0, out.output
    data = assert_json_agrees(out)
    assert data["images"][0]["info"]["image_id"].startswith("sha256:")


def test_1_not_compatible(tmp_path, images, no_leaks):
    out = gate(tmp_path, f"--base-image={images('no-conda')}", f"--profile={FIXTURE_PROFILE}")
    assert out.returncode == 1, out.output
    assert_json_agrees(out)


def test_1_wins_over_0_with_several_images(tmp_path, images, no_leaks):
    out = gate(
        tmp_path, f"--base-image={images('good')}", f"--base-image={images('no-conda')}", f"--profile={FIXTURE_PROFILE}"
    )
    assert out.returncode == 1
    assert [i["verdict"] for i in assert_json_agrees(out)["images"]] == ["compatible", "not compatible"]


def test_2_wins_over_1_when_one_image_cannot_be_checked(tmp_path, images, no_leaks):
    out = gate(
        tmp_path,
        f"--base-image={images('no-conda')}",
        "--base-image=pytest-baseimage-fixture/absent:1",
        f"--profile={FIXTURE_PROFILE}",
    )
    assert out.returncode == 2, out.output
    data = assert_json_agrees(out)
    assert data["images"][1]["error"].startswith("image 'pytest-baseimage-fixture/absent:1' is not on the Docker")


# Pending the plugin.py change proposed with issue 7 (reports written when every image is unreachable, and
# no verdict claimed for an interrupted run). Strict: once it is applied these pass; then delete the mark.
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--base-image=pytest-baseimage-fixture/absent:1"],
            {},
            "image 'pytest-baseimage-fixture/absent:1' is not on the Docker engine",
        ),
        (
            ["--base-image=x:1"],
            {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
            "cannot reach the Docker engine at unix:///nonexistent/docker.sock",
        ),
    ],
    ids=["missing-image", "daemon-down"],
)
def test_2_could_not_be_checked(tmp_path, docker_client, args, env, message):
    out = gate(tmp_path, *args, env=env)
    assert out.returncode == 2, out.output
    assert message in out.stderr
    assert (
        len(
            [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("pytest-baseimage: pull")]
        )
        == 1
    )


@pytest.mark.parametrize("case", ["missing-image", "bad-credentials"])
def test_2_still_writes_the_json(tmp_path, request, docker_client, case):
    args = ["--base-image=pytest-baseimage-fixture/absent:1"]
    env = {}
    if case == "bad-credentials":
        server = shared_registry(request, docker_client)
        args = [
            f"--base-image={server.address}/team/absent:v1",
            f"--registry={server.address}",
            f"--registry-username={server.username}",
            "--registry-password-env=REG_PW",
        ]
        env = {"REG_PW": "Wrong-Pw-NeverPrint"}
    out = gate(tmp_path, *args, env=env)
    assert out.returncode == 2
    assert_json_agrees(out)


def test_2_on_bad_credentials(tmp_path, request, docker_client, images, no_leaks):
    server = shared_registry(request, docker_client)
    server.push(docker_client, images("no-shell"), "gate/tiny", "v1")
    out = gate(
        tmp_path,
        f"--base-image={server.address}/gate/tiny:v1",
        f"--registry={server.address}",
        f"--registry-username={server.username}",
        "--registry-password-env=REG_PW",
        env={"REG_PW": "Wrong-Pw-NeverPrint"},
    )
    assert out.returncode == 2, out.output
    assert f"refused user '{server.username}'" in out.stderr
    assert "Wrong-Pw-NeverPrint" not in out.everything()


def test_2_when_interrupted(tmp_path, images, docker_client):
    """Ctrl-C mid-run: exit 2, and the JSON, marked interrupted, claims no verdict the run did not reach."""
    (tmp_path / "test_slow.py").write_text(
        "import time\n"
        "def test_os_first(stage_check):\n"
        "    stage_check('os')\n"
        "def test_slow(baseimage_host):\n"
        "    time.sleep(120)\n"
    )
    json_path = tmp_path / "verdict.json"
    cmd = plugin_argv(
        f"--base-image={images('good')}",
        f"--profile={FIXTURE_PROFILE}",
        f"--compat-json={json_path}",
        "test_slow.py",
        "-q",
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_container(docker_client, proc)
        time.sleep(3.0)  # past test_os_first (a passing stage), inside test_slow's sleep
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, output
    data = json.loads(json_path.read_text())  # every ending writes its verdict, an interrupted one too
    assert data["exit_code"] == 2 and data["verdict"] == "could not be checked", data
    assert data["interrupted"] is True


def test_3_internal_error(tmp_path, images, no_leaks):
    """A bug in the plugin (simulated: a hook's helper raises) is pytest's INTERNALERROR, exit 3, never 0/1."""
    (tmp_path / "conftest.py").write_text(
        "import pytest_baseimage.session as session\n"
        "def _bug(*args, **kwargs):\n"
        "    raise RuntimeError('simulated bug in pytest-baseimage')\n"
        "session.merge_result = _bug\n"
    )
    out = run_plugin(f"--base-image={images('good')}", f"--profile={FIXTURE_PROFILE}", "-q", cwd=tmp_path)
    assert out.returncode == 3, out.output
    assert "INTERNALERROR" in out.output and "simulated bug in pytest-baseimage" in out.output
    assert "json" not in out.files  # no verdict is better than a wrong one


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pull=sometimes"], "invalid choice: 'sometimes'"),
        (["--registry-password=Cmdline-Pw-NeverPrint"], "--registry-password is refused"),
        (["--registry-username=u"], "need --registry=ADDRESS"),
        (["--registry=r.example", "--registry-username=u"], "needs a password"),
        (
            ["--registry=r.example", "--registry-username=u", "--registry-password-env=NO_SUCH_VAR_9"],
            "the environment variable NO_SUCH_VAR_9 is not set",
        ),
        (["--build-arg=A=1"], "--build-arg needs --base-image-dockerfile"),
        (["--base-image=Upper/Case:1"], "is not an image reference"),
        (["--require-digest"], "'x:1' is a moving tag"),
        (["--profile=nope"], "unknown profile 'nope'"),
    ],
)
def test_4_usage_error(tmp_path, docker_client, args, message):
    out = gate(tmp_path, "--base-image=x:1", *args)
    assert out.returncode == 4, out.output
    assert message in out.stderr
    assert "Cmdline-Pw-NeverPrint" not in out.everything()
    assert list(out.files) == ["json"]  # only the minimal verdict: no HTML, no JUnit
    data = assert_json_agrees(out)
    assert data["images"] == [] and data["images_given"] == ["x:1", *(a[13:] for a in args if "--base-image=" in a)]
    assert message in data["error"]


# -- the example gate script ------------------------------------------------------------------------------
@pytest.mark.skipif(not GATE_SCRIPT.exists(), reason="examples/gate.sh missing")
def test_example_gate_script(tmp_path, request, docker_client, images, no_leaks):
    """examples/gate.sh against the real registry: admit by digest, keep the JSON; refuse a tag (exit 4)."""
    server = shared_registry(request, docker_client)
    digest = server.push(docker_client, images("good"), "gate/good", "v1")
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
        "PYTHON": sys.executable,
        "PROFILE": str(FIXTURE_PROFILE),
        "REGISTRY": server.address,
        "REGISTRY_USERNAME": server.username,
        "REGISTRY_PASSWORD": server.password,
    }
    try:
        admit = subprocess.run(
            ["bash", str(GATE_SCRIPT)],
            env={**env, "IMAGE": digest, "OUT": str(tmp_path / "a")},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert admit.returncode == 0, admit.stdout + admit.stderr
        assert f"gate: ADMIT {digest}" in admit.stdout
        assert f"gate: {digest}: compatible" in admit.stdout
        kept = json.loads((tmp_path / "a" / "verdict.json").read_text())
        assert kept["exit_code"] == 0 and kept["images"][0]["info"]["digest"] == digest
        assert {p.name for p in (tmp_path / "a").iterdir()} >= {"verdict.json", "report.html", "junit.xml", "gate.log"}
        tag = subprocess.run(
            ["bash", str(GATE_SCRIPT)],
            env={**env, "IMAGE": f"{server.address}/gate/good:v1", "OUT": str(tmp_path / "t")},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert tag.returncode == 4 and "gate: USAGE ERROR" in tag.stdout
        for run in (admit, tag):
            assert server.password not in run.stdout + run.stderr
        for path in (p for p in (tmp_path / "a").iterdir() if p.is_file()):
            assert server.password not in path.read_text()
    finally:
        server.remove_local_references(docker_client)

"""The core stages against real fixture containers, driven as a user drives them: `pytest --base-image`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import FIXTURE_PROFILE, certify, managed_containers, plugin_argv, run_pytest, wait_for_container

from pytest_baseimage.composition import STAGE_ORDER

pytestmark = pytest.mark.docker


def test_good_image_passes_every_stage(tmp_path, images, no_leaks):
    proc, cases = certify(tmp_path, images("good"))
    assert proc.returncode == 0, proc.stdout
    outcomes = {name: case["outcome"] for name, case in cases.items()}
    skipped = {"test_gpu": "skipped", "test_deployment": "skipped"}  # no GPU; no Azure ML definitions given
    assert outcomes == {**{f"test_{s}": "passed" for s in STAGE_ORDER}, **skipped}
    assert cases["test_gpu"]["message"] == "not required by profile fixture"
    props = {name: case["props"] for name, case in cases.items()}
    assert props["test_os"]["observed"].startswith("Debian GNU/Linux 12")
    assert props["test_conda"]["observed"].startswith("conda 24.11.3 at /opt/conda/bin/conda")  # no newline after info
    assert props["test_python"]["observed"].startswith("Python 3.11.")
    assert "nginx-light" in props["test_apt"]["observed"]
    assert "azureml-inference-server-http" in props["test_azureml"]["observed"]
    assert props["test_os"]["image_id"].startswith("sha256:")
    assert props["test_os"]["profile"] == "fixture"
    assert "COMPATIBLE" in proc.stdout


def test_container_start_and_probe_are_timed_apart_from_the_first_stage(tmp_path, images, no_leaks):
    report = tmp_path / "run.json"
    proc, _ = certify(tmp_path, images("good"), f"--compat-json={report}", "-m", "os or conda")
    assert proc.returncode == 0, proc.stdout
    (image,) = json.loads(report.read_text())["images"]
    timings = image["timings"]
    assert set(timings) == {"container_start_s", "probe_s"}
    assert timings["container_start_s"] > 0 and timings["probe_s"] > 0
    # The os stage only reads facts: its own time is far below the exec that gathered them.
    durations = {r["stage"]: r["duration_s"] for r in image["results"]}
    assert list(durations) == ["os", "conda"]
    assert durations["os"] < timings["probe_s"], (durations, timings)


@pytest.mark.parametrize(
    ("variant", "stage", "observed"),
    [
        ("no-conda", "test_conda", "no `conda` on PATH"),
        ("wrong-python", "test_python", "Python 3.13."),
        ("missing-apt", "test_apt", "missing: nginx-light, runit"),
        ("no-azureml", "test_azureml", "azureml-inference-server-http is not installed"),
    ],
)
def test_each_broken_variant_fails_its_one_rule(tmp_path, images, no_leaks, variant, stage, observed):
    proc, cases = certify(tmp_path, images(variant))
    assert proc.returncode == 1, proc.stdout
    assert cases[stage]["outcome"] == "failure"
    assert observed in cases[stage]["props"]["observed"]
    assert "fix:" in cases[stage]["message"]
    failed = [name for name, case in cases.items() if case["outcome"] == "failure"]
    assert failed == [stage], f"only {stage} should fail: {failed}"


def test_failed_prerequisite_blocks_instead_of_failing_twice(tmp_path, images, no_leaks):
    proc, cases = certify(tmp_path, images("wrong-python"))
    assert cases["test_azureml"]["outcome"] == "skipped"
    assert cases["test_azureml"]["message"] == "blocked by python"
    # gpu also needs python, but the fixture profile does not ask for it: "not required" beats "blocked".
    assert cases["test_gpu"]["outcome"] == "skipped"
    assert cases["test_gpu"]["message"] == "not required by profile fixture"
    assert cases["test_gpu"]["props"]["status"] == "skipped"
    assert proc.returncode == 1


def test_image_without_a_shell_still_gets_its_os_judged(tmp_path, images, no_leaks):
    proc, cases = certify(tmp_path, images("no-shell"))
    assert proc.returncode == 1
    assert cases["test_os"]["outcome"] == "passed"
    assert cases["test_apt"]["outcome"] == "failure"  # only the dpkg database: the stack is absent
    assert "no shell" in cases["test_conda"]["props"]["observed"]
    assert "no shell" in cases["test_python"]["props"]["observed"]


def test_non_root_user_is_probed_as_itself(tmp_path, images, no_leaks):
    proc, _ = certify(tmp_path, images("nonroot"))
    assert proc.returncode == 0, proc.stdout


def test_2020_profile_rejects_the_debian_fixture_for_the_right_reasons(tmp_path, images, no_leaks):
    proc, cases = certify(tmp_path, images("good"), profile="azureml-2020")
    assert proc.returncode == 1
    assert cases["test_os"]["props"]["expected"] == "ubuntu >=16.04"
    assert cases["test_python"]["props"]["expected"] == "Python ==3.5.* or ==3.6.*"
    assert cases["test_apt"]["message"] == "blocked by os"
    assert cases["test_azureml"]["message"] == "blocked by python"
    assert cases["test_conda"]["outcome"] == "passed"  # conda 23.11 >= 4.5: the one rule this image meets


def test_several_images_get_one_set_of_results_each(tmp_path, images, no_leaks):
    xml = tmp_path / "j.xml"
    proc = run_pytest(
        f"--base-image={images('good')}",
        f"--base-image={images('no-conda')}",
        f"--profile={FIXTURE_PROFILE}",
        f"--junitxml={xml}",
        "-q",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    names = [case.get("name") for case in ET.parse(xml).getroot().iter("testcase")]
    assert len(names) == 2 * len(STAGE_ORDER)
    assert "test_conda[pytest-baseimage-fixture/no-conda:latest]" in names
    assert "pytest-baseimage-fixture/good:latest: COMPATIBLE" in proc.stdout
    assert "pytest-baseimage-fixture/no-conda:latest: NOT COMPATIBLE" in proc.stdout


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--base-image=pytest-baseimage-fixture/does-not-exist:1"], {}, 2, "is not on the Docker engine"),
        (
            ["--base-image=x:1"],
            {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
            2,
            "cannot reach the Docker engine at unix:///nonexistent/docker.sock",
        ),
        (["--base-image=x:1", "--profile=nope"], {}, 4, "unknown profile 'nope'"),
        (["--base-image=x:1", "--profile=/nonexistent/p.toml"], {}, 4, "does not exist"),
        (["--base-image="], {}, 4, "--base-image needs an image reference"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, docker_client, args, env, code, message):
    proc = run_pytest(*args, "-q", cwd=tmp_path, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output
    assert message in output
    assert "Traceback" not in output
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("pytest-baseimage: pulling")]
    assert len(lines) <= 1, lines  # a pull attempt may announce itself first; the error is one line


def test_malformed_profile_file(tmp_path, docker_client):
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "azureml-current"\n[pyhton]\nversion = ">=3"\n')
    proc = run_pytest("--base-image=x:1", f"--profile={bad}", cwd=tmp_path)
    assert proc.returncode == 4
    assert f"profile {bad}: pyhton is not a known key (did you mean 'python'?)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_base_image_or_with_the_plugin_off_user_tests_are_untouched(tmp_path, docker_client):
    (tmp_path / "test_mine.py").write_text("def test_mine():\n    assert True\n")
    plain = run_pytest("-q", cwd=tmp_path)
    assert plain.returncode == 0 and "1 passed" in plain.stdout
    off = run_pytest("-q", "-p", "no:baseimage", cwd=tmp_path)
    assert off.returncode == 0 and "1 passed" in off.stdout


def test_teams_write_their_own_checks_with_testinfra(tmp_path, images, no_leaks):
    (tmp_path / "test_team.py").write_text(
        "def test_nginx_present(baseimage_host):\n"
        "    assert baseimage_host.package('nginx-light').is_installed\n"
        "    assert baseimage_host.file('/opt/conda/bin/python').exists\n"
        "def test_runs_as_root(baseimage_host):\n"
        "    assert baseimage_host.user().uid == 0\n"
    )
    proc = run_pytest(f"--base-image={images('good')}", "test_team.py", "-q", "--compat-json=v.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "2 passed" in proc.stdout
    # no stage ran, so no verdict: the run says why --compat-json got no file (before: nothing said so)
    assert "no compliance stage ran (only your own tests), so there is no verdict" in proc.stdout
    assert not (tmp_path / "v.json").exists()
    nonroot = run_pytest(f"--base-image={images('nonroot')}", "test_team.py", "-q", cwd=tmp_path)
    assert nonroot.returncode == 1 and "1 failed, 1 passed" in nonroot.stdout


def test_suite_runs_next_to_own_tests_when_asked(tmp_path, images, no_leaks):
    (tmp_path / "test_team.py").write_text("def test_x(baseimage):\n    assert baseimage.info.image_id\n")
    proc = run_pytest(
        f"--base-image={images('good')}",
        f"--profile={FIXTURE_PROFILE}",
        "test_team.py",
        "--compliance-suite=always",
        "-q",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout
    # the suite's stages but gpu and deployment (no definitions given), and test_x
    assert f"{len(STAGE_ORDER) - 1} passed, 2 skipped" in proc.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_no_container(tmp_path, images, docker_client, sig):
    (tmp_path / "test_slow.py").write_text(
        "import time\n"
        "def test_slow(baseimage_host):\n"
        "    assert baseimage_host.file('/etc/os-release').exists\n"
        "    time.sleep(120)\n"
    )
    cmd = plugin_argv(
        f"--base-image={images('good')}",
        "test_slow.py",
        "-q",
    )
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_container(docker_client, proc)
        time.sleep(1.0)  # inside the test's sleep now
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, output
    assert managed_containers(docker_client, proc.pid) == []


# A plugin whose unconfigure runs before the cleanup, says so and lingers: the signal lands after the run ended.
LINGER = """
import sys, time
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        print("LINGERING", flush=True)
        time.sleep(3)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_signal_after_the_run_ended_leaves_its_verdict_and_exit_code_standing(
    tmp_path, images, docker_client, sig, xdist
):
    """Before: exit 130/143 while the JSON verdict already said 0 (and under xdist, sometimes no JSON at all)."""
    (tmp_path / "linger.py").write_text(LINGER)
    cmd = plugin_argv(
        f"--base-image={images('good')}", f"--profile={FIXTURE_PROFILE}", "-p", "linger", "-m", "os or apt", "-q",
        "--compat-json=v.json", *xdist,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("LINGERING"):
                proc.send_signal(sig)
                break
        output = "".join(lines) + proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert json.loads((tmp_path / "v.json").read_text())["exit_code"] == 0
    assert f"{signal.Signals(sig).name} came after the run had ended: its verdict stands" in output
    assert "Traceback" not in output
    assert managed_containers(docker_client, proc.pid) == []


def test_a_killed_run_is_reaped_by_the_next(tmp_path, images, docker_client):
    (tmp_path / "test_slow.py").write_text("import time\ndef test_slow(baseimage_host):\n    time.sleep(120)\n")
    cmd = plugin_argv(
        f"--base-image={images('good')}",
        "test_slow.py",
        "-q",
    )
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_container(docker_client, proc)
    proc.kill()  # SIGKILL: no handler runs, the container stays behind
    proc.wait()
    assert managed_containers(docker_client, proc.pid), "SIGKILL cannot clean up: this is what reaping is for"
    run_pytest(f"--base-image={images('good')}", f"--profile={FIXTURE_PROFILE}", "-q", "-m", "os", cwd=tmp_path)
    assert managed_containers(docker_client, proc.pid) == []


def test_all_facts_come_from_one_exec(images, docker_client):
    from pytest_baseimage import profiles
    from pytest_baseimage.target import ImageCheck, Target

    check = ImageCheck(Target(images("good"), profiles.load(str(FIXTURE_PROFILE))))
    check.prepare()
    candidate = check.candidate
    calls: list[list[str]] = []
    real_exec = candidate.exec
    candidate.exec = lambda cmd, timeout=120: calls.append(cmd) or real_exec(cmd, timeout)
    try:
        results = [check.result(stage) for stage in ("os", "conda", "python", "apt", "azureml")]
    finally:
        check.close()
    assert [r.status.value for r in results] == ["pass"] * 5
    assert len(calls) == 1
    assert check.facts.user == "0" and check.facts.pip["azureml-inference-server-http"]


@pytest.mark.parametrize("config_json", [True, False], ids=["with-config.json", "store-only"])
def test_docker_contexts_work_as_in_the_cli(tmp_path, images, no_leaks, config_json):
    config = tmp_path / "docker-config"
    config.mkdir()
    if config_json:  # the SDK alone finds the context store only next to this file; the CLI needs none
        (config / "config.json").write_text("{}")
    env = {"DOCKER_CONFIG": str(config)}
    env_all = {**os.environ, **env}
    env_all.pop("DOCKER_HOST", None)
    for name, host in (("ctx-ok", "unix:///var/run/docker.sock"), ("ctx-down", "unix:///nonexistent/d.sock")):
        subprocess.run(
            ["docker", "context", "create", name, "--docker", f"host={host}"],
            env=env_all,
            check=True,
            capture_output=True,
        )
    ok = run_pytest(
        f"--base-image={images('good')}",
        f"--profile={FIXTURE_PROFILE}",
        "-q",
        "-m",
        "os",
        cwd=tmp_path,
        env={**env, "DOCKER_CONTEXT": "ctx-ok"},
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    down = run_pytest("--base-image=x:1", "-q", cwd=tmp_path, env={**env, "DOCKER_CONTEXT": "ctx-down"})
    assert down.returncode == 2
    assert "cannot reach the Docker engine at context ctx-down" in down.stderr
    missing = run_pytest("--base-image=x:1", "-q", cwd=tmp_path, env={**env, "DOCKER_CONTEXT": "nope"})
    assert missing.returncode == 2 and "Docker context 'nope' does not exist" in missing.stderr


def test_a_crashing_check_is_unchecked_never_a_pass_and_keeps_its_traceback(tmp_path, images, no_leaks):
    (tmp_path / "conftest.py").write_text(
        "from dataclasses import replace\n"
        "from pytest_baseimage import composition\n"
        "def boom(*args):\n"
        "    raise RuntimeError('simulated bug')\n"
        "stages = tuple(replace(s, check=boom) if s.name == 'conda' else s for s in composition.BUILTIN.stages)\n"
        "composition.BUILTIN = composition.Composition(stages)\n"
    )
    verdict = tmp_path / "verdict.json"
    proc, cases = certify(tmp_path, images("good"), f"--compat-json={verdict}")
    assert proc.returncode == 2, proc.stdout
    assert "the conda check crashed (RuntimeError: simulated bug)" in cases["test_conda"]["message"]
    data = json.loads(verdict.read_text())
    assert (data["verdict"], data["exit_code"]) == ("could not be checked", 2)
    conda = next(r for r in data["images"][0]["results"] if r["stage"] == "conda")
    assert conda["details"]["traceback"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: simulated bug" in conda["details"]["traceback"]


def test_a_users_failing_test_still_fails_a_compatible_run(tmp_path, images, no_leaks):
    (tmp_path / "test_team.py").write_text("def test_policy(baseimage_host):\n    assert False, 'team rule'\n")
    proc = run_pytest(
        f"--base-image={images('good')}",
        f"--profile={FIXTURE_PROFILE}",
        "test_team.py",
        "--compliance-suite=always",
        "-q",
        cwd=tmp_path,
    )
    assert "COMPATIBLE" in proc.stdout
    assert proc.returncode == 1


@pytest.mark.parametrize(("variant", "status"), [("good", "pass"), ("no-azureml", "blocked")])
def test_scoring_server_boots_beside_the_probe(images, docker_client, variant, status):
    """The server needs no facts, so it boots while the static stages run; a blocked stage discards it."""
    from pytest_baseimage import profiles
    from pytest_baseimage.target import ImageCheck, Target

    check = ImageCheck(Target(images(variant), profiles.load(str(FIXTURE_PROFILE))))
    check.selected = set(STAGE_ORDER)
    try:
        check.result("os")
        deadline = time.monotonic() + 30
        roles: set[str] = set()
        while variant == "good" and "scoring" not in roles:  # without the server it may be gone at once
            assert time.monotonic() < deadline, "the scoring server did not start beside the probe"
            roles = {c["Labels"]["org.pytest-baseimage.role"] for c in managed_containers(docker_client, os.getpid())}
            time.sleep(0.05)
        assert check.result("scoring").status.value == status
    finally:
        check.close()
    assert managed_containers(docker_client, os.getpid()) == []

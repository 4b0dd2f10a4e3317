"""A newcomer's way in, as they take it: the README's demo command from a clean clone on a stock Debian PATH,
the built wheel (not the checkout) running the suite from an empty directory, and the default profile.

The clone is of the checkout's last commit: uncommitted changes are not in it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURE_PROFILE, ROOT, junit, run_pytest

from pytest_baseimage import profiles

# Debian 12's PATH for root: no `python`, and `python3` is Debian's, which refuses a system-wide pip.
STOCK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the demo needs: the `good` fixture, the layers it is built on, and the wheels they install.
DEMO_BUILDS = {"base-bookworm", "py-bookworm", "wheelhouse", "no-conda", "good"}


def stock_env(**extra: str) -> dict[str, str]:
    """A login's environment on a stock machine (`env -i`), keeping where the engine and the caches are."""
    env = {"HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", "PATH": STOCK_PATH}
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "PYTEST_BASEIMAGE_CACHE"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return {**env, **extra}


def clean_clone(dest: Path) -> Path:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: nothing to clone")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, capture_output=True, timeout=120)
    return dest


@pytest.mark.docker
def test_the_readme_demo_runs_from_a_clean_clone_on_a_stock_path(tmp_path, docker_client, no_leaks):
    """`bash scripts/demo` under `env -i` with Debian's PATH: it makes its own .venv, builds only the demo's
    images, prints a line per step, exits 0, and prints the three report paths, which exist."""
    clone = clean_clone(tmp_path / "clone")
    proc = subprocess.run(
        ["/bin/bash", "scripts/demo"], cwd=clone, env=stock_env(), capture_output=True, text=True, timeout=900
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    steps = re.findall(r"^=== (?:\[\s*\d+s\] )?(.+)$", proc.stdout, re.MULTILINE)
    assert [step.split()[0] for step in steps] == ["apt", "virtualenv", "pip", "fixture", "ready:", "pytest"], steps
    built = set(re.findall(r"^(?:cached|built|fetched|pulled)\s+(\S+)", proc.stdout, re.MULTILINE))
    assert built == DEMO_BUILDS, proc.stdout
    reports = proc.stdout.split("\nReports:\n", 1)[1].split()
    assert [Path(path).name for path in reports] == ["report.html", "report.json", "junit.xml"]
    for path in map(Path, reports):
        assert path.parent == clone / "out" and path.stat().st_size > 0, path
    assert json.loads((clone / "out" / "report.json").read_text())["verdict"] == "compatible"
    venv_python = subprocess.run(
        [clone / ".venv" / "bin" / "python", "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(venv_python.stdout.strip()) == clone / ".venv"


@pytest.mark.docker
def test_the_installed_wheel_runs_the_suite_from_an_empty_directory(tmp_path, docker_client, no_leaks):
    """`python -m build --wheel` from a clean clone builds without a warning; installed into a fresh venv, it
    carries the suite and the built-in profiles: the fixture profile extends azureml-current by name."""
    pytest.importorskip("build")
    clone = clean_clone(tmp_path / "clone")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(clone)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    warnings = [line for line in (built.stdout + built.stderr).splitlines() if re.search(r"WARNING|deprecated", line)]
    assert warnings == []
    (wheel,) = (tmp_path / "dist").glob("pytest_baseimage-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    where = subprocess.run(
        [python, "-c", "import pytest_baseimage.suites as s; print(s.__file__)"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    proc = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--base-image=pytest-baseimage-fixture/good:latest",
            f"--base-image-profile={FIXTURE_PROFILE}",
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_compliance.py ......ss" in proc.stdout  # the installed suite, as the README shows it
    assert "pytest-baseimage-fixture/good:latest: COMPATIBLE (profile fixture)" in proc.stdout
    assert list(empty.iterdir()) == []


def test_the_default_profile_is_azureml_current_in_help_and_readme(tmp_path):
    assert profiles.DEFAULT_PROFILE == "azureml-current"
    help_text = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "Default: azureml-current." in " ".join(help_text.split())
    readme = (ROOT / "README.md").read_text()
    assert "`azureml-current` (default)" in readme and "`azureml-2020` (default)" not in readme
    spec = profiles.load("azureml-current").section("os")["accept"][0]["version"]
    assert f"Ubuntu `{spec}`" in readme  # the README quotes the profile's own rule


@pytest.mark.docker
def test_without_a_profile_option_the_image_is_judged_by_azureml_current(tmp_path, images, no_leaks):
    """A Debian 12 image with Python 3.11: azureml-current fails its OS and passes its Python; the old
    default, azureml-2020, wanted Python 3.5 or 3.6."""
    xml = tmp_path / "junit.xml"
    proc = run_pytest(f"--base-image={images('no-conda')}", f"--junitxml={xml}", "-q", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "pytest-baseimage-fixture/no-conda:latest: NOT COMPATIBLE (profile azureml-current)" in proc.stdout
    cases = junit(xml)
    assert cases["test_os"]["props"]["profile"] == "azureml-current"
    assert cases["test_os"]["outcome"] == "failure" and cases["test_python"]["outcome"] == "passed"


@pytest.mark.docker
def test_ci_runs_the_test_command_on_the_stock_path_and_no_tests_is_a_loud_failure(tmp_path, docker_client):
    """`.ci/run` with arguments for pytest: its set-up works on Debian's PATH, and pytest's exit 5 (nothing
    collected) ends the run non-zero with a line that says so."""
    clone = clean_clone(tmp_path / "clone")
    proc = subprocess.run(
        ["/bin/bash", ".ci/run", "-q", "-m", "no_such_marker", "tests/test_parsers.py"],
        cwd=clone,
        env=stock_env(PATH="/nonexistent"),  # .ci/run sets the stock PATH itself
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "=== .venv/bin/python -m pytest -p no:cacheprovider -q -m no_such_marker" in proc.stdout
    assert "scripts/test: FAILED: pytest collected no tests (exit 5)" in proc.stderr


@pytest.mark.docker
def test_a_user_outside_the_docker_group_is_told_to_join_it(tmp_path, docker_client):
    """Not "start dockerd": the engine runs, the user may not use it. Checked as `nobody` with no groups."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to become another user")
    if os.environ.get("DOCKER_HOST", "unix://").startswith(("tcp:", "ssh:")):
        pytest.skip("the engine is not behind a local socket")
    clone = clean_clone(tmp_path / "clone")
    subprocess.run(["chown", "-R", "65534:65534", str(tmp_path)], check=True)
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/bash", "scripts/setup"],
        cwd=clone,
        env=stock_env(HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "may not use it" in proc.stderr and "sudo usermod -aG docker" in proc.stderr
    assert "permission denied" in proc.stderr and "sudo bash scripts/setup" not in proc.stderr
    assert not (clone / ".venv").exists()

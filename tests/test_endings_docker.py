"""Every ending writes its verdict: usage errors (exit 4) too, and the summary of a failing image names the
shipped profiles it would pass. Each test runs the plugin as a user does (a pytest process of its own); the
usage errors run against an engine that does not exist, so a verdict written there proves none was asked."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shlex
import subprocess
import uuid
from importlib import resources
from pathlib import Path

import docker
import pytest
from conftest import FIXTURE_PROFILE, fixture_image, run_pytest

DEAD_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/w1-dead-engine.sock"}
GOOD = fixture_image("good")


def schema_valid(data: dict) -> None:
    import jsonschema  # a test dependency (the [test] extra)

    schema = json.loads(resources.files("pytest_baseimage.report").joinpath("schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator(schema).validate(data)


def usage_error_case(tmp_path: Path, name: str) -> list[str]:
    """The extra arguments of one usage error, with the files it needs written into tmp_path."""
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "matrix.toml").write_text('[[images]]\nref = "x:1"\nnot_a_key = 1\n')
    (tmp_path / "profile.toml").write_text('name = "p"\nextends = "azureml-current"\n[python]\nversion = 3\n')
    return {
        "bad profile name": ["--base-image-profile=no-such-profile"],
        "bad profile file": [f"--base-image-profile={tmp_path / 'profile.toml'}"],
        "probe timeout 0 (argparse)": ["--probe-timeout=0"],
        "unknown --pull choice (argparse)": ["--pull=sometimes"],
        "password on the command line": ["--registry-password=hunter2"],
        "moving tag under --require-digest": ["--require-digest"],
        "malformed --score-payload": [f"--score-payload={tmp_path / 'bad.json'}"],
        "bad matrix file": [f"--base-image-matrix={tmp_path / 'matrix.toml'}"],
        "html path in a missing directory": [f"--compat-html={tmp_path / 'nowhere' / 'r.html'}"],
        "missing --compat-baseline": [f"--compat-baseline={tmp_path / 'old.json'}"],
    }[name]


@pytest.mark.parametrize(
    "case",
    [
        "bad profile name",
        "bad profile file",
        "probe timeout 0 (argparse)",
        "unknown --pull choice (argparse)",
        "password on the command line",
        "moving tag under --require-digest",
        "malformed --score-payload",
        "bad matrix file",
        "html path in a missing directory",
        "missing --compat-baseline",
    ],
)
def test_4_writes_a_usage_error_verdict_without_asking_the_engine(tmp_path, case):
    verdict = tmp_path / "verdict.json"
    extra = usage_error_case(tmp_path, case)
    proc = run_pytest(f"--base-image={GOOD}", f"--compat-json={verdict}", *extra, cwd=tmp_path, env=DEAD_ENGINE)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "cannot reach the Docker engine" not in proc.stdout + proc.stderr
    data = json.loads(verdict.read_text())
    assert (data["verdict"], data["exit_code"], data["images"]) == ("usage error", 4, [])
    assert data["images_given"] == [GOOD]
    assert data["error"] and "\n" not in data["error"] and data["error"] in proc.stderr
    assert "hunter2" not in verdict.read_text()
    schema_valid(data)


def test_a_repository_in_capitals_is_a_usage_error_with_its_verdict_not_an_engine_failure(tmp_path):
    """`UPPER/case` names no registry host, so it is a repository, which Docker wants in lower case: before,
    the engine's refusal made it exit 2 (a gate retries), now it is bad input (4), found before the engine."""
    verdict = tmp_path / "verdict.json"
    proc = run_pytest("--base-image=UPPER/case:tag", f"--compat-json={verdict}", cwd=tmp_path, env=DEAD_ENGINE)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "is not an image reference" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    data = json.loads(verdict.read_text())
    assert (data["verdict"], data["exit_code"], data["images_given"]) == ("usage error", 4, ["UPPER/case:tag"])
    schema_valid(data)


def test_4_with_an_unwritable_json_path_writes_nothing_and_says_one_line(tmp_path):
    verdict = tmp_path / "missing-dir" / "verdict.json"
    proc = run_pytest(f"--base-image={GOOD}", f"--compat-json={verdict}", cwd=tmp_path, env=DEAD_ENGINE)
    assert proc.returncode == 4
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"ERROR: --compat-json={verdict}: the directory {verdict.parent} does not exist"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_usage_error_verdict_reads_back_as_exit_4(tmp_path):
    from pytest_baseimage.report import load_json

    verdict = tmp_path / "verdict.json"
    run_pytest(f"--base-image={GOOD}", f"--compat-json={verdict}", "--base-image-profile=nope", cwd=tmp_path)
    run = load_json(verdict)
    assert run.exit_code == 4 and run.usage_error.startswith("unknown profile 'nope'")
    assert run.to_dict()["verdict"] == "usage error"


@pytest.mark.parametrize("content", [None, "{}"], ids=["missing", "not a report"])
def test_4_for_a_baseline_that_cannot_be_read_one_line_before_the_engine(tmp_path, content):
    baseline = tmp_path / "old.json"
    if content is not None:
        baseline.write_text(content)
    proc = run_pytest(f"--base-image={GOOD}", f"--compat-baseline={baseline}", cwd=tmp_path, env=DEAD_ENGINE)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: --compat-baseline={baseline}: "), errors
    assert proc.stdout.strip() == ""  # nothing started: no progress line for a warning to be glued to


def test_require_digest_hint_gives_a_command_that_works_for_a_locally_built_image(
    tmp_path, images, docker_client, no_leaks
):
    """An image built here has no RepoDigests, so `index .RepoDigests 0` fails; the image id the hint also
    offers is accepted under --require-digest and the image is checked. The image is built for this test: a
    fixture image another test pushed to a registry has a RepoDigest from then on."""
    dockerfile = f"FROM {images('good')}\nLABEL org.pytest-baseimage.test=local-build-{uuid.uuid4().hex}\n"
    built, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), rm=True)
    reference = f"pytest-baseimage-test/local-build:{uuid.uuid4().hex[:12]}"
    built.tag(reference)
    try:
        _check_the_hint(tmp_path, reference)
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(built.id, force=True)


def _check_the_hint(tmp_path, image: str) -> None:
    proc = run_pytest(f"--base-image={image}", "--require-digest", cwd=tmp_path, env=DEAD_ENGINE)
    assert proc.returncode == 4
    commands = re.findall(r"`(docker inspect [^`]+)`", proc.stderr)
    assert len(commands) == 2 and "push it first" in proc.stderr, proc.stderr
    outcomes = [subprocess.run(shlex.split(c), capture_output=True, text=True, timeout=60) for c in commands]
    assert outcomes[0].returncode != 0  # no RepoDigests on a local build: the digest command cannot help here
    image_id = outcomes[1].stdout.strip()
    assert outcomes[1].returncode == 0 and image_id.startswith("sha256:")
    checked = run_pytest(
        f"--base-image={image_id}", "--require-digest", f"--profile={FIXTURE_PROFILE}", "-k", "os", cwd=tmp_path
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- which other shipped profile a failing image would pass ----------------------------------------------------
def test_also_passes_names_the_shipped_profiles_whose_static_stages_the_facts_pass():
    """Unit test of the pure part: facts of an Ubuntu 22.04 image with Python 3.10 and the current server."""
    from pytest_baseimage.facts import CondaInfo, Facts, ImportResult, OsRelease, PythonInfo
    from pytest_baseimage.profiles import load
    from pytest_baseimage.results import ImageInfo
    from pytest_baseimage.target import also_passes

    apt = load("azureml-current").section("apt")
    facts = Facts(
        os=OsRelease("ubuntu", "22.04", "Ubuntu 22.04.4 LTS"),
        has_shell=True,
        running=True,
        conda=CondaInfo(version="23.1.0"),
        python=PythonInfo(executable="/opt/conda/bin/python", version="3.10.12"),
        dpkg={name: "1.0" for name in [*apt["required"], *(group[0] for group in apt["any_of"])]},
        pip={"azureml-inference-server-http": "1.4.0"},
        imports={"azureml_inference_server_http": ImportResult("azureml_inference_server_http", True)},
    )
    info = ImageInfo("x:1", architecture="amd64", os="linux")
    found = also_passes(facts, info, "fixture")
    assert "azureml-current" in found
    assert "azureml-2020" not in found  # Python 3.10 is not 3.5/3.6
    assert "azureml-current" not in also_passes(facts, info, "azureml-current")  # never the profile it failed
    old = dataclasses.replace(
        facts,
        os=OsRelease("ubuntu", "18.04", "Ubuntu 18.04.6 LTS"),
        python=PythonInfo(executable="/opt/conda/bin/python", version="3.6.9"),
        dpkg={**facts.dpkg, "liblttng-ust0": "2.10"},
        pip={"azureml-defaults": "1.0.85"},
        imports={"azureml.core": ImportResult("azureml.core", True)},
    )
    assert "azureml-2020" in also_passes(old, info, "fixture")
    assert "azureml-current" not in also_passes(old, info, "fixture")  # Ubuntu 18.04 is below 20.04


def certify_json(tmp_path: Path, image: str, *extra: str) -> tuple:
    verdict = tmp_path / "verdict.json"
    proc = run_pytest(
        f"--base-image={image}", f"--profile={FIXTURE_PROFILE}", f"--compat-json={verdict}", "-q", *extra, cwd=tmp_path
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc, json.loads(verdict.read_text())


@pytest.mark.parametrize("xdist", [[], ["-n", "1"]], ids=["in-process", "xdist"])
def test_wrong_python_fails_fixture_and_no_shipped_profile_would_take_it(tmp_path, images, no_leaks, xdist):
    """Debian 13 with Python 3.13: every shipped profile asks for Ubuntu, so none is named; the JSON says so
    (an empty list, computed where the facts are: in the xdist worker too), and the terminal names none."""
    proc, data = certify_json(tmp_path, images("wrong-python"), *xdist)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (image,) = data["images"]
    assert image["verdict"] == "not compatible" and image["also_passes"] == []
    assert "would pass" not in proc.stdout
    schema_valid(data)


def test_a_compatible_image_carries_no_also_passes(tmp_path, images, no_leaks):
    proc, data = certify_json(tmp_path, images("good"), "-k", "os or python")
    assert proc.returncode == 0 and "also_passes" not in data["images"][0]


@pytest.mark.parametrize("xdist", [[], ["-n", "1"]], ids=["in-process", "xdist"])
def test_an_image_failing_its_profile_is_told_which_profile_it_would_pass(tmp_path, images, no_leaks, xdist):
    """`good` (Debian 12, Python 3.11) judged by a profile that wants Python 3.12 fails; with the shipped list
    stood in by the fixture profile and azureml-current (a conftest patches profiles.builtin_names, in the
    workers too), the summary and the JSON name the fixture profile only, computed from the same facts."""
    strict = tmp_path / "py312.toml"
    strict.write_text(f'name = "py312"\nextends = "{FIXTURE_PROFILE}"\n[python]\nversion = "==3.12.*"\n')
    (tmp_path / "conftest.py").write_text(
        "from pytest_baseimage import profiles\n"
        f"profiles.builtin_names = lambda include_abstract=False: [{str(FIXTURE_PROFILE)!r}, 'azureml-current']\n"
    )
    verdict = tmp_path / "verdict.json"
    proc = run_pytest(
        f"--base-image={images('good')}",
        f"--profile={strict}",
        f"--compat-json={verdict}",
        "-p",
        "conftest",
        "-k",
        "not scoring and not gpu",
        *xdist,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (image,) = json.loads(verdict.read_text())["images"]
    assert image["verdict"] == "not compatible" and image["also_passes"] == [str(FIXTURE_PROFILE)]
    assert f"  would pass (static stages): {FIXTURE_PROFILE}" in proc.stdout.splitlines()


def test_a_run_stopped_before_the_session_still_writes_its_junit(tmp_path):
    """A missing image stops the run in pytest_configure, where pytest's own --junitxml is never written: the
    plugin writes the same per-image suite, with the reason as an error, beside the JSON."""
    proc = run_pytest(
        "--base-image=pytest-baseimage-no-such/image:1",
        "--pull=never",
        "--junitxml=j.xml",
        "--compat-json=v.json",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    import xml.etree.ElementTree as ET

    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "pytest-baseimage-no-such/image:1"
    error = suite.find("testcase/error")
    assert error is not None and "is not on the Docker engine" in error.get("message", "")
    assert json.loads((tmp_path / "v.json").read_text())["exit_code"] == 2

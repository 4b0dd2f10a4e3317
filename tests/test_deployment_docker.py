"""The deployment stage against real containers: the shipped examples pass, each broken definition or image
fails with its own named cause, bad YAML is a one-line usage error, and no container is left behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import FIXTURE_PROFILE, ROOT, junit, run_pytest

from pytest_baseimage import profiles, scoring_route
from pytest_baseimage.engine import LABEL_PID, LABEL_ROLE
from pytest_baseimage.results import StageResult, Status
from pytest_baseimage.target import ImageCheck, Target

pytestmark = pytest.mark.docker

EXAMPLES = ROOT / "examples" / "azureml"
SCHEMA = json.loads((ROOT / "pytest_baseimage" / "report" / "schema.json").read_text())
SHORT_BOOT_S = 5.0  # the deadline of the cases whose route never answers


def copy_example(tmp_path: Path, name: str, **env_changes: Any) -> tuple[Path, Path]:
    """The example's folder copied, its environment.yml changed (a key set to None is removed)."""
    folder = tmp_path / name
    shutil.copytree(EXAMPLES / name, folder)
    env_file = folder / "environment.yml"
    data = yaml.safe_load(env_file.read_text())
    for key, value in env_changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    env_file.write_text(yaml.safe_dump(data))
    return env_file, folder / "deployment.yml"


def routes(liveness: tuple[int, str], readiness: tuple[int, str], scoring: tuple[int, str]) -> dict[str, Any]:
    names = ("liveness_route", "readiness_route", "scoring_route")
    return {name: {"port": port, "path": path} for name, (port, path) in zip(names, (liveness, readiness, scoring))}


@pytest.fixture
def stage(docker_client, images):
    """Run the deployment stage on a fixture image in this process; check afterwards that nothing is left."""
    checks: list[ImageCheck] = []

    def run(image: str, env_file: Path, dep_file: Path | None, profile: str = str(FIXTURE_PROFILE), **section: Any):
        loaded = profiles.load(profile)
        if section:
            loaded.data = {**loaded.data, "deployment": {**(loaded.data.get("deployment") or {}), **section}}
        options = {"environment": str(env_file), **({"deployment": str(dep_file)} if dep_file else {})}
        check = ImageCheck(Target(images(image), loaded, options={"deployment": options}))
        checks.append(check)
        return check.result("deployment")

    yield run
    for check in checks:
        check.close()
    labels = [f"{LABEL_PID}={os.getpid()}", f"{LABEL_ROLE}=deployment"]
    assert docker_client.containers.list(all=True, filters={"label": labels}) == [], "a deployment container leaked"


def assert_cause(result: StageResult, cause: str) -> None:
    assert result.status is Status.FAIL, result.summary()
    assert result.details["cause"] == cause, result.summary()
    assert result.observed.startswith(f"{cause}: "), result.observed
    assert result.remediation


# -- in process: ImageCheck.result("deployment") ---------------------------------------------------------------
def test_demo_example_answers_its_three_routes(stage):
    result = stage("deploy-demo", EXAMPLES / "demo" / "environment.yml", EXAMPLES / "demo" / "deployment.yml")
    assert result.status is Status.PASS, result.summary()
    got = result.details["routes"]
    assert [got[r]["status"] for r in ("liveness", "readiness", "scoring")] == [200, 200, 200]
    assert got["scoring"]["method"] == "POST" and got["scoring"]["path"] == "/score"
    assert result.details["model_dir"] == "/var/azureml-app/azureml-models/demo-model/1"
    assert result.details["app_root"] == "/var/azureml-app/code"
    assert "azureml-inference-server-http 1.5.1 needs Python >=3.9" in result.details["notes"][0]


def test_wrong_scoring_port_names_the_port_nothing_listens_on(stage, tmp_path):
    env, dep = copy_example(tmp_path, "demo", inference_config=routes((5001, "/"), (5001, "/"), (5002, "/score")))
    result = stage("deploy-demo", env, dep)
    assert_cause(result, "nothing-listening")
    assert "nothing listens on port 5002 (scoring route)" in result.observed
    assert "listening ports: 5001" in result.observed  # (and whatever else the server opened)
    assert any(c.startswith("port-mismatch: the image EXPOSEs 5001") for c in result.details["causes"])


def test_wrong_readiness_path_is_a_readiness_404(stage, tmp_path):
    env, dep = copy_example(tmp_path, "demo", inference_config=routes((5001, "/"), (5001, "/ready"), (5001, "/score")))
    result = stage("deploy-demo", env, dep)
    assert_cause(result, "readiness-404")
    assert result.details["routes"]["readiness"]["status"] == 404
    assert result.details["routes"]["scoring"]["error"] == "not asked"


def test_conda_python_38_against_a_server_that_needs_39(stage, tmp_path):
    env, dep = copy_example(tmp_path, "demo")
    conda = env.parent / "conda.yml"
    conda.write_text(conda.read_text().replace("python=3.11", "python=3.8"))
    result = stage("deploy-demo", env, dep)
    assert_cause(result, "python-unsupported")
    assert "pins python=3.8, but azureml-inference-server-http 1.5.1 needs Python >=3.9" in result.observed
    assert result.details["routes"]["scoring"]["status"] == 200  # the live part passed: only the pin is wrong


def test_an_entrypoint_that_exits_is_named_with_its_code(stage, tmp_path):
    """`good` has CMD ["bash"]: with stdin closed, as on an endpoint, it ends at once."""
    env, dep = copy_example(tmp_path, "demo")
    result = stage("good", env, dep)
    assert_cause(result, "entrypoint-exited")
    assert "the entrypoint `bash` exited with code 0" in result.observed
    assert result.details["exit_code"] == 0
    assert "checked pytest-baseimage-fixture/good:latest; the environment names" in result.details["notes"][0]


def test_an_entry_script_whose_init_raises_ends_the_entrypoint_with_its_log(stage, tmp_path):
    env, dep = copy_example(tmp_path, "demo")
    script = "def init():\n    raise RuntimeError('no model here')\n\n\ndef run(raw):\n    return raw\n"
    (dep.parent / "code" / "score.py").write_text(script)
    result = stage("deploy-demo", env, dep)
    assert_cause(result, "entrypoint-exited")
    assert "the entrypoint `start-azmlinfsrv` exited with code 3: RuntimeError: no model here" in result.observed
    assert "Worker failed to boot" in result.details["log"]


def test_custom_container_passes_under_its_profile(stage):
    custom = EXAMPLES / "custom"
    result = stage(
        "deploy-custom-server", custom / "environment.yml", custom / "deployment.yml", "azureml-custom-container"
    )
    assert result.status is Status.PASS, result.summary()
    assert result.details["command"] == "python3 /srv/server.py"


def test_where_requests_are_relayed_the_custom_container_still_passes_and_says_so(stage, monkeypatch):
    """On an engine this process cannot share a network with, the image's own python asks the routes."""
    far = "the engine at tcp://far.example is not on this machine"
    monkeypatch.setattr(scoring_route, "not_local", lambda engine: far)
    custom = EXAMPLES / "custom"
    result = stage(
        "deploy-custom-server", custom / "environment.yml", custom / "deployment.yml", "azureml-custom-container"
    )
    assert result.status is Status.PASS, result.summary()
    assert "answers relayed by the candidate's own python (the engine at tcp://far.example" in result.observed
    assert result.details["routes"]["scoring"]["status"] == 200


def test_custom_container_with_the_wrong_scoring_path_is_a_scoring_404(stage, tmp_path):
    env, dep = copy_example(
        tmp_path, "custom", inference_config=routes((8080, "/health"), (8080, "/health"), (8080, "/score"))
    )
    result = stage("deploy-custom-server", env, dep, "azureml-custom-container")
    assert_cause(result, "scoring-404")
    assert result.details["routes"]["scoring"]["status"] == 404


def test_a_non_2xx_score_answer_is_named_with_its_body(stage):
    """Without the deployment, no model reaches AZUREML_MODEL_DIR: the custom server answers 503."""
    result = stage("deploy-custom-server", EXAMPLES / "custom" / "environment.yml", None, "azureml-custom-container")
    assert_cause(result, "scoring-status")
    assert "POST /predict on port 8080 answered 503" in result.observed
    assert "no model.json under AZUREML_MODEL_DIR" in result.observed


def test_a_scoring_route_that_takes_no_post_is_a_scoring_405(stage, tmp_path):
    env, dep = copy_example(
        tmp_path, "custom", inference_config=routes((8080, "/health"), (8080, "/health"), (8080, "/health"))
    )
    result = stage("deploy-custom-server", env, dep, "azureml-custom-container")
    assert_cause(result, "scoring-405")
    assert "POST /health on port 8080 answered 405" in result.observed


@pytest.mark.parametrize("route", ["namespace", "network"])
def test_custom_server_bound_to_loopback_is_named(stage, tmp_path, monkeypatch, route):
    """Asked from inside the server's namespace, such a server answers; the sockets it listens on still fail it.
    Over the internal network it is refused, and named the same."""
    if route == "network":
        monkeypatch.setattr(scoring_route, "can_enter_namespaces", lambda: False)
    env, dep = copy_example(tmp_path, "custom")
    data = yaml.safe_load(dep.read_text())
    data["environment_variables"] = {"BIND_ADDRESS": "127.0.0.1"}
    dep.write_text(yaml.safe_dump(data))
    result = stage("deploy-custom-server", env, dep, "azureml-custom-container", boot_timeout_s=SHORT_BOOT_S)
    assert_cause(result, "loopback-only")
    assert "port 8080 listens only on 127.0.0.1" in result.observed


def test_root_image_fails_where_the_profile_asks_for_non_root(stage):
    demo = EXAMPLES / "demo"
    custom = EXAMPLES / "custom"
    result = stage("deploy-custom-server", custom / "environment.yml", custom / "deployment.yml", non_root=True)
    assert result.status is Status.PASS, result.summary()  # USER 1000:1000
    result = stage("good", demo / "environment.yml", demo / "deployment.yml", non_root=True)
    assert "runs-as-root: the image runs as root (no USER)" in result.details["causes"]


# -- as a user runs it: the verdict, exit codes, JSON, JUnit, HTML ------------------------------------------------
def test_examples_pass_end_to_end_with_routes_in_every_report(tmp_path, no_leaks):
    out = tmp_path / "out"
    out.mkdir()
    for name, image, profile in (
        ("demo", "deploy-demo", str(FIXTURE_PROFILE)),
        ("custom", "deploy-custom-server", "azureml-custom-container"),
    ):
        folder = EXAMPLES / name
        proc = run_pytest(
            f"--base-image=pytest-baseimage-fixture/{image}:latest",
            f"--profile={profile}",
            f"--azureml-environment={folder / 'environment.yml'}",
            f"--azureml-deployment={folder / 'deployment.yml'}",
            f"--compat-json={out / name}.json",
            f"--junitxml={out / name}.xml",
            f"--compat-html={out / name}.html",
            "-m",
            "deployment",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "COMPATIBLE" in proc.stdout
        verdict = json.loads((out / f"{name}.json").read_text())
        jsonschema.validate(verdict, SCHEMA)
        [stage_result] = [r for r in verdict["images"][0]["results"] if r["stage"] == "deployment"]
        assert stage_result["status"] == "pass"
        assert {r: v["status"] for r, v in stage_result["details"]["routes"].items()} == {
            "liveness": 200,
            "readiness": 200,
            "scoring": 200,
        }
        props = junit(out / f"{name}.xml")["test_deployment"]["props"]
        assert props["route_scoring_status"] == "200" and float(props["route_scoring_ms"]) > 0
        html = (out / f"{name}.html").read_text()
        assert 'data-key="routes"' in html and "&#34;elapsed_ms&#34;" in html  # the routes, with their timings
        assert ("POST /score:5001 200" if name == "demo" else "POST /predict:8080 200") in html


BAD_YAML = {
    "syntax": ("name: x\nimage: [unclosed\n", "not valid YAML at line 3"),
    "no-port": (
        "name: x\nimage: i\ninference_config:\n  liveness_route: {path: /}\n  readiness_route: {port: 1, path: /}\n"
        "  scoring_route: {port: 1, path: /s}\n",
        "inference_config.liveness_route.port: required",
    ),
    "port-http": (
        "name: x\nimage: i\ninference_config:\n  liveness_route: {port: http, path: /}\n"
        "  readiness_route: {port: 1, path: /}\n  scoring_route: {port: 1, path: /s}\n",
        "inference_config.liveness_route.port: expected an integer, got 'http'",
    ),
    "image-and-build": (
        "name: x\nimage: i\nbuild: {path: .}\n",
        "image: exactly one of `image` or `build` is required",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_bad_environment_yaml_is_a_one_line_usage_error(tmp_path, case, no_leaks):
    text, said = BAD_YAML[case]
    env = tmp_path / "environment.yml"
    env.write_text(text)
    proc = run_pytest(
        "--base-image=pytest-baseimage-fixture/deploy-demo:latest", f"--azureml-environment={env}", cwd=tmp_path
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--azureml-environment {env}: {said}" in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_scoring_script_that_does_not_exist_is_a_usage_error(tmp_path, no_leaks):
    env, dep = copy_example(tmp_path, "demo")
    dep.write_text(dep.read_text().replace("scoring_script: score.py", "scoring_script: missing.py"))
    proc = run_pytest(
        "--base-image=pytest-baseimage-fixture/deploy-demo:latest",
        f"--azureml-environment={env}",
        f"--azureml-deployment={dep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"--azureml-deployment {dep}: code_configuration.scoring_script: no such file" in lines[0]

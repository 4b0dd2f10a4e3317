"""The deployment stage's pure parts: definition files -> one-line usage errors, the cross-checks with the
image, and naming the live failure from an observation (no Docker here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_baseimage import matrix, profiles, scoring
from pytest_baseimage.deployment import definitions, judge
from pytest_baseimage.deployment.definitions import DefinitionError, Definitions, RouteSpec
from pytest_baseimage.deployment.judge import DeploymentObservation, ImageConfig
from pytest_baseimage.facts import Facts, PythonInfo
from pytest_baseimage.results import Status
from pytest_baseimage.scoring import Exchange, ScoringObservation

ROUTES = "inference_config:\n  liveness_route: {port: 5001, path: /}\n  readiness_route: {port: 5001, path: /}\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("image: i\n", "name: required"),
        ("name: x\n", "image: exactly one of `image` or `build` is required"),
        ("name: x\nbuild: {path: .}\nconda_file: c.yml\n", "conda_file: allowed only together with `image`"),
        ("name: x\nimage: i\n" + ROUTES, "inference_config.scoring_route: required"),
        (
            "name: x\nimage: i\n" + ROUTES + "  scoring_route: {port: 70000, path: /s}\n",
            "inference_config.scoring_route.port: expected an integer from 1 to 65535, got 70000",
        ),
        (
            "name: x\nimage: i\n" + ROUTES + "  scoring_route: {port: 5001, path: score}\n",
            "inference_config.scoring_route.path: must start with '/', got 'score'",
        ),
        ("- a list\n", "expected a mapping of keys, got list"),
        ("name: x\nimage: i\nconda_file: missing.yml\n", "conda_file: no such file"),
    ],
)
def test_an_invalid_environment_names_the_file_and_the_key(tmp_path, text, said):
    path = write(tmp_path, "env.yml", text)
    with pytest.raises(DefinitionError) as info:
        definitions.load(path)
    assert str(info.value).startswith(f"--azureml-environment {path}: ")
    assert said in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_tags_are_not_objects(tmp_path):
    """safe_load: a python tag in a user's file is refused, never constructed."""
    path = write(tmp_path, "env.yml", "name: !!python/object/apply:os.system ['true']\nimage: i\n")
    with pytest.raises(DefinitionError, match="not valid YAML"):
        definitions.load(path)


def test_a_deployment_resolves_its_paths_and_inline_environment(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("")
    (tmp_path / "m.json").write_text("{}")
    (tmp_path / "sample-request.json").write_text("{}")
    dep = write(
        tmp_path,
        "dep.yml",
        "name: blue\nmodel: {path: m.json, name: mdl, version: 3}\ncode_configuration: {code: src, scoring_script: "
        "score.py}\nenvironment_variables: {A: 1}\nenvironment:\n  name: e\n  image: img:1\n",
    )
    defs = definitions.load("", dep)
    assert (defs.code_dir, defs.scoring_script) == (str(tmp_path / "src"), "score.py")
    assert (defs.model_path, defs.model_name, defs.model_version) == (str(tmp_path / "m.json"), "mdl", "3")
    assert defs.env_vars == {"A": "1"} and defs.image == "img:1" and not defs.custom_container
    assert defs.sample_request == str(tmp_path / "sample-request.json")


def test_a_registered_model_reference_is_not_a_path(tmp_path):
    dep = write(tmp_path, "dep.yml", "name: blue\nmodel: azureml:my-model:1\n")
    assert definitions.load("", dep).model_path == ""


# -- cross-checks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pin", "needs", "ok"),
    [("=3.8", ">=3.9", False), ("=3.9", ">=3.9", True), (" 3.11", ">=3.9", True), (">=3.7,<3.9", ">=3.9", False)],
)
def test_the_conda_python_pin_against_requires_python(pin, needs, ok):
    defs = Definitions(conda={"dependencies": [f"python{pin}", "pip"]})
    facts = Facts(
        pip={"azureml-inference-server-http": "1.5.1"},
        python=PythonInfo(requires_python={"azureml-inference-server-http": needs}),
    )
    finding, seen = judge.python_finding(defs, facts)
    assert (finding is None) is ok, seen
    assert f"needs Python {needs}" in seen


def test_the_pin_is_not_judged_without_the_servers_metadata():
    defs = Definitions(conda={"dependencies": ["python=3.8"]})
    finding, seen = judge.python_finding(defs, Facts())
    assert finding is None and "not compared: no Azure ML server package in the image" in seen


def test_azureml_stack_needs_the_server_package_in_pip_dependencies():
    profile = profiles.load("azureml-current")
    without = Definitions(conda={"dependencies": ["python=3.11", {"pip": ["numpy==2.0"]}]})
    with_defaults = Definitions(conda={"dependencies": [{"pip": ["azureml-defaults>=1.62"]}]})
    findings, _ = judge.static_findings(without, ImageConfig(), Facts(), profile)
    assert [f.cause for f in findings] == ["server-package-missing"]
    assert judge.static_findings(with_defaults, ImageConfig(), Facts(), profile)[0] == []


def test_ports_and_user_are_compared_with_the_image():
    profile = profiles.load("azureml-custom-container")
    profile.data = {**profile.data, "deployment": {"non_root": True}}
    defs = Definitions(routes={"scoring": RouteSpec(8080, "/score")})
    config = ImageConfig(exposed_ports=(5001,), env={"SERVER_PORT": "5001"}, user="root")
    causes = [f.cause for f in judge.static_findings(defs, config, Facts(), profile)[0]]
    assert causes == ["port-mismatch", "port-mismatch", "runs-as-root"]
    assert judge.static_findings(defs, ImageConfig(exposed_ports=(8080,), user="1000:1000"), Facts(), profile)[0] == []


@pytest.mark.parametrize(
    ("named", "tested", "same"),
    [
        ("ubuntu", "docker.io/library/ubuntu:latest", True),
        ("reg/x:1", "reg/x:2", False),
        ("a/b@sha256:1", "a/b@sha256:1", True),
    ],
)
def test_the_environments_image_against_the_image_under_test(named, tested, same):
    assert judge.same_image(named, tested) is same


# -- the live run's cause ----------------------------------------------------------------------------------------
def observed(**run_fields) -> DeploymentObservation:
    routes = {
        "liveness": RouteSpec(8080, "/health"),
        "readiness": RouteSpec(8080, "/ready"),
        "scoring": RouteSpec(8080, "/p"),
    }
    spec = scoring.ScoringSpec("s", (), 8080, {}, "", "", "", "", {}, b"")
    run = ScoringObservation(spec=spec, **{"running": True, **run_fields})
    return DeploymentObservation(Definitions(routes=routes), "img", ImageConfig(cmd=("serve",)), run)


def answered(status: int | None, error: str = "") -> Exchange:
    return Exchange("GET", "/x", status=status, error=error, elapsed_s=0.01)


@pytest.mark.parametrize(
    ("fields", "cause"),
    [
        ({"last_liveness": answered(None, "closed"), "listen_all": ["0.0.0.0:9000"]}, "nothing-listening"),
        ({"last_liveness": answered(None, "closed"), "listen_all": ["127.0.0.1:8080"]}, "loopback-only"),
        ({"boot_s": 1.0, "readiness": answered(404)}, "readiness-404"),
        ({"boot_s": 1.0, "readiness": answered(503)}, "readiness-failed"),
        ({"boot_s": 1.0, "ready_s": 1.0, "score": answered(405)}, "scoring-405"),
        ({"boot_s": 1.0, "ready_s": 1.0, "score": answered(500)}, "scoring-status"),
        ({"boot_s": 1.0, "ready_s": 1.0, "score": answered(None, "timeout")}, "timeout"),
        ({"running": False, "exit_code": 2, "log": "boom\n"}, "entrypoint-exited"),
    ],
)
def test_each_live_failure_has_its_own_name(fields, cause):
    finding = judge.live_finding(observed(**fields), 5.0)
    assert finding is not None and finding.cause == cause, finding


def test_nothing_listening_lists_the_ports_that_do():
    finding = judge.live_finding(observed(last_liveness=answered(None, "closed"), listen_all=["0.0.0.0:9000"]), 5.0)
    assert finding.text == "nothing listens on port 8080 (liveness route) within 5 s; listening ports: 9000"


def test_a_passing_run_reports_each_routes_status_and_timing():
    obs = observed(boot_s=0.5, ready_s=0.6, polls=3, last_liveness=answered(200), readiness=answered(200))
    obs.run.score = Exchange("POST", "/p", status=200, elapsed_s=0.004)
    result = judge.check_deployment(Facts(), profiles.load("azureml-custom-container"), obs)
    assert result.status is Status.PASS, result.summary()
    assert result.details["routes"]["liveness"] == {
        "method": "GET", "port": 8080, "path": "/health", "status": 200, "error": "", "elapsed_ms": 10.0, "polls": 3,
        "answered_after_s": 0.5,
    }  # fmt: skip
    assert judge.junit_properties(result)["route_scoring_status"] == "200"


def test_no_definitions_is_not_checked_only_where_the_profile_asks():
    asked = judge.check_deployment(Facts(), profiles.load("azureml-custom-container"), None)
    assert asked.status is Status.SKIPPED and asked.not_checked
    assert judge.check_deployment(Facts(), profiles.load("azureml-current"), None).skip_kind == "not-required"


def test_a_matrix_entry_names_its_definitions_relative_to_the_matrix(tmp_path):
    from pytest_baseimage import plugin

    (tmp_path / "env.yml").write_text("name: x\nimage: i\n")
    path = tmp_path / "matrix.toml"
    path.write_text('[[images]]\nref = "a:1"\n[images.deployment]\nenvironment = "env.yml"\n')
    entry = matrix.load(path, matrix.part_schemas(plugin.PARTS)).entries[0]
    assert entry.settings.options["deployment"] == {"environment": str(tmp_path / "env.yml")}


def test_a_profile_asking_for_no_static_stage_is_never_a_would_pass_hint():
    """azureml-custom-container asks only for the live deployment stage: every image would "pass" its static
    stages, so naming it for an image that failed its own profile would be noise."""
    from pytest_baseimage.results import ImageInfo
    from pytest_baseimage.target import also_passes

    assert "azureml-custom-container" not in also_passes(Facts(), ImageInfo("img"), "azureml-current")

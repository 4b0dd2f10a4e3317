"""The static stages are pure: fed Facts and a Profile, they return results. No Docker here."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_baseimage import profiles, stages
from pytest_baseimage.composition import BUILTIN, blocked_by
from pytest_baseimage.facts import CondaInfo, Facts, ImportResult, OsRelease, PythonInfo
from pytest_baseimage.results import Status

# An Ubuntu 16.04/18.04 image with the stack: the profile's packages, with that era's names for alternatives.
_APT_2020 = profiles.load("azureml-2020").section("apt")
STACK = {p: "1.0" for p in [*_APT_2020["required"], *(group[0] for group in _APT_2020["any_of"])]}


@pytest.fixture(scope="module")
def p2020():
    return profiles.load("azureml-2020")


@pytest.fixture
def good_2020() -> Facts:
    return Facts(
        os=OsRelease("ubuntu", "18.04", "Ubuntu 18.04.6 LTS"),
        has_shell=True,
        running=True,
        conda=CondaInfo("4.5.11", "/opt/miniconda/bin/conda"),
        python=PythonInfo("/opt/miniconda/bin/python", "3.6.9"),
        dpkg=dict(STACK),
        pip={"azureml-defaults": "1.0.85"},
        imports={"azureml.core": ImportResult("azureml.core", True)},
    )


def test_all_static_stages_pass_on_a_2020_image(good_2020, p2020):
    for name in ("os", "conda", "python", "apt", "azureml"):
        result = BUILTIN.get(name).check(good_2020, p2020, None)
        assert result.status is Status.PASS, result.summary()


@pytest.mark.parametrize(
    ("os_release", "status"),
    [
        (OsRelease("ubuntu", "16.04"), Status.PASS),
        (OsRelease("ubuntu", "24.04"), Status.PASS),
        (OsRelease("ubuntu", "14.04"), Status.FAIL),
        (OsRelease("debian", "12", id_like=()), Status.FAIL),
        (OsRelease("ubuntu", ""), Status.FAIL),
        (None, Status.FAIL),
    ],
)
def test_os_stage(good_2020, p2020, os_release, status):
    result = stages.check_os(replace(good_2020, os=os_release), p2020)
    assert result.status is status
    if status is Status.FAIL:
        assert result.remediation and result.expected == "ubuntu >=16.04"


def test_conda_missing_or_too_old(good_2020, p2020):
    missing = stages.check_conda(replace(good_2020, conda=None, notes={"conda": "no conda here"}), p2020)
    assert (missing.status, missing.observed) == (Status.FAIL, "no conda here")
    old = stages.check_conda(replace(good_2020, conda=CondaInfo("4.4.10", "/c")), p2020)
    assert old.status is Status.FAIL and "4.4.10" in old.observed and old.expected == "conda >=4.5"
    unknown = stages.check_conda(replace(good_2020, conda=CondaInfo("", "/c", error="garbled")), p2020)
    assert unknown.status is Status.FAIL and unknown.observed == "garbled"


@pytest.mark.parametrize(("version", "status"), [("3.5.2", Status.PASS), ("3.7.0", Status.FAIL), ("", Status.FAIL)])
def test_python_stage(good_2020, p2020, version, status):
    result = stages.check_python(replace(good_2020, python=PythonInfo("/usr/bin/python3", version)), p2020)
    assert result.status is status
    assert result.expected == "Python ==3.5.* or ==3.6.*"


def test_apt_names_every_missing_package_and_alternative(good_2020, p2020):
    dpkg = {k: v for k, v in STACK.items() if k not in ("nginx-light", "runit", "liblttng-ust0")}
    result = stages.check_apt(replace(good_2020, dpkg=dpkg), p2020)
    assert result.status is Status.FAIL
    assert result.details["missing"] == ["nginx-light", "runit", "liblttng-ust0 or liblttng-ust1"]
    assert "apt-get install -y --no-install-recommends nginx-light runit liblttng-ust0" in result.remediation


def test_apt_alternative_satisfied_by_either(good_2020, p2020):
    dpkg = dict(STACK, **{"libcurl3": "7.47"})
    del dpkg["libcurl4"]
    assert stages.check_apt(replace(good_2020, dpkg=dpkg), p2020).status is Status.PASS


def test_apt_without_dpkg(good_2020, p2020):
    result = stages.check_apt(replace(good_2020, dpkg=None, notes={"dpkg": "no dpkg database at /x"}), p2020)
    assert (result.status, result.observed) == (Status.FAIL, "no dpkg database at /x")


def test_azureml_version_and_import(good_2020, p2020):
    old = stages.check_azureml(replace(good_2020, pip={"azureml-defaults": "1.0.10"}), p2020)
    assert old.status is Status.FAIL and "1.0.10 does not satisfy >=1.0.45" in old.observed
    absent = stages.check_azureml(replace(good_2020, pip={}), p2020)
    assert "azureml-defaults is not installed" in absent.observed
    tb = "Traceback...\nImportError: cannot import name 'x'"
    broken = replace(good_2020, imports={"azureml.core": ImportResult("azureml.core", False, tb.splitlines()[-1], tb)})
    result = stages.check_azureml(broken, p2020)
    assert result.status is Status.FAIL and "ImportError: cannot import name 'x'" in result.observed
    assert result.details["traceback (azureml.core)"] == tb


def test_stage_not_in_profile_is_skipped(good_2020, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('extends = "azureml-2020"\nconda = false\n')
    result = stages.check_conda(good_2020, profiles.load(str(path)))
    assert result.status is Status.SKIPPED and "not required" in result.reason


@pytest.mark.parametrize("stage", ["apt", "azureml", "scoring", "gpu"])
def test_every_stage_with_prerequisites_knows_from_the_profile_alone_when_it_is_not_required(stage, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(f'name = "bare"\nextends = "azureml-current"\n{stage} = false\n')
    bare, full = profiles.load(str(path)), profiles.load("onnxruntime-cpu")
    skip = BUILTIN.get(stage).skip
    assert skip is not None
    assert skip(bare).status is Status.SKIPPED and skip(bare).reason == "not required by profile bare"
    assert skip(full) is None


def test_blocked_by_the_first_failed_prerequisite():
    from pytest_baseimage.results import StageResult

    results = {"os": StageResult("os", Status.FAIL), "python": StageResult("python", Status.PASS)}
    assert blocked_by(BUILTIN.get("apt"), results) == "os"
    assert blocked_by(BUILTIN.get("azureml"), results) is None
    results["python"] = StageResult("python", Status.SKIPPED)
    assert blocked_by(BUILTIN.get("azureml"), results) is None


def test_observed_text_is_inert_and_bounded():
    from pytest_baseimage.results import StageResult

    hostile = "\x1b]0;pwned\x07\x1b[31mUbuntu\x1b[0m" + "x" * 50_000
    result = StageResult("os", Status.FAIL, expected="\x1b[2J", observed=hostile, reason="\x1b[1mwhy")
    assert "\x1b" not in result.observed + result.expected + result.reason
    assert result.observed.startswith("Ubuntu") and len(result.observed) < 2100
    assert "more characters cut" in result.observed


@pytest.mark.parametrize(
    ("reason", "fix"),
    [
        ("the image's USER app does not exist in /etc/passwd", "Create the user in the image (`RUN useradd"),
        ("the image's USER names group ops, which does not exist in /etc/group", "Create the group in the image"),
        ("the image's programs are built for another CPU (exec format error)", "Rebuild the image for linux/amd64"),
    ],
)
def test_a_start_failure_gets_its_own_fix_not_the_profiles(good_2020, p2020, reason, fix):
    facts = replace(
        good_2020,
        running=False,
        conda=None,
        python=None,
        notes={"conda": f"cannot run anything in the image: {reason}", "python": f"cannot run: {reason}"},
    )
    for name in ("conda", "python", "azureml"):
        result = BUILTIN.get(name).check(facts, p2020, None)
        assert result.status is Status.FAIL
        assert result.remediation.startswith(fix), result.summary()


def test_a_missing_python_in_a_running_candidate_keeps_the_profiles_fix(good_2020, p2020):
    facts = replace(good_2020, python=None, notes={"python": "no `python3` or `python` on PATH"})
    assert stages.check_python(facts, p2020).remediation == p2020.remediation("python")

"""The stages' reading of what the probe could not learn: a probe failure and files gone behind dpkg's back
(pure: Facts + Profile -> StageResult)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_baseimage import profiles, stages
from pytest_baseimage.composition import BUILTIN
from pytest_baseimage.facts import CondaInfo, Facts, OsRelease, PythonInfo
from pytest_baseimage.results import Status

STACK = ["libcurl4", "libunwind8", "nginx-light", "runit", "rsyslog", "psmisc", "unzip", "libxml++2.6-2v5"]


@pytest.fixture
def profile():
    return profiles.load("azureml-current")


@pytest.fixture
def facts():
    return Facts(
        os=OsRelease(id="ubuntu", version_id="22.04"),
        running=True,
        conda=CondaInfo(version="24.11.3", executable="/opt/conda/bin/conda"),
        python=PythonInfo(executable="/opt/conda/bin/python3", version="3.10.12"),
        dpkg={**{name: "1.0" for name in STACK}, "liblttng-ust1": "2.13"},
    )


@pytest.mark.parametrize("stage", ["conda", "python", "azureml"])
def test_a_failed_probe_is_the_reason_of_every_stage_that_needed_it(facts, profile, stage):
    error = "timed out after 30 s running `/opt/conda/bin/python3 -c <probe>`"
    broken = replace(facts, conda=None, python=None, probe_error=error)
    result = BUILTIN.get(stage).check(broken, profile, None)
    assert result.status is Status.FAIL
    assert error in result.observed


def test_a_probe_whose_time_ran_out_on_conda_says_python_was_not_reached(facts, profile):
    """Before: the python stage read "timed out after 2 s running `…/conda --version`", as if python had."""
    error = "timed out after 2 s running `/opt/conda/bin/conda --version`"
    broken = replace(facts, conda=None, python=None, probe_error=error)
    assert stages.check_python(broken, profile).observed.startswith(f"not reached: the probe {error}")
    assert error in stages.check_conda(broken, profile).observed
    assert "not reached" not in stages.check_conda(broken, profile).observed


def test_a_failed_probe_leaves_the_facts_it_did_get_judged(facts, profile):
    broken = replace(facts, python=None, probe_error="timed out after 30 s running `python3 -c <probe>`")
    assert stages.check_conda(broken, profile).status is Status.PASS
    assert stages.check_os(broken, profile).status is Status.PASS


def test_apt_fails_on_a_listed_package_whose_file_is_gone(facts, profile):
    gone = replace(facts, apt_missing={"libcurl4": "/usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0"})
    result = stages.check_apt(gone, profile)
    assert result.status is Status.FAIL
    lib = "/usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0"
    assert result.observed == f"libcurl4 is listed as installed, but {lib} is missing"
    assert "--reinstall" in result.remediation
    assert stages.check_apt(facts, profile).status is Status.PASS

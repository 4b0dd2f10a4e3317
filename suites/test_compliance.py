"""Azure ML base image compliance, one test per stage, in the order the stages run.

Each test asks the image's shared state for one stage's result; `stage_check` turns it into a pytest
outcome: pass, fail (expected / observed / fix), or skip ("blocked by <stage>", or a reason).
"""

import pytest


@pytest.mark.os
def test_os(stage_check):
    stage_check("os")


@pytest.mark.conda
def test_conda(stage_check):
    stage_check("conda")


@pytest.mark.python
def test_python(stage_check):
    stage_check("python")


@pytest.mark.apt
def test_apt(stage_check):
    stage_check("apt")


@pytest.mark.azureml
def test_azureml(stage_check):
    stage_check("azureml")


@pytest.mark.scoring
def test_scoring(stage_check):
    stage_check("scoring")


@pytest.mark.deployment
def test_deployment(stage_check):
    stage_check("deployment")


@pytest.mark.gpu
def test_gpu(stage_check):
    stage_check("gpu")

"""The static stages' remediation on real images that cannot start a process: the fix names the cause the
candidate showed (an unknown USER, a foreign CPU), not the missing software it could not look for."""

from __future__ import annotations

import pytest
from conftest import certify

pytestmark = pytest.mark.docker


def fix(case: dict) -> str:
    """The remediation line of a failed stage, as the JUnit message carries it."""
    _, _, text = case["message"].partition("\n  fix: ")
    return text


@pytest.mark.parametrize(
    ("variant", "wanted"),
    [
        ("engine-nosuchuser", "Create the user in the image (`RUN useradd --create-home nosuchuser`)"),
        ("engine-foreign-cpu", "Rebuild the image for linux/amd64"),
    ],
)
def test_a_candidate_that_cannot_start_gets_the_fix_for_that_cause(tmp_path, images, no_leaks, variant, wanted):
    proc, cases = certify(tmp_path, images(variant), "-m", "not scoring")
    assert proc.returncode == 1, proc.stdout
    for stage in ("conda", "python"):
        assert cases[f"test_{stage}"]["outcome"] == "failure"
        assert fix(cases[f"test_{stage}"]).startswith(wanted), cases[f"test_{stage}"]["message"]
    assert "Install Miniconda" not in proc.stdout
    assert "Install a supported Python" not in proc.stdout

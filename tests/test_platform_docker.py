"""The platform rule on a real engine: an image whose config says linux/arm64 (the fixture
`platform-arm64`: Debian's os-release and dpkg status, no binaries) on this amd64 engine."""

from __future__ import annotations

import json

import pytest
from conftest import certify

pytestmark = pytest.mark.docker


def test_an_arm64_image_is_not_compatible_and_says_why(tmp_path, images, docker_client, no_leaks):
    if docker_client.version().get("Arch") != "amd64":
        pytest.skip("the fixture's point is an arm64 image on an amd64 engine")
    verdict = tmp_path / "verdict.json"
    proc, cases = certify(tmp_path, images("platform-arm64"), f"--compat-json={verdict}")
    assert proc.returncode == 1, proc.stdout
    os_case = cases["test_os"]
    assert os_case["outcome"] == "failure"
    assert os_case["props"]["observed"].startswith("built for linux/arm64/v8; this profile needs linux/amd64")
    for stage in ("test_conda", "test_python"):  # not "the image has no shell": nothing was run
        assert "no shell" not in cases[stage]["message"]
        assert "built for linux/arm64/v8" in cases[stage]["message"], cases[stage]
    data = json.loads(verdict.read_text())
    image = data["images"][0]
    assert image["verdict"] == "not compatible"
    assert (image["info"]["architecture"], image["info"]["engine_platform"]) == ("arm64", "linux/amd64")

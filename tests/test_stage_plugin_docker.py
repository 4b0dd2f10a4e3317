"""A third-party stage (examples/stage_plugin, through the pytest_baseimage_stages hook) in a real run: it is
judged on the real container and shows up in the verdict, JUnit, JSON and HTML like a built-in stage."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, certify

from pytest_baseimage.composition import STAGE_ORDER

pytestmark = pytest.mark.docker

PLUGIN = ["-p", "baseimage_ca_certificates"]


@pytest.fixture
def plugin_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "examples" / "stage_plugin"))


def test_a_plugin_stage_passes_on_an_image_with_the_bundle_and_is_in_every_report(
    tmp_path, images, no_leaks, plugin_path
):
    verdict, html = tmp_path / "v.json", tmp_path / "v.html"
    proc, cases = certify(tmp_path, images("good"), *PLUGIN, f"--compat-json={verdict}", f"--compat-html={html}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "COMPATIBLE" in proc.stdout
    # JUnit: one more case, after the built-in ones, with the same properties
    assert list(cases) == [*(f"test_{s}" for s in STAGE_ORDER), "test_ca_certificates"]
    case = cases["test_ca_certificates"]
    assert case["outcome"] == "passed"
    assert case["props"]["stage"] == "ca_certificates" and case["props"]["status"] == "pass"
    assert case["props"]["observed"].startswith("/etc/ssl/certs/ca-certificates.crt: ")
    # JSON: the result is the image's last, and counts in the verdict
    (image,) = json.loads(verdict.read_text())["images"]
    assert [r["stage"] for r in image["results"]] == [*STAGE_ORDER, "ca_certificates"]
    assert image["results"][-1]["status"] == "pass" and image["verdict"] == "compatible"
    # HTML: a row of its own
    assert 'data-stage="ca_certificates"' in html.read_text()


def test_a_failing_plugin_stage_makes_the_image_not_compatible_with_its_fix(tmp_path, images, no_leaks, plugin_path):
    verdict, html = tmp_path / "v.json", tmp_path / "v.html"
    # -m: only the plugin's stage, so that its failure alone decides the verdict
    outputs = [f"--compat-json={verdict}", f"--compat-html={html}"]
    proc, cases = certify(tmp_path, images("no-shell"), *PLUGIN, "-m", "ca_certificates", *outputs)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NOT COMPATIBLE" in proc.stdout and "ca_certificates" in proc.stdout
    assert cases["test_ca_certificates"]["outcome"] == "failure"
    assert "apt-get install -y --no-install-recommends ca-certificates" in cases["test_ca_certificates"]["message"]
    (image,) = json.loads(verdict.read_text())["images"]
    (result,) = image["results"]
    assert (result["stage"], result["status"], image["verdict"]) == ("ca_certificates", "fail", "not compatible")
    assert "ca-certificates" in result["remediation"]
    assert 'data-stage="ca_certificates"' in html.read_text()


def test_without_the_plugin_there_is_no_such_stage(tmp_path, images, no_leaks):
    verdict = tmp_path / "v.json"
    proc, cases = certify(tmp_path, images("good"), "-m", "os", f"--compat-json={verdict}")
    assert proc.returncode == 0, proc.stdout
    assert "test_ca_certificates" not in cases
    assert [r["stage"] for r in json.loads(verdict.read_text())["images"][0]["results"]] == ["os"]


def test_under_xdist_every_worker_has_the_plugin_stage_and_images_keep_their_group(
    tmp_path, images, no_leaks, plugin_path
):
    """-n 2: each worker calls pytest_baseimage_stages too, and --dist=loadgroup (added to the arguments, so the
    workers choose it as well) keeps each image's stages together: its node ids carry the @baseimage group."""
    verdict = tmp_path / "v.json"
    good, broken = images("good"), images("no-conda")
    proc, _ = certify(tmp_path, good, f"--base-image={broken}", *PLUGIN, "-n", "2", f"--compat-json={verdict}", "-rf")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"test_conda[{broken}]@baseimage:{broken}" in proc.stdout  # xdist's loadgroup renamed the node
    reports = {image["name"]: image for image in json.loads(verdict.read_text())["images"]}
    for name in (good, broken):
        assert [r["stage"] for r in reports[name]["results"]] == [*STAGE_ORDER, "ca_certificates"]
        assert reports[name]["results"][-1]["status"] == "pass"
    assert (reports[good]["verdict"], reports[broken]["verdict"]) == ("compatible", "not compatible")

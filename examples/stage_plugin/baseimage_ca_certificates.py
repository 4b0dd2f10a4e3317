"""An example third-party stage for pytest-baseimage: the image must ship a CA bundle.

A scoring server that calls Azure services (Key Vault, Storage, Application Insights) over TLS needs the
system's CA certificates; a slimmed image that dropped them fails only at run time. This stage checks for
the bundle Debian's and Ubuntu's `ca-certificates` package writes.

Load it with `pytest -p baseimage_ca_certificates` (the module on PYTHONPATH), or install this directory
(`pip install examples/stage_plugin`): its entry point registers it like any pytest plugin.
"""

from __future__ import annotations

from typing import Any

from pytest_baseimage.results import StageResult, Status
from pytest_baseimage.stages import Stage

STAGE = "ca_certificates"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
FIX = "Install the CA certificates: `RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates`."


def observe(check: Any) -> Any:
    """The live part: what is at CA_BUNDLE in the candidate (one HEAD request of the archive API, no exec)."""
    return check.candidate.stat(CA_BUNDLE)


def check_ca_certificates(facts: Any, profile: Any, found: Any) -> StageResult:
    """Pure: pass when CA_BUNDLE is a non-empty regular file (symlinks followed by the engine)."""
    expected = f"a CA bundle at {CA_BUNDLE}"
    if found.problem:
        return StageResult(STAGE, Status.FAIL, expected, f"{CA_BUNDLE}: {found.problem}", FIX)
    if found.kind != "file" or found.size == 0:
        what = "an empty file" if found.kind == "file" else found.kind
        return StageResult(STAGE, Status.FAIL, expected, f"{CA_BUNDLE} is {what}", FIX)
    return StageResult(STAGE, Status.PASS, expected, f"{CA_BUNDLE}: {found.size} bytes", details={"size": found.size})


def pytest_baseimage_stages(config: Any) -> list[Stage]:
    """The hook pytest-baseimage calls: this plugin's stages, run after the built-in ones."""
    return [Stage(STAGE, "CA certificates", (), check_ca_certificates, observe=observe)]

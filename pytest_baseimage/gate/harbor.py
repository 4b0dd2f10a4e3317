"""Harbor's pluggable scanner API v1.2 (goharbor/pluggable-scanner-spec, api/spec/scanner-adapter-openapi-v1.2.yaml).

Harbor acts only on vulnerability reports ("prevent vulnerable images from running" at a severity), so each
stage that did not pass becomes a finding `BASEIMAGE-<STAGE>`: failing stages at `failed_severity` (High by
default, so Harbor's High threshold blocks non-compliant images), stages that could not be checked at
`unchecked_severity` (Unknown). Pure functions: app.py does the HTTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..report.model import Run
from .config import HarborSection
from .events import DIGEST, REPOSITORY

METADATA_TYPE = "application/vnd.scanner.adapter.metadata+json; version=1.1"
SCAN_REQUEST_TYPES = (
    "application/vnd.scanner.adapter.scan.request+json; version=1.1",
    "application/vnd.scanner.adapter.scan.request+json; version=1.0",
)
SCAN_RESPONSE_TYPE = "application/vnd.scanner.adapter.scan.response+json; version=1.0"
ERROR_TYPE = "application/vnd.scanner.adapter.error+json; version=1.0"
REPORT_TYPES = (
    "application/vnd.security.vulnerability.report; version=1.1",
    "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0",
)
CONSUMES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
SEVERITY_ORDER = ("Unknown", "Negligible", "Low", "Medium", "High", "Critical")
SCANNER = {"name": "pytest-baseimage", "vendor": "pytest-baseimage", "version": __version__}


class ScanRefused(ValueError):
    """A scan request the contract answers with an error status (400, 422 or 501)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ScanRequest:
    registry_url: str
    authorization: str  # Harbor's short-lived robot credentials: kept in memory only, never stored or logged
    repository: str
    digest: str
    tag: str
    mime_type: str


def metadata(section: HarborSection) -> dict[str, Any]:
    return {
        "scanner": SCANNER,
        "capabilities": [
            {"type": "vulnerability", "consumes_mime_types": list(CONSUMES), "produces_mime_types": list(REPORT_TYPES)}
        ],
        "properties": {
            "harbor.scanner-adapter/scanner-type": "compliance",
            "org.pytest-baseimage/profile": section.profile,
        },
    }


def media_type(value: str) -> str:
    """`type/sub; version=1.1` in one canonical spelling, for comparing what clients send."""
    parts = [p.strip() for p in value.split(";") if p.strip()]
    return "; ".join([parts[0].lower(), *sorted(p.replace(" ", "") for p in parts[1:])]) if parts else ""


def parse_scan(content_type: str, body: bytes) -> ScanRequest:
    if media_type(content_type) not in {media_type(t) for t in SCAN_REQUEST_TYPES} | {"application/json"}:
        raise ScanRefused(400, f"expected {SCAN_REQUEST_TYPES[0]}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ScanRefused(400, "the body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("registry"), dict):
        raise ScanRefused(400, "registry must be an object")
    if not isinstance(data.get("artifact"), dict):
        raise ScanRefused(400, "artifact must be an object")
    registry, artifact = data["registry"], data["artifact"]
    url = registry.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ScanRefused(422, "registry.url must be an http(s) URL")
    repository, digest = artifact.get("repository"), artifact.get("digest")
    if not isinstance(repository, str) or not REPOSITORY.match(repository):
        raise ScanRefused(422, "artifact.repository is not a repository name")
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise ScanRefused(422, "artifact.digest is not a sha256 digest")
    mime = artifact.get("mime_type") or CONSUMES[1]
    if mime not in CONSUMES:
        raise ScanRefused(501, f"cannot scan artifacts of type {mime}")
    capabilities = data.get("enabled_capabilities")
    if (
        isinstance(capabilities, list)
        and capabilities
        and not any(isinstance(c, dict) and c.get("type") == "vulnerability" for c in capabilities)
    ):
        raise ScanRefused(501, "only the vulnerability capability is supported")
    authorization = registry.get("authorization") or ""
    tag = artifact.get("tag") or ""
    return ScanRequest(url.rstrip("/"), str(authorization), repository, digest, str(tag), mime)


def report_type(accept: str) -> str | None:
    """The report media type to answer with, from Accept; None when none we produce is acceptable."""
    wanted = [media_type(part) for part in accept.split(",") if part.strip()] if accept else []
    if not wanted or any(w in ("*/*", "application/*") for w in wanted):
        return REPORT_TYPES[0]
    for candidate in REPORT_TYPES:
        if media_type(candidate) in wanted:
            return candidate
    return None


def report(run: Run, section: HarborSection, repository: str, digest: str, mime_type: str) -> dict[str, Any]:
    """The vulnerability report: one finding per stage that failed or could not be checked."""
    findings = []
    for image in run.images:
        for result in image.results:
            status = result.status.value
            if status == "fail":
                findings.append(_finding(result.stage, section.failed_severity, result, image.profile))
            elif status == "error" or result.not_checked:
                findings.append(_finding(result.stage, section.unchecked_severity, result, image.profile))
        if image.error:
            findings.append(_image_finding(image.error, section.unchecked_severity, image.profile))
    if not run.images:
        findings.append(_image_finding(run.usage_error or run.verdict.value, section.unchecked_severity, ""))
    severities = [f["severity"] for f in findings] or ["Unknown"]
    return {
        "generated_at": run.finished or run.started,
        "artifact": {"repository": repository, "digest": digest, "mime_type": mime_type},
        "scanner": SCANNER,
        "severity": max(severities, key=SEVERITY_ORDER.index),
        "vulnerabilities": findings,
    }


def _finding(stage: str, severity: str, result: Any, profile: str) -> dict[str, Any]:
    return {
        "id": f"BASEIMAGE-{stage.upper()}",
        "package": stage,
        "version": profile,
        "fix_version": result.remediation or result.expected,
        "severity": severity,
        "description": result.observed or result.reason,
        "links": [],
    }


def _image_finding(error: str, severity: str, profile: str) -> dict[str, Any]:
    return {
        "id": "BASEIMAGE-IMAGE",
        "package": "image",
        "version": profile,
        "fix_version": "",
        "severity": severity,
        "description": error,
        "links": [],
    }

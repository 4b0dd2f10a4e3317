"""The in-toto Statement v1 of one image's verdict, with the test-result predicate v0.1.

Specs: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md and
https://github.com/in-toto/attestation/blob/main/spec/predicates/test-result.md (see WAVE2-FACTS.md). Consumers
match subjects by digest only and ignore unknown fields, so the subject's annotation saying which digest it is
(the registry's manifest digest, or the local image id when the image never came from a registry) is safe.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..registry import split_reference
from ..results import ImageReport, Status, Verdict

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://in-toto.io/attestation/test-result/v0.1"
TOOL = "pytest-baseimage"
DIGEST_KIND = "dev.pytest-baseimage.digest-kind"  # subject annotation: which digest the subject carries
REGISTRY_DIGEST = "registry-manifest"
IMAGE_ID = "image-id"
PROFILE_PREFIX = "profile:"  # configuration[0].name is "profile:<name>": what admission policies match on

RESULTS = {Verdict.COMPATIBLE: "PASSED", Verdict.WAIVED: "WARNED", Verdict.NOT_COMPATIBLE: "FAILED"}


class NotAttestable(ValueError):
    """The image could not be checked: there is no result to sign."""


@dataclass(frozen=True)
class Subject:
    name: str  # repo (registry digest) or the reference the user gave (image id)
    sha256: str  # hex, without "sha256:"
    kind: str  # REGISTRY_DIGEST or IMAGE_ID


def subject_of(report: ImageReport) -> Subject:
    """The registry digest when the image came from a registry (what admission controllers see), else the image
    id. The engine lists the digests of every repository an image was ever pushed to or pulled from: only the
    one of the repository the image was given by is its registry digest here."""
    repo, _, digest = report.info.digest.rpartition("@")
    if repo and digest.startswith("sha256:") and repo == split_reference(report.info.reference)[0]:
        return Subject(repo, digest.removeprefix("sha256:"), REGISTRY_DIGEST)
    image_id = report.info.image_id
    if not image_id.startswith("sha256:"):
        raise NotAttestable(f"{report.name}: the engine named no image id, so there is no digest to attest")
    return Subject(report.info.reference, image_id.removeprefix("sha256:"), IMAGE_ID)


def profile_digest(profile_data: dict[str, Any]) -> str:
    """sha256 of the merged profile as canonical JSON (sorted keys, no spaces): the exact rules applied."""
    text = json.dumps(profile_data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def statement(report: ImageReport, profile_data: dict[str, Any], url: str = "") -> dict[str, Any]:
    """The Statement for one image. NotAttestable when the verdict is "could not be checked"."""
    result = RESULTS.get(report.verdict)
    if result is None:
        raise NotAttestable(f"{report.name}: {report.verdict.value}; nothing was judged to attest")
    subject = subject_of(report)
    stages = {status: [r.stage for r in report.results if r.status is status] for status in Status}
    predicate: dict[str, Any] = {
        "result": result,
        "configuration": [
            {"name": f"{PROFILE_PREFIX}{report.profile}", "digest": {"sha256": profile_digest(profile_data)}},
            {"name": TOOL, "uri": f"pkg:pypi/{TOOL}@{__version__}", "annotations": {"version": __version__}},
        ],
        "passedTests": stages[Status.PASS],
        "warnedTests": stages[Status.WAIVED],
        "failedTests": stages[Status.FAIL] + stages[Status.BLOCKED],
    }
    if url:
        predicate["url"] = url
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": subject.name, "digest": {"sha256": subject.sha256}, "annotations": {DIGEST_KIND: subject.kind}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def profile_of(statement_data: dict[str, Any]) -> str:
    """The profile name a statement's configuration names ("" when it names none)."""
    for item in (statement_data.get("predicate") or {}).get("configuration") or []:
        name = str((item or {}).get("name") or "")
        if name.startswith(PROFILE_PREFIX):
            return name.removeprefix(PROFILE_PREFIX)
    return ""

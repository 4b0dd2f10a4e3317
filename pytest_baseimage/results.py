"""The result model: every report (JUnit, HTML, JSON) is rendered from these objects, so they cannot disagree."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .text import untrusted

# The order in which stages run for each image; a stage's prerequisites always come before it.
STAGE_ORDER: tuple[str, ...] = ("os", "conda", "python", "apt", "azureml", "scoring", "gpu")


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    BLOCKED = "blocked"  # a prerequisite stage did not pass
    SKIPPED = "skipped"  # not applicable here, with a reason (e.g. no GPU on the host)
    ERROR = "error"  # the check itself could not run: the image could not be checked

    def __str__(self) -> str:
        return self.value


@dataclass
class StageResult:
    """What one stage found for one image: expected, observed and how to fix it."""

    stage: str
    status: Status
    expected: str = ""
    observed: str = ""
    remediation: str = ""
    reason: str = ""  # why blocked / skipped / error
    duration_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # stage-specific extras (logs, timings, lists)

    def __post_init__(self) -> None:
        self.status = Status(self.status)
        self.expected = untrusted(str(self.expected))
        self.observed = untrusted(str(self.observed))
        self.reason = untrusted(str(self.reason))

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASS, Status.SKIPPED)

    def summary(self) -> str:
        """One human line, used as the pytest failure message and in terminal output."""
        if self.status is Status.PASS:
            return f"{self.stage}: ok ({self.observed})"
        if self.status in (Status.BLOCKED, Status.SKIPPED, Status.ERROR):
            return f"{self.stage}: {self.reason}"
        line = f"{self.stage}: expected {self.expected}; observed {self.observed}"
        if self.remediation:
            line += f"\n  fix: {self.remediation}"
        return line

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageResult:
        return cls(**data)


class Verdict(str, enum.Enum):
    COMPATIBLE = "compatible"
    NOT_COMPATIBLE = "not compatible"
    UNCHECKED = "could not be checked"

    def __str__(self) -> str:
        return self.value


def utc_now() -> str:
    """The current time as ISO-8601 UTC, the format every timestamp in a report uses."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def verdict_of(results: list[StageResult], image_error: str = "") -> Verdict:
    """An image is compatible when no stage failed and none errored; errors win over failures."""
    if image_error or any(r.status is Status.ERROR for r in results):
        return Verdict.UNCHECKED
    if any(r.status in (Status.FAIL, Status.BLOCKED) for r in results):
        return Verdict.NOT_COMPATIBLE
    if not results:
        return Verdict.UNCHECKED
    return Verdict.COMPATIBLE


@dataclass
class ImageInfo:
    """What the engine knows about the image itself, before any container runs."""

    reference: str
    image_id: str = ""
    digest: str = ""  # repo@sha256:... when the image came from a registry
    size_bytes: int = 0
    created: str = ""
    architecture: str = ""
    user: str = ""
    os: str = ""  # the image config's Os ("linux")
    variant: str = ""  # the image config's Variant ("v8" on arm64), often empty
    engine_platform: str = ""  # os/arch of the engine that checked it ("linux/amd64")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImageReport:
    """Everything known about one image after a run: the unit that reports, merges and baselines work on."""

    name: str  # display name (the reference, or the matrix entry's name)
    info: ImageInfo
    profile: str
    results: list[StageResult] = field(default_factory=list)
    error: str = ""  # set when the image could not be checked at all (not found, pull failed, ...)
    facts: dict[str, Any] = field(default_factory=dict)  # observed versions, for baseline diffs
    # Seconds spent before any stage could look: starting the container, probing it. Kept apart so that the
    # first stage's duration is its own check's.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        return verdict_of(self.results, self.error)

    @property
    def total_s(self) -> float:
        """The whole check of this image: setup plus every stage."""
        return sum(self.timings.values()) + sum(r.duration_s for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "info": self.info.to_dict(),
            "profile": self.profile,
            "verdict": self.verdict.value,
            "error": self.error,
            "results": [r.to_dict() for r in self.results],
            "facts": self.facts,
            "timings": self.timings,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageReport:
        return cls(
            name=data["name"],
            info=ImageInfo(**data["info"]),
            profile=data["profile"],
            results=[StageResult.from_dict(r) for r in data.get("results", [])],
            error=data.get("error", ""),
            facts=data.get("facts", {}),
            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
        )

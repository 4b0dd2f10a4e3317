"""The result model: every report (JUnit, HTML, JSON) is rendered from these objects, so they cannot disagree."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .text import one_line, untrusted


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    BLOCKED = "blocked"  # a prerequisite stage did not pass
    SKIPPED = "skipped"  # not applicable here, with a reason (e.g. no GPU on the host)
    ERROR = "error"  # the check itself could not run: the image could not be checked
    WAIVED = "waived"  # failed (or not run), and a waiver accepts that until its expiry (see waivers.py)

    def __str__(self) -> str:
        return self.value


# Why a stage was skipped: the profile does not ask for it, or it was asked for but could not be judged
# here (a server that cannot be reproduced offline, no GPU on the host). Only the second kind is shown in
# the verdict ("compatible, scoring not checked: ...") and fails a run under --require-all-stages.
NOT_REQUIRED = "not-required"
NOT_CHECKED = "not-checked"
LEFT_OUT = "not judged (every stage deselected with -k/-m)"  # an image none of whose stages ran: no verdict


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
    # For a skipped stage: NOT_REQUIRED or NOT_CHECKED. A skip that does not say is NOT_CHECKED: a stage
    # skipped for a reason nobody classified must not pass silently.
    skip_kind: str = ""
    truncated: dict[str, int] = field(default_factory=dict)  # what a bounded report cut: key -> items cut
    # The waiver that matched this stage (waivers.Waiver.describe()): its justification, owner, expiry, and a
    # message ("waiver for conda expired on 2026-01-31"). Empty when none matched.
    waiver: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = Status(self.status)
        if self.status is Status.SKIPPED and self.skip_kind != NOT_REQUIRED:
            self.skip_kind = NOT_CHECKED
        elif self.status is not Status.SKIPPED:
            self.skip_kind = ""
        self.expected = untrusted(str(self.expected))
        self.observed = untrusted(str(self.observed))
        self.reason = untrusted(str(self.reason))

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASS, Status.SKIPPED, Status.WAIVED)

    @property
    def not_checked(self) -> bool:
        """Skipped although the profile asks for it: the verdict must say so."""
        return self.status is Status.SKIPPED and self.skip_kind == NOT_CHECKED

    def summary(self) -> str:
        """The pytest failure message and terminal text. Observed text stays on its own line: CR, LF and
        other controls in it are shown escaped, so only the plugin's own "fix:" line starts a new one."""
        if self.status is Status.PASS:
            return f"{self.stage}: ok ({one_line(self.observed)})"
        if self.status in (Status.BLOCKED, Status.SKIPPED, Status.ERROR, Status.WAIVED):
            return f"{self.stage}: {one_line(self.reason)}"
        line = f"{self.stage}: expected {one_line(self.expected)}; observed {one_line(self.observed)}"
        if self.remediation:
            line += f"\n  fix: {one_line(self.remediation)}"
        if self.waiver.get("message"):
            line += f"\n  {one_line(self.waiver['message'])}"
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
    WAIVED = "compatible with waivers"  # exit 0: every failure it has is waived (see waivers.py)
    NOT_COMPATIBLE = "not compatible"
    UNCHECKED = "could not be checked"

    def __str__(self) -> str:
        return self.value


def utc_now() -> str:
    """The current time as ISO-8601 UTC, the format every timestamp in a report uses."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # a run lasts seconds


def verdict_of(results: list[StageResult], image_error: str = "", require_all: bool = False) -> Verdict:
    """An image is compatible when no stage failed and none errored; errors win over failures.

    With `require_all` (--require-all-stages), a stage the profile asks for but that could not be judged
    here makes the image "could not be checked" unless a stage already proved it not compatible.
    """
    if image_error or any(r.status is Status.ERROR for r in results):
        return Verdict.UNCHECKED
    if any(r.status in (Status.FAIL, Status.BLOCKED) for r in results):
        return Verdict.NOT_COMPATIBLE
    if not results or (require_all and any(r.not_checked for r in results)):
        return Verdict.UNCHECKED
    if any(r.status is Status.WAIVED for r in results):
        return Verdict.WAIVED
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
    require_all_stages: bool = False  # the gate's policy for not-checked stages (see verdict_of)
    deselected: list[str] = field(default_factory=list)  # stages left out by -k/-m: not judged
    truncated: dict[str, int] = field(default_factory=dict)  # what a bounded report cut: key -> items cut
    # Other shipped profiles whose static stages the same facts pass (target.also_passes): computed only for
    # an image that failed its own profile; None when not computed.
    also_passes: list[str] | None = None

    @property
    def verdict(self) -> Verdict:
        return verdict_of(self.results, self.error, self.require_all_stages)

    @property
    def not_checked(self) -> list[StageResult]:
        """Stages the profile asks for that were skipped all the same (see StageResult.not_checked)."""
        return [r for r in self.results if r.not_checked]

    def verdict_line(self) -> str:
        """The verdict in words with what it does not cover, e.g. "compatible, scoring not checked: ..."."""
        parts = [self.verdict.value]
        parts += [
            f"{r.stage} not checked: {one_line(r.reason.removeprefix('not checked: '))}" for r in self.not_checked
        ]
        if self.deselected:
            parts.append(f"not judged (deselected): {', '.join(self.deselected)}")
        return ", ".join(parts)

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
            "not_checked": [{"stage": r.stage, "reason": r.reason} for r in self.not_checked],
            "deselected": list(self.deselected),
            "require_all_stages": self.require_all_stages,
            "facts": self.facts,
            "timings": self.timings,
            "truncated": dict(self.truncated),
            **({} if self.also_passes is None else {"also_passes": list(self.also_passes)}),
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
            require_all_stages=bool(data.get("require_all_stages", False)),
            deselected=[str(stage) for stage in data.get("deselected", [])],
            truncated={str(k): int(v) for k, v in (data.get("truncated") or {}).items()},
            also_passes=None if data.get("also_passes") is None else [str(n) for n in data["also_passes"]],
        )

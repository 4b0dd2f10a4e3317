"""Facts: what the probe observed in a candidate image, gathered once and read by every stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class OsRelease:
    """The fields of /etc/os-release that the OS stage needs."""

    id: str = ""
    version_id: str = ""
    pretty_name: str = ""
    id_like: tuple[str, ...] = ()
    codename: str = ""

    def describe(self) -> str:
        return self.pretty_name or f"{self.id} {self.version_id}".strip() or "unknown"


@dataclass(frozen=True)
class CondaInfo:
    version: str = ""  # from `conda --version`, e.g. "4.5.11"
    executable: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # `conda info --json`, when it answered
    error: str = ""


@dataclass(frozen=True)
class PythonInfo:
    executable: str = ""
    version: str = ""  # "3.6.9"
    implementation: str = ""
    # What the installed distributions say they need of this Python (their Requires-Python), by normalised
    # name: the deployment stage compares a conda file's python pin with the server package's.
    requires_python: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportResult:
    module: str
    ok: bool
    error: str = ""  # the last line of the traceback, e.g. "ModuleNotFoundError: No module named 'x'"
    traceback: str = ""


@dataclass(frozen=True)
class Facts:
    """Everything the static stages read. A missing fact is None together with a note that says why."""

    os: OsRelease | None = None
    has_shell: bool = False
    running: bool = False  # the keep-alive process started: exec is possible
    user: str = ""  # the uid the image runs as
    conda: CondaInfo | None = None
    python: PythonInfo | None = None
    dpkg: dict[str, str] | None = None  # installed package -> version; None when there is no dpkg database
    pip: dict[str, str] = field(default_factory=dict)  # normalised distribution name -> version
    imports: dict[str, ImportResult] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # why a fact is missing: "python" -> "no python on PATH"
    # Why the probe's exec gave no (complete) answer, e.g. "timed out after 30 s running `python3 …`": the
    # image's fault, read by every stage that needs exec; the archive facts (os, dpkg) stand apart from it.
    probe_error: str = ""
    # Required apt packages that dpkg lists but whose files are gone: package -> the missing file.
    apt_missing: dict[str, str] = field(default_factory=dict)
    apt_checked: dict[str, tuple[str, ...]] = field(default_factory=dict)  # package -> the files looked at

    def observed_versions(self) -> dict[str, Any]:
        """A flat summary for reports and baseline diffs."""
        return {
            "os": self.os.describe() if self.os else None,
            "os_id": self.os.id if self.os else None,
            "os_version": self.os.version_id if self.os else None,
            "conda": self.conda.version if self.conda else None,
            "python": self.python.version if self.python else None,
            "user": self.user,
            "apt": dict(self.dpkg or {}),
            "pip": dict(self.pip),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def missing_reason(key: str, probe_error: str) -> str:
    """The probe's failure as the reason a fact (`conda`, `python`) is missing: a probe whose time ran out on
    another command (conda's) never reached this one, and says so rather than naming that command as its own."""
    if probe_error.startswith("timed out") and key not in probe_error.partition(" running ")[2]:
        return f"not reached: the probe {probe_error}"
    return probe_error

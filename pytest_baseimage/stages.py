"""The stages: one pure function each, Facts + Profile (+ an observation for live stages) -> StageResult.

Stages never talk to Docker. Which stages exist, their order and their prerequisites are declared in one
place, composition.py; this module holds the static stages' checks and the `Stage` record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from .facts import Facts, missing_reason
from .profiles import Profile, describe_specs, version_matches
from .results import NOT_REQUIRED, StageResult, Status

Check = Callable[[Facts, Profile, Any], StageResult]


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    prerequisites: tuple[str, ...]
    check: Check
    # Live stages (scoring, gpu) observe a running process first; the runner calls this, never the check.
    observe: Callable[[Any], Any] | None = None
    # True when `observe` reads no facts: the runner may then start it early, beside the probe, so that a
    # server boots while the static stages run. Its result is used only if the prerequisites pass.
    early: bool = False
    # What the profile alone decides (not required, not reproducible): the runner asks before looking at
    # prerequisites, so a stage the profile does not ask for reads "skipped", never "blocked".
    skip: Callable[[Profile], StageResult | None] | None = None
    # What the stage needs the probe to ask for this profile (imports to try, apt packages whose files to
    # list): a probe.ProbeRequest. The probe runs once, with what every stage of the composition needs.
    needs: Callable[[Profile], Any] | None = None
    # What the stage can begin once the image is resolved, before anything asks for it (the scoring server's
    # network, made while pytest collects): given the image's check, it must not raise.
    warm: Callable[[Any], None] | None = None


def not_required(stage: str, profile: Profile) -> StageResult:
    reason = f"not required by profile {profile.name}"
    return StageResult(stage, Status.SKIPPED, reason=reason, skip_kind=NOT_REQUIRED)


def _missing(facts: Facts, key: str) -> str:
    """Why a fact that needs exec is missing: its own note, else the probe's failure, else plainly absent."""
    return facts.notes.get(key) or missing_reason(key, facts.probe_error) or f"no {key}"


# Why a candidate could not start any process, as the engine's start faults say it (engine_reap._IMAGE_START_FAULTS),
# and what fixes that: installing conda or Python into an image that cannot run a program helps nothing.
START_FIXES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"USER (\S+) does not exist"),
        "Create the user in the image (`RUN useradd --create-home {0}`) before `USER {0}`, or set USER to one that "
        "exists (`USER root`, or a uid such as `USER 1000`).",
    ),
    (
        re.compile(r"names group (\S+), which does not exist"),
        "Create the group in the image (`RUN groupadd {0}`) before the USER line, or name a group that exists.",
    ),
    (
        re.compile(r"built for another CPU|exec format error"),
        "Rebuild the image for linux/amd64 (`docker build --platform linux/amd64 …`, or `docker buildx build "
        "--platform linux/amd64`); Azure ML runs amd64 machines.",
    ),
)


def start_fix(reason: str) -> str:
    """The fix for a start failure the image caused (an unknown USER, a foreign CPU); "" for any other reason."""
    for pattern, fix in START_FIXES:
        match = pattern.search(reason)
        if match:
            return fix.format(*match.groups())
    return ""


def _fix(facts: Facts, key: str, fix: str) -> str:
    """The remediation for a fact that needs exec: the start failure's own when no process could start in the
    candidate (then the profile's fix, e.g. "install Miniconda", addresses the wrong cause), else `fix`."""
    if facts.running:
        return fix
    return start_fix(facts.notes.get(key, "")) or fix


def check_os(facts: Facts, profile: Profile, _: Any = None) -> StageResult:
    rules = profile.os_rules()
    if not rules:
        return not_required("os", profile)
    expected = " or ".join(rule.describe() for rule in rules)
    fix = profile.remediation("os")
    if facts.os is None:
        return StageResult("os", Status.FAIL, expected, facts.notes.get("os", "no os-release"), fix)
    observed = f"{facts.os.describe()} (ID={facts.os.id}, VERSION_ID={facts.os.version_id or 'unset'})"
    for rule in rules:
        if rule.id == facts.os.id and version_matches(facts.os.version_id, rule.version):
            return StageResult("os", Status.PASS, expected, observed)
    return StageResult("os", Status.FAIL, expected, observed, fix)


def check_conda(facts: Facts, profile: Profile, _: Any = None) -> StageResult:
    section = profile.section("conda")
    if not section or not section.get("required", True):
        return not_required("conda", profile)
    specs = profile.specs("conda")
    expected = f"conda {describe_specs(specs)}"
    fix = profile.remediation("conda")
    if facts.conda is None:
        return StageResult("conda", Status.FAIL, expected, _missing(facts, "conda"), _fix(facts, "conda", fix))
    if not facts.conda.version:
        return StageResult("conda", Status.FAIL, expected, facts.conda.error or "version unknown", fix)
    observed = f"conda {facts.conda.version} at {facts.conda.executable}"
    status = Status.PASS if version_matches(facts.conda.version, specs) else Status.FAIL
    return StageResult("conda", status, expected, observed, "" if status is Status.PASS else fix)


def check_python(facts: Facts, profile: Profile, _: Any = None) -> StageResult:
    if profile.section("python") is None:
        return not_required("python", profile)
    specs = profile.specs("python")
    expected = f"Python {describe_specs(specs)}"
    fix = profile.remediation("python")
    if facts.python is None or not facts.python.version:
        return StageResult("python", Status.FAIL, expected, _missing(facts, "python"), _fix(facts, "python", fix))
    observed = f"Python {facts.python.version} at {facts.python.executable}"
    status = Status.PASS if version_matches(facts.python.version, specs) else Status.FAIL
    return StageResult("python", status, expected, observed, "" if status is Status.PASS else fix)


def section_required(stage: str) -> Callable[[Profile], StageResult | None]:
    """The skip rule of a stage that runs exactly when the profile has a non-empty [stage] table."""

    def skip(profile: Profile) -> StageResult | None:
        return None if profile.section(stage) else not_required(stage, profile)

    return skip


skip_apt = section_required("apt")
skip_azureml = section_required("azureml")


def check_apt(facts: Facts, profile: Profile, _: Any = None) -> StageResult:
    skipped = skip_apt(profile)
    if skipped is not None:
        return skipped
    section = profile.section("apt") or {}
    required = [str(p) for p in section.get("required", [])]
    groups = [[str(p) for p in group] for group in section.get("any_of", [])]
    expected = ", ".join(required + [" or ".join(group) for group in groups])
    if facts.dpkg is None:
        return StageResult(
            "apt",
            Status.FAIL,
            expected,
            facts.notes.get("dpkg", "no dpkg database"),
            "Use a Debian or Ubuntu based image: the inferencing stack is installed with apt.",
        )
    installed = facts.dpkg
    missing = [name for name in required if name not in installed]
    missing += [" or ".join(group) for group in groups if not any(name in installed for name in group)]
    present = {name: installed[name] for name in required if name in installed}
    for group in groups:
        present.update({name: installed[name] for name in group if name in installed})
    observed_present = ", ".join(f"{name} {version}" for name, version in present.items())
    details: dict[str, Any] = {"missing": missing, "present": present} if missing else {"present": present}
    gone = {name: path for name, path in facts.apt_missing.items() if name in present}
    if gone and not missing:
        observed = "; ".join(f"{name} is listed as installed, but {path} is missing" for name, path in gone.items())
        details = {"present": present, "files_missing": gone, "files_checked": dict(facts.apt_checked)}
        fix = f"Reinstall {' '.join(gone)} (`apt-get install --reinstall`); do not delete package files to slim it."
        return StageResult("apt", Status.FAIL, expected, observed, fix, details=details)
    if missing:
        fix = profile.remediation("apt").replace("<missing packages>", " ".join(m.split(" or ")[0] for m in missing))
        observed = f"missing: {', '.join(missing)}" + (f"; present: {observed_present}" if present else "")
        return StageResult("apt", Status.FAIL, expected, observed, fix, details=details)
    return StageResult("apt", Status.PASS, expected, f"all present: {observed_present}", details=details)


def check_azureml(facts: Facts, profile: Profile, _: Any = None) -> StageResult:
    skipped = skip_azureml(profile)
    if skipped is not None:
        return skipped
    section = profile.section("azureml") or {}
    packages = profile.packages("azureml", "packages")
    imports = [str(m) for m in section.get("imports", [])]
    expected = ", ".join(
        [f"{name} {describe_specs(specs)}" for name, specs in packages.items()]
        + [f"`import {m}` works" for m in imports]
    )
    fix = profile.remediation("azureml")
    problems: list[str] = []
    seen: list[str] = []
    for name, specs in packages.items():
        version = facts.pip.get(canonicalize_name(name))
        if version is None:
            problems.append(f"{name} is not installed")
        elif not version_matches(version, specs):
            problems.append(f"{name} {version} does not satisfy {describe_specs(specs)}")
        else:
            seen.append(f"{name} {version}")
    details: dict[str, Any] = {}
    for module in imports:
        result = facts.imports.get(module)
        if result is None:
            problems.append(f"`import {module}` was not attempted")
        elif not result.ok:
            problems.append(f"`import {module}` failed: {result.error}")
            details[f"traceback ({module})"] = result.traceback
        else:
            seen.append(f"import {module} ok")
    if facts.python is None:
        problems.insert(0, _missing(facts, "python"))
        fix = _fix(facts, "python", fix)
    if problems:
        return StageResult("azureml", Status.FAIL, expected, "; ".join(problems), fix, details=details)
    return StageResult("azureml", Status.PASS, expected, ", ".join(seen), details=details)

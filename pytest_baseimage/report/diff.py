"""Baseline comparison: what changed between an old run and this one, image by image (matched by name)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pytest_baseimage.composition import STAGE_ORDER
from pytest_baseimage.report.model import Run
from pytest_baseimage.results import ImageReport

ABSENT = "—"  # shown for a stage or version that one side does not have


@dataclass(frozen=True)
class StatusChange:
    stage: str
    old: str  # a status value, or ABSENT
    new: str


@dataclass(frozen=True)
class FactChange:
    """One observed version that differs. ``group`` is the top-level fact ('python', 'pip', 'apt', ...);
    ``name`` the package inside a nested group, empty for a scalar fact."""

    group: str
    name: str
    kind: str  # added | removed | changed
    old: str
    new: str


@dataclass
class ImageDiff:
    name: str
    presence: str = "both"  # both | new (not in the baseline) | gone (only in the baseline)
    old_verdict: str = ""
    new_verdict: str = ""
    statuses: list[StatusChange] = field(default_factory=list)
    facts: list[FactChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.presence != "both" or bool(self.statuses or self.facts) or self.old_verdict != self.new_verdict


def diff_runs(baseline: Run, current: Run) -> list[ImageDiff]:
    """Every image of either run, in the current run's order, then the ones only the baseline had."""
    old_by_name = {image.name: image for image in baseline.images}
    new_names = {image.name for image in current.images}
    diffs = []
    for image in current.images:
        old = old_by_name.get(image.name)
        if old is None:
            diffs.append(ImageDiff(image.name, "new", new_verdict=image.verdict.value))
        else:
            diffs.append(diff_images(old, image))
    for image in baseline.images:
        if image.name not in new_names:
            diffs.append(ImageDiff(image.name, "gone", old_verdict=image.verdict.value))
    return diffs


def diff_images(old: ImageReport, new: ImageReport) -> ImageDiff:
    return ImageDiff(
        name=new.name,
        old_verdict=old.verdict.value,
        new_verdict=new.verdict.value,
        statuses=diff_statuses(old, new),
        facts=diff_facts(old.facts, new.facts),
    )


def diff_statuses(old: ImageReport, new: ImageReport) -> list[StatusChange]:
    """Stages whose status differs, in stage order; a stage only one side ran counts as a change."""
    before = {r.stage: r.status.value for r in old.results}
    after = {r.stage: r.status.value for r in new.results}
    changes = []
    for stage in _ordered_stages(before, after):
        was, now = before.get(stage, ABSENT), after.get(stage, ABSENT)
        if was != now:
            changes.append(StatusChange(stage, was, now))
    return changes


def diff_facts(old: dict[str, Any], new: dict[str, Any]) -> list[FactChange]:
    """Added, removed and changed versions. A nested dict (``apt``, ``pip``: package -> version) is compared
    package by package; anything else is compared as a whole value."""
    old, new = _present(old), _present(new)
    changes: list[FactChange] = []
    for group in _ordered_keys(old, new):
        was, now = old.get(group), new.get(group)
        if isinstance(was, dict) or isinstance(now, dict):
            was_map = _present(was) if isinstance(was, dict) else {}
            now_map = _present(now) if isinstance(now, dict) else {}
            for name in _ordered_keys(was_map, now_map):
                had, has = name in was_map, name in now_map
                change = _fact_change(group, str(name), had, was_map.get(name), has, now_map.get(name))
                if change:
                    changes.append(change)
        else:
            change = _fact_change(group, "", group in old, was, group in new, now)
            if change:
                changes.append(change)
    return changes


def _present(facts: dict[Any, Any]) -> dict[Any, Any]:
    """The probe records a fact it could not observe as None: that is absence, not a version called 'null'."""
    return {key: value for key, value in facts.items() if value is not None}


def _fact_change(group: str, name: str, had: bool, was: Any, has: bool, now: Any) -> FactChange | None:
    if had and not has:
        return FactChange(group, name, "removed", _text(was), ABSENT)
    if has and not had:
        return FactChange(group, name, "added", ABSENT, _text(now))
    if _text(was) != _text(now):
        return FactChange(group, name, "changed", _text(was), _text(now))
    return None


def _text(value: Any) -> str:
    """A version as one comparable string: nested values as sorted JSON, so key order does not count."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _ordered_stages(*maps: dict[str, Any]) -> list[str]:
    names = {name for m in maps for name in m}
    known = [s for s in STAGE_ORDER if s in names]
    return known + sorted(names - set(STAGE_ORDER))


def _ordered_keys(old: dict[Any, Any], new: dict[Any, Any]) -> list[Any]:
    """The keys of both, sorted by their text so the output is stable whatever the insertion order."""
    return sorted(set(old) | set(new), key=str)

"""A run: the images checked by one pytest session (or several, merged), and its JSON form."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Union

from pytest_baseimage.errors import BaseImageError, ExitCode
from pytest_baseimage.report.bounds import bounded_image
from pytest_baseimage.report.safety import clean_tree
from pytest_baseimage.results import ImageInfo, ImageReport, Verdict

SCHEMA_VERSION = 1
NOTHING_SELECTED = 5  # pytest's own exit status when no test was selected
USAGE_ERROR_VERDICT = "usage error"  # the run's verdict when bad input stopped it before anything started

PathLike = Union[str, "os.PathLike[str]"]

# Worst first: a run is as bad as its worst image.
_SEVERITY = (Verdict.UNCHECKED, Verdict.NOT_COMPATIBLE, Verdict.WAIVED, Verdict.COMPATIBLE)
_EXIT_CODES = {
    Verdict.COMPATIBLE: ExitCode.COMPATIBLE,
    Verdict.WAIVED: ExitCode.COMPATIBLE,
    Verdict.NOT_COMPATIBLE: ExitCode.NOT_COMPATIBLE,
    Verdict.UNCHECKED: ExitCode.UNCHECKED,
}


class ReportError(BaseImageError, ValueError):
    """A report file cannot be used (missing, malformed, another schema version): a one-line user error."""

    exit_code = ExitCode.USAGE_ERROR


def parse_time(stamp: str) -> datetime | None:
    """Read an ISO-8601 timestamp, a trailing Z too (3.9's fromisoformat refuses it); None if unreadable."""
    try:
        parsed = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def worst_verdict(verdicts: Sequence[Verdict]) -> Verdict:
    """Could not be checked beats not compatible beats compatible; nothing checked is not a pass."""
    for verdict in _SEVERITY:
        if verdict in verdicts:
            return verdict
    return Verdict.UNCHECKED


@dataclass
class Run:
    """One session's images, with where and when it ran: the unit that is written, merged and compared."""

    images: list[ImageReport] = field(default_factory=list)
    plugin_version: str = ""
    started: str = ""  # ISO-8601 UTC
    finished: str = ""  # ISO-8601 UTC
    host: str = ""  # the Docker engine, e.g. unix:///var/run/docker.sock
    argv: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what a merge decided (duplicates dropped, ...)
    interrupted: bool = False  # Ctrl-C or SIGTERM: the verdict holds only what was known by then
    nothing_selected: bool = False  # -k/-m (or no image) left nothing to run: pytest's exit 5
    # Seconds the run(s) took: set by a merge (the sum of its runs, not the gap between them); else None,
    # and duration_s comes from started/finished.
    elapsed_s: float | None = None
    # Bad input found before anything started (exit 4): the one line the user saw; no image was looked at.
    usage_error: str = ""
    images_given: list[str] = field(default_factory=list)  # on a usage error: the images the command line named
    # Images named, none of whose stages ran because -k/-m left every one out: not judged, so no verdict.
    deselected_images: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        if self.interrupted or self.nothing_selected:
            return Verdict.UNCHECKED
        return worst_verdict([image.verdict for image in self.images])

    @property
    def exit_code(self) -> int:
        if self.usage_error:
            return int(ExitCode.USAGE_ERROR)
        if self.nothing_selected:
            return NOTHING_SELECTED
        return int(_EXIT_CODES[self.verdict])

    @property
    def duration_s(self) -> float | None:
        if self.elapsed_s is not None:
            return self.elapsed_s
        start, end = parse_time(self.started), parse_time(self.finished)
        if start is None or end is None:
            return None
        return max((end - start).total_seconds(), 0.0)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "schema_version": SCHEMA_VERSION,
            "plugin_version": self.plugin_version,
            "started": self.started,
            "finished": self.finished,
            "host": self.host,
            "argv": list(self.argv),
            "verdict": self.verdict.value,
            "exit_code": int(self.exit_code),
            "notes": list(self.notes),
            "interrupted": self.interrupted,
            "nothing_selected": self.nothing_selected,
            "duration_s": self.duration_s,
            "images": [image.to_dict() for image in self.images],
            "deselected_images": list(self.deselected_images),
        }
        if self.usage_error:
            data.update(verdict=USAGE_ERROR_VERDICT, error=self.usage_error, images_given=list(self.images_given))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        """Build a run from its JSON form; the verdicts in it are recomputed, never trusted."""
        if not isinstance(data, dict):
            raise ReportError("not a baseimage report: the top level is not a JSON object")
        version = data.get("schema_version")
        if version is None:
            raise ReportError("not a baseimage report: no schema_version")
        if version != SCHEMA_VERSION:
            raise ReportError(f"unsupported schema_version {version!r} (this version reads {SCHEMA_VERSION})")
        try:
            return cls(
                images=[ImageReport.from_dict(image) for image in data["images"]],
                plugin_version=str(data.get("plugin_version", "")),
                started=str(data.get("started", "")),
                finished=str(data.get("finished", "")),
                host=str(data.get("host", "")),
                argv=[str(arg) for arg in data.get("argv", [])],
                notes=[str(note) for note in data.get("notes", [])],
                interrupted=bool(data.get("interrupted", False)),
                nothing_selected=bool(data.get("nothing_selected", False)),
                elapsed_s=_seconds_or_none(data.get("duration_s")),
                usage_error=str(data.get("error", "")),
                images_given=[str(name) for name in data.get("images_given", [])],
                deselected_images=[str(name) for name in data.get("deselected_images", [])],
            )
        except KeyError as exc:
            raise ReportError(f"malformed report: missing key {exc}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise ReportError(f"malformed report: {_first_line(exc)}") from exc


def _seconds_or_none(value: Any) -> float | None:
    return None if value is None else max(float(value), 0.0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sanitized(run: Run, secrets: Sequence[str] = ()) -> Run:
    """A copy of the run with every string stripped of terminal escapes and the secrets redacted."""
    return Run.from_dict(clean_tree(run.to_dict(), secrets))


def write_json(run: Run, path: PathLike, *, secrets: Sequence[str] = ()) -> None:
    """Write the run as JSON (schema.json describes it); strings are sanitised, secrets redacted, and each
    stage's details and each facts map cut to a bound (report/bounds.py), saying what was cut."""
    run = dataclasses.replace(run, images=[bounded_image(image) for image in run.images])
    text = json.dumps(sanitized(run, secrets).to_dict(), indent=2, ensure_ascii=False)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def load_json(path: PathLike) -> Run:
    """Read a run written by :func:`write_json`; any problem is one :class:`ReportError` naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ReportError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not valid JSON: {_first_line(exc)}") from exc
    try:
        return Run.from_dict(data)
    except ReportError as exc:
        raise ReportError(f"{path}: {exc}") from exc


def merge(runs: Sequence[Run]) -> Run:
    """One run out of several (a CI matrix fan-out). Images keep the order of the runs given; when an
    image name appears in more than one run, the run that started last wins (the later one given, on a
    tie), and a note says so. The merged run spans the earliest start to the latest finish; its duration is
    the sum of the runs' durations."""
    if not runs:
        raise ReportError("nothing to merge: no runs given")
    newest = _newest_run_per_image(runs)
    counts = Counter(image.name for run in runs for image in run.images)
    notes = [note for run in runs for note in run.notes]
    images: list[ImageReport] = []
    seen: set[str] = set()
    for run in runs:
        for image in run.images:
            if image.name in seen:
                continue
            seen.add(image.name)
            winner = newest[image.name]
            images.append(copy.deepcopy(_image_named(runs[winner], image.name)))  # the inputs stay untouched
            if counts[image.name] > 1:
                notes.append(
                    f"image {image.name!r} appears {counts[image.name]} times; kept the one from run "
                    f"{winner + 1} of {len(runs)} (started {runs[winner].started or 'unknown'})"
                )
    for index, run in enumerate(runs):
        images += _unchecked_by_usage_error(run, index, len(runs), seen)
    if len(runs) > 1:
        notes.append(f"merged from {len(runs)} runs")
    return Run(
        images=images,
        plugin_version=_joined(run.plugin_version for run in runs),
        started=_extreme_time([run.started for run in runs], latest=False),
        finished=_extreme_time([run.finished for run in runs], latest=True),
        host=_joined(run.host for run in runs),
        argv=list(runs[0].argv) if all(run.argv == runs[0].argv for run in runs) else [],
        notes=notes,
        interrupted=any(run.interrupted for run in runs),
        deselected_images=sorted({name for run in runs for name in run.deselected_images} - seen),
        nothing_selected=all(run.nothing_selected for run in runs),
        elapsed_s=_total_duration(runs),
    )


def _unchecked_by_usage_error(run: Run, index: int, total: int, seen: set[str]) -> list[ImageReport]:
    """A run that stopped on bad input (exit 4) checked none of the images it named: each is "could not be
    checked" in the merge, never left out (a fan-out whose one job had a typo must not read as green)."""
    if not run.usage_error:
        return []
    why = f"not checked: run {index + 1} of {total} stopped on bad input: {run.usage_error}"
    names = [name for name in run.images_given if name not in seen] or (
        [] if run.images_given else [f"(run {index + 1} of {total}: no image named)"]
    )
    seen.update(names)
    return [ImageReport(name, ImageInfo(reference=name), "", error=why) for name in names]


def _total_duration(runs: Sequence[Run]) -> float | None:
    """The runs' own durations added up: a fan-out's runs may start far apart, and the gap is no one's time."""
    durations = [run.duration_s for run in runs]
    return None if any(d is None for d in durations) else sum(d for d in durations if d is not None)


def _newest_run_per_image(runs: Sequence[Run]) -> dict[str, int]:
    """For each image name, the index of the run that started last (ties go to the later index)."""
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    newest: dict[str, int] = {}
    for index, run in enumerate(runs):
        started = parse_time(run.started) or epoch
        for image in run.images:
            best = newest.get(image.name)
            if best is None or started >= (parse_time(runs[best].started) or epoch):
                newest[image.name] = index
    return newest


def _image_named(run: Run, name: str) -> ImageReport:
    """The last image of that name in the run (a run should not hold two, but a later entry wins)."""
    return [image for image in run.images if image.name == name][-1]


def _joined(values: Any) -> str:
    """Distinct non-empty values in first-seen order, comma-separated."""
    distinct: list[str] = []
    for value in values:
        if value and value not in distinct:
            distinct.append(value)
    return ", ".join(distinct)


def _extreme_time(stamps: list[str], *, latest: bool) -> str:
    """The earliest or latest readable timestamp, returned as it was written."""
    readable = [(parse_time(s), s) for s in stamps if parse_time(s) is not None]
    if not readable:
        return next((s for s in stamps if s), "")
    pick = max if latest else min
    return pick(readable, key=lambda pair: pair[0])[1]

"""The HTML report: one self-contained file (inline CSS, no script, no network) rendered from a Run.

The template only lays out; this module decides what is shown and makes every value safe first: terminal
escapes stripped, secrets redacted, long values cut. Jinja2's autoescape then makes the text inert.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from pytest_baseimage.composition import STAGE_ORDER
from pytest_baseimage.report.diff import ImageDiff, diff_runs
from pytest_baseimage.report.model import PathLike, Run, sanitized
from pytest_baseimage.report.safety import short as _short
from pytest_baseimage.report.safety import tail
from pytest_baseimage.results import LEFT_OUT, ImageReport, StageResult, Verdict
from pytest_baseimage.text import MAX_OBSERVED_CHARS, inert_lines, one_line

if TYPE_CHECKING:
    import jinja2
    import markupsafe

GLYPHS = {"pass": "✔", "fail": "✘", "blocked": "⊘", "skipped": "↷", "error": "⚠", "waived": "⚑"}
VERDICT_CLASS = {
    Verdict.COMPATIBLE: "verdict-compatible",
    Verdict.WAIVED: "verdict-waived",
    Verdict.NOT_COMPATIBLE: "verdict-not-compatible",
    Verdict.UNCHECKED: "verdict-unchecked",
}
NAME_CHARS = 300  # image names, references, ids: long enough for any real one
INLINE_CHARS = 160  # a details value up to this long, on one line, is shown inline; longer ones fold
MAX_ROWS = 2000  # rows of a facts or diff table: an image may list thousands of packages
LONG_DIFF = 30  # more changes than this and an image's diff starts folded


def short(text: Any, limit: int) -> str:
    """One line of observed text, cut: CR, LF and other controls shown escaped, as in the terminal."""
    return _short(one_line(str(text)), limit)


@dataclass
class Detail:
    key: str
    text: str
    folded: bool  # shown in a <details><pre> rather than inline
    summary: str = ""

    @property
    def label(self) -> str:
        return detail_label(self.key)


@dataclass
class StageRow:
    stage: str
    anchor: str
    status: str
    glyph: str
    reason: str
    expected: str
    observed: str
    remediation: str
    time: str
    details: list[Detail]
    waiver: str = ""  # the waiver's justification, owner and expiry (or its expiry message)


@dataclass
class Cell:
    stage: str
    status: str  # a status value, or "none" when the stage did not run
    glyph: str
    href: str


@dataclass
class FactGroup:
    name: str
    rows: list[tuple[str, str]]
    cut: int = 0


@dataclass
class ImageView:
    index: int
    anchor: str
    name: str
    verdict: str
    verdict_class: str
    error: str
    meta: list[tuple[str, str]]
    rows: list[StageRow]
    cells: list[Cell]
    scalar_facts: list[tuple[str, str]]
    fact_groups: list[FactGroup]
    counts: dict[str, int] = field(default_factory=dict)
    not_checked: list[tuple[str, str]] = field(default_factory=list)  # (stage, reason): not in the verdict
    deselected: list[str] = field(default_factory=list)


def render_html(run: Run, baseline: Run | None = None, *, secrets: Sequence[str] = ()) -> str:
    """The report as one HTML document. ``secrets`` (e.g. a registry password) are replaced by ``***``."""
    run = sanitized(run, secrets)
    baseline = sanitized(baseline, secrets) if baseline is not None else None
    images = [_image_view(index, image, run) for index, image in enumerate(run.images)]
    return _template().render(
        run=_run_view(run),
        images=images,
        stages=_matrix_stages(run),
        baseline=_baseline_view(baseline, run) if baseline is not None else None,
        css=_asset("report.css"),
    )


def write_html(run: Run, path: PathLike, baseline: Run | None = None, *, secrets: Sequence[str] = ()) -> None:
    """Render the report and write it as UTF-8."""
    text = render_html(run, baseline, secrets=secrets)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


@cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@cache
def _template() -> jinja2.Template:
    import jinja2  # late: ~20 ms at every start, needed only by a run that writes HTML

    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["code_spans"] = code_spans
    return env.from_string(_asset("report.html"))


def _left_out(run: Run) -> list[str]:
    names = ", ".join(run.deselected_images)
    return [f"{LEFT_OUT}: {names}"] if names else []


_CODE_SPAN = re.compile(r"`([^`\n]+)`")


def code_spans(text: Any) -> markupsafe.Markup:
    """Markdown's `code` spans (remediation texts use them) as <code>, after escaping: nothing else is markup."""
    import markupsafe

    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(_CODE_SPAN.sub(r"<code>\1</code>", escaped))


# Detail keys as people read them; any other key ending in _s is seconds too.
DETAIL_LABELS = {
    "boot_s": "boot time (s)",
    "create_to_score_s": "create to first score (s)",
    "score_latency_s": "score latency (s)",
    "score_body": "score response body",
    "server_version": "server version",
}


def detail_label(key: str) -> str:
    if key in DETAIL_LABELS:
        return DETAIL_LABELS[key]
    if key.endswith("_s"):
        return f"{key[:-2].replace('_', ' ')} (s)"
    return key.replace("_", " ")


def _run_view(run: Run) -> dict[str, Any]:
    verdicts = [image.verdict for image in run.images]
    return {
        "verdict": run.verdict.value,
        "plugin_version": run.plugin_version,
        "verdict_class": VERDICT_CLASS[run.verdict],
        "exit_code": int(run.exit_code),
        "counts": [(v.value, VERDICT_CLASS[v], verdicts.count(v)) for v in Verdict if verdicts.count(v)],
        "meta": _pairs(
            ("plugin version", run.plugin_version),
            ("started", run.started),
            ("finished", run.finished),
            ("duration", _seconds(run.duration_s) if run.duration_s is not None else ""),
            ("docker host", run.host),
            ("command", " ".join(run.argv)),
        ),
        "notes": [short(note, MAX_OBSERVED_CHARS) for note in [*run.notes, *_left_out(run)]],
        "interrupted": run.interrupted,
    }


def _image_view(index: int, image: ImageReport, run: Run) -> ImageView:
    anchor = f"img-{index}"
    by_stage = {r.stage: r for r in image.results}
    rows = [_stage_row(anchor, r) for r in _ordered_results(image.results)]
    cells = []
    for stage in _matrix_stages(run):
        result = by_stage.get(stage)
        if result is None:
            cells.append(Cell(stage, "none", "—", ""))
        else:
            cells.append(Cell(stage, result.status.value, GLYPHS[result.status.value], f"#{anchor}-{_slug(stage)}"))
    info = image.info
    timings = image.timings
    scalar_facts, fact_groups = _facts_view(image.facts)
    return ImageView(
        index=index,
        anchor=anchor,
        name=short(image.name, NAME_CHARS),
        verdict=image.verdict.value,
        verdict_class=VERDICT_CLASS[image.verdict],
        error=short(image.error, MAX_OBSERVED_CHARS),
        meta=_pairs(
            ("image", short(info.reference, NAME_CHARS)),
            ("image id", short(info.image_id, NAME_CHARS)),
            ("digest", short(info.digest, NAME_CHARS)),
            ("size", human_size(info.size_bytes) if info.size_bytes else ""),
            ("created", short(info.created, NAME_CHARS)),
            ("architecture", short(info.architecture, NAME_CHARS)),
            ("user", short(info.user, NAME_CHARS)),
            ("OS", short(_os_text(image.facts.get("os")), NAME_CHARS)),
            ("profile", short(image.profile, NAME_CHARS)),
            ("plugin version", run.plugin_version),
            ("container start", _seconds(timings["container_start_s"]) if "container_start_s" in timings else ""),
            ("probe", _seconds(timings["probe_s"]) if "probe_s" in timings else ""),
            ("checked in", _seconds(image.total_s) if image.results else ""),
        ),
        rows=rows,
        cells=cells,
        scalar_facts=scalar_facts,
        fact_groups=fact_groups,
        counts={s: sum(1 for r in image.results if r.status.value == s) for s in GLYPHS},
        not_checked=[
            (r.stage, short(r.reason.removeprefix("not checked: "), MAX_OBSERVED_CHARS)) for r in image.not_checked
        ],
        deselected=[short(stage, NAME_CHARS) for stage in image.deselected],
    )


def _stage_row(anchor: str, result: StageResult) -> StageRow:
    status = result.status.value
    return StageRow(
        stage=short(result.stage, NAME_CHARS),
        anchor=f"{anchor}-{_slug(result.stage)}",
        status=status,
        glyph=GLYPHS[status],
        reason=short(result.reason, MAX_OBSERVED_CHARS),
        expected=short(result.expected, MAX_OBSERVED_CHARS),
        observed=short(result.observed, MAX_OBSERVED_CHARS),
        remediation=short(result.remediation, MAX_OBSERVED_CHARS),
        time=_seconds(result.duration_s) if result.duration_s >= 0.0005 else "< 1 ms",
        details=[_detail(str(key), value) for key, value in result.details.items()],
        waiver=short(_waiver_text(result.waiver), MAX_OBSERVED_CHARS),
    )


def _waiver_text(waiver: dict[str, Any]) -> str:
    """The waiver shown under a stage's status: why, by whom, until when, and any expiry warning."""
    if not waiver:
        return ""
    owner = f", owner {waiver['owner']}" if waiver.get("owner") else ""
    text = f"waiver: {waiver.get('justification', '')} (until {waiver.get('expires', '')}{owner})"
    return f"{text}. {waiver['message']}" if waiver.get("message") else text


def _detail(key: str, value: Any) -> Detail:
    """Any details value, generically: short text inline, long text (logs, tracebacks) folded and cut
    to its last lines, lists and dicts as indented JSON, folded and cut to their first characters."""
    key = short(key, NAME_CHARS)
    if isinstance(value, str):
        if len(value) <= INLINE_CHARS and "\n" not in value:
            return Detail(key, one_line(value), folded=False)
        lines = value.count("\n") + 1
        return Detail(key, inert_lines(tail(value)), folded=True, summary=f"{lines} line{'s' * (lines != 1)}")
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
        size = f"{len(value)} item{'s' * (len(value) != 1)}"
        if len(text) <= INLINE_CHARS:
            return Detail(key, one_line(json.dumps(value, ensure_ascii=False, default=str)), folded=False)
        return Detail(key, inert_lines(_short(text, 20_000)), folded=True, summary=size)
    return Detail(key, short(value, INLINE_CHARS), folded=False)


def _facts_view(facts: dict[str, Any]) -> tuple[list[tuple[str, str]], list[FactGroup]]:
    """Scalar facts as one table; each nested dict (apt, pip) as a table of its own, cut to MAX_ROWS."""
    scalars, groups = [], []
    for key in sorted(facts, key=str):
        value = facts[key]
        if isinstance(value, dict):
            items = sorted(value.items(), key=lambda kv: str(kv[0]))
            rows = [(short(k, NAME_CHARS), short(_plain(v), NAME_CHARS)) for k, v in items[:MAX_ROWS]]
            groups.append(FactGroup(short(key, NAME_CHARS), rows, max(len(items) - MAX_ROWS, 0)))
        else:
            shown = "—" if value is None else short(_plain(value), MAX_OBSERVED_CHARS)  # None: not observed
            scalars.append((short(key, NAME_CHARS), shown))
    return scalars, groups


def _baseline_view(baseline: Run, run: Run) -> dict[str, Any]:
    diffs = diff_runs(baseline, run)
    return {
        "started": baseline.started,
        "plugin_version": baseline.plugin_version,
        "changed": [_diff_view(d) for d in diffs if d.changed],
        "unchanged": [short(d.name, NAME_CHARS) for d in diffs if not d.changed],
    }


def _diff_view(diff: ImageDiff) -> dict[str, Any]:
    kinds = [c.kind for c in diff.facts]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("added", "removed", "changed") if kinds.count(k))
    return {
        "name": short(diff.name, NAME_CHARS),
        "presence": diff.presence,
        "old_verdict": diff.old_verdict,
        "new_verdict": diff.new_verdict,
        "statuses": diff.statuses,
        "facts": [
            {
                "group": short(c.group, NAME_CHARS),
                "name": short(c.name, NAME_CHARS),
                "kind": c.kind,
                "old": short(c.old, NAME_CHARS),
                "new": short(c.new, NAME_CHARS),
            }
            for c in diff.facts[:MAX_ROWS]
        ],
        "facts_cut": max(len(diff.facts) - MAX_ROWS, 0),
        "facts_summary": counts,
        "facts_open": len(diff.facts) <= LONG_DIFF,
    }


def _ordered_results(results: list[StageResult]) -> list[StageResult]:
    """Stages in STAGE_ORDER; a stage the order does not know goes last, keeping its place among those."""
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    return sorted(results, key=lambda r: rank.get(r.stage, len(STAGE_ORDER)))


def _matrix_stages(run: Run) -> list[str]:
    """The matrix columns: every known stage, then any other stage some image reported."""
    extra = []
    for image in run.images:
        for result in image.results:
            if result.stage not in STAGE_ORDER and result.stage not in extra:
                extra.append(result.stage)
    return list(STAGE_ORDER) + extra


def _os_text(value: Any) -> str:
    """facts['os'] may be a string or an os-release-like dict."""
    if isinstance(value, dict):
        if value.get("pretty_name"):
            return str(value["pretty_name"])
        parts = [str(value[k]) for k in ("id", "version_id", "version") if value.get(k)]
        return " ".join(parts) if parts else _plain(value)
    return "" if value is None else str(value)


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _pairs(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    """Label/value pairs with the empty values left out."""
    return [(label, value) for label, value in pairs if value]


def _slug(text: str) -> str:
    """A stage name safe for an id and a fragment (stage names are ours, but stay safe anyway)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text)[:64] or "stage"


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s"


def human_size(size: int) -> str:
    """Bytes in binary units, as docker and most people read image sizes."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"

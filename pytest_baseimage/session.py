"""One pytest session's verdict: the results collected from test reports, the reports written at every
ending (pass, fail, interrupt, nothing selected), and the lines of the terminal summary.

The plugin registers one `VerdictSession` per process in pytest_configure; results arrive in
pytest_runtest_logreport, which gets no config, so the session is a plugin object of its own.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .composition import BUILTIN, STAGE_ORDER, Composition
from .engines import Engines
from .errors import BaseImageError, ExitCode
from .results import LEFT_OUT, ImageInfo, ImageReport, Status, Verdict, utc_now
from .signals import LateSignals
from .text import cut_line, one_line

DESELECTED_OUTPUT = "pytest_baseimage_deselected"  # an xdist worker's workeroutput key: {image: [stage, ...]}

PLUGIN_NAME = "baseimage-verdict"  # the name the session is registered under with pytest's plugin manager
REPORT_ATTR = "baseimage"  # attribute on TestReport; plain JSON data, so it survives xdist
SUMMARY_CHARS = 160  # one result's text in the terminal summary


class OutputPathError(BaseImageError):
    """A report could not be written where asked: found before anything starts."""

    exit_code = ExitCode.USAGE_ERROR


def check_output_path(option: str, path: str, *, may_create_dirs: bool = False) -> None:
    """Refuse a report path that cannot be written, before any engine call: one line, exit 4.

    The directory must exist (or, with `may_create_dirs`, its nearest existing ancestor must be writable,
    as pytest's --junitxml creates missing directories itself) and accept a new file; the check leaves
    nothing behind.
    """
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise OutputPathError(f"{option}={one_line(path)}: is a directory; give a file path")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        if not may_create_dirs:
            raise OutputPathError(f"{option}={one_line(path)}: the directory {one_line(directory)} does not exist")
        while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
            if os.path.exists(directory):
                raise OutputPathError(f"{option}={one_line(path)}: {one_line(directory)} is not a directory")
            directory = os.path.dirname(directory)
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputPathError(f"{option}={one_line(path)}: cannot write in {one_line(directory)}: {reason}") from None


def write_usage_verdict(json_path: str | None, message: str, images: Sequence[str], args: Sequence[str] = ()) -> bool:
    """Exit 4 keeps a verdict too: a minimal one (verdict "usage error", the one line, no image looked at),
    when --compat-json was given and can be written. Returns whether it was written."""
    from . import report as reporting

    if not json_path:
        return False
    try:
        check_output_path("--compat-json", json_path)
    except OutputPathError:
        return False  # the error is most likely about this very path: there is nowhere to write
    now = utc_now()
    run = reporting.Run(
        plugin_version=__version__,
        started=now,
        finished=now,
        argv=_safe_argv(args),
        usage_error=one_line(message),
        images_given=[one_line(image) for image in images],
    )
    try:
        reporting.write_json(run, json_path)
    except OSError:
        return False
    return True


def merge_result(collected: dict[str, ImageReport], incoming: ImageReport, order: Sequence[str] = STAGE_ORDER) -> None:
    """Fold one test report's stage results into its image's report (later results of a stage win), keeping
    the results in `order` (the session's stages; one it does not know goes last)."""
    existing = collected.get(incoming.name)
    if existing is None:
        collected[incoming.name] = incoming
        return
    stages_in = {result.stage for result in incoming.results}
    existing.results = [r for r in existing.results if r.stage not in stages_in] + incoming.results
    existing.results.sort(key=lambda r: order.index(r.stage) if r.stage in order else len(order))
    existing.facts = incoming.facts or existing.facts
    existing.timings = {**existing.timings, **incoming.timings}
    existing.info = incoming.info if incoming.info.image_id else existing.info
    existing.also_passes = incoming.also_passes if incoming.also_passes is not None else existing.also_passes


@dataclass
class Ending:
    """How the session ended, as the verdict file records it."""

    interrupted: bool = False
    nothing_selected: bool = False
    message: str = ""  # why nothing was selected, or what stopped the run


@dataclass(eq=False)  # hashable by identity: pluggy keeps registered plugins in sets
class VerdictSession:
    """The results this process has seen, everything written from them, and the engines it used (whose
    containers it removes when it ends)."""

    config: Any
    targets: list[Any] = field(default_factory=list)  # target.Target, in the order given
    collected: dict[str, ImageReport] = field(default_factory=dict)
    deselected: dict[str, set[str]] = field(default_factory=dict)  # image name -> stages left out by -k/-m
    started: str = field(default_factory=utc_now)
    require_all: bool = False
    secrets: Sequence[str] = ()
    written: bool = False
    final: list[ImageReport] | None = None  # the reports the verdict was written from: the terminal shows the same
    left_out: list[str] = field(default_factory=list)  # images -k/-m left no stage of: named, not judged
    engines: Engines = field(default_factory=Engines)  # one per Docker host, labelled with this session's id
    composition: Composition = BUILTIN  # the built-in stages and those plugins added (pytest_baseimage_stages)
    late: LateSignals = field(default_factory=LateSignals)  # Ctrl-C/SIGTERM once the run has ended

    # -- hooks (this object is registered as a plugin) -------------------------------------------------
    def pytest_runtest_logreport(self, report: Any) -> None:
        """Runs in the controller under xdist too: fold each stage's result into its image's report."""
        data = getattr(report, REPORT_ATTR, None)
        if data:
            merge_result(self.collected, ImageReport.from_dict(data), self.composition.names)

    def pytest_deselected(self, items: Sequence[Any]) -> None:
        """Remember which stages -k/-m left out, so the verdict says they were not judged (an xdist worker also
        hands them to the controller, in its `workeroutput`)."""
        for name, stage in _stages_of(items, self.composition.names):
            self.add_deselected({name: [stage]})
        output = getattr(self.config, "workeroutput", None)
        if output is not None:
            output[DESELECTED_OUTPUT] = {name: sorted(stages) for name, stages in self.deselected.items()}

    def add_deselected(self, stages: dict[str, Any]) -> None:
        """Stages left out, by image name: from this process's collection, or from an xdist worker's."""
        for name, names in stages.items():
            self.deselected.setdefault(str(name), set()).update(str(stage) for stage in names)

    # -- the verdict ----------------------------------------------------------------------------------
    def image_reports(self, checks: dict[str, Any]) -> list[ImageReport]:
        """Reports in the order the images were given; an image no test reached still appears."""
        out = []
        for target in self.targets:
            report = self.collected.get(target.name)
            if report is None:
                check = checks.get(target.name)
                info = check.info if check else ImageInfo(reference=target.reference)
                report = ImageReport(target.name, info, target.profile.name, [], check.error if check else "")
            report.require_all_stages = self.require_all
            judged = {r.stage for r in report.results}
            report.deselected = self.composition.ordered(self.deselected.get(target.name, set()) - judged)
            out.append(report)
        return out

    def run_of(self, reports: list[ImageReport], ending: Ending, host: str) -> Any:
        from . import report as reporting

        return reporting.Run(
            images=reports,
            plugin_version=__version__,
            started=self.started,
            finished=utc_now(),
            host=host,
            argv=_safe_argv(self.config.invocation_params.args),
            interrupted=ending.interrupted,
            nothing_selected=ending.nothing_selected,
            notes=[ending.message] if ending.message else [],
            deselected_images=list(self.left_out),
        )

    def write_outputs(self, run: Any) -> None:
        """The JSON verdict and the HTML report; once per session, whichever ending comes first."""
        from . import report as reporting

        self.written = True
        option = self.config.getoption
        json_path, html_path, baseline_path = option("compat_json"), option("compat_html"), option("compat_baseline")
        baseline = None
        if baseline_path and html_path:
            try:
                baseline = reporting.load_json(baseline_path)
            except (OSError, ValueError) as exc:
                sys.stderr.write(f"\npytest-baseimage: baseline {baseline_path} ignored: {one_line(str(exc))}\n")
        if json_path:
            reporting.write_json(run, json_path, secrets=self.secrets)
        if html_path:
            reporting.write_html(run, html_path, baseline=baseline, secrets=self.secrets)

    # -- the terminal ---------------------------------------------------------------------------------
    def summary_lines(self, reports: list[ImageReport]) -> list[tuple[str, dict[str, bool]]]:
        """The "base image verdict" section: (line, markup). Observed text is one line each, escaped."""
        lines: list[tuple[str, dict[str, bool]]] = []
        colour = {Verdict.COMPATIBLE: "green", Verdict.NOT_COMPATIBLE: "red"}
        for report in reports:
            verdict = report.verdict_line()
            head, _, rest = verdict.partition(", ")
            line = f"{one_line(report.name)}: {head.upper()}{', ' + rest if rest else ''} (profile {report.profile})"
            lines.append((line, {"bold": True, colour.get(report.verdict, "yellow"): True}))
            if report.error:
                lines.append((f"  {cut_line(one_line(report.error), SUMMARY_CHARS * 2)}", {}))
            for result in report.results:
                if result.status in (Status.FAIL, Status.ERROR, Status.BLOCKED, Status.WAIVED):
                    text = cut_line(one_line(result.reason or result.observed), SUMMARY_CHARS)
                    lines.append((f"  {result.stage:8} {result.status.value:7} {text}", {}))
            if report.verdict is Verdict.NOT_COMPATIBLE and report.also_passes:
                lines.append((f"  would pass (static stages): {', '.join(report.also_passes)}", {}))
        if self.left_out:
            names = cut_line(", ".join(one_line(name) for name in self.left_out), SUMMARY_CHARS * 2)
            lines.append((f"{LEFT_OUT}: {names}", {"yellow": True}))
        return lines


def session_of(config: Any) -> VerdictSession | None:
    """This pytest run's session (registered in pytest_configure), for modules that get only the config."""
    return config.pluginmanager.get_plugin(PLUGIN_NAME)


def _stages_of(items: Sequence[Any], names: Sequence[str] = STAGE_ORDER) -> list[tuple[str, str]]:
    """(image name, stage) for each compliance item among `items`: its marks that name one of the stages."""
    from .target import Target

    found = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        target = callspec.params.get("baseimage") if callspec else None
        if isinstance(target, Target):
            found += [(target.name, mark.name) for mark in item.iter_markers() if mark.name in names]
    return found


def _safe_argv(args: Sequence[str]) -> list[str]:
    """The command line (pytest's invocation arguments), without anything that looks like a secret:
    `--x-password=V`, and V after `--x-password`."""
    kept: list[str] = ["pytest"]
    secret_next = False
    for arg in map(str, args):
        if secret_next and not arg.startswith("-"):
            secret_next = False
            continue
        secret = "password" in arg.lower() or "token" in arg.lower()
        secret_next = secret and arg.startswith("--") and "=" not in arg
        if not secret:
            kept.append(arg)
    return kept

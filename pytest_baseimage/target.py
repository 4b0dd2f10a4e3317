"""One image under test: its options, and the lazily built state of its run (container, facts, results).

The suite's tests ask `ImageCheck.result(stage)`; the first ask starts the candidate and probes it once,
and every later stage reads the same Facts. Results are cached, so the report sees exactly what the tests
asserted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import composition, platforms, probe, profiles, registry, waivers
from .composition import Composition
from .engine import Candidate, Engine, engine_faults, one_line
from .engines import Engines
from .errors import BaseImageError, EngineError
from .facts import Facts
from .profiles import Profile
from .results import NOT_REQUIRED, ImageInfo, ImageReport, StageResult, Status

# The stages judged from the probe's facts alone: what `also_passes` can say without new container work.
STATIC_STAGES: tuple[str, ...] = ("os", "conda", "python", "apt", "azureml")


@dataclass
class Target:
    """What the user asked to check: an image reference, its profile and per-image options."""

    reference: str
    profile: Profile
    name: str = ""
    docker_host: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    docker_context: str | None = None  # a docker context whose TLS certificates the engine needs

    @property
    def engine_key(self) -> tuple[str | None, str | None]:
        return self.docker_host, self.docker_context

    def __post_init__(self) -> None:
        self.name = self.name or self.reference


log = logging.getLogger("pytest_baseimage")

DEFAULT_PROBE_TIMEOUT_S = 30.0
TRACEBACK_CHARS = 8000  # what a crashed check keeps of its traceback (the end, where the cause is)


def probe_timeout(target: Target) -> float:
    """The probe's deadline: --probe-timeout, else the profile's [probe] timeout_s, else 30 s."""
    given = (target.options.get("probe") or {}).get("timeout_s")
    if given is None:
        given = (target.profile.section("probe") or {}).get("timeout_s")
    return float(given) if given is not None else DEFAULT_PROBE_TIMEOUT_S


class ImageCheck:
    """The state of one image in this session. Nothing starts until a stage asks for it."""

    def __init__(self, target: Target, engines: Engines | None = None) -> None:
        self.target = target
        self.engines = engines or Engines()  # the session's; a check made alone gets a registry of its own
        self._owns_engines = engines is None  # ...and cleans it up when it closes (the session does its own)
        self.profile = target.profile
        self.info = ImageInfo(reference=target.reference)
        self.error = ""
        self._engine: Engine | None = None
        self._candidate: Candidate | None = None
        self._facts: Facts | None = None
        self._facts_error: BaseException | None = None  # a probe that failed is not run again by the next stage
        self._engine_down = ""  # why the engine is taken for gone: every later failure is then the engine's
        self._results: dict[str, StageResult] = {}
        self._prepared = False
        self.selected: set[str] = set()  # the stages this session will ask for (set by the plugin)
        self._early: dict[str, _Early] = {}
        self._warm: _Early | None = None  # the candidate, starting in the background (see `_warm_up`)
        self.closed = False  # its containers are removed, or being removed: it needs nothing any more
        self.timings: dict[str, float] = {}  # container_start_s, probe_s (see ImageReport.timings)
        self.composition: Composition = composition.BUILTIN  # the stages of this session (set by the plugin)

    # -- lazily built state -----------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.engines.get(*self.target.engine_key)
        return self._engine

    def prepare(self, warm: bool = True) -> None:
        """Resolve the image; an image that cannot be had makes every stage an error with one reason. With
        `warm`, begin what the stages will need (`_warm_up`): not where another process runs them (xdist)."""
        if self._prepared:
            return
        self._prepared = True
        try:
            self.info = registry.resolve(self.engine, self.target)  # pulls per --pull, pins the digest
        except BaseImageError as exc:
            self.error = str(exc)
            return
        if warm:
            self._warm_up()

    @property
    def candidate(self) -> Candidate:
        if self._candidate is None:
            warm, self._warm = self._warm, None
            self._candidate = warm.result() if warm else self._start_candidate()  # raises what the start raised
        return self._candidate

    def _start_candidate(self) -> Candidate:
        started = time.monotonic()
        candidate = Candidate.start(self.engine, self.info.image_id or self.target.reference)
        self.timings["container_start_s"] = round(time.monotonic() - started, 3)
        return candidate

    def _warm_up(self) -> None:
        """Once the image is resolved, begin what the stages will need while pytest collects: the candidate
        (unless its platform is refused: then no container may start) and each stage's own (`Stage.warm`)."""
        if self._candidate is None and platforms.check(self.info, self.profile) is None:
            self._warm = _Early(lambda _check: self._start_candidate(), self)
        for stage in self._warming():
            stage.warm(self)

    def begin(self) -> None:
        """Once -m/-k chose the stages: start the early observations (the scoring server, the longest wait of a
        run) now rather than at the first stage, where this check was warmed (not on an xdist controller) and
        its platform is not refused."""
        if self._warm is not None:
            self._start_early()

    @property
    def engine_in_use(self) -> Engine | None:
        """The engine, once something asked for it (None before: asking would connect)."""
        return self._engine

    @property
    def warms_anything(self) -> bool:
        return bool(self._warming())

    def _warming(self) -> list[composition.Stage]:
        """The stages with something to begin early: not skipped by the profile, nor left out by -m/-k (before
        the collection, when nothing is selected yet, each may be: `drop_unneeded` ends what is not)."""
        return [
            stage
            for stage in self.composition.stages
            if stage.warm
            and not (self.selected and stage.name not in self.selected)
            and not (stage.skip and stage.skip(self.profile))
        ]

    @property
    def facts(self) -> Facts:
        """The probe's facts, gathered once; a probe that raised raises the same error for every later stage."""
        if self._facts_error is not None:
            raise self._facts_error
        if self._facts is None:
            try:
                self._facts = self._gather()
            except Exception as exc:
                self._facts_error = exc
                raise
        return self._facts

    def _gather(self) -> Facts:
        request = self.composition.probe_request(self.profile)
        candidate = self.candidate
        started = time.monotonic()
        try:
            facts = probe.gather(candidate, request, timeout_s=probe_timeout(self.target))
        except EngineError:
            if not candidate.ended():  # the engine's trouble, not a keep-alive that died under the probe
                raise
            facts = probe.gather(candidate, request, timeout_s=probe_timeout(self.target))  # the files alone
        else:
            if not facts.has_shell and candidate.ended():  # the keep-alive died before the exec (a foreign CPU)
                facts = probe.gather(candidate, request, timeout_s=probe_timeout(self.target))  # the files alone
        self.timings["probe_s"] = round(time.monotonic() - started, 3)
        return _with_start_error(facts, candidate.start_error)

    # -- stages -------------------------------------------------------------------------------------------
    def result(self, stage: str) -> StageResult:
        if stage not in self._results:
            self._results[stage] = waivers.judged(self, stage, self._run)
        return self._results[stage]

    def _run(self, name: str) -> StageResult:
        stage = self.composition.get(name)
        self.prepare()
        if self.error:
            return StageResult(name, Status.ERROR, reason=f"could not check the image: {self.error}")
        skipped = stage.skip(self.profile) if stage.skip else None
        if skipped is not None:
            return skipped
        refused = platforms.stage_result(name, self.info, self.profile)  # before any container starts
        if refused is not None:
            return refused
        self._start_early()
        for prereq in stage.prerequisites:
            self.result(prereq)
        blocker = composition.blocked_by(stage, self._results)
        if blocker:
            return StageResult(name, Status.BLOCKED, reason=f"blocked by {blocker}")
        started = time.monotonic()
        try:
            facts = self.facts  # the first stage starts the container and probes it: timed apart, in timings
            started = time.monotonic()
            observation = self._observe(stage)
            result = stage.check(facts, self.profile, observation)
        except BaseImageError as exc:
            result = StageResult(name, Status.ERROR, reason=str(exc))
        except Exception as exc:  # a crashing check must never read as a pass: the image is unchecked
            result = self._crashed(name, exc)
        if result.status in (Status.FAIL, Status.ERROR):
            result = self._blame(result)
        result.duration_s = round(time.monotonic() - started, 3)
        return result

    def _crashed(self, name: str, exc: Exception) -> StageResult:
        """A check that raised: the engine's failure when it was one, else a bug, with its traceback kept."""
        if isinstance(exc, engine_faults()):
            reason = f"could not check the image: the Docker engine failed ({one_line(exc)})"
            return StageResult(name, Status.ERROR, reason=reason)
        text = traceback.format_exc()
        log.debug("the %s check crashed\n%s", name, text)
        reason = f"the {name} check crashed ({type(exc).__name__}: {exc}); a bug in pytest-baseimage"
        return StageResult(name, Status.ERROR, reason=reason, details={"traceback": text[-TRACEBACK_CHARS:]})

    def _blame(self, result: StageResult) -> StageResult:
        """A failure seen after the engine stopped answering is the engine's; one seen after the session stopped
        the candidate for a bound it passed (its disk) is the image's, and says so."""
        if self._engine_failed():
            return StageResult(result.stage, Status.ERROR, reason=f"could not check the image: {self._engine_down}")
        stopped = self._engine.stopped_for.get(self._candidate.id, "") if self._engine and self._candidate else ""
        if stopped and self._candidate is not None and self._candidate.running:
            expected = "a container that stays within its bounds"
            return StageResult(result.stage, Status.FAIL, expected, f"the candidate was stopped: {stopped}")
        return result

    def _engine_failed(self) -> bool:
        """Whether the engine stopped answering: then a failure or crash seen now is the engine's, not the image's."""
        if self._engine is None:
            return False
        if not self._engine_down and not self._engine.answers():
            self._engine_down = f"the Docker engine at {self._engine.host} stopped answering during the run"
        return bool(self._engine_down)

    def _start_early(self) -> None:
        """Start the selected live observations that read no facts (the scoring server) in the background."""
        for name in self.composition.ordered(self.selected):
            stage = self.composition.get(name)
            ready = stage.early and stage.observe and name not in self._early and name not in self._results
            if ready and not waivers.stops(self, name):  # `run: false`: its server must not start either
                self._early[name] = _Early(stage.observe, self)

    def _observe(self, stage: composition.Stage) -> Any:
        if stage.observe is None:
            return None
        early = self._early.pop(stage.name, None)
        return early.result() if early else stage.observe(self)

    def deselected_cause(self, name: str) -> StageResult | None:
        """The failed (or unchecked) stage that -k/-m left out but that `name` needed, and that blocked it: a
        deselected stage is judged only as another's prerequisite, so any such failure is one of `name`'s."""
        for result in self.results():
            unselected = result.stage != name and result.stage not in self.selected
            if unselected and result.status in (Status.FAIL, Status.ERROR):
                return result
        return None

    def results(self) -> list[StageResult]:
        return [self._results[name] for name in self.composition.ordered(self._results)]

    def report(self) -> ImageReport:
        facts = self._facts.observed_versions() if self._facts else {}
        report = ImageReport(
            self.target.name, self.info, self.profile.name, self.results(), self.error, facts, dict(self.timings)
        )
        # Where the facts are (an xdist worker too): the controller has only the report to show.
        if self._facts is not None and any(r.status in (Status.FAIL, Status.BLOCKED) for r in report.results):
            report.also_passes = also_passes(self._facts, self.info, self.profile.name)
        return report

    def close(self, wait: bool = True) -> None:
        """Remove what this image started. Without `wait` the candidate is removed in the background, beside
        what the session still does (its reports): the session's cleanup waits for it (`Engine.settle`)."""
        self.closed = True
        # Early observations never asked for (blocked, or interrupted): remove their containers, whose role is
        # their stage's name, so that a server still booting ends now, then let the threads finish.
        for name, early in self._early.items():
            self.engine.remove_all(role=name)
            early.wait()
        self._early.clear()
        if self._warm is not None:  # begun, never asked for (every stage skipped, or the run interrupted)
            warm, self._warm = self._warm, None
            with contextlib.suppress(Exception):
                warm.result().stop()
        if self._candidate is not None:
            candidate, self._candidate = self._candidate, None
            if wait or self._engine is None:
                candidate.stop()
            else:
                self._engine.defer(candidate.stop)
        if not wait:
            return
        if self._owns_engines:
            self.engines.cleanup()  # its network too: nobody else will
        elif self._engine is not None:
            self._engine.settle()  # the scoring server's removal, begun when its answer was in


def drop_unneeded(checks: list[ImageCheck]) -> None:
    """An engine none of whose images still needs what a stage warmed (the scoring server's network) removes it
    now, in the background, beside the rest of the run: once -m/-k chose the stages (`ImageCheck.selected`),
    and again as each image is done (`closed`). The session's cleanup waits for it."""
    needed: dict[int, bool] = {}
    engines: dict[int, Engine] = {}
    for check in checks:
        engine = check.engine_in_use
        if engine is not None:
            engines[id(engine)] = engine
            wants = not check.closed and check.warms_anything
            needed[id(engine)] = needed.get(id(engine), False) or wants
    for key, engine in engines.items():
        if not needed[key]:
            engine.defer(engine.release_network)


def also_passes(facts: Facts, info: ImageInfo, judged_by: str) -> list[str]:
    """The other shipped concrete profiles whose static stages the same facts pass: a hint for an image that
    failed its own profile, not a certification (no scoring or gpu stage ran for them). The probe asked only
    the judged profile's imports, so a profile needing another import is not counted as passed. A profile that
    asks for no static stage (azureml-custom-container: only its live deployment stage) is never named: every
    image would "pass" it."""
    return [
        name
        for name in profiles.builtin_names()
        if name != judged_by and _static_pass([_static(stage, facts, info, _shipped(name)) for stage in STATIC_STAGES])
    ]


def _static_pass(results: list[StageResult]) -> bool:
    """Every static stage passed, and at least one of them was asked for (not every one "not required")."""
    return all(r.ok for r in results) and any(r.skip_kind != NOT_REQUIRED for r in results)


@functools.cache
def _shipped(name: str) -> Profile:
    return profiles.load(name)


def _static(name: str, facts: Facts, info: ImageInfo, profile: Profile) -> StageResult:
    """One static stage as the runner judges it (platform, profile-only skip, the pure check), minus Docker."""
    stage = composition.BUILTIN.get(name)
    result = platforms.stage_result(name, info, profile) or (stage.skip(profile) if stage.skip else None)
    return result or stage.check(facts, profile, None)


def _with_start_error(facts: Facts, start_error: str) -> Facts:
    """A candidate that could not start for a reason of its own (an unknown USER, a foreign CPU) says so where
    the probe would say "no shell"."""
    if not start_error or facts.running:
        return facts
    notes = {**facts.notes, "shell": start_error}
    for key in ("conda", "python"):
        notes[key] = f"cannot run anything in the image: {start_error}"
    return dataclasses.replace(facts, notes=notes)


class _Early:
    """One observation running in a daemon thread; `result()` re-raises what it raised."""

    def __init__(self, observe: Callable[[Any], Any], check: ImageCheck) -> None:
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(observe, check), daemon=True)
        self._thread.start()

    def _run(self, observe: Callable[[Any], Any], check: ImageCheck) -> None:
        try:
            self._box["value"] = observe(check)
        except BaseException as exc:  # handed to the caller of result()
            self._box["error"] = exc

    def wait(self) -> None:
        # join() in short slices: a plain join() blocks Ctrl-C and SIGTERM until a hung server times out.
        while self._thread.is_alive():
            self._thread.join(0.1)

    def result(self) -> Any:
        self.wait()
        if "error" in self._box:
            raise self._box["error"]
        return self._box.get("value")

"""One image under test: its options, and the lazily built state of its run (container, facts, results).

The suite's tests ask `ImageCheck.result(stage)`; the first ask starts the candidate and probes it once,
and every later stage reads the same Facts. Results are cached, so the report sees exactly what the tests
asserted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import probe, registry, stages
from .engine import Candidate, Engine
from .errors import BaseImageError
from .facts import Facts
from .profiles import Profile
from .results import ImageInfo, ImageReport, StageResult, Status


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


_ENGINES: dict[tuple[str | None, str | None], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(docker_host: str | None, docker_context: str | None = None) -> Engine:
    """One Engine per Docker host per process; the first use reaps stale containers of killed runs."""
    key = (docker_host, docker_context)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            engine = Engine(docker_host=docker_host, docker_context=docker_context)
            engine.reap_stale()
            _ENGINES[key] = engine
        return _ENGINES[key]


class ImageCheck:
    """The state of one image in this session. Nothing starts until a stage asks for it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.profile = target.profile
        self.info = ImageInfo(reference=target.reference)
        self.error = ""
        self._engine: Engine | None = None
        self._candidate: Candidate | None = None
        self._facts: Facts | None = None
        self._results: dict[str, StageResult] = {}
        self._prepared = False
        self.selected: set[str] = set()  # the stages this session will ask for (set by the plugin)
        self._early: dict[str, _Early] = {}
        self.timings: dict[str, float] = {}  # container_start_s, probe_s (see ImageReport.timings)

    # -- lazily built state -----------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = engine_for(*self.target.engine_key)
        return self._engine

    def prepare(self) -> None:
        """Resolve the image; an image that cannot be had makes every stage an error with one reason."""
        if self._prepared:
            return
        self._prepared = True
        try:
            self.info = registry.resolve(self.engine, self.target)  # pulls per --pull, pins the digest
        except BaseImageError as exc:
            self.error = str(exc)

    @property
    def candidate(self) -> Candidate:
        if self._candidate is None:
            started = time.monotonic()
            self._candidate = Candidate.start(self.engine, self.info.image_id or self.target.reference)
            self.timings["container_start_s"] = round(time.monotonic() - started, 3)
        return self._candidate

    @property
    def facts(self) -> Facts:
        if self._facts is None:
            apt = self.profile.section("apt") or {}
            request = probe.ProbeRequest(
                imports=[str(m) for m in (self.profile.section("azureml") or {}).get("imports", [])],
                apt=[str(p) for p in [*apt.get("required", []), *(n for g in apt.get("any_of", []) for n in g)]],
            )
            for name, make in probe.EXTENSIONS.items():
                code = make(self.profile)
                if code:
                    request.extensions[name] = code
            candidate = self.candidate
            started = time.monotonic()
            self._facts = probe.gather(candidate, request)
            self.timings["probe_s"] = round(time.monotonic() - started, 3)
        return self._facts

    # -- stages -------------------------------------------------------------------------------------------
    def result(self, stage: str) -> StageResult:
        if stage not in self._results:
            self._results[stage] = self._run(stage)
        return self._results[stage]

    def _run(self, name: str) -> StageResult:
        stage = stages.STAGES[name]
        self.prepare()
        if self.error:
            return StageResult(name, Status.ERROR, reason=f"could not check the image: {self.error}")
        skipped = stage.skip(self.profile) if stage.skip else None
        if skipped is not None:
            return skipped
        self._start_early()
        for prereq in stage.prerequisites:
            self.result(prereq)
        blocker = stages.blocked_by(name, self._results)
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
            reason = f"the {name} check crashed ({type(exc).__name__}: {exc}); a bug in pytest-baseimage"
            result = StageResult(name, Status.ERROR, reason=reason)
        result.duration_s = round(time.monotonic() - started, 3)
        return result

    def _start_early(self) -> None:
        """Start the selected live observations that read no facts (the scoring server) in the background."""
        for name in stages.ordered(sorted(self.selected)):
            stage = stages.STAGES[name]
            if stage.early and stage.observe and name not in self._early and name not in self._results:
                self._early[name] = _Early(stage.observe, self)

    def _observe(self, stage: stages.Stage) -> Any:
        if stage.observe is None:
            return None
        early = self._early.pop(stage.name, None)
        return early.result() if early else stage.observe(self)

    def results(self) -> list[StageResult]:
        return [self._results[name] for name in stages.ordered() if name in self._results]

    def report(self) -> ImageReport:
        facts = self._facts.observed_versions() if self._facts else {}
        return ImageReport(
            self.target.name, self.info, self.profile.name, self.results(), self.error, facts, dict(self.timings)
        )

    def close(self) -> None:
        # Early observations never asked for (blocked, or interrupted): remove their containers, whose role is
        # their stage's name, so that a server still booting ends now, then let the threads finish.
        for name, early in self._early.items():
            self.engine.remove_all(role=name)
            early.wait()
        self._early.clear()
        if self._candidate is not None:
            self._candidate.stop()
            self._candidate = None


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

"""The composition root: every stage, in the order it runs, with its prerequisites and what it needs from
the probe. The built-in stages are declared here and nowhere else; a third-party plugin adds its own through
the `pytest_baseimage_stages` hook (hookspecs.py), and they then run, block, report and merge like these.

Importing a stage module registers nothing: a stage that is not listed here (or returned by the hook) does
not exist, loudly (`Composition.get` raises), never by silently dropping out of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import deployment, gpu, scoring, scoring_route, stages
from .probe import ProbeRequest
from .profiles import Profile
from .stages import Stage


class CompositionError(ValueError):
    """A stage set that cannot run: a name used twice, or a prerequisite that is unknown or comes later."""


def azureml_imports(profile: Profile) -> ProbeRequest:
    """The azureml stage judges `import m` for each of the profile's [azureml] imports: the probe tries them."""
    return ProbeRequest(imports=[str(m) for m in (profile.section("azureml") or {}).get("imports", [])])


def apt_files(profile: Profile) -> ProbeRequest:
    """The apt stage checks that each package's files are really there: the probe lists them."""
    apt = profile.section("apt") or {}
    names = [*apt.get("required", []), *(name for group in apt.get("any_of", []) for name in group)]
    return ProbeRequest(apt=[str(name) for name in names])


BUILTIN_STAGES: tuple[Stage, ...] = (
    Stage("os", "Operating system", (), stages.check_os),
    Stage("conda", "Conda", (), stages.check_conda),
    Stage("python", "Python", (), stages.check_python),
    Stage("apt", "Inferencing-stack apt packages", ("os",), stages.check_apt, skip=stages.skip_apt, needs=apt_files),
    Stage(
        "azureml",
        "Azure ML server package",
        ("python",),
        stages.check_azureml,
        skip=stages.skip_azureml,
        needs=azureml_imports,
    ),
    Stage(
        "scoring",
        "Scoring server",
        ("azureml",),
        scoring.check_scoring,
        observe=scoring.observe_scoring,
        early=True,
        skip=scoring.skip_result,
        warm=scoring_route.warm_scoring,
    ),
    # After scoring: the image with its Azure ML environment and deployment definitions, started as an
    # endpoint starts it (its own entrypoint), asked on the routes they declare. Early: it reads no facts.
    Stage(
        deployment.STAGE,
        "Azure ML deployment",
        (),
        deployment.check_deployment,
        observe=deployment.observe_deployment,
        early=True,
        skip=deployment.skip_result,
    ),
    Stage(gpu.STAGE, "GPU execution providers", ("python",), gpu.check_gpu, observe=gpu.observe_gpu, skip=gpu.skip_gpu),
)


@dataclass(frozen=True)
class Composition:
    """An ordered, checked set of stages: the runner, the suite, the session and the reports all read it."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for stage in self.stages:
            if not isinstance(stage, Stage):
                raise CompositionError(f"{stage!r} is not a pytest_baseimage.stages.Stage")
            if not stage.name.isidentifier():
                raise CompositionError(f"stage name {stage.name!r} is not an identifier (it names a pytest mark)")
            if stage.name in seen:
                raise CompositionError(f"stage {stage.name!r} is declared twice")
            later = [p for p in stage.prerequisites if p not in seen]
            if later:
                raise CompositionError(f"stage {stage.name!r} needs {', '.join(later)}, which no earlier stage is")
            seen.add(stage.name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def get(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(self.names)}")

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def ordered(self, names: Iterable[str] | None = None) -> list[str]:
        """`names` (default: all) in run order; a name no stage has is left out."""
        wanted = set(self.names if names is None else names)
        return [name for name in self.names if name in wanted]

    def with_stages(self, added: Iterable[Stage]) -> Composition:
        """These stages followed by `added`, checked the same way (CompositionError on a clash)."""
        return Composition((*self.stages, *added))

    @property
    def added(self) -> tuple[Stage, ...]:
        """The stages beyond the built-in ones (from plugins), in order."""
        return tuple(stage for stage in self.stages if stage.name not in STAGE_ORDER)

    def probe_request(self, profile: Profile) -> ProbeRequest:
        """Everything the stages need the probe to ask, for this profile (the probe runs once for all)."""
        request = ProbeRequest()
        for stage in self.stages:
            if stage.needs is not None:
                need = stage.needs(profile)
                request.imports += need.imports
                request.apt += need.apt
        return request


BUILTIN = Composition(BUILTIN_STAGES)
# The built-in stages' order: the reports place any other stage after these, in the order it came.
STAGE_ORDER: tuple[str, ...] = BUILTIN.names


def blocked_by(stage: Stage, results: dict[str, stages.StageResult]) -> str | None:
    """The first prerequisite that did not pass (skipped counts as passed: it was not required; waived too:
    the waiver accepts that failure, and the stages after it are judged on their own)."""
    passing = (stages.Status.PASS, stages.Status.SKIPPED, stages.Status.WAIVED)
    for prereq in stage.prerequisites:
        result = results.get(prereq)
        if result is not None and result.status not in passing:
            return prereq
    return None

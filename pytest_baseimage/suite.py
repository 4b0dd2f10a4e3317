"""The bundled compliance suite's side of the composition: which stages this session has (the built-in ones and
those plugins add through pytest_baseimage_stages), and one suite test for each stage a plugin added."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from . import composition
from .composition import Composition, CompositionError
from .text import escaped

SUITE_MODULE = "test_compliance.py"
ADDED_ATTR = "baseimage_added_stage"  # set on the suite functions made for plugin stages


def is_suite(path: Path) -> bool:
    """Whether `path` is the bundled suite's module."""
    return path == Path(str(resources.files("pytest_baseimage.suites"))) / SUITE_MODULE


def composition_of(config: pytest.Config) -> Composition:
    """The built-in stages, then those other plugins return from pytest_baseimage_stages (usage error on a clash)."""
    added = [stage for stages in config.hook.pytest_baseimage_stages(config=config) for stage in stages or ()]
    try:
        return composition.BUILTIN.with_stages(added)
    except CompositionError as exc:
        raise pytest.UsageError(f"pytest_baseimage_stages: {escaped(str(exc))}") from None


def add_stage_tests(namespace: Any, stages: Composition) -> None:
    """`test_<name>` (mark `<name>`) in the suite module for every stage a plugin added, after the built-in ones."""
    for name in [name for name, value in vars(namespace).items() if getattr(value, ADDED_ATTR, False)]:
        delattr(namespace, name)  # made for an earlier in-process session's plugins
    for stage in stages.added:
        setattr(namespace, f"test_{stage.name}", stage_test(stage.name))


def stage_test(name: str) -> Any:
    def test(stage_check: Any) -> None:
        stage_check(name)

    test.__name__ = test.__qualname__ = f"test_{name}"
    test.__doc__ = f"The '{name}' stage, added by a plugin (pytest_baseimage_stages)."
    setattr(test, ADDED_ATTR, True)
    return getattr(pytest.mark, name)(test)

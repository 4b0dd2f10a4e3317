"""The hooks pytest-baseimage offers other plugins (added in plugin.pytest_addhooks)."""

from __future__ import annotations

from typing import Any


def pytest_baseimage_stages(config: Any) -> Any:
    """Return stages (a list of `pytest_baseimage.stages.Stage`) to run after the built-in ones.

    Each stage's `check(facts, profile, observation)` must be pure; an `observe(check)` may look at the
    running candidate (`check.candidate.stat(path)`, `check.candidate.read_file(path)`) or the engine. Its
    prerequisites must name stages that come earlier. The stage then gets a test in the compliance suite
    (`test_<name>`, mark `<name>`) and appears in the verdict, JUnit, JSON and HTML like a built-in one.
    Called once per process (controller and each xdist worker), in pytest_configure.
    """

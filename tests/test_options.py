"""Command-line options that must coexist with other plugins: --profile is also pytest-profiling's option.

A stand-in `pytest_profiling` module registers `--profile` exactly as pytest-profiling 1.8 does (a flag in
its own group). Without the guard, argparse stops pytest at start-up with "conflicting option string",
whichever plugin loads second. No Docker needed: a bad profile name is refused before any engine is used.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_pytest

from pytest_baseimage.options import installed as _installed

STAND_IN = '''"""Stand-in for pytest-profiling 1.8.1's option registration (test use only)."""


def pytest_addoption(parser):
    group = parser.getgroup("Profiling")
    group.addoption("--profile", action="store_true", help="generate profiling information")
'''
UNKNOWN = "unknown profile 'no-such-profile'"


def run_isolated(tmp_path: Path, *plugins: str, args: tuple[str, ...]) -> tuple[int, str]:
    """pytest with only the named plugins (in that order), the stand-in importable from tmp_path."""
    (tmp_path / "pytest_profiling.py").write_text(STAND_IN, encoding="utf-8")
    argv = [arg for plugin in plugins for arg in ("-p", plugin)]
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(tmp_path)}
    proc = run_pytest(*argv, *args, cwd=tmp_path, env=env, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("spelling", ["--base-image-profile", "--profile"])
def test_both_spellings_choose_the_profile_without_pytest_profiling(tmp_path, spelling):
    if spelling == "--profile" and _installed("pytest_profiling"):
        pytest.skip("pytest-profiling is installed here: --profile is its option, as it should be")
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    args = ("-p", "pytest_baseimage.plugin", f"{spelling}=no-such-profile", "--base-image=a:b")
    proc = run_pytest(*args, cwd=tmp_path, env=env, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 4, output
    assert UNKNOWN in output and "Traceback" not in output


def test_any_plugin_that_registered_profile_first_keeps_it(tmp_path):
    """Not only pytest-profiling: a plugin loaded earlier that owns --profile is seen in the parser."""
    (tmp_path / "other_profiler.py").write_text(STAND_IN, encoding="utf-8")
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(tmp_path)}
    args = ("-p", "other_profiler", "-p", "pytest_baseimage.plugin", "--help")
    proc = run_pytest(*args, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--base-image-profile=NAME|PATH" in proc.stdout and "generate profiling information" in proc.stdout


@pytest.mark.parametrize(
    "order",
    [("pytest_profiling", "pytest_baseimage.plugin"), ("pytest_baseimage.plugin", "pytest_profiling")],
    ids=["profiling-first", "baseimage-first"],
)
def test_pytest_profiling_keeps_profile_and_the_long_form_works(tmp_path, order):
    code, output = run_isolated(tmp_path, *order, args=("--help",))
    assert code == 0, output
    assert "--base-image-profile=NAME|PATH" in output
    assert "generate profiling information" in output  # the other plugin's --profile is there, untouched

    code, output = run_isolated(tmp_path, *order, args=("--base-image-profile=no-such-profile", "--base-image=a:b"))
    assert code == 4, output
    assert UNKNOWN in output and "Traceback" not in output

    # --profile is the other plugin's flag now: it takes no value, and never selects a requirement set.
    code, output = run_isolated(tmp_path, *order, args=("--profile=no-such-profile", "--base-image=a:b"))
    assert code == 4 and UNKNOWN not in output, output

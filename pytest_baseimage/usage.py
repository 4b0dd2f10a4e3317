"""Bad input found before anything starts (exit 4): the checks of the report paths and the baseline, and the
usage-error verdict of a run that argparse stopped before pytest_configure. Every ending writes its verdict."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import pytest

from .errors import BaseImageError
from .session import check_output_path, write_usage_verdict
from .text import escaped, one_line

USAGE_KEY = pytest.StashKey[bool]()  # pytest_configure ran (and wrote the verdict of its own usage error)


def verdict_after_parse_error(config: pytest.Config) -> None:
    """A value argparse refused (`--probe-timeout=0`, a bad `--pull` choice, an unknown option) stops pytest
    before pytest_configure; this runs in the config's cleanup while that UsageError unwinds. The options were
    not parsed, so --compat-json and --base-image are read from the command line as given."""
    error = sys.exc_info()[1]
    if not isinstance(error, pytest.UsageError) or config.stash.get(USAGE_KEY, False):
        return
    known = _parse_error_args(config)
    if known is None:
        return
    lines = [line for line in str(error).splitlines() if line.strip()]
    message = next((line.split(" error: ", 1)[1] for line in lines if " error: " in line), lines[-1] if lines else "")
    write_usage_verdict(known.compat_json, message, known.base_images or [], config.invocation_params.args)


def _parse_error_args(config: pytest.Config) -> argparse.Namespace | None:
    """--compat-json and --base-image from the invocation's arguments and PYTEST_ADDOPTS (not the ini's addopts)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--compat-json", default=None)
    parser.add_argument("--base-image", action="append", dest="base_images", default=[])
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *config.invocation_params.args]
    try:
        return parser.parse_known_args([str(arg) for arg in args])[0]
    except (SystemExit, ValueError):  # argparse exits on a missing value; shlex on an unclosed quote
        return None


def check_output_paths(config: pytest.Config) -> None:
    """Every report path is writable, and a baseline readable, before anything starts: else a usage error."""
    paths = [("--compat-json", config.getoption("compat_json")), ("--compat-html", config.getoption("compat_html"))]
    try:
        for option, path in paths:
            if path:
                check_output_path(option, path)
        if getattr(config.option, "xmlpath", None):  # pytest creates a missing directory for this one
            check_output_path("--junitxml", config.option.xmlpath, may_create_dirs=True)
        _check_baseline(config.getoption("compat_baseline"))
    except BaseImageError as exc:
        raise pytest.UsageError(escaped(str(exc))) from None


def _check_baseline(path: str | None) -> None:
    """The earlier verdict to compare with must be there and readable: a gate that asked for a comparison
    must not get a run without one."""
    if not path:
        return
    from .report import ReportError, load_json

    try:
        load_json(path)
    except ReportError as exc:
        raise ReportError(f"--compat-baseline={one_line(str(exc))}") from None


def no_verdict_note(config: pytest.Config, written: bool) -> str:
    """Why --compat-json/--compat-html got no file when only a team's own tests ran: no stage was judged, so
    there is no verdict to write (a gate must not read an old file, or none, as this run's)."""
    asked = [str(config.getoption(o)) for o in ("compat_json", "compat_html") if config.getoption(o)]
    if not asked or written:
        return ""
    return (
        "pytest-baseimage: no compliance stage ran (only your own tests), so there is no verdict: nothing was "
        f"written to {', '.join(asked)}"
    )

"""The probe's option: its deadline (--probe-timeout), a part of the plugin as scoring and gpu are.

The value goes to Target.options["probe"]["timeout_s"] and overrides the profile's `[probe] timeout_s`
(see target.probe_timeout); a matrix entry may set it per image in an `[images.probe]` table.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

# The keys of a matrix file's [images.probe] table, and how the matrix checks each (see matrix.part_schemas).
MATRIX_OPTIONS: dict[str, str] = {"timeout_s": "parse_timeout"}


def parse_timeout(value: Any) -> float:
    """A deadline in seconds: a finite number above zero (argparse turns the error into a usage error)."""
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{value!r}: expected a number of seconds above 0, e.g. 30")
    return seconds


def add_options(group: Any) -> None:
    """Register --probe-timeout on the plugin's option group."""
    group.addoption(
        "--probe-timeout",
        default=None,
        type=parse_timeout,
        metavar="SECONDS",
        dest="probe_timeout",
        help="how long the probe (the one exec that asks the candidate's shell, conda and Python) may run "
        "before it is stopped and the image fails with a timeout. Overrides the profile's [probe] timeout_s; "
        "default 30. Counted in whole seconds inside the image (its `timeout` takes whole seconds: 0.5 is 1).",
    )


def options_from_config(config: Any) -> dict[str, Any]:
    """The probe entry of Target.options: only what the command line gave, so the profile's value stays."""
    seconds = config.getoption("probe_timeout", default=None)
    return {} if seconds is None else {"timeout_s": seconds}

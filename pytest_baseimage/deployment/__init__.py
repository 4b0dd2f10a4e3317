"""The deployment stage: the image together with its Azure ML environment and deployment definitions, and
custom containers that bring their own server.

A part of the plugin (see plugin.PARTS): `add_options`, `options_from_config`, `MATRIX_OPTIONS` and
`validate_targets` come from `options`; the stage is declared in composition.py (the Requires-Python it
compares are read by the shared probe).
"""

from __future__ import annotations

from .judge import STAGE, check_deployment, junit_properties, skip_result
from .live import observe_deployment
from .options import MATRIX_OPTIONS, add_options, options_from_config, validate_targets

__all__ = [
    "MATRIX_OPTIONS",
    "STAGE",
    "add_options",
    "check_deployment",
    "junit_properties",
    "observe_deployment",
    "options_from_config",
    "skip_result",
    "validate_targets",
]

"""The deployment stage: the image together with its Azure ML environment and deployment definitions, and
custom containers that bring their own server.

A part of the plugin (see plugin.PARTS): `add_options`, `options_from_config`, `MATRIX_OPTIONS` and
`validate_targets` come from `options`; importing the package registers the stage and its probe extension.
"""

from __future__ import annotations

from importlib import resources

from .. import probe, stages
from .judge import STAGE, check_deployment, junit_properties, skip_result
from .live import observe_deployment
from .options import MATRIX_OPTIONS, add_options, options_from_config, validate_targets

PROGRAM = resources.files(__package__).joinpath("programs", "requires_python.py").read_text(encoding="utf-8")


def _extension(_profile: object) -> str:
    """The probe reads the server packages' Requires-Python in the same exec (cheap: one header per dist)."""
    return PROGRAM


probe.EXTENSIONS[STAGE] = _extension
stages.register(
    stages.Stage(
        STAGE,
        "Azure ML deployment",
        (),
        check_deployment,
        observe=observe_deployment,
        early=True,
        skip=skip_result,
    )
)

__all__ = ["MATRIX_OPTIONS", "add_options", "junit_properties", "options_from_config", "validate_targets"]

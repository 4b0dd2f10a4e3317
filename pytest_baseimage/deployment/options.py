"""The deployment stage's options: --azureml-environment and --azureml-deployment, also per matrix entry
(`[images.deployment]` with `environment` and `deployment` paths, relative to the matrix file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import definitions

MATRIX_OPTIONS: dict[str, str] = {"environment": "path", "deployment": "path"}
FLAGS = {"environment": "--azureml-environment", "deployment": "--azureml-deployment"}


def add_options(group: Any) -> None:
    """Register the two definition files on the plugin's option group."""
    group.addoption(
        FLAGS["environment"],
        default=None,
        metavar="environment.yml",
        help="Azure ML environment YAML (CLI v2) that goes with the image: checked against it, and its "
        "inference_config's routes are asked of a container started as an online endpoint starts it.",
    )
    group.addoption(
        FLAGS["deployment"],
        default=None,
        metavar="deployment.yml",
        help="Azure ML online deployment YAML: its code_configuration and model are copied where Azure ML "
        "puts them, its environment_variables set; an inline environment counts as --azureml-environment.",
    )


def options_from_config(config: Any) -> dict[str, str]:
    """The deployment entry of Target.options: absolute paths, only what the command line gave."""
    import pytest

    options: dict[str, str] = {}
    for key, flag in FLAGS.items():
        value = config.getoption(flag.lstrip("-").replace("-", "_"), None)
        if not value:
            continue
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            raise pytest.UsageError(f"{flag} {value}: no such file")
        options[key] = str(path)
    return options


def validate_targets(targets: Any) -> None:
    """Every image's definitions parse and validate before any container starts (a usage error otherwise)."""
    seen: set[tuple[str, str]] = set()
    for target in targets:
        options = target.options.get("deployment") or {}
        key = (options.get("environment", ""), options.get("deployment", ""))
        if any(key) and key not in seen:
            seen.add(key)
            definitions.load(*key)

"""Azure ML environment and deployment YAML: parsed, validated and resolved before any container starts.

Why PyYAML's `safe_load`: the files are the user's, and a plain loader builds arbitrary Python objects from
tags; safe_load gives dicts, lists and scalars only. Why pydantic: the same one-line errors as the profile
schema (`profile_schema.key_path`), naming the file, the key and what was expected.

The rules follow Azure ML CLI v2's own schema (azure-ai-ml `_schema/assets/environment.py`, see
../shared/WAVE2-FACTS.md): `name` required; exactly one of `image` or `build`; `conda_file` only with
`image`; `inference_config` with all three routes, each an integer `port` (1-65535) and a `path` starting
with `/`. Keys this stage does not read are allowed (the CLI knows many more), and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BaseImageError, ExitCode

if TYPE_CHECKING:
    from .schema import Environment

MAX_FILE_BYTES = 1 << 20  # a definition file larger than this is not one


class DefinitionError(BaseImageError):
    """An environment or deployment file the stage cannot use: a usage error (exit 4), one line."""

    exit_code = ExitCode.USAGE_ERROR


@dataclass(frozen=True)
class RouteSpec:
    port: int
    path: str


@dataclass(frozen=True)
class Definitions:
    """One image's environment and deployment, resolved."""

    environment_file: str = ""
    deployment_file: str = ""
    environment_name: str = ""
    image: str = ""  # the environment's `image`; "" when it builds
    build_path: str = ""
    conda: dict[str, Any] | None = None  # the conda file, parsed
    conda_source: str = ""  # its path, or "inline"
    routes: dict[str, RouteSpec] = field(default_factory=dict)  # liveness/readiness/scoring; {} = Azure ML's stack
    code_dir: str = ""
    scoring_script: str = ""  # relative to code_dir
    model_path: str = ""  # a local model: file or directory
    model_name: str = ""
    model_version: str = ""
    env_vars: dict[str, str] = field(default_factory=dict)
    sample_request: str = ""  # sample-request.json beside the deployment file, when there is one

    @property
    def custom_container(self) -> bool:
        return bool(self.routes)


def read_yaml(path: Path, flag: str) -> Any:
    """The parsed file; a usage error naming the file when it cannot be read or parsed."""
    import yaml

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DefinitionError(f"{flag} {path}: larger than {MAX_FILE_BYTES >> 20} MiB, not a definition file")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DefinitionError(f"{flag} {path}: not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise DefinitionError(f"{flag} {path}: not valid YAML{where}: {problem}") from None


def _local(base: Path, value: str, flag: str, source: Path, key: str, kind: str) -> Path:
    """A path the file names, relative to the file, that must exist (a usage error when it does not)."""
    path = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
    exists = path.is_dir() if kind == "directory" else path.is_file() if kind == "file" else path.exists()
    if not exists:
        raise DefinitionError(f"{flag} {source}: {key}: no such {kind} {path}")
    return path


def _validated(model_name: str, data: Any, flag: str, path: Path) -> Any:
    """The file's data as the schema's model (pydantic is imported only here: when a file is given)."""
    from . import schema

    try:
        return schema.validated(getattr(schema, model_name), data)
    except schema.Invalid as exc:
        raise DefinitionError(f"{flag} {path}: {exc}") from None


def load(environment: str = "", deployment: str = "") -> Definitions:
    """Parse, validate and resolve the two files (either may be absent); raises DefinitionError."""

    values: dict[str, Any] = {}
    env_data: Any = None
    env_path = Path(environment).resolve() if environment else None
    if deployment:
        values.update(_deployment(Path(deployment).resolve()))
        env_data = values.pop("inline_environment", None)
    if env_path is not None:
        values.update(
            _environment(
                _validated("Environment", read_yaml(env_path, FLAGS[0]), FLAGS[0], env_path), env_path, FLAGS[0]
            )
        )
    elif env_data is not None:
        dep = Path(deployment).resolve()
        inline = _validated("Environment", env_data, FLAGS[1], dep)
        values.update(_environment(inline, dep, f"{FLAGS[1]} (environment)"))
    return Definitions(**values)


FLAGS = ("--azureml-environment", "--azureml-deployment")


def _environment(env: Environment, path: Path, flag: str) -> dict[str, Any]:
    values: dict[str, Any] = {"environment_file": str(path), "environment_name": env.name, "image": env.image or ""}
    if env.build is not None:
        values["build_path"] = env.build.path
    if isinstance(env.conda_file, str):
        conda_path = _local(path.parent, env.conda_file, flag, path, "conda_file", "file")
        conda = read_yaml(conda_path, f"{flag} {path}: conda_file")
        if not isinstance(conda, dict):
            raise DefinitionError(f"{flag} {path}: conda_file {conda_path}: expected a mapping of keys")
        values.update(conda=conda, conda_source=str(conda_path))
    elif isinstance(env.conda_file, dict):
        values.update(conda=env.conda_file, conda_source="inline")
    if values.get("conda") is not None:
        deps = values["conda"].get("dependencies", [])
        if not isinstance(deps, list):
            raise DefinitionError(f"{flag} {path}: conda_file: dependencies: expected a list")
    if env.inference_config is not None:
        config = env.inference_config
        values["routes"] = {
            "liveness": RouteSpec(config.liveness_route.port, config.liveness_route.path),
            "readiness": RouteSpec(config.readiness_route.port, config.readiness_route.path),
            "scoring": RouteSpec(config.scoring_route.port, config.scoring_route.path),
        }
    return values


def _deployment(path: Path) -> dict[str, Any]:
    flag = FLAGS[1]
    dep = _validated("Deployment", read_yaml(path, flag), flag, path)
    values: dict[str, Any] = {
        "deployment_file": str(path),
        "env_vars": {str(k): str(v) for k, v in dep.environment_variables.items()},
    }
    if isinstance(dep.environment, dict):
        values["inline_environment"] = dep.environment
    if dep.code_configuration is not None:
        code = _local(path.parent, dep.code_configuration.code, flag, path, "code_configuration.code", "directory")
        script = dep.code_configuration.scoring_script
        _local(code, script, flag, path, "code_configuration.scoring_script", "file")
        values.update(code_dir=str(code), scoring_script=script)
    if not isinstance(dep.model, (str, type(None))) and dep.model.path:  # a ModelAsset
        model = _local(path.parent, dep.model.path, flag, path, "model.path", "file or directory")
        values.update(
            model_path=str(model), model_name=dep.model.name or "", model_version=str(dep.model.version or "")
        )
    elif isinstance(dep.model, str) and not dep.model.startswith("azureml:"):
        model = _local(path.parent, dep.model, flag, path, "model", "file or directory")
        values["model_path"] = str(model)
    sample = path.parent / "sample-request.json"
    if sample.is_file():
        values["sample_request"] = str(sample)
    return values

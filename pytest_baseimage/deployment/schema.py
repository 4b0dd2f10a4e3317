"""The pydantic models of Azure ML's environment and deployment YAML (imported only when a file is given: the
stage's module is loaded in every run), and their errors in the words of a YAML file."""

# pydantic evaluates these annotations at run time, and Python 3.9 (supported) has no `X | Y` for types:
# ruff: noqa: UP007, UP045
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from ..profile_words import key_path, own_check_text


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


def _url_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"must start with '/', got {text!r}")
    return text


class Route(Model):
    port: Annotated[StrictInt, Field(ge=1, le=65535)]
    path: Annotated[StrictStr, AfterValidator(_url_path)]


class InferenceConfig(Model):
    liveness_route: Route
    readiness_route: Route
    scoring_route: Route


class Build(Model):
    path: StrictStr
    dockerfile_path: StrictStr = "Dockerfile"


Scalar = Union[StrictStr, StrictInt]


class Environment(Model):
    name: Annotated[StrictStr, Field(min_length=1)]
    version: Optional[Scalar] = None
    image: Optional[Annotated[StrictStr, Field(min_length=1)]] = None
    build: Optional[Build] = None
    conda_file: Optional[Union[StrictStr, dict[str, Any]]] = None
    os_type: Literal["linux", "windows"] = "linux"
    inference_config: Optional[InferenceConfig] = None

    @model_validator(mode="after")
    def _one_source(self) -> Environment:
        if (self.image is None) == (self.build is None):
            raise ValueError("image: exactly one of `image` or `build` is required")
        if self.conda_file is not None and self.image is None:
            raise ValueError("conda_file: allowed only together with `image` (a `build` brings its own)")
        return self


class CodeConfiguration(Model):
    code: Annotated[StrictStr, Field(min_length=1)]
    scoring_script: Annotated[StrictStr, Field(min_length=1)]


class ModelAsset(Model):
    name: Optional[StrictStr] = None
    version: Optional[Scalar] = None
    path: Optional[StrictStr] = None


class Deployment(Model):
    name: Annotated[StrictStr, Field(min_length=1)]
    endpoint_name: Optional[StrictStr] = None
    model: Optional[Union[StrictStr, ModelAsset]] = None
    code_configuration: Optional[CodeConfiguration] = None
    environment: Optional[Union[StrictStr, dict[str, Any]]] = None
    environment_variables: dict[StrictStr, Scalar] = Field(default_factory=dict)


# -- resolved: what the stage uses, every path absolute and checked -------------------------------------------
class Invalid(ValueError):
    """What is wrong with a file's data, in one line ("key: what was expected"); the caller names the file."""


def validated(model: type[Model], data: Any) -> Any:
    if not isinstance(data, dict):
        raise Invalid(f"expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(explain(exc.errors()[0])) from None


def explain(error: dict[str, Any]) -> str:
    """One pydantic error as 'key: what was expected' in the words of a YAML file."""
    loc, kind = tuple(error["loc"]), error["type"]
    where = key_path(loc)
    got = error.get("input")
    if kind == "missing":
        return f"{where}: required"
    if kind == "value_error":
        return own_check_text(loc, str((error.get("ctx") or {}).get("error", error["msg"])))
    if kind in ("int_type", "int_parsing"):
        return f"{where}: expected an integer, got {got!r}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"{where}: expected an integer from 1 to 65535, got {got!r}"
    if kind in ("string_type", "string_too_short"):
        return f"{where}: expected a non-empty string, got {got!r}"
    if kind == "literal_error":
        return f"{where}: expected {(error.get('ctx') or {}).get('expected')}, got {got!r}"
    if kind in ("model_type", "dict_type"):
        return f"{where}: expected a mapping, got {type(got).__name__}"
    return f"{where}: {error['msg']}"

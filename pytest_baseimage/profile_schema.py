"""The profile schema: one typed model of a whole profile, checked when the profile loads.

Why pydantic (v2): one declaration gives the types, ranges, enums and unknown-key refusal at every depth
(`extra="forbid"`), readable error locations, and a JSON schema that the reference (docs/profiles.md) is
generated from, so the loader and the documentation cannot drift. jsonschema would need the schema written
by hand and a second layer for the `packaging` specifier checks.

Every model is strict (no "5001" for 5001, no "yes" for true) and forbids unknown keys. The same model
checks each file on its own (so an error names the file that has it) and then the merged profile, with
`context={"merged": True}` enabling the checks that need the whole chain (a scoring `command`, files named
relative to the profile).
"""

# pydantic evaluates these annotations at run time, and Python 3.9 (supported) has no `X | Y` for types:
# ruff: noqa: UP007, UP045
from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.fields import FieldInfo

from .profile_words import declared, element, inner_model, is_tag, key_path, own_check_text, short, type_text

NETWORKS = ("none", "bridge")  # the scoring server's network: loopback only (default), or egress via bridge
JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")  # scoring.SCHEMA_TYPES' keys
PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")  # os/arch[/variant], as `docker --platform` spells it
PROVIDER = re.compile(r"[A-Za-z0-9]+ExecutionProvider")  # ONNX Runtime's provider names
# OpenVINO's device_type provider option: a device (CPU, GPU.0, NPU, MYRIAD_FP16, VAD-M_FP16 ...) or a
# composite (HETERO:GPU,CPU, MULTI:..., AUTO:...).
DEVICE_TYPE = re.compile(
    r"(CPU|GPU|NPU|MYRIAD|VAD-M|VAD-F|HDDL)(\.\d+)?(_FP(16|32))?|(AUTO|HETERO|MULTI):[A-Z0-9.,_-]+"
)
OPENVINO = "OpenVINOExecutionProvider"


# -- value types -----------------------------------------------------------------------------------------
def _specifier(text: str) -> str:
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise ValueError(f"{text!r} is not a valid version specifier (PEP 440), e.g. '>=3.8'") from None
    return text


def _one_or_many(value: Any) -> Any:
    """A single string stands for a list of one."""
    return [value] if isinstance(value, str) else value


def _false_is_none(value: Any) -> Any:
    """`conda = false` switches a stage off: the section is absent."""
    return None if value is False else value


def is_json_type(content_type: str) -> bool:
    """application/json, or any */*+json media type."""
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def json_file_problem(path: Path, limit: int = 64 << 20) -> str:
    """Why a file is not a JSON document ("" when it is); bounded, since it is read whole."""
    try:
        if path.stat().st_size > limit:
            return f"larger than {limit >> 20} MiB"
        json.loads(path.read_bytes())
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except ValueError as exc:
        return f"not JSON ({exc})"
    return ""


def _json_text(text: str) -> str:
    if text:
        try:
            json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not JSON text ({exc})") from None
    return text


def _matching(pattern: re.Pattern[str], example: str) -> Any:
    def check(text: str) -> str:
        if not pattern.fullmatch(text):
            raise ValueError(f"{text!r} is not of the form {example}")
        return text

    return AfterValidator(check)


def _url_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must start with '/'")
    return text


Text = Annotated[str, Field(min_length=1)]
Specifier = Annotated[str, AfterValidator(_specifier)]
SpecList = Annotated[
    list[Specifier],
    BeforeValidator(_one_or_many, json_schema_input_type=Union[str, list[str]]),
    Field(min_length=1, description="a `packaging` specifier, or a non-empty list of them meaning 'any one of'"),
]
Alternatives = Annotated[
    list[Text], BeforeValidator(_one_or_many, json_schema_input_type=Union[str, list[str]]), Field(min_length=1)
]
Seconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
HttpStatus = Annotated[int, Field(ge=100, le=599)]
UrlPath = Annotated[str, AfterValidator(_url_path)]
Platform = Annotated[str, _matching(PLATFORM, "os/arch[/variant], e.g. 'linux/amd64'")]
Provider = Annotated[str, _matching(PROVIDER, "<Name>ExecutionProvider, e.g. 'CUDAExecutionProvider'")]
JsonType = Literal[JSON_TYPES]


def _device_type(text: str) -> str:
    if text and not DEVICE_TYPE.fullmatch(text):
        raise ValueError(f"{text!r} is not an OpenVINO device type, e.g. 'CPU' or 'GPU_FP16'")
    return text


def _statuses(value: Any) -> Any:
    """`swagger_expected`: a status, a list of them, or false (swagger is not requested)."""
    if value is False:
        return []
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


class Model(BaseModel):
    """Strict, closed: a typo is an error, never a silently ignored key."""

    model_config = ConfigDict(extra="forbid", strict=True)


Remediation = Annotated[
    str,
    Field(description="the fix shown when the stage fails; may use {os_image}, {python_example}, {conda_example}"),
]
Notes = Annotated[str, Field(description="free text for readers of the profile; shown where the stage explains")]


# -- sections --------------------------------------------------------------------------------------------
class OsRule(Model):
    """One accepted distribution: its os-release ID and the VERSION_IDs accepted."""

    id: Text = Field(description="os-release ID, e.g. 'ubuntu' or 'debian' (compared in lower case)")
    version: SpecList = Field("", description="VERSION_ID specifier(s); '': any version")


class OsSection(Model):
    """The os stage: /etc/os-release against the accepted distributions."""

    accept: list[OsRule] = Field(default_factory=list, description="accepted distributions, any one of which passes")
    remediation: Remediation = ""
    notes: Notes = ""


class CondaSection(Model):
    """The conda stage: a conda on PATH, in a version the profile accepts."""

    required: bool = Field(True, description="false: the stage passes without conda")
    version: SpecList = Field("", description="conda version specifier(s); '': any")
    remediation: Remediation = ""
    notes: Notes = ""


class PythonSection(Model):
    """The python stage: the image's default python (the one on PATH) and its version."""

    version: SpecList = Field("", description="Python version specifier(s); '': any")
    remediation: Remediation = ""
    notes: Notes = ""


class AptSection(Model):
    """The apt stage: dpkg packages the inferencing stack needs."""

    required: list[Text] = Field(default_factory=list, description="packages that must all be installed")
    any_of: list[Alternatives] = Field(
        default_factory=list, description="groups of alternatives: one package of each group must be installed"
    )
    remediation: Remediation = Field(
        "", description="the fix shown when the stage fails; <missing packages> is replaced by their names"
    )
    notes: Notes = ""


class AzuremlSection(Model):
    """The azureml stage: Python distributions installed in the default python, and modules that import."""

    packages: dict[str, SpecList] = Field(
        default_factory=dict,
        description='distribution name = version specifier(s), e.g. { "azureml-defaults" = ">=1" }',
    )
    imports: list[Text] = Field(default_factory=list, description="modules that must import without error")
    remediation: Remediation = ""
    notes: Notes = ""


class ExpectedSchema(Model):
    """The small JSON-schema subset the scoring answer is checked against (`scoring.schema_problems`)."""

    type: Union[JsonType, list[JsonType], None] = Field(None, description="JSON type(s) the value must have")
    required: list[str] = Field(default_factory=list, description="keys an object must have")
    properties: dict[str, ExpectedSchema] = Field(default_factory=dict, description="schemas of an object's keys")
    items: Optional[ExpectedSchema] = Field(None, description="schema of every item of an array")
    const: Any = Field(None, description="the exact value (JSON equality)")
    enum: list[Any] = Field(default_factory=list, description="the allowed values")


class ScoringSection(Model):
    """The scoring stage: boot the server in a fresh container and score one request."""

    enabled: bool = Field(True, description="false: the stage is not required")
    reproducible: bool = Field(
        True, description="false: the server cannot be run offline; the stage is SKIPPED with `notes` as the reason"
    )
    server: str = Field("", description="the server's name in messages; default: the command's first word")
    command: list[Text] = Field(
        default_factory=list,
        min_length=1,
        description="the server's command (a list, never a shell string); placeholders "
        "{entry_script}, {model_dir}, {app_root}, {port}. Required when the stage is enabled and reproducible",
    )
    port: Port = Field(5001, description="the port the server listens on inside its container")
    env: dict[str, str] = Field(
        default_factory=dict, description='environment, NAME = "value"; placeholders as in command'
    )
    app_root: str = Field("/var/azureml-app", description="where the entry script goes (AML_APP_ROOT)")
    workdir: Optional[str] = Field(None, description="the server's working directory; default: app_root")
    model_path: Optional[str] = Field(
        None, description="where the model goes (AZUREML_MODEL_DIR); default: {app_root}/azureml-models/sample-model/1"
    )
    score_script: Optional[str] = Field(
        None, description="entry script on the host (relative to the profile file); default: the built-in sample"
    )
    model_dir: Optional[str] = Field(None, description="model directory on the host (relative to the profile file)")
    payload: Any = Field(
        default_factory=dict,
        description="the request body for an entry script of the profile's or --score-script's: a table/array (sent "
        "as JSON) or a string (sent as is); the built-in sample draws its own per run",
    )
    payload_file: Optional[str] = Field(
        None, description="the request body from a file (relative to the profile file); as payload, not for the sample"
    )
    content_type: str = Field("application/json", description="Content-Type of the score request")
    expected_status: HttpStatus = Field(200, description="the score answer's HTTP status")
    expected_json: Annotated[str, AfterValidator(_json_text)] = Field(
        "",
        description="JSON text the answer must equal (1 == 1.0), for the profile's own score_script only (the "
        "built-in sample's exact answer is computed per run; --score-script resets it); empty: no exact check",
    )
    expected: Optional[ExpectedSchema] = Field(None, description="a JSON-schema subset the answer must match")
    liveness_path: UrlPath = Field("/", description="polled until it answers 2xx (the server is up)")
    score_path: UrlPath = Field("/score", description="where the payload is POSTed")
    swagger_path: UrlPath = Field("/swagger.json", description="requested after scoring")
    swagger_expected: Annotated[
        list[HttpStatus], BeforeValidator(_statuses, json_schema_input_type=Union[int, list[int], Literal[False]])
    ] = Field(default_factory=list, description="acceptable swagger statuses; [] or false: swagger is not requested")
    boot_timeout_s: Seconds = Field(60.0, description="how long the server may take to answer the liveness route")
    request_timeout_s: Seconds = Field(30.0, description="how long one request may take")
    network: Literal[NETWORKS] = Field(
        "none", description="the server's network: none (loopback only) or bridge (an init() that downloads)"
    )
    remediation: Remediation = ""
    notes: Notes = ""

    @model_validator(mode="after")
    def _whole(self, info: ValidationInfo) -> ScoringSection:
        context = info.context or {}
        if context.get("merged") and self.enabled and self.reproducible and not self.command:
            raise ValueError("command: required when the stage is enabled and reproducible, e.g. ['azmlinfsrv', ...]")
        base = context.get("base_dir")
        for key in ("score_script", "payload_file", "model_dir"):
            value = getattr(self, key)
            if context.get("merged") and base is not None and value:
                path = Path(value).expanduser()
                path = path if path.is_absolute() else Path(base) / path
                wanted = Path.is_dir if key == "model_dir" else Path.is_file
                if not wanted(path):
                    raise ValueError(f"{key}: no such {'directory' if key == 'model_dir' else 'file'} {path}")
                problem = json_file_problem(path) if key == "payload_file" and is_json_type(self.content_type) else ""
                if problem:
                    raise ValueError(f"payload_file: {path}: {problem}; it is sent as {self.content_type}")
        return self


class DeploymentSection(Model):
    """The deployment stage: the image with its Azure ML environment and deployment YAML (--azureml-environment,
    --azureml-deployment), started as an online endpoint starts it. Without those files it is not checked."""

    boot_timeout_s: Seconds = Field(
        60.0, description="how long the liveness and readiness routes may take to answer 2xx after the start"
    )
    request_timeout_s: Seconds = Field(30.0, description="how long one request may take")
    non_root: bool = Field(False, description="true: the image must run as a non-root USER (Azure ML's own do)")
    remediation: Remediation = ""
    notes: Notes = ""


class GpuSection(Model):
    """The gpu stage: ONNX Runtime's execution providers, compiled in, loadable, usable."""

    providers: list[Provider] = Field(
        default_factory=list, description="execution providers the image must be able to use; empty: not required"
    )
    libraries: list[Alternatives] = Field(
        default_factory=list,
        description="native libraries the providers need; each entry: alternatives, any one of which will do",
    )
    provider_libraries: dict[str, Text] = Field(
        default_factory=dict, description='provider = "library file", adding to or overriding the built-in table'
    )
    device_type: Annotated[str, AfterValidator(_device_type)] = Field(
        "", description="OpenVINO's device_type provider option (OpenVINOExecutionProvider only)"
    )
    require_gpu: bool = Field(False, description="true: the usable check fails, not skips, when no GPU can be used")
    timeout_s: Optional[Seconds] = Field(
        None, description="the gpu stage's own time budget in seconds; default: the stage's built-in budget"
    )
    remediation: Remediation = Field(
        "", description="the fix shown when the stage fails; <missing libraries> is replaced by their names"
    )
    notes: Notes = ""


class ProbeSection(Model):
    """The probe: the one exec in the candidate that collects the facts the stages judge."""

    timeout_s: Seconds = Field(30.0, description="deadline of the probe's exec in the candidate, seconds")


class ImageSection(Model):
    """The image's own configuration."""

    platforms: list[Platform] = Field(
        default_factory=list, description="platforms the image must be built for, e.g. ['linux/amd64']; empty: any"
    )
    remediation: Remediation = ""
    notes: Notes = ""


class ProfileModel(Model):
    """A whole profile (one file, or the merged chain)."""

    name: Optional[Text] = Field(None, description="the profile's name; default: the file name without .toml")
    description: str = Field("", description="one sentence: what the profile certifies")
    extends: Optional[Text] = Field(
        None, description="a built-in profile name, or a path (relative to this file) of the profile this one extends"
    )
    abstract: bool = Field(
        False, description="true: only meant to be extended, refused as a run's profile; not inherited"
    )
    sources: list[str] = Field(default_factory=list, description="where each requirement comes from")
    os: Annotated[Optional[OsSection], BeforeValidator(_false_is_none)] = None
    conda: Annotated[Optional[CondaSection], BeforeValidator(_false_is_none)] = None
    python: Annotated[Optional[PythonSection], BeforeValidator(_false_is_none)] = None
    apt: Annotated[Optional[AptSection], BeforeValidator(_false_is_none)] = None
    azureml: Annotated[Optional[AzuremlSection], BeforeValidator(_false_is_none)] = None
    scoring: Annotated[Optional[ScoringSection], BeforeValidator(_false_is_none)] = None
    deployment: Annotated[Optional[DeploymentSection], BeforeValidator(_false_is_none)] = None
    gpu: Annotated[Optional[GpuSection], BeforeValidator(_false_is_none)] = None
    probe: ProbeSection = Field(default_factory=ProbeSection)
    image: ImageSection = Field(default_factory=ImageSection)

    @model_validator(mode="after")
    def _whole(self, info: ValidationInfo) -> ProfileModel:
        gpu = self.gpu
        if (info.context or {}).get("merged") and gpu and gpu.device_type and OPENVINO not in gpu.providers:
            raise ValueError(f"gpu.device_type: only {OPENVINO} takes a device_type")
        return self


SWITCHABLE = (
    "os",
    "conda",
    "python",
    "apt",
    "azureml",
    "scoring",
    "deployment",
    "gpu",
)  # `name = false` switches them off
SECTIONS: dict[str, type[Model]] = {
    "os": OsSection,
    "conda": CondaSection,
    "python": PythonSection,
    "apt": AptSection,
    "azureml": AzuremlSection,
    "scoring": ScoringSection,
    "deployment": DeploymentSection,
    "gpu": GpuSection,
    "probe": ProbeSection,
    "image": ImageSection,
}


# -- errors as one line ----------------------------------------------------------------------------------
def validate(data: dict[str, Any], *, merged: bool = False, base_dir: Path | None = None) -> ProfileModel:
    """The typed profile; raises ValueError with one line: key path and what was expected."""
    try:
        return ProfileModel.model_validate(data, context={"merged": merged, "base_dir": base_dir})
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["loc"] and isinstance(error["loc"][-1], int) and isinstance(_raw_at(data, error["loc"][:-1]), str):
            error = {**error, "loc": error["loc"][:-1]}  # `version = ">=x"` was read as a list of one
        raise ValueError(explain(error)) from None


def _raw_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def explain(error: dict[str, Any]) -> str:
    """One pydantic error as 'key.path: what was wrong' in the words of a TOML file."""
    loc, kind, ctx = error["loc"], error["type"], error.get("ctx") or {}
    path, got = key_path(loc), short(error.get("input"))
    if kind == "extra_forbidden":
        known = known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
        return f"{path} is not a known key ({hint})"
    if kind == "missing":
        return f"{path} is required"
    if kind == "value_error":
        return own_check_text(tuple(loc), str(ctx.get("error", error["msg"])))
    if kind in TYPE_ERRORS and len(loc) == 1 and loc[0] in SWITCHABLE:
        return f"[{loc[0]}] must be a table (or false to switch the stage off), got {got}"
    if kind in TYPE_ERRORS or kind in BOUND_ERRORS:
        annotation = annotation_at(loc)
        return f"{path}: expected {type_text(annotation) if annotation is not None else 'another type'}, got {got}"
    if kind == "literal_error":
        return f"{path}: expected {ctx.get('expected')}, got {got}"
    if kind in ("too_short", "string_too_short"):
        return f"{path}: must not be empty"
    return f"{path}: {error['msg'][:1].lower()}{error['msg'][1:]}, got {got}"


TYPE_ERRORS = {"int_type", "float_type", "bool_type", "string_type", "list_type", "dict_type", "model_type"}
BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a table at this location may have."""
    model = inner_model(annotation_at(loc))
    return list(model.model_fields) if model else []


def annotation_at(loc: tuple[Any, ...]) -> Any:
    """The declared type of the value at `loc` (list indexes and table keys follow the annotations)."""
    current: Any = ProfileModel
    for part in loc:
        if is_tag(str(part)):
            continue
        model = inner_model(current)
        if model is None:
            current = element(current)
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        current = declared(field)
    return current


def field_info(section: str, key: str) -> FieldInfo:
    """The schema's declaration of section.key ("" for top-level keys)."""
    model = SECTIONS[section] if section else ProfileModel
    return model.model_fields[key]

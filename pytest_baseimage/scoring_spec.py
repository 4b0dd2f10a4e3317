"""The scoring stage's options and spec: profile + options -> ScoringSpec (reads host files, no Docker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import BaseImageError, ExitCode, ProfileError
from .profiles import Profile
from .results import StageResult, Status
from .scoring_data import MAX_MODEL_BYTES, PLACEHOLDER, SAMPLE_NAME, SAMPLE_SCRIPT, Sample, ScoringSpec
from .stages import not_required


# -- pytest options --------------------------------------------------------------------------------------
def add_options(group: Any) -> None:
    """The scoring stage's command-line options, added to the plugin's option group."""
    group.addoption(
        "--score-script",
        default=None,
        metavar="PATH",
        help="entry script (score.py with init() and run()) for the scoring stage, instead of "
        "the built-in sample. It is copied into the server container (never mounted). "
        "Without --score-expected, any answer with the expected status passes.",
    )
    group.addoption(
        "--model-dir",
        default=None,
        metavar="PATH",
        help="model directory copied into the server container where Azure ML puts models "
        "(AZUREML_MODEL_DIR, /var/azureml-app/azureml-models/<name>/<version>).",
    )
    group.addoption(
        "--score-payload",
        default=None,
        metavar="FILE",
        help="request body POSTed to the score route (sent as is, Content-Type from the "
        "profile, application/json by default).",
    )
    group.addoption(
        "--score-expected",
        default=None,
        metavar="FILE",
        help="JSON file: the exact response the score route must return for the payload.",
    )


def options_from_config(config: Any) -> dict[str, str]:
    """The scoring options as Target.options["scoring"]: absolute paths, checked to exist (usage error)."""
    import pytest

    wanted = {
        "score_script": ("--score-script", Path.is_file),
        "model_dir": ("--model-dir", Path.is_dir),
        "payload_file": ("--score-payload", Path.is_file),
        "expected_file": ("--score-expected", Path.is_file),
    }
    options: dict[str, str] = {}
    for key, (flag, exists) in wanted.items():
        value = config.getoption(flag.lstrip("-").replace("-", "_"), None)
        if not value:
            continue
        path = Path(value).expanduser().resolve()
        if not exists(path):
            kind = "directory" if exists is Path.is_dir else "file"
            raise pytest.UsageError(f"{flag} {value}: no such {kind}")
        options[key] = str(path)
    if "expected_file" in options:
        try:
            json.loads(Path(options["expected_file"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise pytest.UsageError(f"--score-expected {options['expected_file']}: not JSON ({exc})") from None
    return options


class ScoringUsageError(BaseImageError):
    """A scoring option the run cannot use (exit 4, before anything starts)."""

    exit_code = ExitCode.USAGE_ERROR


def validate_targets(targets: Any) -> None:
    """A payload the profile sends as JSON must be JSON: a malformed --score-payload (or a matrix entry's
    payload_file) is the user's mistake, found before any container starts, not the image's failure."""
    for target in targets:
        path = (target.options.get("scoring") or {}).get("payload_file")
        if not path:
            continue
        content_type = str(target.profile.setting("scoring", "content_type"))
        from . import profile_schema  # late: pydantic is paid only when a profile is checked

        if profile_schema.is_json_type(content_type):
            problem = profile_schema.json_file_problem(Path(path))
            if problem:
                raise ScoringUsageError(f"--score-payload {path}: {problem}; the profile sends it as {content_type}")


# -- the spec: profile + options -> ScoringSpec (reads host files, no Docker) --------------------------------
def skip_result(profile: Profile) -> StageResult | None:
    """SKIPPED when the profile does not ask for scoring, or names a server that cannot be run offline."""
    section = profile.section("scoring")
    if not section or not section.get("enabled", True):
        return not_required("scoring", profile)
    if not section.get("reproducible", True):
        notes = str(section.get("notes", "")).strip()
        server = section.get("server", "the scoring server")
        reason = f"not checked: {server} cannot be reproduced offline (profile {profile.name})"
        return StageResult("scoring", Status.SKIPPED, reason=f"{reason}: {notes}" if notes else reason)
    return None


def build_spec(profile: Profile, options: dict[str, Any] | None = None, sample: Sample | None = None) -> ScoringSpec:
    """Resolve the profile's [scoring] table and the user's options into one ScoringSpec.

    The table's values were checked when the profile loaded (profile_schema.ScoringSection); only the host
    files they name are read here. Without an entry script of the user's or the profile's, the built-in sample
    runs with a model and payload drawn for this run (`sample`, else a fresh draw); the profile's payload and
    expected_json do not apply to it (--score-payload and --score-expected do). With --model-dir the sample
    script runs on the user's model: the payload is still drawn, and only the profile's schema is checked."""
    section = dict(profile.section("scoring") or {})
    options = options or {}
    base = Path(profile.path).parent if profile.path and Path(profile.path).is_file() else Path.cwd()
    where = f"profile {profile.name}: scoring"
    app_root = str(section.get("app_root", "/var/azureml-app"))
    model_path = str(section.get("model_path", f"{app_root}/azureml-models/sample-model/1"))
    script_host = options.get("score_script") or _path(section.get("score_script"), base)
    if script_host:
        script_name, script = Path(script_host).name, _read(script_host, f"{where}.score_script")
        sample = None
    else:
        script_name, script = "score.py", SAMPLE_SCRIPT
        sample = sample or Sample.draw()
    entry_script = f"{app_root.rstrip('/')}/{script_name}"
    model_host = options.get("model_dir") or _path(section.get("model_dir"), base)
    model = read_model(model_host) if model_host else (sample.model() if sample else {})
    files = {entry_script.lstrip("/"): script}
    files.update({f"{model_path.strip('/')}/{name}": data for name, data in model.items()})
    port = int(section.get("port", 5001))
    values = {"entry_script": entry_script, "model_dir": model_path, "app_root": app_root, "port": str(port)}
    command, env = section["command"], section.get("env", {})
    expected_json, schema = _expectations(section, options, bool(options.get("score_script")))
    payload = _payload(section, options, base, where)
    if sample is not None:  # the built-in script: the profile's payload and expected_json are for its own script
        if not options.get("payload_file"):
            payload = sample.payload()
        if not options.get("expected_file"):  # the user's --model-dir: no exact answer known, the schema applies
            expected_json = "" if model_host else _sample_expectation(sample, payload)
    return ScoringSpec(
        server=str(section.get("server", command[0])),
        command=tuple(_expand(c, values) for c in command),
        port=port,
        env={str(k): _expand(str(v), values) for k, v in env.items()},
        workdir=_expand(str(section.get("workdir", app_root)), values),
        entry_script=entry_script,
        model_path=model_path,
        script_source=script_host or SAMPLE_NAME,
        files=files,
        payload=payload,
        content_type=str(section.get("content_type", "application/json")),
        expected_status=int(section.get("expected_status", 200)),
        expected_json=expected_json,
        expected_schema=schema,
        liveness_path=str(section.get("liveness_path", "/")),
        score_path=str(section.get("score_path", "/score")),
        swagger_path=str(section.get("swagger_path", "/swagger.json")),
        swagger_expected=_statuses(section.get("swagger_expected", [])),
        boot_timeout_s=float(section.get("boot_timeout_s", 60)),
        request_timeout_s=float(section.get("request_timeout_s", 30)),
        remediation=str(section.get("remediation", "")),
        network=server_network(section),
        sample=sample if sample is not None and not model_host else None,
    )


def _sample_expectation(sample: Sample, payload: bytes) -> str:
    """The exact answer to the payload under the drawn model; "" when the payload has no numeric rows (a user's
    --score-payload in another shape: then only the profile's schema is checked)."""
    try:
        rows = json.loads(payload)["data"]
        numbers = [[float(x) for x in row] for row in rows if all(isinstance(x, (int, float)) for x in row)]
    except (ValueError, TypeError, KeyError):
        return ""
    if len(numbers) != len(rows) or any(len(row) != len(sample.weights) for row in numbers):
        return ""
    return json.dumps(Sample(sample.seed, sample.weights, sample.bias, tuple(map(tuple, numbers))).answer())


def _expand(text: str, values: dict[str, str]) -> str:
    """Fill {entry_script}, {model_dir}, {app_root}, {port}; other braces stay as they are."""
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _path(value: Any, base: Path) -> str:
    if not value:
        return ""
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProfileError(f"{what}: cannot read {path} ({exc.strerror or exc})") from None


def server_network(section: dict[str, Any]) -> str:
    """The server's network as the profile's [scoring] table asks (see profile_schema.NETWORKS)."""
    return str(section.get("network", "none"))


def read_model(directory: str) -> dict[str, bytes]:
    """Every regular file under the model directory, by relative path; bounded, since it goes via memory."""
    root = Path(directory)
    if not root.is_dir():
        raise ProfileError(f"model directory {directory} does not exist")
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        total += path.stat().st_size
        if total > MAX_MODEL_BYTES:
            raise ProfileError(
                f"model directory {directory} is larger than {MAX_MODEL_BYTES >> 20} MiB; "
                "use a smaller sample model for the scoring stage"
            )
        files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _statuses(value: Any) -> tuple[int, ...]:
    """swagger_expected: a status, a list of them, or false (not requested)."""
    if value is False or value is None:
        return ()
    return tuple(value if isinstance(value, list) else [value])


def _payload(section: dict[str, Any], options: dict[str, Any], base: Path, where: str) -> bytes:
    """--score-payload (bytes as is), else payload_file, else the inline `payload` value as JSON."""
    if options.get("payload_file"):
        return _read(options["payload_file"], "--score-payload")
    if section.get("payload_file"):
        return _read(_path(section["payload_file"], base), f"{where}.payload_file")
    value = section.get("payload", {})
    return (value if isinstance(value, str) else json.dumps(value)).encode("utf-8")


def _expectations(
    section: dict[str, Any], options: dict[str, Any], own_script: bool
) -> tuple[str, dict[str, Any] | None]:
    """The body checks. The profile's describe its own script: a --score-script alone resets them."""
    if options.get("expected_file"):
        return _read(options["expected_file"], "--score-expected").decode("utf-8"), None
    if own_script:
        return "", None
    return str(section.get("expected_json", "") or ""), section.get("expected") or None

"""The scoring stage: boot the server the profile names in a fresh container and score one request.

Only this module's live half talks to Docker (`observe_scoring`); it hands a plain `ScoringObservation`
to `check_scoring`, which is pure and decides pass/fail and the failure's cause. The server container is
separate from the probe's candidate (its entrypoint is the server), gets the entry script, the model and
the request client (`scoring_client`) through the archive API (never a host mount), publishes no port:
the requests come from inside it, over loopback, so it needs no network and any engine will do. It is
always removed (`Engine.container`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import probe, scoring_client
from .engine import Engine, image_start_fault
from .errors import BaseImageError, EngineError, ExitCode, ProfileError
from .facts import Facts
from .profiles import Profile
from .results import StageResult, Status
from .scoring_client import ANSWER_BYTES
from .stages import Stage, not_required, register, start_fix
from .text import clip, strip_ansi

# -- constants -------------------------------------------------------------------------------------------
LOG_LINES = 50  # lines of server log a failure shows
LOG_LINE_CHARS = 400  # one log line is cut here (a pathological line must not fill the report)
LOG_CHARS = 8000  # the whole log excerpt is cut here
LOG_SCAN_LINES = 2000  # lines read to find an exception (the traceback may be above the last 50)
LOG_READ_BYTES = 1 << 20  # at most this much of the log's end is kept (and read, for the first ask)
LOG_SHORT_TAIL = 64  # lines asked for when the last LOG_SCAN_LINES are larger than that
LOG_STREAM_BYTES = 16 << 20  # read no further than this, whatever the engine sends
BODY_READ_BYTES = 1 << 20  # at most this much of any response is read
POLL_INTERVAL_S = 0.05  # between liveness polls: short, so boot time is measured to ~50 ms
CLIENT_SLACK_S = 15.0  # the client's own deadlines end it; this backstop is for a client that hangs
CLIENT_CHECK_S = 0.5  # how often the host's client checks that the server's container still runs
CLIENT_GRACE_S = 5.0  # how long a client that ended without an answer waits to see the server's exit
MAX_MODEL_BYTES = 512 << 20  # model files are copied in memory through the archive API
PLACEHOLDER = re.compile(r"\{(entry_script|model_dir|app_root|port)\}")

# The causes a failure can have: machine-readable name -> what to do about it.
CAUSES: dict[str, str] = {
    "server-missing": "Install the server into the image so that its command is on PATH "
    "(for azmlinfsrv: pip install azureml-inference-server-http).",
    "port-never-opened": "The server never listened on its port: check the command, the port setting and the log.",
    "init-raised": "The entry script's init() (or its import) raised: see the exception and the log; "
    "often a missing package or model file.",
    "run-raised": "The entry script's run() raised on the sample payload: see the exception and the log.",
    "wrong-status": "The server answered with an unexpected HTTP status: see the log.",
    "bad-body": "The score answer does not match the expected response.",
    "timeout": "The server accepted connections but did not answer in time: a blocking init() or run(), "
    "or too little memory/CPU.",
    "server-exited": "The server process stopped before it could answer: see the exit code and the log.",
    "wrong-platform": "The image's programs are built for another CPU than the engine's: build it for "
    "linux/amd64 (`docker build --platform linux/amd64`).",
    "cannot-copy": "The stage copies the entry script and the model where Azure ML puts them (the profile's app_root, "
    "/var/azureml-app by default): every directory on that path must be a directory in the image, not a file.",
    "cannot-start": "The image cannot start any process as configured: see the cause.",
    "loopback-only": "The server listens on a loopback address only, so nothing outside its container (Azure ML's "
    "router and health probes) can reach it: bind to 0.0.0.0 (azmlinfsrv and gunicorn do by default).",
}
COPY_REFUSED = "Error processing tar file"  # the engine's words when the container's filesystem refused an archive
ENGINE_COPY_FAULTS = ("no space left on device", "input/output error", "read-only file system")  # the engine's disk
SERVER_MISSING_ERRORS = ("executable file not found", "no such file or directory", "permission denied")
INIT_FAILED_MARKERS = (
    "User's init function failed",
    "Failed to import user script",
    "Worker failed to boot",
    "does not have a init() function",
    "does not have a run() function",
)
SCHEMA_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}

# The built-in sample: used when neither the profile nor --score-script names an entry script. It is
# written for Python 2.7/3.5+ (no f-strings) so that it runs in any image the profiles accept.
SAMPLE_SCRIPT = b'''"""pytest-baseimage sample entry script: a linear model read from AZUREML_MODEL_DIR."""
import contextlib
import ipaddress
import json
import os

model = None


def init():
    global model
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json")
    with open(path) as handle:
        model = json.load(handle)


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    weights, bias = model["weights"], model["bias"]
    return {"result": [sum(w * x for w, x in zip(weights, row)) + bias for row in rows]}
'''
SAMPLE_NAME = "built-in sample (linear model)"
# The sample's model and payload are drawn per run, so that only a server that really runs the entry script
# with that model gives the right answer (a constant answer could be served by anything). Weights are
# multiples of 1/8 and inputs multiples of 1/4, small: every product and sum is exact in binary floating
# point, so the host's arithmetic and the candidate's agree to the bit.
SAMPLE_FEATURES = 3
SAMPLE_ROWS = 3
SAMPLE_WEIGHT_STEPS = (32, 8)  # integers in [-32, 32], divided by 8: -4.0 .. 4.0 by 0.125
SAMPLE_INPUT_STEPS = (32, 4)  # -8.0 .. 8.0 by 0.25


@dataclass(frozen=True)
class Sample:
    """One run's draw of the built-in sample: the model written into the container, the payload, the answer."""

    seed: int
    weights: tuple[float, ...]
    bias: float
    rows: tuple[tuple[float, ...], ...]

    @classmethod
    def draw(cls, seed: int | None = None) -> Sample:
        """A fresh sample; the seed comes from os.urandom unless given (tests), and is recorded."""
        seed = int.from_bytes(os.urandom(8), "big") if seed is None else seed
        rng = random.Random(seed)

        def value(steps: tuple[int, int]) -> float:
            return rng.randint(-steps[0], steps[0]) / steps[1]

        weights = tuple(value(SAMPLE_WEIGHT_STEPS) for _ in range(SAMPLE_FEATURES))
        rows = tuple(tuple(value(SAMPLE_INPUT_STEPS) for _ in range(SAMPLE_FEATURES)) for _ in range(SAMPLE_ROWS))
        return cls(seed, weights, value(SAMPLE_WEIGHT_STEPS), rows)

    def model(self) -> dict[str, bytes]:
        return {"model.json": json.dumps({"weights": list(self.weights), "bias": self.bias}).encode() + b"\n"}

    def payload(self) -> bytes:
        return json.dumps({"data": [list(row) for row in self.rows]}).encode()

    def answer(self) -> dict[str, list[float]]:
        """What SAMPLE_SCRIPT's run() returns for this model and payload, computed the same way on the host."""
        return {"result": [sum(w * x for w, x in zip(self.weights, row)) + self.bias for row in self.rows]}

    def details(self) -> dict[str, Any]:
        return {"seed": f"{self.seed:016x}", "weights": list(self.weights), "bias": self.bias, **self.answer()}


# -- data ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoringSpec:
    """Everything one scoring run needs, resolved from the profile and the options (files already read)."""

    server: str
    command: tuple[str, ...]
    port: int
    env: dict[str, str]
    workdir: str
    entry_script: str  # path inside the container
    model_path: str  # directory inside the container
    script_source: str  # where the script came from, for messages
    files: dict[str, bytes]  # container path without the leading "/" -> content
    payload: bytes
    content_type: str = "application/json"
    expected_status: int = 200
    expected_json: str = ""  # JSON text the body must equal; "" = no exact check
    expected_schema: dict[str, Any] | None = None  # small JSON-schema subset; None = no check
    liveness_path: str = "/"
    score_path: str = "/score"
    swagger_path: str = "/swagger.json"
    swagger_expected: tuple[int, ...] = ()  # acceptable statuses; () = swagger is not requested
    boot_timeout_s: float = 60.0
    request_timeout_s: float = 30.0
    remediation: str = ""
    network: str = "none"  # see profile_schema.NETWORKS
    sample: Sample | None = None  # the built-in sample's draw for this run; None with the user's own script
    # The deployment stage's routes (a custom container's inference_config); 0 / "" / () = as above, not asked.
    liveness_port: int = 0  # 0: `port`
    readiness_path: str = ""  # "": no readiness route is polled
    readiness_port: int = 0
    final_statuses: tuple[int, ...] = ()  # a poll that gets one of these stops (the server is up, the route not)
    list_ports: bool = False  # also report every listening socket, "address:port"


@dataclass
class Exchange:
    """One HTTP request to the server: a status and body, or a transport error kind."""

    method: str
    path: str
    status: int | None = None
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""  # "" | "closed" (refused/reset/empty reply) | "timeout" (connected, no answer) | text
    elapsed_s: float = 0.0
    port: int = 0  # the port asked (0: not said)

    def describe(self) -> str:
        if self.status is not None:
            return f"{self.method} {self.path} -> {self.status}"
        what = {"closed": "connection refused or closed", "timeout": "no answer"}.get(self.error, self.error)
        return f"{self.method} {self.path}: {what}"


@dataclass
class ScoringObservation:
    """What happened to the server container; the pure check turns it into a StageResult."""

    spec: ScoringSpec
    start_error: str = ""  # the engine could not start the command (State.Error)
    running: bool = False  # still running when the checks ended
    exit_code: int | None = None
    oom_killed: bool = False
    healthy: bool = False
    boot_s: float | None = None  # container start -> first 2xx from the liveness route
    create_to_score_s: float | None = None  # container create -> score answer read (for the bench)
    polls: int = 0
    last_liveness: Exchange | None = None
    score: Exchange | None = None
    swagger: Exchange | None = None
    log: str = ""  # raw tail of the container log (cleaned by the check)
    listen: list[str] = field(default_factory=list)  # addresses listening on the port, seen from inside
    copy_error: str = ""  # the image refused the stage's files (a path on their way is not a directory)
    client_error: str = ""  # the requests could not be sent (no python in the image, the client failed)
    relayed: bool = False  # the answer came through the candidate's own python, not from the tool's process
    relay_reason: str = ""  # why the tool could not ask the server itself
    readiness: Exchange | None = None  # the last readiness poll (deployment stage only)
    ready_s: float | None = None  # container start -> first 2xx from the readiness route
    readiness_polls: int = 0
    listen_all: list[str] = field(default_factory=list)  # every listening socket, "address:port" (list_ports)


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
        content_type = str(target.profile.setting("scoring", "content_type"))
        from . import profile_schema  # late: pydantic is paid only when a profile loads

        if path and profile_schema.is_json_type(content_type):
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
    model = _read_model(model_host) if model_host else (sample.model() if sample else {})
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
        network=str(section.get("network", "none")),
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


def _read_model(directory: str) -> dict[str, bytes]:
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


# -- pure decisions --------------------------------------------------------------------------------------
def clean_log(text: str, lines: int = LOG_LINES) -> str:
    """The last lines of an untrusted log, without terminal escapes or control bytes, bounded in size."""
    # Line by line: an unterminated escape sequence then swallows the rest of its line, not the rest of the log.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = [strip_ansi(line)[:LOG_LINE_CHARS] for line in text.rstrip("\n").split("\n")[-lines:]]
    return clip("\n".join(kept), LOG_CHARS)


def exception_lines(log: str) -> list[str]:
    """The `Type: message` line that ends each Python traceback in the log, in order."""
    found: list[str] = []
    in_traceback = False
    for line in log.splitlines():
        if "Traceback (most recent call last):" in line:
            in_traceback = True
        elif in_traceback and line.strip() and not line.startswith((" ", "\t")):
            found.append(line.strip()[:LOG_LINE_CHARS])
            in_traceback = False
    return found


def user_exception(log: str) -> str:
    """The exception the user's code raised: the server re-raises it wrapped in its own exception types."""
    lines = exception_lines(log)
    own = [line for line in lines if not line.startswith("azureml_inference_server_http.")]
    return (own or lines or [""])[-1]


def schema_problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """A small JSON-schema subset (type, required, properties, items, const, enum): what does not match."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_is_type(value, name) for name in names):
            return [f"{where} is {_json_type(value)}, expected {' or '.join(names)}"]
    problems = []
    if "const" in schema and not same_json(value, schema["const"]):
        problems.append(f"{where} is {_short_json(value)}, expected {_short_json(schema['const'])}")
    if "enum" in schema and not any(same_json(value, option) for option in schema["enum"]):
        problems.append(f"{where} is {_short_json(value)}, expected one of {_short_json(schema['enum'])}")
    if isinstance(value, dict):
        problems += [f"{where} has no key {key!r}" for key in schema.get("required", []) if key not in value]
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                problems += schema_problems(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{where}[{index}]")
    return problems


def same_json(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 (Python's == says otherwise)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def body_problems(body: str, spec: ScoringSpec) -> list[str]:
    """Why the score answer is not the expected one ([] when it is, or when nothing is expected)."""
    if not spec.expected_json and spec.expected_schema is None:
        return []
    try:
        value = json.loads(body)
    except ValueError:
        return [f"the body is not JSON: {body[:200]!r}"]
    problems = _value_problems(value, spec)
    inner = _unwrap(value)
    if problems and inner is not value:  # run() returned json.dumps(...): the server encoded it twice
        return _value_problems(inner, spec)
    return problems


def _value_problems(value: Any, spec: ScoringSpec) -> list[str]:
    problems = []
    if spec.expected_json:
        want = json.loads(spec.expected_json)
        if not same_json(value, want):
            problems.append(f"body {_short_json(value)} differs from the expected {_short_json(want)}")
    if spec.expected_schema is not None:
        problems += schema_problems(value, spec.expected_schema)
    return problems


def _unwrap(value: Any) -> Any:
    """The JSON inside a JSON string, when there is an object or array in it; else the value itself."""
    if isinstance(value, str):
        try:
            inner = json.loads(value)
        except ValueError:
            return value
        if isinstance(inner, (dict, list)):
            return inner
    return value


def _is_type(value: Any, name: str) -> bool:
    if name in ("number", "integer") and isinstance(value, bool):
        return False
    return isinstance(value, SCHEMA_TYPES.get(name, ()))


def _json_type(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return type(value).__name__


def _short_json(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else f"{text[:limit]}…"


@dataclass(frozen=True)
class Cause:
    """Why scoring failed: a machine-readable name and one human sentence."""

    name: str
    text: str
    exception: str = ""
    fix: str = ""  # what to do, when it depends on more than the name (else CAUSES[name])


def classify(obs: ScoringObservation) -> Cause | None:
    """The first thing that went wrong, in the order a request meets it; None when all passed."""
    spec = obs.spec
    if obs.copy_error:
        return Cause("cannot-copy", obs.copy_error)
    if obs.start_error:
        return _start_failure(obs)
    if not obs.healthy and not (obs.running and scoring_client.loopback_only(obs.listen)):
        return _boot_failure(obs)
    if scoring_client.loopback_only(obs.listen):  # from outside, such a server is refused: it never boots
        return Cause(
            "loopback-only",
            f"port {spec.port} answers inside the container but listens only on {', '.join(obs.listen)}",
        )
    score = obs.score
    if score is None or score.status is None:
        return _transport_failure(score, spec, "run-raised", obs)
    if score.status != spec.expected_status:
        failed_in_run = score.headers.get("x-ms-run-function-failed", "").lower() == "true"
        exception = user_exception(obs.log)
        if score.status >= 500 and (failed_in_run or exception):
            return Cause(
                "run-raised",
                f"POST {spec.score_path} answered {score.status}: run() raised"
                + (f" {exception}" if exception else ""),
                exception,
            )
        return Cause(
            "wrong-status",
            f"POST {spec.score_path} answered {score.status}, expected {spec.expected_status}: {score.body[:200]!r}",
        )
    problems = body_problems(score.body, spec)
    if problems:
        return Cause("bad-body", "; ".join(problems))
    if spec.swagger_expected:
        swagger = obs.swagger
        if swagger is None or swagger.status is None:
            return _transport_failure(swagger, spec, "wrong-status", obs)
        if swagger.status not in spec.swagger_expected:
            wanted = " or ".join(str(s) for s in spec.swagger_expected)
            return Cause("wrong-status", f"GET {spec.swagger_path} answered {swagger.status}, expected {wanted}")
    return None


def _start_failure(obs: ScoringObservation) -> Cause:
    error = obs.start_error
    fault = image_start_fault(error)
    fix = start_fix(fault.reason) if fault is not None else ""
    if fault is not None and fix and "exec format error" not in error.lower():  # an unknown USER or group
        return Cause("cannot-start", f"the server container could not start: {fault.reason}", fix=fix)
    if "exec format error" in error.lower():
        return Cause(
            "wrong-platform",
            f"the server command `{obs.spec.command[0]}` cannot run: exec format error (a binary built for another "
            "CPU)",
        )
    if any(marker in error.lower() for marker in SERVER_MISSING_ERRORS):
        return Cause(
            "server-missing",
            f"the server command `{obs.spec.command[0]}` cannot run in the image: {_runtime_error(error)}",
        )
    return Cause("server-exited", f"the server container did not start: {error[:300]}")


def _boot_failure(obs: ScoringObservation) -> Cause:
    spec = obs.spec
    if not obs.running and obs.exit_code is not None:
        return _exit_cause(obs)
    last = obs.last_liveness
    waited = f"within {spec.boot_timeout_s:g} s ({obs.polls} polls)"
    if last is None or last.error == "closed":
        return Cause("port-never-opened", f"nothing answered on port {spec.port} {waited}")
    if last.status is not None:
        return Cause(
            "wrong-status",
            f"GET {spec.liveness_path} still answered {last.status} after {spec.boot_timeout_s:g} s, expected 2xx",
        )
    if last.error == "timeout":
        return Cause(
            "timeout",
            f"port {spec.port} accepted connections but GET {spec.liveness_path} got no "
            f"answer {waited}: is init() blocking?",
        )
    return Cause("port-never-opened", f"GET {spec.liveness_path} failed {waited}: {last.error}")


def _exit_cause(obs: ScoringObservation) -> Cause:
    code, command = obs.exit_code, obs.spec.command[0]
    if obs.oom_killed:
        return Cause("server-exited", f"the server was killed for using too much memory (exit {code})")
    if code in (126, 127):
        return Cause("server-missing", f"`{command}` could not be run in the image (exit {code})")
    exception = user_exception(obs.log)
    if code == 3 or any(marker in obs.log for marker in INIT_FAILED_MARKERS):
        text = f"the worker failed to boot (exit {code}): init() or importing the entry script raised"
        return Cause("init-raised", f"{text} {exception}" if exception else text, exception)
    return Cause(
        "server-exited",
        f"the server exited with code {code} before answering" + (f": {exception}" if exception else ""),
        exception,
    )


def _transport_failure(exchange: Exchange | None, spec: ScoringSpec, otherwise: str, obs: ScoringObservation) -> Cause:
    if exchange is None:
        return Cause(otherwise, "the request was not made")
    if exchange.error == "timeout":
        return Cause("timeout", f"{exchange.method} {exchange.path} got no answer within {spec.request_timeout_s:g} s")
    exception = user_exception(obs.log)
    return Cause(
        otherwise, f"{exchange.describe()} (the worker crashed?)" + (f" {exception}" if exception else ""), exception
    )


def _runtime_error(error: str) -> str:
    match = re.search(r"exec: (.*?)(?:: unknown)?$", error)
    return (match.group(1) if match else error)[:300]


def expected_text(spec: ScoringSpec) -> str:
    parts = [
        f"{spec.server} answers GET {spec.liveness_path} (2xx) within {spec.boot_timeout_s:g} s",
        f"POST {spec.score_path} -> {spec.expected_status}",
    ]
    if spec.expected_json:
        parts[-1] += f" with {_short_json(json.loads(spec.expected_json))}"
    elif spec.expected_schema is not None:
        parts[-1] += " matching the expected schema"
    if spec.swagger_expected:
        parts.append(f"GET {spec.swagger_path} -> {' or '.join(str(s) for s in spec.swagger_expected)}")
    return "; ".join(parts)


def observed_text(obs: ScoringObservation) -> str:
    parts = []
    if obs.boot_s is not None:
        parts.append(f"healthy after {obs.boot_s:.2f} s")
    if obs.score and obs.score.status is not None:
        parts.append(f"POST {obs.score.path} {obs.score.status} in {obs.score.elapsed_s * 1000:.0f} ms")
    if obs.swagger and obs.swagger.status is not None:
        parts.append(f"GET {obs.swagger.path} {obs.swagger.status}")
    if parts and obs.relayed:
        parts.append(f"answers relayed by the candidate's own python ({obs.relay_reason})")
    return "; ".join(parts)


def timing_details(obs: ScoringObservation) -> dict[str, Any]:
    details: dict[str, Any] = {
        "script": obs.spec.script_source,
        "command": " ".join(obs.spec.command),
        "polls": obs.polls,
    }
    if obs.boot_s is not None:
        details["boot_s"] = round(obs.boot_s, 3)
    if obs.score and obs.score.status is not None:
        details["score_latency_s"] = round(obs.score.elapsed_s, 4)
        details["score_status"] = obs.score.status
        server = obs.score.headers.get("x-ms-server-version")
        if server:
            details["server_version"] = server[:100]
    if obs.create_to_score_s is not None:
        details["create_to_score_s"] = round(obs.create_to_score_s, 3)
    if obs.swagger and obs.swagger.status is not None:
        details["swagger_status"] = obs.swagger.status
    if obs.listen:
        details["listening_on"] = ", ".join(obs.listen)
    if obs.exit_code is not None and not obs.running:
        details["exit_code"] = obs.exit_code
    details["relayed_by_candidate"] = obs.relayed
    if obs.relayed:
        details["relay_reason"] = obs.relay_reason
    if obs.spec.sample is not None:
        details["sample"] = obs.spec.sample.details()
    return details


def check_scoring(_facts: Facts, profile: Profile, observation: ScoringObservation | None) -> StageResult:
    """Pass when the server booted, scored the payload as expected and served its routes."""
    skipped = skip_result(profile)
    if skipped is not None:
        return skipped
    if observation is None:
        return StageResult("scoring", Status.ERROR, reason="the scoring server was not observed")
    spec = observation.spec
    details = timing_details(observation)
    if observation.client_error and observation.running:  # the server may be fine: it was never asked
        details["log"] = clean_log(observation.log)
        reason = f"could not exercise the server: {observation.client_error}"
        return StageResult("scoring", Status.ERROR, expected_text(spec), reason=reason, details=details)
    cause = classify(observation)
    if cause is None:
        return StageResult("scoring", Status.PASS, expected_text(spec), observed_text(observation), details=details)
    details.update(cause=cause.name, log=clean_log(observation.log))
    if cause.exception:
        details["exception"] = cause.exception
    if observation.score is not None and observation.score.status is not None:
        details["score_body"] = clip(observation.score.body, 1000)
    fix = " ".join(part for part in (cause.fix or CAUSES.get(cause.name, ""), spec.remediation) if part)
    observed = f"{cause.name}: {cause.text}"
    so_far = observed_text(observation)
    return StageResult(
        "scoring",
        Status.FAIL,
        expected_text(spec),
        f"{observed} ({so_far})" if so_far else observed,
        fix,
        details=details,
    )


# -- the live part: Docker and HTTP ----------------------------------------------------------------------
def observe_scoring(check: Any) -> ScoringObservation | None:
    """Run the profile's server on the candidate image (an `ImageCheck`); None when the stage is skipped."""
    if skip_result(check.profile) is not None:
        return None
    spec = build_spec(check.profile, check.target.options.get("scoring"))
    return run_server(check.engine, check.info.image_id or check.target.reference, spec)


def run_server(
    engine: Engine, image: str, spec: ScoringSpec, *, role: str = "scoring", container: dict[str, Any] | None = None
) -> ScoringObservation:
    """Create, fill, start and exercise one server container; it (and its network) is removed whatever happens.

    Where this process can reach the container's network without publishing a port (a local engine on
    Linux: the bridge is on this host), the server runs on an internal network made for it (no egress) and
    the requests come from this process, so nothing in the image can forge the answer. Elsewhere (a remote
    or rootless engine) the requests come from a client run by the image's own python, over loopback,
    with network "none", and the result says the answer was relayed by the candidate. `container` overrides
    the container's settings (the deployment stage runs the image's own entrypoint and working directory)."""
    obs = ScoringObservation(spec=spec)
    created = time.monotonic()
    marker = f"@@pytest-baseimage-client-{uuid.uuid4().hex}@@"
    with server_route(engine, spec) as route:
        obs.relayed, obs.relay_reason = not route.from_host, route.why
        options = {
            "command": list(spec.command),
            "environment": spec.env,
            "working_dir": spec.workdir,
            "network_mode": route.network,
            **(container or {}),
        }
        with engine.container(image, role=role, **options) as box:
            files = dict(spec.files)
            if obs.relayed:
                files.update(scoring_client.files(client_request(spec), spec.payload, marker))
            obs.copy_error = _copy_in(engine, box, files, spec)
            if obs.copy_error:
                return obs
            started = time.monotonic()
            if engine.start(box):
                _exercise(engine, box, obs, marker, created, started, route)
            _record_state(box, obs)
            obs.log = _logs(box)
    return obs


def _copy_in(engine: Engine, box: Any, files: dict[str, bytes], spec: ScoringSpec) -> str:
    """Copy the stage's files into the created container; "" when done, else why the image refused them.

    The engine unpacks the archive inside the container's filesystem: when it says it could not (a path the
    files go through is a file in the image), that is the image's doing. Any other failure is the engine's."""
    try:
        engine.put_files(box, "/", files)
    except EngineError as exc:
        said = str(exc)
        if COPY_REFUSED not in said or any(marker in said.lower() for marker in ENGINE_COPY_FAULTS):
            raise
        return _copy_problem(engine, box, files, spec) or (
            f"could not copy the stage's files into the image: {clip(said.split(COPY_REFUSED, 1)[-1].strip(), 300)}"
        )
    return ""


def _copy_problem(engine: Engine, box: Any, files: dict[str, bytes], spec: ScoringSpec) -> str:
    """Which directory the files could not go into, and the path on the way that is not a directory."""
    groups = (
        ("the entry script", str(Path(spec.entry_script).parent)),
        ("the model", spec.model_path),
        ("the request client", scoring_client.DIRECTORY),
    )
    for what, directory in groups:
        prefix = directory.strip("/") + "/"
        if not any(name.startswith(prefix) for name in files):
            continue
        path = ""
        for part in Path(directory.strip("/")).parts:
            path = f"{path}/{part}"
            found = engine.stat(box, path)
            if found.absent:
                break  # the engine creates what is missing: the rest of the way is free
            if found.kind != "a directory":
                kind = found.problem or ("a regular file" if found.kind == "file" else found.kind)
                return f"could not copy {what} into {directory}: the image's {path} is {kind}, not a directory"
    return ""


@dataclass(frozen=True)
class Route:
    """How the requests reach the server: the container's network, and who sends them."""

    network: str  # the container's network_mode
    from_host: bool  # this process sends the requests; False: the candidate's python relays them
    why: str = ""  # why this process cannot, when it cannot


@contextmanager
def server_route(engine: Engine, spec: ScoringSpec) -> Iterator[Route]:
    """The route for one server; an internal network made for it is removed on the way out."""
    why = _not_local(engine)
    if why:
        yield Route(spec.network, False, why)
        return
    if spec.network == "bridge":  # the profile wants egress: the default bridge, asked from here
        reachable = _reachable(_gateway(engine, "bridge"))
        yield Route("bridge", reachable, "" if reachable else UNREACHABLE)
        return
    try:
        network = engine.client.networks.create(
            f"pytest-baseimage-scoring-{uuid.uuid4().hex[:12]}",
            driver="bridge",
            internal=True,
            labels=engine.labels("scoring"),
        )
    except Exception as exc:  # e.g. the engine's address pools are exhausted: the relayed client still works
        yield Route("none", False, f"could not create an internal network for the server ({type(exc).__name__})")
        return
    try:
        reachable = _reachable(_gateway(engine, network.id))
        yield Route(network.name, True) if reachable else Route("none", False, UNREACHABLE)
    finally:
        with contextlib.suppress(Exception):  # best effort: the container is gone, the network is empty
            network.remove()


UNREACHABLE = (
    "the engine's container networks are not on this machine's network (a rootless engine, or this runs in a container)"
)


def _not_local(engine: Engine) -> str:
    """Why this process cannot share a network with the engine's containers; "" when it may."""
    if not sys.platform.startswith("linux"):
        return f"the engine runs in a virtual machine on {sys.platform}"
    if not engine.host.startswith("unix://"):
        return f"the engine at {engine.host} is not on this machine"
    return ""


def _gateway(engine: Engine, network: str) -> str:
    """The network's gateway (the bridge's address on the engine's host); from the subnet when not listed."""
    try:
        configs = (engine.client.api.inspect_network(network).get("IPAM") or {}).get("Config") or []
    except Exception:
        return ""
    for config in configs:
        if config.get("Gateway"):
            return str(config["Gateway"]).split("/")[0]
        with contextlib.suppress(ValueError, KeyError, IndexError):
            return str(ipaddress.ip_network(config["Subnet"])[1])
    return ""


def _reachable(address: str) -> bool:
    """True when `address` is one of this machine's own: the bridge is here, so its containers are reachable."""
    if not address:
        return False
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe_socket:
            probe_socket.bind((address, 0))
    except OSError:
        return False
    return True


def client_request(spec: ScoringSpec) -> dict[str, Any]:
    """What the in-container client does: the spec's routes, deadlines and limits (the payload travels apart)."""
    return {
        "port": spec.port,
        "liveness_path": spec.liveness_path,
        "score_path": spec.score_path,
        "swagger_path": spec.swagger_path,
        "swagger": bool(spec.swagger_expected),
        "content_type": spec.content_type,
        "boot_timeout_s": spec.boot_timeout_s,
        "request_timeout_s": spec.request_timeout_s,
        "poll_interval_s": POLL_INTERVAL_S,
        "max_body": BODY_READ_BYTES,
        "liveness_port": spec.liveness_port or spec.port,
        "readiness_path": spec.readiness_path,
        "readiness_port": spec.readiness_port or spec.port,
        "final_statuses": list(spec.final_statuses),
        "list_ports": spec.list_ports,
    }


def _exercise(
    engine: Engine, box: Any, obs: ScoringObservation, marker: str, created: float, started: float, route: Route
) -> None:
    """Send the requests: from this process when the route allows, else through the candidate's python."""
    if route.from_host:
        _ask_from_host(box, obs, marker, created, started, route)
    else:
        _relay(engine, box, obs, marker, created, started)


def _budget(spec: ScoringSpec) -> float:
    return spec.boot_timeout_s + 2 * spec.request_timeout_s + CLIENT_SLACK_S


def _ask_from_host(
    box: Any, obs: ScoringObservation, marker: str, created: float, started: float, route: Route
) -> None:
    """Run the same client program under this machine's python, against the container's address."""
    spec = obs.spec
    try:
        box.reload()
        address = box.attrs["NetworkSettings"]["Networks"][route.network]["IPAddress"]
        pid = int(box.attrs["State"]["Pid"])
    except Exception:  # the server exited at once: its state says why
        return
    if not address:
        return
    request = {
        **client_request(spec),
        "host": address,
        "stop_on_loopback": True,  # refused, yet listening: only on loopback (read from the server's netns)
        "listen_files": [f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"],
    }
    with tempfile.TemporaryDirectory(prefix="pytest-baseimage-client-") as tmp:
        for name, data in scoring_client.files(request, spec.payload, marker).items():
            (Path(tmp) / Path(name).name).write_bytes(data)
        command = scoring_client.command(sys.executable)
        command[-2:] = [str(Path(tmp) / "client.py"), str(Path(tmp) / "request.json")]
        exec_started = time.monotonic()
        out, err, code = _run_client(command, box, _budget(spec))
    exec_s = time.monotonic() - exec_started
    answer = probe.last_marked_json(out, marker)
    if answer is not None:
        _use_answer(obs, answer, exec_started, exec_s, created, started)
    elif code is None:
        obs.client_error = f"the request client did not finish within {_budget(spec):.0f} s"
    elif _still_running(box):
        said = clip(probe.last_line(err), 300) or "(no output)"
        obs.client_error = f"the request client ({sys.executable}) failed with exit {code}: {said}"


def _run_client(command: list[str], box: Any, budget: float) -> tuple[str, str, int | None]:
    """Run the host's client until it ends, the budget does, or the server's container stops (a crash, or
    the run being interrupted): then the client is ended too, as it would be inside the container.
    (stdout, stderr, exit code or None when the budget ran out)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + budget
    timed_out = False
    try:
        while True:
            try:  # what was read before a timeout is kept: the last call returns all of it
                out, err = proc.communicate(timeout=CLIENT_CHECK_S)
                break
            except subprocess.TimeoutExpired:
                timed_out = time.monotonic() >= deadline
                if timed_out or not _still_running(box):
                    proc.kill()
                    out, err = proc.communicate()
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    code = None if timed_out else proc.returncode
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), code


def _use_answer(
    obs: ScoringObservation, answer: dict[str, Any], exec_started: float, exec_s: float, created: float, started: float
) -> None:
    # The client's clock starts after its interpreter did: count that time into the timings.
    ran = scoring_client.number(answer.get("ran_s")) if answer.get("done") is True else None
    offset = exec_started - started + (max(exec_s - ran, 0.0) if ran is not None else 0.0)
    _read_answer(obs, answer, offset, offset + (started - created))


def _relay(engine: Engine, box: Any, obs: ScoringObservation, marker: str, created: float, started: float) -> None:
    """Run the client with the first python the image has; a server that dies ends it (and the container)."""
    result = None
    for python in scoring_client.PYTHONS:
        exec_started = time.monotonic()
        result = engine.exec(box, scoring_client.command(python), timeout=_budget(obs.spec), max_output=ANSWER_BYTES)
        exec_s = time.monotonic() - exec_started
        answer = probe.last_marked_json(result.stdout, marker)
        if answer is not None:
            _use_answer(obs, answer, exec_started, exec_s, created, started)
            return
        if _not_found(result) and _still_running(box):
            continue  # no such python here (the server still runs): try the next name
        if _stops_within(box, CLIENT_GRACE_S):
            return  # the server stopped, and took the client with it: the container's state says why
        obs.client_error = f"the request client ({python}) failed with exit {result.exit_code}: {_last_line(result)}"
        return
    obs.client_error = (
        f"no {' or '.join(scoring_client.PYTHONS)} on the image's PATH to send the requests from inside the "
        f"container (the entry script needs python anyway): {_last_line(result)}"
    )


def _not_found(result: Any) -> bool:
    """The exec could not start its program: the runtime says so, with exit 126 or 127."""
    said = (result.stdout + result.stderr).lower()
    return result.exit_code in (126, 127) and any(marker in said for marker in SERVER_MISSING_ERRORS[:2])


def _last_line(result: Any) -> str:
    """The last non-empty line of what a failed exec printed: a traceback's exception, an OCI error."""
    if result is None:
        return ""
    if result.truncated:
        return f"it printed more than {ANSWER_BYTES >> 20} MiB"
    return clip(probe.last_line(result.stderr + "\n" + result.stdout), 300) or "(no output)"


def _read_answer(obs: ScoringObservation, answer: dict[str, Any], offset: float, since_create: float) -> None:
    """Fill the observation from the client's answer: untrusted data, so every field is type-checked."""
    polls = answer.get("polls")
    obs.polls = polls if isinstance(polls, int) and not isinstance(polls, bool) and polls >= 0 else 0
    healthy_after = scoring_client.number(answer.get("healthy_after_s"))
    obs.healthy = healthy_after is not None
    obs.boot_s = offset + healthy_after if healthy_after is not None else None
    score_done = scoring_client.number(answer.get("score_done_s"))
    obs.create_to_score_s = since_create + score_done if score_done is not None else None
    obs.last_liveness = _exchange(answer.get("liveness"))
    obs.score = _exchange(answer.get("score"))
    obs.swagger = _exchange(answer.get("swagger"))
    obs.readiness = _exchange(answer.get("readiness"))
    ready_after = scoring_client.number(answer.get("ready_after_s"))
    obs.ready_s = offset + ready_after if ready_after is not None else None
    polls = answer.get("readiness_polls")
    obs.readiness_polls = polls if isinstance(polls, int) and not isinstance(polls, bool) and polls >= 0 else 0
    every = answer.get("listen_all")
    every = [str(a) for a in every if isinstance(a, str)] if isinstance(every, list) else []
    obs.listen_all = [a for a in (_listen_entry(e) for e in every[:256]) if a]
    listen = answer.get("listen")
    entries = [str(a) for a in listen if isinstance(a, str)] if isinstance(listen, list) else []
    obs.listen = [a for a in (scoring_client.listen_address(e) for e in entries[:64]) if a]
    if answer.get("client_error"):
        obs.client_error = f"the request client failed: {clip(str(answer['client_error']), 300)}"


def _listen_entry(entry: str) -> str:
    """One "hexaddress:port" from the client as "address:port"; "" when malformed."""
    address, _, port = entry.rpartition(":")
    text = scoring_client.listen_address(address)
    return f"{text}:{port}" if text and port.isdigit() and 0 < int(port) < 65536 else ""


def _exchange(data: Any) -> Exchange | None:
    if not isinstance(data, dict):
        return None
    status = data.get("status")
    headers = data.get("headers") if isinstance(data.get("headers"), dict) else {}
    return Exchange(
        method=str(data.get("method", ""))[:10],
        path=str(data.get("path", ""))[:200],
        status=status if isinstance(status, int) and not isinstance(status, bool) else None,
        body=str(data.get("body", ""))[:BODY_READ_BYTES],
        headers={str(k).lower()[:100]: str(v)[:1000] for k, v in list(headers.items())[:100]},
        error=str(data.get("error", ""))[:300],
        elapsed_s=scoring_client.number(data.get("elapsed_s")) or 0.0,
        port=_port(data.get("port")),
    )


def _port(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536 else 0


def _stops_within(box: Any, seconds: float) -> bool:
    """True when the container stops within `seconds`: the engine learns of an exit a moment after the kernel
    ends the container's processes (and with them the client), so a client that ended without an answer
    first waits for the container's state to catch up."""
    deadline = time.monotonic() + seconds
    while _still_running(box):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _still_running(box: Any) -> bool:
    try:
        box.reload()
    except Exception:  # gone or engine hiccup: treat as stopped, the state read below says which
        return False
    return box.status in ("running", "created", "restarting")


def _record_state(box: Any, obs: ScoringObservation) -> None:
    try:
        box.reload()
    except Exception:
        return
    state = box.attrs.get("State") or {}
    obs.running = bool(state.get("Running"))
    obs.oom_killed = bool(state.get("OOMKilled"))
    obs.start_error = str(state.get("Error") or "") if not obs.healthy else ""
    if not obs.running and state.get("Status") in ("exited", "dead", "created"):
        obs.exit_code = int(state.get("ExitCode") or 0)


def _logs(box: Any) -> str:
    """The end of the server's log, at most LOG_READ_BYTES of it, streamed (a server may print gigabytes: the
    engine keeps up to its log size cap, and that must not come whole into this process).

    The last LOG_SCAN_LINES lines are asked for first; when they are larger than the bound, the last
    LOG_SHORT_TAIL lines (the engine stores a long line in pieces of 16 KiB, so about 1 MiB), of which only
    the end is kept."""
    try:
        data, whole = _read_log(box, LOG_SCAN_LINES)
        if not whole:
            data, _ = _read_log(box, LOG_SHORT_TAIL)
    except Exception as exc:  # the log is evidence, not a requirement: say why it is missing
        return f"(could not read the server log: {type(exc).__name__})"
    return data.decode("utf-8", errors="replace")


def _read_log(box: Any, tail: int) -> tuple[bytes, bool]:
    """The log's last `tail` lines, streamed: (at most LOG_READ_BYTES of their end, whether that is all of them).
    No more than LOG_STREAM_BYTES is read in any case."""
    kept = bytearray()
    read, whole = 0, True
    stream = box.logs(stdout=True, stderr=True, tail=tail, stream=True, follow=False)
    try:
        for chunk in stream:
            read += len(chunk)
            kept += chunk
            if len(kept) > LOG_READ_BYTES:
                whole = False
                if tail == LOG_SCAN_LINES:
                    break  # too much: the caller asks for fewer lines
                del kept[: len(kept) - LOG_READ_BYTES]
            if read >= LOG_STREAM_BYTES:
                break
    finally:
        with contextlib.suppress(Exception):
            stream.close()
    return bytes(kept), whole


register(
    Stage(
        "scoring", "Scoring server", ("azureml",), check_scoring, observe=observe_scoring, early=True, skip=skip_result
    )
)

"""The scoring stage's data: its constants and causes, the built-in sample, and the spec, exchange and
observation records that the spec builder, the live part and the pure verdict share."""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any

from . import incontainer

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

# The built-in sample: used when neither the profile nor --score-script names an entry script
# (incontainer/sample_score.py, for Python 2.7/3.5+ so that it runs in any image the profiles accept).
SAMPLE_SCRIPT = incontainer.source("sample_score.py").encode("utf-8")
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

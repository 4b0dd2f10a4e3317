"""The scoring stage: boot the server the profile names in a fresh container and score one request.

Only this module's live half talks to Docker (`observe_scoring`); it hands a plain `ScoringObservation`
to `check_scoring`, which is pure and decides pass/fail and the failure's cause. The server container is
separate from the probe's candidate (its entrypoint is the server), gets the entry script and the model
through the archive API (never a host mount) and publishes no port. The requests come from this process
where it can reach the server (`scoring_route`: inside its network namespace, or over an internal network),
else from the request client (`scoring_client`) copied in and run by the image's python. It is always
removed (`Engine.container`).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from . import probe, scoring_client
from .engine import Engine
from .errors import EngineError
from .scoring_client import ANSWER_BYTES
from .scoring_data import (
    BODY_READ_BYTES,
    CAUSES,
    CLIENT_CHECK_S,
    CLIENT_GRACE_S,
    CLIENT_SLACK_S,
    COPY_REFUSED,
    ENGINE_COPY_FAULTS,
    INIT_FAILED_MARKERS,
    LOG_CHARS,
    LOG_LINE_CHARS,
    LOG_LINES,
    LOG_READ_BYTES,
    LOG_SCAN_LINES,
    LOG_SHORT_TAIL,
    LOG_STREAM_BYTES,
    MAX_MODEL_BYTES,
    PLACEHOLDER,
    POLL_INTERVAL_S,
    SAMPLE_FEATURES,
    SAMPLE_INPUT_STEPS,
    SAMPLE_NAME,
    SAMPLE_ROWS,
    SAMPLE_SCRIPT,
    SAMPLE_WEIGHT_STEPS,
    SCHEMA_TYPES,
    SERVER_MISSING_ERRORS,
    Exchange,
    Sample,
    ScoringObservation,
    ScoringSpec,
)
from .scoring_route import UNREACHABLE, Reach, Route, reach, server_route
from .scoring_spec import ScoringUsageError, add_options, build_spec, options_from_config, skip_result, validate_targets
from .scoring_verdict import (
    Cause,
    body_problems,
    check_scoring,
    classify,
    clean_log,
    exception_lines,
    expected_text,
    observed_text,
    same_json,
    schema_problems,
    timing_details,
    user_exception,
)
from .text import clip


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
    """Create, fill, start and exercise one server container; it is removed whatever happens (in the
    background once its answer is in).

    Where this process can reach the container's network without publishing a port (a local engine on
    Linux), the requests come from this process, so nothing in the image can forge the answer: from inside
    the server's network namespace (root; the server has no network), else over the session's internal
    network (no egress). Elsewhere (a remote or rootless engine) they come from a client run by the image's
    own python, over loopback, with network "none", and the result says the answer was relayed. `container` overrides
    the container's settings (the deployment stage runs the image's own entrypoint and working directory)."""
    obs = ScoringObservation(spec=spec)
    created = time.monotonic()
    marker = f"@@pytest-baseimage-client-{uuid.uuid4().hex}@@"
    with contextlib.ExitStack() as owned:  # the container: removed in the background once the answer is in
        route = owned.enter_context(server_route(engine, spec))
        obs.relayed, obs.relay_reason = not route.from_host, route.why
        options = {
            "command": list(spec.command),
            "environment": spec.env,
            "working_dir": spec.workdir,
            "network_mode": route.network,
            **(container or {}),
        }
        box = owned.enter_context(engine.container(image, role=role, **options))
        files = dict(spec.files)
        if obs.relayed:
            files.update(_client_files(spec, marker))
        obs.copy_error = _copy_in(engine, box, files, spec)
        if not obs.copy_error:
            started = time.monotonic()
            if engine.start(box):
                _exercise(engine, box, obs, marker, created, started, route)
            _record_state(box, obs)
            obs.log = _logs(box)
        engine.defer(owned.pop_all().close)  # nothing below waits for the removal
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
        way = reach(box, route)
        if not isinstance(way, str):
            if way is not None:
                _ask_from_host(box, obs, marker, created, started, way)
            return
        obs.relayed, obs.relay_reason = True, way  # the namespace could not be entered: the client goes in
        obs.copy_error = _copy_in(engine, box, _client_files(obs.spec, marker), obs.spec)
        if obs.copy_error:
            return
    _relay(engine, box, obs, marker, created, started)


def _client_files(spec: ScoringSpec, marker: str) -> dict[str, bytes]:
    """The request client, its request and payload, for the server's container: the candidate relays."""
    return scoring_client.files(client_request(spec), spec.payload, marker)


def _budget(spec: ScoringSpec) -> float:
    return spec.boot_timeout_s + 2 * spec.request_timeout_s + CLIENT_SLACK_S


def _ask_from_host(box: Any, obs: ScoringObservation, marker: str, created: float, started: float, way: Reach) -> None:
    """Run the same client program under this machine's python, against the container's address."""
    spec = obs.spec
    pid = int(box.attrs["State"]["Pid"])
    request = {
        **client_request(spec),
        "host": way.address,
        "stop_on_loopback": True,  # refused, yet listening: only on loopback (read from the server's netns)
        "listen_files": [f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"],
    }
    with tempfile.TemporaryDirectory(prefix="pytest-baseimage-client-") as tmp:
        for name, data in scoring_client.files(request, spec.payload, marker).items():
            (Path(tmp) / Path(name).name).write_bytes(data)
        command = [*way.prefix, *scoring_client.command(sys.executable)]
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


# Re-exported: the names that moved to scoring_data, scoring_spec and scoring_verdict stay importable here.
__all__ = [
    "BODY_READ_BYTES",
    "CAUSES",
    "CLIENT_CHECK_S",
    "CLIENT_GRACE_S",
    "CLIENT_SLACK_S",
    "COPY_REFUSED",
    "ENGINE_COPY_FAULTS",
    "INIT_FAILED_MARKERS",
    "LOG_CHARS",
    "LOG_LINES",
    "LOG_LINE_CHARS",
    "LOG_READ_BYTES",
    "LOG_SCAN_LINES",
    "LOG_SHORT_TAIL",
    "LOG_STREAM_BYTES",
    "MAX_MODEL_BYTES",
    "PLACEHOLDER",
    "POLL_INTERVAL_S",
    "SAMPLE_FEATURES",
    "SAMPLE_INPUT_STEPS",
    "SAMPLE_NAME",
    "SAMPLE_ROWS",
    "SAMPLE_SCRIPT",
    "SAMPLE_WEIGHT_STEPS",
    "SCHEMA_TYPES",
    "SERVER_MISSING_ERRORS",
    "UNREACHABLE",
    "Cause",
    "Exchange",
    "Route",
    "Sample",
    "ScoringObservation",
    "ScoringSpec",
    "ScoringUsageError",
    "add_options",
    "body_problems",
    "build_spec",
    "check_scoring",
    "classify",
    "clean_log",
    "exception_lines",
    "expected_text",
    "observed_text",
    "options_from_config",
    "same_json",
    "schema_problems",
    "server_route",
    "skip_result",
    "timing_details",
    "user_exception",
    "validate_targets",
]

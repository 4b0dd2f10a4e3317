"""The scoring stage's verdict (pure): logs, the answer checked against [scoring] expected, the cause of a
failure, and check_scoring."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from . import scoring_client
from .engine import image_start_fault
from .facts import Facts
from .profiles import Profile
from .results import StageResult, Status
from .scoring_data import (
    CAUSES,
    INIT_FAILED_MARKERS,
    LOG_CHARS,
    LOG_LINE_CHARS,
    LOG_LINES,
    SCHEMA_TYPES,
    SERVER_MISSING_ERRORS,
    Exchange,
    ScoringObservation,
    ScoringSpec,
)
from .scoring_spec import skip_result
from .stages import start_fix
from .text import clip, strip_ansi


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

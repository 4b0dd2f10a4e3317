"""The deployment stage's decisions: pure, from the definitions, the image's config, the probe's facts and
what the live container did (a `scoring.ScoringObservation`). No Docker here.

Each failure has a name (`CAUSES`) and one sentence; the static cross-checks (Python pin, pip dependencies,
ports, user) and the live cause are all listed, the first one names the failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from ..facts import Facts
from ..profiles import Profile
from ..results import NOT_REQUIRED, StageResult, Status
from ..scoring import Exchange, ScoringObservation, clean_log, user_exception
from ..scoring_client import loopback_only
from ..stages import start_fix
from .definitions import Definitions, RouteSpec

STAGE = "deployment"
SERVER_PACKAGES = ("azureml-inference-server-http", "azureml-defaults")  # Azure ML's server, or what brings it
ROUTES = ("liveness", "readiness", "scoring")
PYTHONS = [Version(f"3.{minor}.{patch}") for minor in range(0, 20) for patch in range(0, 30)]

CAUSES: dict[str, str] = {
    "python-unsupported": "Pin a Python the server supports in the conda file (e.g. `python=3.11`), or install a "
    "server release that supports the pinned one.",
    "server-package-missing": "Add azureml-inference-server-http (or azureml-defaults) to the conda file's pip "
    "dependencies: Azure ML's stack runs it.",
    "port-mismatch": "Make the image's EXPOSE and SERVER_PORT agree with inference_config.scoring_route.port.",
    "runs-as-root": "Run the server as an unprivileged user (`RUN useradd --create-home dockeruser` and "
    "`USER dockeruser`), as Azure ML's prebuilt images do.",
    "no-command": "Give the image an ENTRYPOINT or CMD that starts its server: a custom container is started with "
    "its own.",
    "cannot-start": "The image cannot start its entrypoint as configured: see the cause.",
    "entrypoint-exited": "The image's entrypoint stopped before its routes answered: see the exit code and the log.",
    "nothing-listening": "Nothing listens on the declared port: make the server listen there, or fix the port in "
    "inference_config.",
    "loopback-only": "The server listens on a loopback address only, so Azure ML's probes cannot reach it: bind to "
    "0.0.0.0.",
    "liveness-failed": "inference_config.liveness_route must answer 2xx: fix its path or the server.",
    "readiness-404": "The server has no such readiness path: fix inference_config.readiness_route.path.",
    "readiness-failed": "inference_config.readiness_route must answer 2xx once the model is loaded.",
    "scoring-404": "The server has no such scoring path: fix inference_config.scoring_route.path.",
    "scoring-405": "The scoring path does not accept POST: fix inference_config.scoring_route.path.",
    "scoring-status": "POST to the scoring route must answer 2xx for the sample request: see the body and the log.",
    "timeout": "The server accepted connections but did not answer in time.",
    "cannot-copy": "The model and code go where Azure ML mounts them (/var/azureml-app): that path must be a "
    "directory in the image.",
}


@dataclass(frozen=True)
class ImageConfig:
    """The parts of the image's config that Azure ML's start of a custom container depends on."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    exposed_ports: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    working_dir: str = ""


@dataclass
class DeploymentObservation:
    """What the live half saw; the check turns it into a StageResult."""

    definitions: Definitions
    image: str  # the reference under test
    config: ImageConfig
    run: ScoringObservation | None = None  # None when no container was started (no command)
    model_dir: str = ""
    app_root: str = ""
    payload_source: str = ""


@dataclass(frozen=True)
class Finding:
    cause: str
    text: str


# -- static cross-checks ---------------------------------------------------------------------------------------
def conda_python_pin(conda: dict[str, Any]) -> str:
    """The conda file's python spec as written (`python=3.8`, `python>=3.9`); "" when it pins none."""
    for dep in conda.get("dependencies") or []:
        if isinstance(dep, str):
            match = re.fullmatch(r"\s*python(?:\s*([=<>!~].*)|\s+(\d.*))?", dep)
            if match:
                return (match.group(1) or match.group(2) or "").strip()
    return ""


def pin_specifier(pin: str) -> SpecifierSet | None:
    """A conda match spec's version part as a packaging SpecifierSet: `=3.8` is 3.8.*, `3.8` too."""
    parts = []
    for part in pin.replace(" ", "").split(","):
        if not part:
            continue
        if part[0].isdigit():
            part = f"={part}"
        if part.startswith("=") and not part.startswith("=="):
            version = part[1:].rstrip(".*")
            part = f"=={version}.*"
        parts.append(part)
    try:
        return SpecifierSet(",".join(parts))
    except InvalidSpecifier:
        return None


def pip_requirements(conda: dict[str, Any]) -> list[str]:
    """The canonical names of the conda file's pip dependencies."""
    names = []
    for dep in conda.get("dependencies") or []:
        if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            for req in dep["pip"]:
                match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", str(req))
                if match:
                    names.append(canonicalize_name(match.group(1)))
    return names


def requires_python(facts: Facts) -> dict[str, str]:
    """The installed distributions' Requires-Python, as the probe read them (canonical name -> spec)."""
    return dict(facts.python.requires_python) if facts.python else {}


def python_finding(defs: Definitions, facts: Facts) -> tuple[Finding | None, str]:
    """The conda file's python pin against the server package's Requires-Python: (failure, what was seen)."""
    if defs.conda is None:
        return None, ""
    pin = conda_python_pin(defs.conda)
    if not pin:
        return None, "the conda file pins no python"
    wanted = pin_specifier(pin)
    server = next((name for name in SERVER_PACKAGES if canonicalize_name(name) in facts.pip), "")
    needs = requires_python(facts).get(canonicalize_name(server), "") if server else ""
    if wanted is None or not server or not needs:
        why = "no Azure ML server package in the image" if not server else f"{server} declares no Requires-Python"
        return None, f"python{pin} not compared: {why}" if wanted is not None else f"python{pin}: not understood"
    try:
        supported = SpecifierSet(needs)
    except InvalidSpecifier:
        return None, f"{server}'s Requires-Python {needs!r} is not understood"
    seen = f"conda python{pin}; {server} {facts.pip[canonicalize_name(server)]} needs Python {needs}"
    if any(v in wanted and v in supported for v in PYTHONS):
        return None, seen
    return Finding("python-unsupported", f"the conda file pins python{pin}, but {seen.split('; ')[1]}"), seen


def static_findings(
    defs: Definitions, config: ImageConfig, facts: Facts, profile: Profile
) -> tuple[list[Finding], list[str]]:
    """(failures, notes) from the definitions and the image alone."""
    findings: list[Finding] = []
    notes: list[str] = []
    python, seen = python_finding(defs, facts)
    findings += [python] if python else []
    notes += [seen] if seen else []
    if defs.conda is not None and not defs.custom_container:
        pips = pip_requirements(defs.conda)
        if not any(canonicalize_name(name) in pips for name in SERVER_PACKAGES):
            findings.append(
                Finding(
                    "server-package-missing",
                    f"the conda file's pip dependencies name neither {' nor '.join(SERVER_PACKAGES)}",
                )
            )
    scoring = defs.routes.get("scoring")
    if scoring is not None:
        if config.exposed_ports and scoring.port not in config.exposed_ports:
            ports = ", ".join(str(p) for p in config.exposed_ports)
            findings.append(
                Finding("port-mismatch", f"the image EXPOSEs {ports}, the scoring route is on {scoring.port}")
            )
        server_port = config.env.get("SERVER_PORT", "")
        if server_port and server_port != str(scoring.port):
            findings.append(
                Finding(
                    "port-mismatch", f"the image sets SERVER_PORT={server_port}, the scoring route is on {scoring.port}"
                )
            )
    if (profile.section(STAGE) or {}).get("non_root") and is_root(config.user):
        findings.append(Finding("runs-as-root", f"the image runs as {config.user or 'root (no USER)'}"))
    return findings, notes


def is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("", "root", "0")


def same_image(named: str, tested: str) -> bool:
    """Whether the environment's `image` names the image under test (docker.io and :latest implied)."""

    def norm(ref: str) -> str:
        ref = ref.strip()
        for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
            if ref.startswith(prefix):
                ref = ref[len(prefix) :]
        last = ref.rsplit("/", 1)[-1]
        return ref if ":" in last or "@" in last else f"{ref}:latest"

    return norm(named) == norm(tested)


# -- the live run ------------------------------------------------------------------------------------------------
def routes_of(defs: Definitions) -> dict[str, RouteSpec]:
    """The declared routes; without inference_config, those of Azure ML's own stack (/ and /score on 5001)."""
    return defs.routes or {
        "liveness": RouteSpec(5001, "/"),
        "readiness": RouteSpec(5001, "/"),
        "scoring": RouteSpec(5001, "/score"),
    }


def _listening_ports(run: ScoringObservation) -> list[int]:
    return sorted({int(entry.rsplit(":", 1)[1]) for entry in run.listen_all})


def _on_port(run: ScoringObservation, port: int) -> list[str]:
    return [entry.rsplit(":", 1)[0] for entry in run.listen_all if entry.rsplit(":", 1)[1] == str(port)]


def _loopback_route(run: ScoringObservation, routes: dict[str, RouteSpec]) -> Finding | None:
    """A declared route's port that listens, but only on loopback: Azure ML's router could never reach it."""
    for spec in routes.values():
        addresses = _on_port(run, spec.port) if spec else []
        if addresses and loopback_only(addresses):
            return Finding("loopback-only", f"port {spec.port} listens only on {', '.join(addresses)}")
    return None


def _closed(route: str, spec: RouteSpec, run: ScoringObservation, deadline: float | None) -> Finding:
    """Nothing answered on the route's port: only on loopback, or nothing there (and what does listen).
    `deadline` for a polled route (liveness, readiness); None for scoring, asked once after those answered."""
    looped = _loopback_route(run, {route: spec})
    if looped is not None:
        return looped
    ports = ", ".join(str(p) for p in _listening_ports(run)) or "none"
    within = f" within {deadline:g} s" if deadline is not None else ""
    return Finding(
        "nothing-listening", f"nothing listens on port {spec.port} ({route} route){within}; listening ports: {ports}"
    )


def _polled(route: str, spec: RouteSpec, last: Exchange | None, run: ScoringObservation, deadline: float) -> Finding:
    """Why a polled route (liveness, readiness) never answered 2xx."""
    if last is None or last.error == "closed":
        return _closed(route, spec, run, deadline)
    if last.status == 404 and route == "readiness":
        return Finding("readiness-404", f"GET {spec.path} on port {spec.port} answered 404")
    if last.status is not None:
        return Finding(f"{route}-failed", f"GET {spec.path} on port {spec.port} answered {last.status}, expected 2xx")
    if last.error == "timeout":
        return Finding("timeout", f"GET {spec.path} on port {spec.port} got no answer within {deadline:g} s")
    return Finding(f"{route}-failed", f"GET {spec.path} on port {spec.port} failed: {last.error}")


def live_finding(obs: DeploymentObservation, deadline: float) -> Finding | None:
    """The first thing that went wrong in the live run, in the order a request meets it; None when all answered."""
    run, routes = obs.run, routes_of(obs.definitions)
    if run is None:
        return Finding("no-command", "the image has no ENTRYPOINT and no CMD")
    if run.copy_error:
        return Finding("cannot-copy", run.copy_error)
    if run.start_error:
        fix = start_fix(run.start_error)
        return Finding(
            "cannot-start", f"the container did not start: {run.start_error[:300]}" + (f" ({fix})" if fix else "")
        )
    looped = _loopback_route(run, routes)
    if looped is not None:  # asked from inside its namespace (or relayed), such a server answers all the same
        return looped
    exited = not run.running and run.exit_code is not None
    if run.boot_s is None or (routes["readiness"] and run.ready_s is None):
        if exited and (run.last_liveness is None or run.last_liveness.status is None):
            return _exited(obs)
        if run.boot_s is None:
            return _polled("liveness", routes["liveness"], run.last_liveness, run, deadline)
        return _polled("readiness", routes["readiness"], run.readiness, run, deadline)
    score, spec = run.score, routes["scoring"]
    if score is None or score.error == "closed":
        if exited:
            return _exited(obs)
        return _closed("scoring", spec, run, None)
    if score.status is None:
        return Finding("timeout", f"POST {spec.path} on port {spec.port}: {score.describe()}")
    if score.status in (404, 405):
        return Finding(f"scoring-{score.status}", f"POST {spec.path} on port {spec.port} answered {score.status}")
    if not 200 <= score.status < 300:
        exception = user_exception(run.log)
        said = f": {exception}" if exception else f": {score.body[:200]!r}"
        return Finding("scoring-status", f"POST {spec.path} on port {spec.port} answered {score.status}{said}")
    return None


def _exited(obs: DeploymentObservation) -> Finding:
    run = obs.run
    assert run is not None
    code = run.exit_code
    lines = [line for line in clean_log(run.log, 5).splitlines() if line.strip()]
    tail = " | ".join(lines[-3:]) or "(no output)"
    what = "killed for using too much memory" if run.oom_killed else f"exited with code {code}"
    exception = user_exception(run.log)
    if exception:
        what += f": {exception}"
    return Finding("entrypoint-exited", f"the entrypoint `{command_text(obs.config)}` {what}; last log lines: {tail}")


def command_text(config: ImageConfig) -> str:
    return " ".join((*config.entrypoint, *config.cmd))[:200] or "(none)"


def route_details(obs: DeploymentObservation) -> dict[str, Any]:
    """Each route's method, port, path, observed status and timing: for JSON, JUnit and HTML."""
    run, routes = obs.run, routes_of(obs.definitions)
    seen = {
        "liveness": (run.last_liveness, run.boot_s, run.polls) if run else (None, None, 0),
        "readiness": (run.readiness, run.ready_s, run.readiness_polls) if run else (None, None, 0),
        "scoring": (run.score, None, 1 if run and run.score else 0) if run else (None, None, 0),
    }
    out: dict[str, Any] = {}
    for name in ROUTES:
        spec = routes[name]
        exchange, after, polls = seen[name]
        entry: dict[str, Any] = {
            "method": "POST" if name == "scoring" else "GET",
            "port": spec.port,
            "path": spec.path,
            "status": exchange.status if exchange else None,
            "error": exchange.error if exchange else "not asked",
            "elapsed_ms": round(exchange.elapsed_s * 1000, 1) if exchange else None,
            "polls": polls,
        }
        if after is not None:
            entry["answered_after_s"] = round(after, 3)
        out[name] = entry
    return out


def expected_text(obs: DeploymentObservation, deadline: float) -> str:
    routes = routes_of(obs.definitions)
    live, ready, score = routes["liveness"], routes["readiness"], routes["scoring"]
    how = (
        "the image's own entrypoint"
        if obs.definitions.custom_container
        else "the image's entrypoint (Azure ML's stack)"
    )
    return (
        f"{how} answers GET {live.path} on {live.port} and GET {ready.path} on {ready.port} with 2xx within "
        f"{deadline:g} s, then POST {score.path} on {score.port} with 2xx"
    )


def observed_text(details: dict[str, Any]) -> str:
    parts = []
    for name, route in details.items():
        status = route["status"] if route["status"] is not None else (route["error"] or "no answer")
        part = f"{route['method']} {route['path']}:{route['port']} {status}"
        if route.get("answered_after_s") is not None:
            part += f" after {route['answered_after_s']:.2f} s"
        elif route["elapsed_ms"] is not None and name == "scoring":
            part += f" in {route['elapsed_ms']:.0f} ms"
        parts.append(part)
    return "; ".join(parts)


def deadline_of(profile: Profile) -> float:
    return float((profile.section(STAGE) or {}).get("boot_timeout_s", 60))


def skip_result(profile: Profile) -> StageResult | None:
    """Skipped only when the profile switches the stage off; otherwise the definitions given decide (check)."""
    return None


def not_given(profile: Profile) -> StageResult:
    """No definitions given: not required, unless the profile asks for the stage (then not checked)."""
    if profile.section(STAGE) is None:
        return StageResult(
            STAGE, Status.SKIPPED, reason=f"not required by profile {profile.name}", skip_kind=NOT_REQUIRED
        )
    reason = (
        f"not checked: profile {profile.name} asks for the deployment stage, but no --azureml-environment or "
        "--azureml-deployment was given"
    )
    return StageResult(STAGE, Status.SKIPPED, reason=reason)


def check_deployment(facts: Facts, profile: Profile, obs: DeploymentObservation | None) -> StageResult:
    """Pass when the definitions agree with the image and the container answers its three routes."""
    if obs is None:
        return not_given(profile)
    deadline = deadline_of(profile)
    findings, notes = static_findings(obs.definitions, obs.config, facts, profile)
    live = live_finding(obs, deadline)
    if live is not None:
        findings.insert(0, live)
    routes = route_details(obs)
    details: dict[str, Any] = {"routes": routes, "command": command_text(obs.config)}
    details.update({k: v for k, v in (("model_dir", obs.model_dir), ("app_root", obs.app_root)) if v})
    if obs.payload_source:
        details["payload"] = obs.payload_source
    image_note = _image_note(obs)
    if image_note:
        notes.insert(0, image_note)
    if notes:
        details["notes"] = notes
    if obs.run is not None and obs.run.exit_code is not None and not obs.run.running:
        details["exit_code"] = obs.run.exit_code
    if obs.run is not None and obs.run.relayed:
        details["relay_reason"] = obs.run.relay_reason
    observed = observed_text(routes)
    if obs.run is not None and obs.run.relayed:  # a gate may decide not to rely on it (see the scoring stage)
        observed += f"; answers relayed by the candidate's own python ({obs.run.relay_reason})"
    if image_note:
        observed = f"{observed} ({image_note})"
    expected = expected_text(obs, deadline)
    if obs.run is not None and obs.run.client_error and obs.run.running:
        reason = f"could not exercise the container: {obs.run.client_error}"
        return StageResult(STAGE, Status.ERROR, expected, reason=reason, details=details)
    if not findings:
        return StageResult(STAGE, Status.PASS, expected, observed, details=details)
    details["cause"] = findings[0].cause
    details["causes"] = [f"{f.cause}: {f.text}" for f in findings]
    if obs.run is not None:
        details["log"] = clean_log(obs.run.log)
    fix = " ".join(dict.fromkeys(CAUSES[f.cause] for f in findings))
    remediation = (profile.section(STAGE) or {}).get("remediation", "")
    text = "; ".join(f"{f.cause}: {f.text}" for f in findings)
    return StageResult(
        STAGE,
        Status.FAIL,
        expected,
        f"{text} ({observed})",
        " ".join(p for p in (fix, remediation) if p),
        details=details,
    )


def _image_note(obs: DeploymentObservation) -> str:
    defs = obs.definitions
    if defs.image and not same_image(defs.image, obs.image):
        return f"checked {obs.image}; the environment names {defs.image}"
    if defs.build_path:
        return f"checked {obs.image}; the environment builds its image from {defs.build_path}"
    return ""


def junit_properties(result: StageResult) -> dict[str, str]:
    """Each route's observed status and timing as JUnit properties (route_scoring_status, ..._ms)."""
    routes = result.details.get("routes") if result.stage == STAGE else None
    if not isinstance(routes, dict):
        return {}
    properties = {}
    for name, route in routes.items():
        if isinstance(route, dict):
            properties[f"route_{name}_status"] = str(
                route.get("status") if route.get("status") is not None else route.get("error", "")
            )
            if route.get("elapsed_ms") is not None:
                properties[f"route_{name}_ms"] = str(route["elapsed_ms"])
    return properties

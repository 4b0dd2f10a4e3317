"""The gpu stage's live part: the host's GPUs, the gpu probe's exec, and the session in a GPU container."""

from __future__ import annotations

import glob
import json
import uuid
from typing import Any

from .. import probe
from ..engine import KEEPALIVE_COMMANDS, Engine, ExecResult, describe_host
from ..errors import EngineError
from ..profiles import Profile
from ..results import Status
from .options import GpuOptions
from .parse import ProbeAnswer
from .spec import (
    GPU_MEM_LIMIT,
    GPU_PROBE,
    ORT_PROGRAM,
    PROBE_SLACK_S,
    SESSION_TIMEOUT_S,
    STAGE,
    GpuRequirements,
    ort_request,
    probe_config,
    requirements,
)
from .verdict import GpuObservation, HostGpu, layer_compiled, layer_loadable


# -- the live part: the host's GPUs and the session in a GPU container ----------------------------------
def host_gpu_from(info: dict[str, Any], device_nodes: list[str], local: bool, where: str) -> HostGpu:
    """Decide from `docker info` and /dev/nvidia* whether the host has a GPU for containers (pure)."""
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    cdi = [str(d.get("ID", "")) for d in info.get("DiscoveredDevices") or [] if isinstance(d, dict)]
    evidence = []
    if any("nvidia" in name for name in runtimes):
        evidence.append("Docker lists the nvidia runtime")
    if any(name.startswith("nvidia.com/gpu") for name in cdi):
        evidence.append("Docker discovered CDI devices nvidia.com/gpu")
    if local and device_nodes:
        evidence.append(f"device nodes {', '.join(device_nodes[:4])}")
    if evidence:
        return HostGpu(True, "; ".join(evidence))
    nodes = "no /dev/nvidia* device nodes" if local else f"device nodes not checked: the engine at {where} is remote"
    return HostGpu(False, f"Docker runtimes: {', '.join(runtimes) or 'none'}, none of them nvidia; {nodes}")


def detect_host_gpu(engine: Engine) -> HostGpu:
    """Ask the engine (and, for a local engine, /dev) whether containers can get a GPU."""
    where = describe_host(engine.client)
    try:
        info = engine.client.info()
    except Exception as exc:  # the SDK raises several types; a failed `info` only means "don't know"
        return HostGpu(False, f"`docker info` failed: {str(exc).splitlines()[0][:200]}")
    local = where.startswith("unix://") or where.startswith("npipe://")
    nodes = sorted(glob.glob("/dev/nvidia[0-9]*")) if local else []
    return host_gpu_from(info, nodes, local, where)


def observe_gpu(check: Any) -> GpuObservation:
    """The runner's hook: decide whether layer 3 needs a GPU container, and run it when it can."""
    obs = GpuObservation(GpuOptions.from_dict(check.target.options.get(STAGE)))
    req = requirements(check.profile)  # the [gpu] table was validated when the profile loaded
    if req is None:
        return obs
    facts = check.facts
    if facts.python is not None and facts.python.executable:
        obs.probe = run_probe(check.candidate, facts.python.executable, check.profile, req)
    if req.placement != "nvidia" or obs.options.gpus == "none":
        return obs
    obs.host = detect_host_gpu(check.engine)
    if not obs.host.present:
        return obs
    answer = ProbeAnswer.from_facts(facts, obs.probe)
    if any(
        layer.status is not Status.PASS
        for layer in (layer_compiled(req, answer, facts.pip), layer_loadable(req, answer))
    ):
        return obs  # layer 3 is blocked: do not start a container for a session that can only fall back
    image = check.info.image_id or check.target.reference
    run_gpu_session(check.engine, image, facts.python.executable, req, obs)
    return obs


def run_probe(candidate: Any, python: str, profile: Profile, req: GpuRequirements) -> dict[str, Any]:
    """Layers 1 and 2 (and layer 3 when it needs no device), within [gpu] timeout_s."""
    config = probe_config(profile)
    if config is None:
        return {"error": "the profile's [gpu] section could not be read"}
    marker = f"@@{uuid.uuid4().hex}:"
    command = [python, "-c", GPU_PROBE, json.dumps(config), marker]
    try:
        result = candidate.exec(command, timeout=req.timeout_s + PROBE_SLACK_S)
    except EngineError:
        return {"error": f"the gpu probe did not finish within {req.timeout_s:g} s ([gpu] timeout_s)"}
    answer = probe.last_marked_json(result.stdout, marker)
    if isinstance(answer, dict):
        return answer
    said = probe.last_line(result.stderr or result.stdout) or f"exit code {result.exit_code}"
    return {"error": f"the gpu probe gave no answer: {said}"}


def run_gpu_session(
    engine: Engine,
    image: str,
    python: str,
    req: GpuRequirements,
    obs: GpuObservation,
    device_requests: list[Any] | None = None,
) -> GpuObservation:
    """Start the image with GPUs, run ORT_PROGRAM there in one exec, and record the answer in `obs`."""
    marker = f"@@{uuid.uuid4().hex}:"
    payload = json.dumps(ort_request(req, marker, session=True, nvidia_smi=True))
    requests = [obs.options.device_request()] if device_requests is None else device_requests
    for command in KEEPALIVE_COMMANDS:
        with engine.container(
            image,
            role="gpu",
            command=command,
            device_requests=requests,
            environment={"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"},
            mem_limit=GPU_MEM_LIMIT,
        ) as box:
            if not engine.start(box):
                obs.error = obs.error or _start_error(box)
                continue
            obs.error = ""
            result = engine.exec(box, [python, "-c", ORT_PROGRAM, payload], timeout=SESSION_TIMEOUT_S)
            _record_run(obs, result, marker)
            return obs
    return obs


def _start_error(container: Any) -> str:
    """Why a container did not start: Docker keeps it in State.Error (e.g. no GPU driver for --gpus)."""
    try:
        container.reload()
        return str((container.attrs.get("State") or {}).get("Error") or "the container did not start")[:500]
    except Exception:
        return "the container did not start"


def _record_run(obs: GpuObservation, result: ExecResult, marker: str) -> None:
    obs.log = result.stderr[-20000:]
    answer = probe.last_marked_json(result.stdout, marker)
    if answer is not None:
        obs.session = answer.get("session") or {"error": answer.get("import_error", "no session result")}
        obs.session["nvidia_smi"] = answer.get("nvidia_smi") or {}
        return
    tail = probe.last_line(result.stderr or result.stdout) or f"exit code {result.exit_code}"
    obs.session = {"error": f"the session program gave no answer: {tail}"}

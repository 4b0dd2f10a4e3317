"""The gpu stage's verdict (pure): the three layers, judged from the probe's answer and what observe_gpu saw."""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import probe, stages
from ..facts import Facts
from ..profiles import Profile
from ..results import StageResult, Status
from ..text import clip
from .options import GpuOptions
from .parse import LddReport, ProbeAnswer, is_driver_library, parse_nvidia_smi
from .spec import CORE_MODULE, CPU, MODEL_OUTPUT, NVIDIA_PROVIDERS, OPENVINO, STAGE, GpuRequirements, requirements


# -- the three layers (pure) ----------------------------------------------------------------------------
@dataclass
class Layer:
    """One layer's verdict, reported on its own in details["layers"]."""

    name: str
    status: Status
    expected: str
    observed: str
    remediation: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


def layer_compiled(req: GpuRequirements, answer: ProbeAnswer, pip: dict[str, str]) -> Layer:
    """Layer 1: the build lists every required provider."""
    expected = f"onnxruntime.get_available_providers() lists {', '.join(req.providers)}"
    ort = answer.ort
    if answer.problem:
        return Layer("compiled", Status.ERROR, expected, answer.problem)
    if not ort:
        run = answer.data.get("ort_run") or {}
        observed = f"ONNX Runtime could not be asked (exit {run.get('rc')}): {probe.last_line(answer.ort_log)}"
        return Layer("compiled", Status.FAIL, expected, observed, _install_hint(req, pip))
    if not ort.get("import_ok"):
        observed = f"`import onnxruntime` failed: {probe.last_line(str(ort.get('import_error', '')))}"
        return Layer(
            "compiled",
            Status.FAIL,
            expected,
            observed,
            _install_hint(req, pip),
            {"traceback": ort.get("import_error", "")},
        )
    available = [str(p) for p in ort.get("available") or []]
    build = f"onnxruntime {ort.get('version', '?')} (pip: {_distribution(pip)})"
    details = {"available": available, "version": ort.get("version", ""), "device": ort.get("device", "")}
    if "openvino_devices" in ort:
        details["openvino_devices"] = ort["openvino_devices"]
    missing = [p for p in req.providers if p not in available]
    observed = f"{build} lists {', '.join(available) or 'nothing'}"
    if missing:
        observed += f"; missing: {', '.join(missing)}"
        return Layer("compiled", Status.FAIL, expected, observed, _install_hint(req, pip), details)
    return Layer("compiled", Status.PASS, expected, observed, details=details)


def _distribution(pip: dict[str, str]) -> str:
    names = [f"{name} {version}" for name, version in sorted(pip.items()) if name.startswith("onnxruntime")]
    return ", ".join(names) or "no onnxruntime distribution found by pip metadata"


def _install_hint(req: GpuRequirements, pip: dict[str, str]) -> str:
    wanted = "onnxruntime"
    if any(p in NVIDIA_PROVIDERS for p in req.providers):
        wanted = "onnxruntime-gpu"
    elif OPENVINO in req.providers:
        wanted = "onnxruntime-openvino"
    others = [name for name in pip if name.startswith("onnxruntime") and name != wanted]
    text = f"pip install {wanted} into the image's Python"
    if others:
        text = (
            f"pip uninstall {' '.join(others)}, then {text} (every build installs the same `onnxruntime` "
            "module: keep exactly one)"
        )
    return text + "."


@dataclass
class _Resolution:
    """What layer 2 found so far, library by library."""

    missing: list[str] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ldd: dict[str, str] = field(default_factory=dict)  # library -> ldd's output, for the details

    def add(self, report: LddReport) -> None:
        """One ldd run: the driver's libraries are the host's business, everything else must resolve."""
        self.resolved.update(report.resolved)
        self.missing += [n for n in report.missing if not is_driver_library(n)]
        drivers = [n for n in report.missing if is_driver_library(n)]
        if drivers:
            verb = "comes" if len(drivers) == 1 else "come"
            self.notes.append(
                f"{', '.join(drivers)} {verb} from the host's NVIDIA driver at run time "
                "(the NVIDIA container toolkit mounts it into GPU containers)"
            )


def layer_loadable(req: GpuRequirements, answer: ProbeAnswer) -> Layer:
    """Layer 2: every provider library, and everything it links, resolves in the image."""
    wanted = [req.library_of(p) for p in req.providers if req.library_of(p)]
    wanted += [" or ".join(group) for group in req.libraries]
    expected = "these resolve in the image: " + (", ".join(wanted) or "the core module's libraries")
    if answer.problem:
        return Layer("loadable", Status.ERROR, expected, answer.problem)
    if not answer.data.get("package_dir"):
        return Layer(
            "loadable",
            Status.FAIL,
            expected,
            "no onnxruntime package on the image Python's sys.path",
            "Install the ONNX Runtime build the profile names (see layer compiled).",
        )
    found = _Resolution()
    available = set(answer.ort.get("available") or [])
    for provider in req.providers:
        _resolve_provider(provider, req, answer, available, found)
    if answer.data.get("core"):
        found.add(answer.ldd(answer.data["core"])[0])
    else:  # every real build has its native core module: without it nothing was checked, nothing can load
        found.missing.append(f"onnxruntime/capi/{CORE_MODULE} (ONNX Runtime's native core module)")
    known = answer.known_names() | set(found.resolved)
    for group in req.libraries:
        if not any(fnmatch.filter(known, pattern) for pattern in group) and not set(found.missing) & set(group):
            found.missing.append(" or ".join(group))
    missing = list(dict.fromkeys(found.missing))
    hints = [
        f"{m} is in {answer.pip_location(m)} (a pip package) but not on the loader's path"
        for m in missing
        if answer.pip_location(m)
    ]
    details: dict[str, Any] = {**found.ldd, "missing": missing, "resolved": dict(sorted(found.resolved.items()))}
    if found.notes:
        details["notes"] = found.notes
    if missing:
        observed = "missing: " + ", ".join(missing) + "".join(f"; {h}" for h in hints)
        return Layer("loadable", Status.FAIL, expected, observed, _loadable_fix(req, missing, bool(hints)), details)
    if found.errors:
        return Layer("loadable", Status.ERROR, expected, "; ".join(found.errors), details=details)
    observed = f"all resolve ({len(found.resolved)} libraries)" + "".join(f"; {n}" for n in found.notes)
    return Layer("loadable", Status.PASS, expected, observed, details=details)


def _resolve_provider(
    provider: str, req: GpuRequirements, answer: ProbeAnswer, available: set[str], found: _Resolution
) -> None:
    """ldd one provider's library; a provider with no library file of its own is explained, not resolved."""
    library = req.library_of(provider)
    if provider == CPU or not library:
        return
    entry = (answer.data.get("provider_libraries") or {}).get(provider) or {}
    if not entry.get("exists"):
        if provider in available:
            found.notes.append(f"{provider} has no {library}: it is linked into the core module (ONNX Runtime < 1.9)")
        else:
            found.missing.append(f"onnxruntime/capi/{library}")
        return
    report, raw = answer.ldd(entry)
    found.ldd[f"ldd {library}"] = clip(str(raw.get("out", "")) or str(raw.get("err", "")), 6000)
    if report.error:
        found.errors.append(f"could not resolve {library}: {report.error}")
    found.add(report)


def _loadable_fix(req: GpuRequirements, missing: list[str], pip_hint: bool) -> str:
    libs = " ".join(m.split(" or ")[0] for m in missing)
    default = (
        "Install the native libraries the provider links, in the versions the ONNX Runtime build "
        "was made for (e.g. start FROM the matching nvidia/cuda *-cudnn-runtime image, or install "
        f"the CUDA/cuDNN/TensorRT runtime packages): {libs}."
    )
    fix = req.remediation.replace("<missing libraries>", libs) if req.remediation else default
    if pip_hint:
        fix += (
            " Libraries from pip packages are found only when their lib directories are on "
            "LD_LIBRARY_PATH (or after onnxruntime.preload_dlls() in ONNX Runtime >= 1.21)."
        )
    return fix


@dataclass(frozen=True)
class HostGpu:
    """Whether the engine's host can give a container a GPU, and what that is based on."""

    present: bool
    evidence: str


@dataclass
class GpuObservation:
    """What observe_gpu saw: the options, the host, and the session run in a GPU container (if any)."""

    options: GpuOptions = field(default_factory=GpuOptions)
    host: HostGpu | None = None
    session: dict[str, Any] | None = None  # ORT_PROGRAM's answer in the GPU container
    log: str = ""  # ONNX Runtime's stderr there: the reason for a fallback is only logged
    error: str = ""  # the engine could not start a container with GPUs
    probe: dict[str, Any] | None = None  # the gpu probe's answer, from its own exec in the candidate


def layer_usable(req: GpuRequirements, answer: ProbeAnswer, obs: GpuObservation, earlier: list[Layer]) -> Layer:
    """Layer 3: a session runs on the provider, with no silent fallback to the CPU."""
    require = obs.options.require or req.require_gpu
    expected = f"an InferenceSession asked for {', '.join(req.providers)} runs on them, with no fallback"
    if req.placement == "candidate":
        return _judge_session(
            expected,
            req,
            answer.ort.get("session"),
            answer.ort_log,
            "in the candidate",
            earlier,
            notes=["needs no GPU: run in the candidate"] if require else [],
        )
    where = {"nvidia": "an NVIDIA GPU", "intel": f"an Intel {req.device_type} device"}[req.placement]
    expected += f" (needs {where} in the container)"
    unavailable = _why_unavailable(req, obs)
    if unavailable:
        status = Status.FAIL if require else Status.SKIPPED
        fix = "Run on a host with a GPU and the NVIDIA container toolkit (see the README)." if require else ""
        return Layer("usable", status, expected, unavailable, fix)
    failed = [layer.name for layer in earlier if layer.status is not Status.PASS]
    if failed:
        return Layer(
            "usable",
            Status.BLOCKED,
            expected,
            f"not run: layer {failed[0]} did not pass, so a session could only fall back to the CPU",
        )
    if obs.error:
        status = Status.FAIL if require else Status.SKIPPED
        return Layer(
            "usable",
            status,
            expected,
            f"the engine could not give the container a GPU: {obs.error}",
            "Install the NVIDIA container toolkit on the Docker host, then `nvidia-ctk runtime "
            "configure --runtime=docker` and restart dockerd.",
        )
    layer = _judge_session(expected, req, obs.session, obs.log, "in a container with GPUs", earlier)
    smi = (obs.session or {}).get("nvidia_smi") or {}
    if smi:
        versions = parse_nvidia_smi(str(smi.get("summary", "")))
        layer.details["nvidia-smi"] = clip(f"{smi.get('gpus', '')}\n{smi.get('summary', '')}".strip(), 6000)
        layer.details.update({f"{k} version": v for k, v in versions.items()})
        if versions:
            layer.observed += f"; driver {versions.get('driver', '?')}, CUDA {versions.get('cuda', '?')}"
    return layer


def _why_unavailable(req: GpuRequirements, obs: GpuObservation) -> str:
    """The reason layer 3 cannot run on this host, or '' when it can."""
    if req.placement == "intel":
        return (
            f"needs an Intel {req.device_type} device passed to the container; pytest-baseimage passes only NVIDIA GPUs"
        )
    if obs.options.gpus == "none":
        return "--gpus none: the candidate gets no GPU"
    if obs.host is None:
        return "no GPU on this host (not checked)"
    if not obs.host.present:
        return f"no GPU on this host ({obs.host.evidence})"
    return ""


def _judge_session(
    expected: str,
    req: GpuRequirements,
    session: dict[str, Any] | None,
    log: str,
    where: str,
    earlier: list[Layer],
    notes: list[str] | None = None,
) -> Layer:
    details: dict[str, Any] = {"notes": notes} if notes else {}
    if log.strip():
        details["onnxruntime log"] = clip(log, 6000)
    if not session:
        if any(layer.status is not Status.PASS for layer in earlier[:1]):
            return Layer("usable", Status.BLOCKED, expected, "not run: layer compiled did not pass", details=details)
        return Layer("usable", Status.ERROR, expected, f"no session result {where}", details=details)
    details["session"] = {k: v for k, v in session.items() if k != "nvidia_smi"}
    if session.get("error"):
        observed = f"creating or running the session {where} failed: {probe.last_line(session['error'])}"
        return Layer("usable", Status.FAIL, expected, observed, _session_fix(req), details)
    used = [str(p) for p in session.get("providers") or []]
    lost = [p for p in req.providers if p not in used]
    if lost:
        reason = _fallback_reason(log)
        observed = (
            f"asked for {', '.join(req.providers)} {where}; the session runs on {', '.join(used)}: "
            "ONNX Runtime fell back to the CPU" + (f" ({reason})" if reason else "")
        )
        return Layer("usable", Status.FAIL, expected, observed, _session_fix(req), details)
    if session.get("output") != MODEL_OUTPUT:
        observed = f"the session on {', '.join(used)} computed {session.get('output')}, not {MODEL_OUTPUT}"
        return Layer("usable", Status.FAIL, expected, observed, _session_fix(req), details)
    return Layer(
        "usable",
        Status.PASS,
        expected,
        f"a session {where} ran on {', '.join(used)} and computed the right answer",
        details=details,
    )


def _fallback_reason(log: str) -> str:
    """ONNX Runtime's own words on why a provider did not load (its log is the only place that says)."""
    for line in log.splitlines():
        if "cannot open shared object" in line or "Failed to create" in line or "Failed to load" in line:
            return line.strip()[-300:]
    return ""


def _session_fix(req: GpuRequirements) -> str:
    if req.placement == "nvidia":
        return (
            "Make the GPU libraries the provider needs match the host's driver (nvidia-smi shows the "
            "highest CUDA version it supports); ONNX Runtime's log in the details says what failed."
        )
    return "See ONNX Runtime's log in the details for why the provider could not be used."


# -- the stage ------------------------------------------------------------------------------------------
def check_gpu(facts: Facts, profile: Profile, observation: Any = None) -> StageResult:
    """Facts + profile + what observe_gpu saw -> one StageResult, with each layer in details["layers"]."""
    req = requirements(profile)
    if req is None:
        return stages.not_required(STAGE, profile)  # as skip_gpu says; the runner usually asked it first
    obs = observation if isinstance(observation, GpuObservation) else GpuObservation()
    answer = ProbeAnswer.from_facts(facts, obs.probe)
    compiled = layer_compiled(req, answer, facts.pip)
    loadable = layer_loadable(req, answer)
    usable = layer_usable(req, answer, obs, [compiled, loadable])
    return summarise(req, [compiled, loadable, usable], answer)


def summarise(req: GpuRequirements, layers: list[Layer], answer: ProbeAnswer) -> StageResult:
    """Fail if any layer failed; an error otherwise wins; a skipped layer 3 skips the stage with its reason.

    The observed text leads with the layers that did not pass: reports cut long lines."""
    expected = (
        f"{', '.join(req.providers)}: compiled in, loadable (its libraries resolve in the image) and "
        "usable (a session runs on it without falling back to the CPU)"
    )
    ordered = sorted(layers, key=lambda layer: layer.status is Status.PASS)
    observed = "; ".join(f"{layer.name} {layer.status.value}: {layer.observed}" for layer in ordered)
    statuses = [layer.status for layer in layers]
    details: dict[str, Any] = {"layers": {layer.name: layer.to_dict() for layer in layers}}
    if answer.ort.get("version"):
        details["onnxruntime"] = answer.ort["version"]
    if Status.FAIL in statuses:
        fix = " ".join(layer.remediation for layer in layers if layer.status is Status.FAIL and layer.remediation)
        return StageResult(STAGE, Status.FAIL, expected, observed, fix, details=details)
    if Status.ERROR in statuses:
        bad = next(layer for layer in layers if layer.status is Status.ERROR)
        return StageResult(
            STAGE, Status.ERROR, expected, observed, reason=f"{bad.name}: {bad.observed}", details=details
        )
    usable = layers[-1]
    if usable.status in (Status.SKIPPED, Status.BLOCKED):
        reason = f"{usable.observed}; layers compiled and loadable passed, usable not checked"
        return StageResult(STAGE, Status.SKIPPED, expected, observed, reason=reason, details=details)
    return StageResult(STAGE, Status.PASS, expected, observed, details=details)


def skip_gpu(profile: Profile) -> StageResult | None:
    """Not required when the profile names no providers."""
    return stages.not_required(STAGE, profile) if requirements(profile) is None else None

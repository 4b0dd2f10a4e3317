"""The gpu stage: can this image's ONNX Runtime use the execution providers its profile asks for?

ONNX Runtime fails quietly: a GPU build whose CUDA libraries are missing still lists CUDAExecutionProvider,
and a session asked for it only logs an error and runs on the CPU. So the stage checks three layers and
reports each on its own:

1. compiled in: `onnxruntime.get_available_providers()` lists the provider (in the candidate's Python);
2. loadable: the provider's shared library and everything it links resolve in the image (`ldd`, the
   linker cache, the profile's list of native libraries);
3. usable: an InferenceSession on a tiny model that this module writes itself runs on the provider, with
   no fallback to the CPU. NVIDIA providers need a GPU on the host; CPU-only providers run in the candidate.

Layers 1 and 2 (and layer 3 when it needs no device) come from the gpu probe's own exec in the candidate
(`run_probe`, with its own budget). Only layer 3 on a GPU starts a second container, in `observe_gpu`.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import glob
import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from . import incontainer, probe, stages
from .engine import KEEPALIVE_COMMANDS, Engine, ExecResult, describe_host
from .errors import EngineError
from .facts import Facts
from .profiles import Profile
from .results import StageResult, Status
from .text import clip

STAGE = "gpu"
CPU = "CPUExecutionProvider"
NVIDIA_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
OPENVINO = "OpenVINOExecutionProvider"
# Where each provider lives since ONNX Runtime 1.9 (onnxruntime/capi/); before that most were linked into
# the core module. A profile's [gpu] provider_libraries adds to or overrides this table.
PROVIDER_LIBRARIES: dict[str, str] = {
    "CUDAExecutionProvider": "libonnxruntime_providers_cuda.so",
    "TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so",
    OPENVINO: "libonnxruntime_providers_openvino.so",
    "DnnlExecutionProvider": "libonnxruntime_providers_dnnl.so",
}
# The NVIDIA container toolkit mounts the driver's libraries at run time: they are never in the image.
DRIVER_LIBRARY_PREFIXES = ("libcuda.so", "libnvidia-", "libnvcuvid.so", "libcudadebugger.so")
# OpenVINO device types that need an Intel device in the container (the CPU ones run anywhere).
INTEL_DEVICE_MARKERS = ("MYRIAD", "VAD-M", "HDDL", "GPU", "NPU")
# CUDA and TensorRT map large host buffers when they start; the candidate's default limit is too tight.
GPU_MEM_LIMIT = "4g"
SESSION_TIMEOUT_S = 300.0  # TensorRT builds an engine when the session starts
ORT_TIMEOUT_S = 90  # the ONNX Runtime subprocess inside the probe's exec
DEFAULT_TIMEOUT_S = 120.0  # [gpu] timeout_s: the gpu probe's own exec, apart from the probe of the other stages
PROBE_SLACK_S = 10.0  # the exec's deadline past the budget the program inside keeps to
CORE_MODULE = "onnxruntime_pybind11_state*.so"  # the native module every ONNX Runtime build has


# -- options -------------------------------------------------------------------------------------------
def parse_gpus(value: str | int) -> str:
    """`--gpus` as Docker spells it: all, none, a count, or device=0,1. Normalised; argparse reports errors."""
    text = str(value).strip().strip("'\"").lower()
    if text in ("all", "none"):
        return text
    if text.isdigit() and int(text) > 0:
        return str(int(text))
    if text.startswith("device=") and all(part.strip() for part in text[7:].split(",")):
        return "device=" + ",".join(part.strip() for part in text[7:].split(","))
    raise argparse.ArgumentTypeError(f"{value!r}: expected all, none, a number of GPUs, or device=0,1")


@dataclass(frozen=True)
class GpuOptions:
    """What the user asked for: which GPUs the candidate gets, and whether layer 3 is a gate."""

    gpus: str = "all"
    require: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GpuOptions:
        data = data or {}
        return cls(gpus=str(data.get("gpus") or "all"), require=bool(data.get("require_gpu")))

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "require_gpu": self.require}

    def device_request(self) -> Any:
        """The SDK's equivalent of `docker run --gpus ...`."""
        import docker

        if self.gpus.startswith("device="):
            ids = self.gpus[len("device=") :].split(",")
            return docker.types.DeviceRequest(device_ids=ids, capabilities=[["gpu"]])
        count = -1 if self.gpus == "all" else int(self.gpus)
        return docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])


# The keys of a matrix file's [images.gpu] table, and how the matrix checks each (see matrix.part_schemas).
MATRIX_OPTIONS: dict[str, str] = {"gpus": "parse_gpus", "require_gpu": "bool"}


def add_options(group: Any) -> None:
    """Register --gpus and --require-gpu on the plugin's option group."""
    group.addoption(
        "--gpus",
        default=None,
        type=parse_gpus,
        metavar="all|N|device=I,J|none",
        help="GPUs to give the candidate for the gpu stage's usable check, as `docker run "
        "--gpus`. Default: all, when the host has any; none skips that check.",
    )
    group.addoption(
        "--require-gpu",
        action="store_true",
        default=False,
        dest="require_gpu",
        help="make the gpu stage's usable check a gate: fail, not skip, when no GPU can be "
        "used (no GPU on the host, no NVIDIA container toolkit, --gpus none).",
    )


def options_from_config(config: Any) -> dict[str, Any]:
    """The gpu entry of Target.options, from the command line."""
    gpus = config.getoption("gpus", default=None) or "all"
    return GpuOptions(gpus=gpus, require=bool(config.getoption("require_gpu", default=False))).to_dict()


# -- what the profile asks for ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuRequirements:
    """The profile's [gpu] section, validated."""

    providers: tuple[str, ...]
    libraries: tuple[tuple[str, ...], ...] = ()  # each entry: alternatives, any one of which will do
    provider_libraries: dict[str, str] = field(default_factory=dict)
    device_type: str = ""  # OpenVINO's device_type provider option
    require_gpu: bool = False
    remediation: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S  # the gpu probe's budget ([gpu] timeout_s)

    @property
    def placement(self) -> str:
        """Where layer 3 can run: "nvidia" (a GPU container), "intel" (a device we do not pass), "candidate"."""
        if any(p in NVIDIA_PROVIDERS for p in self.providers):
            return "nvidia"
        if OPENVINO in self.providers and any(m in self.device_type.upper() for m in INTEL_DEVICE_MARKERS):
            return "intel"
        return "candidate"

    def provider_options(self) -> dict[str, dict[str, str]]:
        return {OPENVINO: {"device_type": self.device_type}} if self.device_type else {}

    def library_of(self, provider: str) -> str:
        return self.provider_libraries.get(provider, "")


def requirements(profile: Profile) -> GpuRequirements | None:
    """The [gpu] section (checked when the profile loaded: profile_schema.GpuSection), or None when the
    profile does not ask for the stage."""
    section = profile.section(STAGE)
    if not section or not section.get("providers"):
        return None
    libraries = [tuple(entry if isinstance(entry, list) else [entry]) for entry in section.get("libraries", [])]
    return GpuRequirements(
        providers=tuple(section["providers"]),
        libraries=tuple(libraries),
        provider_libraries={**PROVIDER_LIBRARIES, **section.get("provider_libraries", {})},
        device_type=str(section.get("device_type", "")),
        require_gpu=bool(section.get("require_gpu", False)),
        remediation=str(section.get("remediation", "")),
        timeout_s=float(section.get("timeout_s", DEFAULT_TIMEOUT_S)),
    )


# -- the tiny model: ONNX protobuf bytes, written by hand so the host needs no `onnx` package ------------
IR_VERSION = 6  # ONNX 1.6: loads in every ONNX Runtime since 1.2, the 2020 images' 1.7 included
OPSET = 11
_FLOAT = 1  # TensorProto.FLOAT
MODEL_INPUTS = {"X": [1.0, 2.0, 3.0, 4.0], "Y": [10.0, 20.0, 30.0, 40.0]}
MODEL_OUTPUT = [11.0, 22.0, 33.0, 44.0]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _pb_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _pb_bytes(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _pb_str(number: int, text: str) -> bytes:
    return _pb_bytes(number, text.encode("utf-8"))


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:
    """ValueInfoProto{name, type: TypeProto{tensor_type: {elem_type: FLOAT, shape: {dim: [...]}}}}."""
    dims = b"".join(_pb_bytes(1, _pb_int(1, size)) for size in shape)
    tensor = _pb_int(1, _FLOAT) + _pb_bytes(2, dims)
    return _pb_str(1, name) + _pb_bytes(2, _pb_bytes(1, tensor))


def tiny_model() -> bytes:
    """Z = Add(X, Y) on float[1,4]: an op every execution provider implements, so none can decline it."""
    shape = (1, len(MODEL_OUTPUT))
    node = _pb_str(1, "X") + _pb_str(1, "Y") + _pb_str(2, "Z") + _pb_str(3, "add") + _pb_str(4, "Add")
    graph = (
        _pb_bytes(1, node)
        + _pb_str(2, "pytest_baseimage_gpu")
        + _pb_bytes(11, _value_info("X", shape))
        + _pb_bytes(11, _value_info("Y", shape))
        + _pb_bytes(12, _value_info("Z", shape))
    )
    return (
        _pb_int(1, IR_VERSION) + _pb_str(2, "pytest-baseimage") + _pb_bytes(7, graph) + _pb_bytes(8, _pb_int(2, OPSET))
    )


# -- code that runs in the candidate (incontainer/: Python 2.7 and 3.5+) ----------------------------------
ORT_PROGRAM = incontainer.source("ort_session.py")  # layer 1 (and a session), in a process of its own
GPU_PROBE = incontainer.source("gpu_probe.py")  # runs ORT_PROGRAM, then resolves the libraries (layer 2)


def ort_request(req: GpuRequirements, marker: str, *, session: bool, nvidia_smi: bool = False) -> dict[str, Any]:
    """ORT_PROGRAM's argument: what to ask ONNX Runtime, and the model as base64."""
    return {
        "marker": marker,
        "session": session,
        "nvidia_smi": nvidia_smi,
        "providers": list(req.providers),
        "options": req.provider_options(),
        "model": base64.b64encode(tiny_model()).decode("ascii"),
        "inputs": MODEL_INPUTS,
    }


def probe_config(profile: Profile) -> dict[str, Any] | None:
    """GPU_PROBE's argument for this profile; None when the profile has no [gpu] requirements."""
    req = requirements(profile)
    if req is None:
        return None
    return {
        "ort": ort_request(req, f"@@{uuid.uuid4().hex}:", session=req.placement == "candidate"),
        "ort_program": ORT_PROGRAM,
        "provider_libraries": {p: req.library_of(p) for p in req.providers if req.library_of(p)},
        "timeout": max(min(ORT_TIMEOUT_S, req.timeout_s - PROBE_SLACK_S), 1.0),
    }


# -- parsers (pure) -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LddReport:
    """`ldd` (or `ld.so --list`) output: what resolved where, and what did not."""

    resolved: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    error: str = ""  # the tool could not run or the file is not a dynamic object


def parse_ldd(text: str) -> LddReport:
    resolved: dict[str, str] = {}
    missing: list[str] = []
    error = ""
    for raw in text.splitlines():
        line = raw.strip()
        if "=>" in line:
            name, _, target = (part.strip() for part in line.partition("=>"))
            if target.startswith("not found"):
                missing.append(name)
            elif target.split(" (")[0].strip():
                resolved[name] = target.split(" (")[0].strip()
        elif line.startswith("/"):
            path = line.split(" (")[0].strip()
            resolved[path.rsplit("/", 1)[-1]] = path
        elif "not a dynamic executable" in line or "statically linked" in line:
            error = line
    return LddReport(resolved, tuple(dict.fromkeys(missing)), error)


def parse_ldconfig(text: str) -> set[str]:
    """Library names in `ldconfig -p`: lines like `\tlibcudart.so.13 (libc6,x86-64) => /usr/...`."""
    return {line.split()[0] for line in text.splitlines()[1:] if "=>" in line and line.strip()}


def is_driver_library(name: str) -> bool:
    return name.startswith(DRIVER_LIBRARY_PREFIXES)


def parse_nvidia_smi(text: str) -> dict[str, str]:
    """Driver and CUDA version from `nvidia-smi`'s banner."""
    found = {}
    for key, pattern in (("driver", r"Driver Version:\s*([\w.]+)"), ("cuda", r"CUDA Version:\s*([\w.]+)")):
        match = re.search(pattern, text)
        if match:
            found[key] = match.group(1)
    return found


@dataclass(frozen=True)
class ProbeAnswer:
    """The gpu probe's answer (from its own exec in the candidate, GpuObservation.probe), with safe accessors."""

    data: dict[str, Any]
    problem: str = ""  # why there is no usable answer

    @classmethod
    def from_facts(cls, facts: Facts, probed: dict[str, Any] | None = None) -> ProbeAnswer:
        """From the gpu probe's own exec (`probed`); the facts say why there was none (no Python)."""
        if facts.python is None or not facts.python.version:
            return cls({}, facts.notes.get("python", "no Python in the image"))
        if not isinstance(probed, dict):
            return cls({}, "the gpu probe did not run: the probe found no Python executable to run it with")
        data = probed
        if "error" in data and "ort" not in data:
            return cls({}, f"the gpu probe failed in the candidate: {probe.last_line(str(data['error']))}")
        return cls(data)

    @property
    def ort(self) -> dict[str, Any]:
        return self.data.get("ort") or {}

    @property
    def ort_log(self) -> str:
        return str((self.data.get("ort_run") or {}).get("stderr", ""))

    def ldd(self, entry: dict[str, Any] | None) -> tuple[LddReport, dict[str, Any]]:
        raw = (entry or {}).get("ldd") or {}
        report = parse_ldd(str(raw.get("out", "")))
        if not raw.get("tool"):
            report = LddReport(error=str(raw.get("err") or "no ldd and no dynamic loader in the image"))
        return report, raw

    def known_names(self) -> set[str]:
        """Every library name the dynamic loader could find: linker cache, LD_LIBRARY_PATH, default dirs."""
        names = parse_ldconfig(str((self.data.get("ldconfig") or {}).get("out", "")))
        for listing in (self.data.get("search") or {}).values():
            names.update(listing)
        return names

    def pip_location(self, name: str) -> str:
        for directory, names in (self.data.get("pip_nvidia") or {}).items():
            if name in names:
                return directory
        return ""


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


def skip_gpu(profile: Profile) -> StageResult | None:
    """Not required when the profile names no providers."""
    return stages.not_required(STAGE, profile) if requirements(profile) is None else None


__all__ = ["add_options", "check_gpu", "observe_gpu", "options_from_config"]

"""What a profile's [gpu] table asks for (GpuRequirements), the tiny ONNX model the session runs, and the
config of the programs that run in the candidate (incontainer/ort_session.py, incontainer/gpu_probe.py)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from .. import incontainer
from ..profiles import Profile

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

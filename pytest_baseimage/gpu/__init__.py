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

The package follows the stage's seams: `options` (--gpus, --require-gpu), `spec` (what the profile asks for,
the tiny model, the in-container programs' config), `parse` (readers of the probe's answer), `verdict` (the
pure layers and check_gpu) and `live` (the host's GPUs, the probe's exec, the GPU container). The names
below are the stage's public face: the composition root, the plugin and the tests use them.
"""

from __future__ import annotations

from .live import detect_host_gpu, host_gpu_from, observe_gpu, run_gpu_session, run_probe
from .options import GpuOptions, add_options, options_from_config, parse_gpus
from .parse import LddReport, ProbeAnswer, is_driver_library, parse_ldconfig, parse_ldd, parse_nvidia_smi
from .spec import (
    GPU_PROBE,
    IR_VERSION,
    MODEL_OUTPUT,
    OPSET,
    ORT_PROGRAM,
    PROBE_SLACK_S,
    PROVIDER_LIBRARIES,
    STAGE,
    GpuRequirements,
    ort_request,
    probe_config,
    requirements,
    tiny_model,
)
from .verdict import GpuObservation, HostGpu, Layer, check_gpu, layer_usable, skip_gpu, summarise

__all__ = [
    "GPU_PROBE",
    "IR_VERSION",
    "MODEL_OUTPUT",
    "OPSET",
    "ORT_PROGRAM",
    "PROBE_SLACK_S",
    "PROVIDER_LIBRARIES",
    "STAGE",
    "GpuObservation",
    "GpuOptions",
    "GpuRequirements",
    "HostGpu",
    "Layer",
    "LddReport",
    "ProbeAnswer",
    "add_options",
    "check_gpu",
    "detect_host_gpu",
    "host_gpu_from",
    "is_driver_library",
    "layer_usable",
    "observe_gpu",
    "options_from_config",
    "ort_request",
    "parse_gpus",
    "parse_ldconfig",
    "parse_ldd",
    "parse_nvidia_smi",
    "probe_config",
    "requirements",
    "run_gpu_session",
    "run_probe",
    "skip_gpu",
    "summarise",
    "tiny_model",
]

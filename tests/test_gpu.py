"""Unit tests of the gpu stage: the three layers' decisions, fed facts and observations (no Docker)."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_baseimage import gpu, probe, profiles
from pytest_baseimage.composition import BUILTIN
from pytest_baseimage.engine import ExecResult
from pytest_baseimage.errors import ProfileError
from pytest_baseimage.facts import Facts, PythonInfo
from pytest_baseimage.gpu import live, spec
from pytest_baseimage.results import StageResult, Status

FIXTURE_PROFILES = Path(__file__).resolve().parent.parent / "fixtures" / "profiles"
CAPI = "/opt/conda/lib/python3.11/site-packages/onnxruntime/capi"

LDD_CORE = """\tlinux-vdso.so.1 (0x00007ffd1c5f2000)
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f3a1c000000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3a1be1f000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3a1e4a6000)
"""
# ldd on onnxruntime-gpu 1.31.1's CUDA provider in an image without CUDA (as in the onnx-cuda fixture).
LDD_CUDA_MISSING = """\tlinux-vdso.so.1 (0x00007ffc3a9d8000)
\tlibcublasLt.so.13 => not found
\tlibcublas.so.13 => not found
\tlibcurand.so.10 => not found
\tlibcudart.so.13 => not found
\tlibcuda.so.1 => not found
\tlibonnxruntime_providers_shared.so => %s/libonnxruntime_providers_shared.so (0x00007f0c7e9f5000)
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f0c3fc00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c3fa1f000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0c7ea1b000)
""".replace("%s", CAPI)
CUDA13 = ["libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13"]
TENSORRT10 = ["libcudnn.so.9", "libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10"]
LDD_CUDA_OK = (
    "".join(f"\t{n} => /usr/local/cuda/lib64/{n} (0x00007f0c3f000000)\n" for n in CUDA13)
    + "\tlibcuda.so.1 => not found\n"
    + LDD_CORE
)
NVIDIA_SMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.65.06              Driver Version: 580.65.06      CUDA Version: 13.0     |
|-----------------------------------------+------------------------+----------------------+
"""
NO_GPU = gpu.HostGpu(
    False, "Docker runtimes: io.containerd.runc.v2, runc, none of them nvidia; no /dev/nvidia* device nodes"
)
A_GPU = gpu.HostGpu(True, "Docker lists the nvidia runtime")


def load(name: str) -> profiles.Profile:
    return profiles.load(name, allow_abstract=True)  # onnxruntime-base is abstract: the others extend its [gpu]


def ldconfig_text(names: list[str]) -> str:
    lines = [f"\t{n} (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/{n}" for n in names]
    return f"{len(names)} libs found in cache `/etc/ld.so.cache'\n" + "\n".join(lines) + "\n"


def make_facts(
    available: tuple[str, ...] = ("CPUExecutionProvider",),
    libraries: dict[str, str | None] | None = None,
    ldconfig: list[str] = (),
    session: dict[str, Any] | None = None,
    pip: dict[str, str] | None = None,
    import_ok: bool = True,
    ldd_tool: str = "ldd",
    pip_nvidia: dict[str, list[str]] | None = None,
    stderr: str = "",
) -> Facts:
    """Facts shaped like the probe extension's real answer; `libraries` maps provider -> ldd text or None."""
    ort: dict[str, Any] = {"import_ok": import_ok}
    if import_ok:
        ort.update(version="1.31.1", file=f"{CAPI[:-5]}/__init__.py", available=list(available), device="GPU")
        if session is not None:
            ort["session"] = session
    else:
        ort["import_error"] = "Traceback...\nImportError: libstdc++.so.6: cannot open shared object file"
    provider_libs = {}
    for provider, text in (libraries or {}).items():
        name = gpu.PROVIDER_LIBRARIES[provider]
        entry: dict[str, Any] = {"file": name, "path": f"{CAPI}/{name}", "exists": text is not None}
        if text is not None:
            entry["ldd"] = {
                "rc": 0,
                "out": text if ldd_tool else "",
                "err": "" if ldd_tool else "no ldd",
                "tool": ldd_tool,
            }
        provider_libs[provider] = entry
    answer = {
        "ort_run": {"rc": 0, "stderr": stderr},
        "ort": ort,
        "package_dir": CAPI[:-5],
        "capi_files": ["onnxruntime_pybind11_state.so"],
        "provider_libraries": provider_libs,
        "core": {"file": "onnxruntime_pybind11_state.so", "ldd": {"rc": 0, "out": LDD_CORE, "err": "", "tool": "ldd"}},
        "ldconfig": {"rc": 0, "out": ldconfig_text(list(ldconfig)), "err": ""},
        "ld_library_path": "",
        "search": {},
        "pip_nvidia": pip_nvidia or {},
    }
    return ProbedFacts(
        running=True,
        has_shell=True,
        python=PythonInfo("/opt/conda/bin/python3", "3.11.2"),
        pip=pip if pip is not None else {"onnxruntime-gpu": "1.31.1"},
        gpu_answer=answer,
    )


@dataclasses.dataclass(frozen=True)
class ProbedFacts(Facts):
    """Facts with the answer the gpu probe's own exec would give for them (observe_gpu's GpuObservation.probe)."""

    gpu_answer: dict[str, Any] | None = None


def check(facts: Facts, profile: profiles.Profile, observation: gpu.GpuObservation | None = None) -> StageResult:
    """check_gpu as the runner calls it: the observation carries the gpu probe's answer for these facts."""
    seen = observation if observation is not None else gpu.GpuObservation()
    if seen.probe is None:
        seen = dataclasses.replace(seen, probe=getattr(facts, "gpu_answer", None))
    return gpu.check_gpu(facts, profile, seen)


def obs(host: gpu.HostGpu | None = NO_GPU, require: bool = False, gpus: str = "all", **kw: Any) -> gpu.GpuObservation:
    return gpu.GpuObservation(gpu.GpuOptions(gpus=gpus, require=require), host, **kw)


def layers(result: Any) -> dict[str, str]:
    return {name: layer["status"] for name, layer in result.details["layers"].items()}


CPU_SESSION = {"requested": ["CPUExecutionProvider"], "providers": ["CPUExecutionProvider"], "output": gpu.MODEL_OUTPUT}


# -- options --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "normal"), [("all", "all"), ("NONE", "none"), ("2", "2"), ('"device=0, 2"', "device=0,2")]
)
def test_parse_gpus_accepts_dockers_spellings(given: str, normal: str) -> None:
    assert gpu.parse_gpus(given) == normal


def test_parse_gpus_takes_a_matrix_files_integer_and_is_its_parser() -> None:
    from pytest_baseimage import matrix

    assert gpu.parse_gpus(2) == "2"
    assert matrix.part_schemas({"gpu": gpu})["gpu"] == {"gpus": gpu.parse_gpus, "require_gpu": matrix.BOOL}


@pytest.mark.parametrize("bad", ["0", "-1", "some", "device=", ""])
def test_parse_gpus_rejects_the_rest(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        gpu.parse_gpus(bad)


def test_device_requests_match_docker_run_gpus() -> None:
    assert gpu.GpuOptions("all").device_request()["Count"] == -1
    assert gpu.GpuOptions("2").device_request()["Count"] == 2
    request = gpu.GpuOptions("device=0,3").device_request()
    assert request["DeviceIDs"] == ["0", "3"] and request["Capabilities"] == [["gpu"]]


def test_options_round_trip_through_target_options() -> None:
    config = SimpleNamespace(getoption=lambda name, default=None: {"gpus": "1", "require_gpu": True}[name])
    options = gpu.options_from_config(config)
    assert options == {"gpus": "1", "require_gpu": True}
    assert gpu.GpuOptions.from_dict(options) == gpu.GpuOptions("1", True)
    assert gpu.GpuOptions.from_dict(None) == gpu.GpuOptions("all", False)


def test_add_options_registers_both_flags() -> None:
    parser = argparse.ArgumentParser()
    gpu.add_options(SimpleNamespace(addoption=parser.add_argument))
    args = parser.parse_args(["--gpus", "none", "--require-gpu"])
    assert (args.gpus, args.require_gpu) == ("none", True)


# -- profiles -------------------------------------------------------------------------------------------
def test_the_stage_is_declared_last_and_asks_the_shared_probe_nothing() -> None:
    stage = BUILTIN.get("gpu")
    assert stage.prerequisites == ("python",)
    assert stage.observe is gpu.observe_gpu
    assert BUILTIN.names[-1] == "gpu"
    assert stage.needs is None  # a slow ONNX Runtime import must not cost the shared probe its facts


@pytest.mark.parametrize(
    ("name", "placement"),
    [
        ("onnxruntime-cpu", "candidate"),
        ("onnxruntime-cuda", "nvidia"),
        ("onnxruntime-tensorrt", "nvidia"),
        ("onnxruntime-openvino", "candidate"),
        ("onnxruntime-openvino-vadm", "intel"),
        ("onnxruntime-openvino-myriad", "intel"),
    ],
)
def test_variant_profiles_load_and_say_where_layer_3_runs(name: str, placement: str) -> None:
    req = gpu.requirements(load(name))
    assert req is not None and req.placement == placement


def test_profiles_without_gpu_do_not_need_the_stage() -> None:
    for name in ("azureml-2020", "azureml-current", "onnxruntime-base"):
        assert gpu.requirements(load(name)) is None
        assert gpu.probe_config(load(name)) is None
        assert check(Facts(), load(name)).status is Status.SKIPPED


def test_fixture_profiles_accept_debian(tmp_path: Path) -> None:
    for variant in ("cpu", "cuda", "openvino"):
        profile = load(str(FIXTURE_PROFILES / f"onnx-{variant}-fixture.toml"))
        assert profile.os_rules()[0].id == "debian"
        assert gpu.requirements(profile) == gpu.requirements(load(f"onnxruntime-{variant}"))


def test_tensorrt_lists_tensorrt_and_cuda_libraries() -> None:
    req = gpu.requirements(load("onnxruntime-tensorrt"))
    flat = [name for group in req.libraries for name in group]
    assert {"libnvinfer.so.10", "libcudart.so.13", "libcudnn.so.9"} <= set(flat)
    assert req.providers == ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def test_a_bad_gpu_section_is_refused_when_the_profile_loads(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('extends = "onnxruntime-cuda"\n[gpu]\nproviders = "CUDAExecutionProvider"\n')
    with pytest.raises(ProfileError) as info:
        load(str(path))
    assert str(info.value) == (f"profile {path}: gpu.providers: expected list of strings, got 'CUDAExecutionProvider'")


# -- the tiny model ---------------------------------------------------------------------------------------
def _decode(data: bytes) -> list[tuple[int, Any]]:
    """A minimal protobuf reader: (field, int or bytes) pairs."""
    out, i = [], 0
    while i < len(data):
        key, i = _read_varint(data, i)
        if key & 7 == 0:
            value, i = _read_varint(data, i)
        else:
            size, i = _read_varint(data, i)
            value, i = data[i : i + size], i + size
        out.append((key >> 3, value))
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def test_tiny_model_is_an_add_graph_in_onnx_protobuf() -> None:
    model = dict(_decode(gpu.tiny_model()))
    assert model[1] == gpu.IR_VERSION
    assert dict(_decode(model[8])) == {2: gpu.OPSET}
    graph = _decode(model[7])
    node = _decode(dict(graph)[1])
    assert [v for f, v in node if f == 1] == [b"X", b"Y"] and dict(node)[4] == b"Add"
    assert [dict(_decode(v))[1] for f, v in graph if f == 11] == [b"X", b"Y"]
    output = dict(_decode(dict(graph)[12]))
    tensor = dict(_decode(dict(_decode(output[2]))[1]))
    dims = [dict(_decode(v))[1] for _, v in _decode(tensor[2])]
    assert tensor[1] == 1 and dims == [1, 4]


def test_varint_encodes_multi_byte_values() -> None:
    assert spec._varint(300) == b"\xac\x02" and spec._varint(0) == b"\x00"


# -- the candidate's code runs on old Pythons -------------------------------------------------------------
def _old_pythons() -> list[str]:
    """python2.7 / 3.5 / 3.6 on PATH or under pyenv, when they really run (a pyenv shim may not)."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for version in ("2.7", "3.5", "3.6"):
        under_pyenv = sorted(glob.glob(f"{root}/versions/{version}*/bin/python"))
        candidates = [shutil.which(f"python{version}") or "", *under_pyenv]
        for exe in candidates:
            if exe and subprocess.run([exe, "-c", "pass"], capture_output=True).returncode == 0:
                found.append(exe)
                break
    return found


@pytest.mark.parametrize("source", ["gpu_probe", "program"])
def test_candidate_code_compiles_for_python_2_7_and_3_5(source: str) -> None:
    pythons = _old_pythons()
    if not pythons:
        pytest.skip("no python2.7/3.5/3.6 on this machine to compile with")
    code = gpu.GPU_PROBE if source == "gpu_probe" else gpu.ORT_PROGRAM
    for exe in pythons:
        proc = subprocess.run(
            [exe, "-c", "import sys; compile(sys.stdin.read(), 'x', 'exec')"],
            input=code,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, (exe, proc.stderr)


def test_gpu_probe_answers_even_without_onnxruntime() -> None:
    """Run the gpu probe as run_probe does, in this machine's oldest Python: a JSON-able answer."""
    exe = (_old_pythons() or [shutil.which("python3") or "python3"])[0]
    config = gpu.probe_config(load("onnxruntime-cuda"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [exe, "-S", "-c", gpu.GPU_PROBE, json.dumps(config), "@@m:"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    answer = probe.last_marked_json(proc.stdout, "@@m:")
    assert answer["ort"]["import_ok"] is False
    assert answer["provider_libraries"]["CUDAExecutionProvider"]["exists"] is False


# -- parsers ----------------------------------------------------------------------------------------------
def test_parse_ldd_separates_missing_from_resolved() -> None:
    report = gpu.parse_ldd(LDD_CUDA_MISSING)
    assert report.missing == (*CUDA13, "libcuda.so.1")
    assert report.resolved["libonnxruntime_providers_shared.so"].startswith(CAPI)
    assert report.resolved["ld-linux-x86-64.so.2"] == "/lib64/ld-linux-x86-64.so.2"
    assert "linux-vdso.so.1" not in report.resolved and not report.error


def test_parse_ldd_reports_static_objects() -> None:
    assert gpu.parse_ldd("\tnot a dynamic executable\n").error == "not a dynamic executable"


def test_parse_ldconfig_and_nvidia_smi() -> None:
    assert gpu.parse_ldconfig(ldconfig_text(["libcudnn.so.9", "libz.so.1"])) == {"libcudnn.so.9", "libz.so.1"}
    assert gpu.parse_nvidia_smi(NVIDIA_SMI) == {"driver": "580.65.06", "cuda": "13.0"}


def test_driver_libraries_are_recognised() -> None:
    assert gpu.is_driver_library("libcuda.so.1") and gpu.is_driver_library("libnvidia-ml.so.1")
    assert not gpu.is_driver_library("libcudart.so.13")


# -- host detection ---------------------------------------------------------------------------------------
def test_host_gpu_from_docker_info_and_device_nodes() -> None:
    runc = {"Runtimes": {"runc": {}, "io.containerd.runc.v2": {}}}
    assert gpu.host_gpu_from({"Runtimes": {"nvidia": {}, "runc": {}}}, [], True, "unix:///s").present
    assert gpu.host_gpu_from(runc, ["/dev/nvidia0"], True, "unix:///s").present
    cdi = {"DiscoveredDevices": [{"Source": "cdi", "ID": "nvidia.com/gpu=all"}]}
    assert gpu.host_gpu_from(cdi, [], False, "tcp://x:2376").present
    none = gpu.host_gpu_from(runc, [], True, "unix:///s")
    assert not none.present and "io.containerd.runc.v2, runc" in none.evidence and "/dev/nvidia*" in none.evidence
    remote = gpu.host_gpu_from(runc, ["/dev/nvidia0"], False, "tcp://x:2376")
    assert not remote.present and "remote" in remote.evidence


# -- layer 1: compiled in -----------------------------------------------------------------------------------
def test_cpu_build_under_the_cuda_profile_fails_layer_1_with_the_swap_fix() -> None:
    facts = make_facts(
        available=("AzureExecutionProvider", "CPUExecutionProvider"),
        libraries={"CUDAExecutionProvider": None},
        pip={"onnxruntime": "1.32.0"},
    )
    result = check(facts, load("onnxruntime-cuda"), obs())
    assert result.status is Status.FAIL
    assert layers(result)["compiled"] == "fail"
    assert "missing: CUDAExecutionProvider" in result.observed
    assert "pip uninstall onnxruntime, then pip install onnxruntime-gpu" in result.remediation
    assert "onnxruntime/capi/libonnxruntime_providers_cuda.so" in result.details["layers"]["loadable"]["observed"]


def test_an_import_failure_fails_layer_1_and_blocks_the_cpu_session() -> None:
    facts = make_facts(import_ok=False)
    result = check(facts, load("onnxruntime-cpu"), obs())
    assert layers(result)["compiled"] == "fail" and layers(result)["usable"] == "blocked"
    assert "cannot open shared object file" in result.observed


def test_no_python_answer_is_an_error() -> None:
    result = check(Facts(notes={"python": "no `python3` on PATH"}), load("onnxruntime-cpu"), obs())
    assert result.status is Status.ERROR and "no `python3` on PATH" in result.reason


# -- layer 2: loadable ---------------------------------------------------------------------------------------
def test_missing_cuda_libraries_fail_layer_2_by_name_and_spare_the_driver() -> None:
    facts = make_facts(
        available=("CUDAExecutionProvider", "CPUExecutionProvider"),
        libraries={"CUDAExecutionProvider": LDD_CUDA_MISSING},
    )
    result = check(facts, load("onnxruntime-cuda"), obs())
    loadable = result.details["layers"]["loadable"]
    assert result.status is Status.FAIL
    assert layers(result) == {"compiled": "pass", "loadable": "fail", "usable": "skipped"}
    assert loadable["details"]["missing"] == CUDA13
    assert "libcuda.so.1" not in loadable["observed"]
    assert "libcuda.so.1 comes from the host's NVIDIA driver" in " ".join(loadable["details"]["notes"])
    assert "libcudart.so.13" in result.remediation
    assert "no GPU on this host" in result.details["layers"]["usable"]["observed"]


def test_require_gpu_fails_layer_3_when_the_host_has_none() -> None:
    facts = make_facts(available=("CUDAExecutionProvider",), libraries={"CUDAExecutionProvider": LDD_CUDA_MISSING})
    result = check(facts, load("onnxruntime-cuda"), obs(require=True))
    assert layers(result)["usable"] == "fail"
    assert "no GPU on this host" in result.details["layers"]["usable"]["observed"]


def test_profile_libraries_are_checked_beyond_what_ldd_lists() -> None:
    """TensorRT loads libnvinfer_plugin at run time: ldd cannot see it, the profile's list does."""
    loaded = [n for n in TENSORRT10 if n != "libnvinfer_plugin.so.10"]
    facts = make_facts(
        available=("TensorrtExecutionProvider", "CUDAExecutionProvider"),
        libraries={"TensorrtExecutionProvider": LDD_CUDA_OK, "CUDAExecutionProvider": LDD_CUDA_OK},
        ldconfig=loaded,
    )
    result = check(facts, load("onnxruntime-tensorrt"), obs())
    assert result.details["layers"]["loadable"]["details"]["missing"] == ["libnvinfer_plugin.so.10"]


def test_any_alternative_satisfies_a_profile_library() -> None:
    cuda12 = ["libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libcurand.so.10"]
    facts = make_facts(
        available=("CUDAExecutionProvider",), libraries={"CUDAExecutionProvider": LDD_CORE}, ldconfig=cuda12
    )
    result = check(facts, load("onnxruntime-cuda"), obs())
    assert layers(result)["loadable"] == "pass"
    missing = check(
        make_facts(available=("CUDAExecutionProvider",), libraries={"CUDAExecutionProvider": LDD_CORE}),
        load("onnxruntime-cuda"),
    )
    assert "libcudart.so.13 or libcudart.so.12" in missing.details["layers"]["loadable"]["details"]["missing"]


def test_libraries_in_pip_packages_get_a_hint() -> None:
    facts = make_facts(
        available=("CUDAExecutionProvider",),
        libraries={"CUDAExecutionProvider": LDD_CUDA_MISSING},
        pip_nvidia={"/opt/conda/lib/python3.11/site-packages/nvidia/cu13/lib": ["libcudart.so.13"]},
    )
    result = check(facts, load("onnxruntime-cuda"), obs())
    assert "libcudart.so.13 is in /opt/conda/lib/python3.11/site-packages/nvidia/cu13/lib" in result.observed
    assert "LD_LIBRARY_PATH" in result.remediation


def test_a_provider_linked_into_the_core_module_is_explained_not_failed() -> None:
    facts = make_facts(available=("CUDAExecutionProvider",), libraries={"CUDAExecutionProvider": None}, ldconfig=CUDA13)
    result = check(facts, load("onnxruntime-cuda"), obs())
    loadable = result.details["layers"]["loadable"]
    assert loadable["status"] == "pass" and "linked into the core module" in loadable["observed"]


def test_no_ldd_in_the_image_is_an_error() -> None:
    facts = make_facts(
        available=("CUDAExecutionProvider",),
        libraries={"CUDAExecutionProvider": LDD_CUDA_OK},
        ldd_tool="",
        ldconfig=CUDA13,
    )
    result = check(facts, load("onnxruntime-cuda"), obs())
    assert result.status is Status.ERROR and "could not resolve libonnxruntime_providers_cuda.so" in result.reason


# -- layer 3: usable -----------------------------------------------------------------------------------------
def test_cpu_profile_passes_with_a_real_session_in_the_candidate() -> None:
    result = check(make_facts(session=CPU_SESSION, pip={"onnxruntime": "1.32.0"}), load("onnxruntime-cpu"))
    assert result.status is Status.PASS, result.summary()
    assert layers(result) == {"compiled": "pass", "loadable": "pass", "usable": "pass"}
    assert "ran on CPUExecutionProvider" in result.observed


def test_cpu_profile_ignores_require_gpu_with_a_note() -> None:
    result = check(make_facts(session=CPU_SESSION), load("onnxruntime-cpu"), obs(require=True))
    assert result.status is Status.PASS
    assert result.details["layers"]["usable"]["details"]["notes"] == ["needs no GPU: run in the candidate"]


def test_a_wrong_answer_from_the_session_fails() -> None:
    session = {**CPU_SESSION, "output": [0.0] * 4}
    result = check(make_facts(session=session), load("onnxruntime-cpu"))
    assert result.status is Status.FAIL and "not [11.0" in result.observed


def test_a_session_error_fails_layer_3() -> None:
    session = {"requested": ["CPUExecutionProvider"], "error": "Traceback\nInvalidProtobuf: [ONNXRuntimeError]"}
    result = check(make_facts(session=session), load("onnxruntime-cpu"))
    assert layers(result)["usable"] == "fail" and "InvalidProtobuf" in result.observed


def _cuda_ready(**kw: Any) -> Facts:
    return make_facts(
        available=("CUDAExecutionProvider", "CPUExecutionProvider"),
        libraries={"CUDAExecutionProvider": LDD_CUDA_OK},
        **kw,
    )


def test_no_gpu_on_the_host_skips_the_stage_when_layers_1_and_2_pass() -> None:
    result = check(_cuda_ready(), load("onnxruntime-cuda"), obs())
    assert result.status is Status.SKIPPED
    assert result.reason.startswith("no GPU on this host (Docker runtimes:")
    assert layers(result) == {"compiled": "pass", "loadable": "pass", "usable": "skipped"}


def test_gpus_none_skips_and_require_gpu_turns_it_into_a_failure() -> None:
    assert check(_cuda_ready(), load("onnxruntime-cuda"), obs(None, gpus="none")).reason.startswith("--gpus none")
    result = check(_cuda_ready(), load("onnxruntime-cuda"), obs(None, gpus="none", require=True))
    assert result.status is Status.FAIL


def test_profile_require_gpu_is_a_gate_too(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text('extends = "onnxruntime-cuda"\n[gpu]\nrequire_gpu = true\n')
    assert check(_cuda_ready(), load(str(path)), obs()).status is Status.FAIL


def test_gpu_host_session_on_cuda_passes_and_records_nvidia_smi() -> None:
    session = {
        "requested": ["CUDAExecutionProvider"],
        "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "output": gpu.MODEL_OUTPUT,
        "nvidia_smi": {"summary": NVIDIA_SMI, "gpus": "GPU 0: NVIDIA L4 (UUID: x)"},
    }
    result = check(_cuda_ready(), load("onnxruntime-cuda"), obs(A_GPU, session=session))
    usable = result.details["layers"]["usable"]
    assert result.status is Status.PASS, result.summary()
    assert usable["details"]["driver version"] == "580.65.06" and usable["details"]["cuda version"] == "13.0"
    assert "NVIDIA L4" in usable["details"]["nvidia-smi"] and "driver 580.65.06, CUDA 13.0" in result.observed


def test_gpu_host_silent_cpu_fallback_is_a_failure() -> None:
    session = {
        "requested": ["CUDAExecutionProvider"],
        "providers": ["CPUExecutionProvider"],
        "output": gpu.MODEL_OUTPUT,
        "nvidia_smi": {"summary": NVIDIA_SMI},
    }
    log = (
        "2026-05-01 [E:onnxruntime:Default, provider_bridge_ort.cc:2251] Failed to load library "
        "libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file\n"
    )
    result = check(_cuda_ready(), load("onnxruntime-cuda"), obs(A_GPU, session=session, log=log))
    assert result.status is Status.FAIL and layers(result)["usable"] == "fail"
    assert "fell back to the CPU" in result.observed and "libcublasLt.so.13: cannot open" in result.observed


def test_tensorrt_needs_both_providers_in_the_session() -> None:
    facts = make_facts(
        available=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        libraries={"TensorrtExecutionProvider": LDD_CUDA_OK, "CUDAExecutionProvider": LDD_CUDA_OK},
        ldconfig=TENSORRT10,
    )
    session = {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "output": gpu.MODEL_OUTPUT}
    result = check(facts, load("onnxruntime-tensorrt"), obs(A_GPU, session=session))
    assert layers(result) == {"compiled": "pass", "loadable": "pass", "usable": "fail"}


def test_gpu_host_with_failing_layer_2_blocks_layer_3() -> None:
    facts = make_facts(available=("CUDAExecutionProvider",), libraries={"CUDAExecutionProvider": LDD_CUDA_MISSING})
    result = check(facts, load("onnxruntime-cuda"), obs(A_GPU))
    assert result.status is Status.FAIL and layers(result)["usable"] == "blocked"


def test_engine_refusing_gpus_skips_or_fails_under_require() -> None:
    error = 'could not select device driver "" with capabilities: [[gpu]]'
    skipped = check(_cuda_ready(), load("onnxruntime-cuda"), obs(A_GPU, error=error))
    assert skipped.status is Status.SKIPPED and "could not select device driver" in skipped.reason
    failed = check(_cuda_ready(), load("onnxruntime-cuda"), obs(A_GPU, error=error, require=True))
    assert failed.status is Status.FAIL and "nvidia-ctk runtime configure" in failed.remediation


def test_intel_vpu_profiles_skip_layer_3_with_the_device_named() -> None:
    ov_ldd = "\tlibinference_engine.so => /opt/intel/openvino/lib/libinference_engine.so (0x1)\n" + LDD_CORE
    facts = make_facts(
        available=("OpenVINOExecutionProvider", "CPUExecutionProvider"),
        libraries={"OpenVINOExecutionProvider": ov_ldd},
        ldconfig=["libmyriadPlugin.so"],
    )
    result = check(facts, load("onnxruntime-openvino-myriad"), obs(A_GPU))
    assert result.status is Status.SKIPPED and "Intel MYRIAD_FP16 device" in result.reason
    gate = check(facts, load("onnxruntime-openvino-myriad"), obs(A_GPU, require=True))
    assert gate.status is Status.FAIL


def test_stage_result_stays_json_able_and_bounded() -> None:
    facts = make_facts(available=("CUDAExecutionProvider",), libraries={"CUDAExecutionProvider": LDD_CUDA_MISSING})
    result = check(facts, load("onnxruntime-cuda"), obs())
    json.dumps(result.to_dict())
    assert result.expected.startswith("CUDAExecutionProvider: compiled in, loadable")
    assert result.observed.startswith("loadable fail: missing: libcublasLt.so.13")


# -- observe_gpu: the live orchestration, with a fake engine ----------------------------------------------------
class FakeContainer:
    def __init__(self, options: dict[str, Any], start_ok: bool) -> None:
        self.options, self.start_ok = options, start_ok
        self.attrs = {"State": {"Error": "" if start_ok else 'could not select device driver "" with capabilities'}}

    def reload(self) -> None:
        pass


class FakeEngine:
    """Records what observe_gpu asks of the engine; answers like a GPU container would."""

    def __init__(self, info: dict[str, Any], start_ok: bool = True, answer: dict[str, Any] | None = None) -> None:
        self.client = SimpleNamespace(info=lambda: info, api=SimpleNamespace(base_url="tcp://gpu-host:2376"))
        self.start_ok, self.answer = start_ok, answer
        self.created: list[dict[str, Any]] = []
        self.removed = 0
        self.commands: list[list[str]] = []

    def container(self, image: str, *, role: str, **options: Any) -> Any:
        engine = self

        class Box:
            def __enter__(self) -> FakeContainer:
                engine.created.append({"image": image, "role": role, **options})
                return FakeContainer(options, engine.start_ok)

            def __exit__(self, *exc: Any) -> None:
                engine.removed += 1

        return Box()

    def start(self, box: FakeContainer) -> bool:
        return box.start_ok

    def exec(self, box: FakeContainer, cmd: list[str], timeout: float = 0) -> ExecResult:
        self.commands.append(cmd)
        marker = json.loads(cmd[-1])["marker"]
        return ExecResult(0, f"noise\n{marker}{json.dumps(self.answer)}\n", "ort log line\n")


class FakeCandidate:
    """The candidate's gpu probe exec (run_probe), answering what `answer` says, marked as RUNNER marks it."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.execs: list[list[str]] = []

    def exec(self, cmd: list[str], timeout: float = 120) -> ExecResult:
        self.execs.append(cmd)
        return ExecResult(0, "\n" + cmd[-1] + json.dumps(self.answer) + "\n", "")


def fake_check(profile: str, facts: Facts, engine: FakeEngine, options: dict[str, Any] | None = None) -> Any:
    return SimpleNamespace(
        target=SimpleNamespace(options={"gpu": options or {}}, reference="img:1"),
        profile=load(profile),
        facts=facts,
        engine=engine,
        info=SimpleNamespace(image_id="sha256:abc"),
        candidate=FakeCandidate(getattr(facts, "gpu_answer", None)),
    )


def test_observe_starts_no_container_for_cpu_profiles_or_without_a_gpu() -> None:
    engine = FakeEngine({"Runtimes": {"runc": {}}})
    assert gpu.observe_gpu(fake_check("onnxruntime-cpu", make_facts(), engine)).host is None
    seen = gpu.observe_gpu(fake_check("onnxruntime-cuda", _cuda_ready(), engine))
    assert seen.host is not None and not seen.host.present and "remote" in seen.host.evidence
    assert gpu.observe_gpu(fake_check("onnxruntime-cuda", _cuda_ready(), engine, {"gpus": "none"})).host is None
    assert engine.created == []


def test_observe_runs_the_session_in_a_gpu_container_and_removes_it() -> None:
    answer = {
        "import_ok": True,
        "session": {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "output": gpu.MODEL_OUTPUT},
        "nvidia_smi": {"summary": NVIDIA_SMI},
    }
    engine = FakeEngine({"Runtimes": {"nvidia": {}}}, answer=answer)
    seen = gpu.observe_gpu(fake_check("onnxruntime-cuda", _cuda_ready(), engine, {"gpus": "2"}))
    created = engine.created[0]
    assert created["role"] == "gpu" and created["image"] == "sha256:abc"
    assert created["device_requests"][0]["Count"] == 2 and "volumes" not in created
    assert engine.commands[0][0] == "/opt/conda/bin/python3" and engine.removed == 1
    assert seen.session["providers"][0] == "CUDAExecutionProvider" and seen.log == "ort log line\n"
    result = check(_cuda_ready(), load("onnxruntime-cuda"), seen)
    assert result.status is Status.PASS, result.summary()


def test_observe_reports_why_the_engine_refused_gpus() -> None:
    engine = FakeEngine({"Runtimes": {"nvidia": {}}}, start_ok=False)
    seen = gpu.observe_gpu(fake_check("onnxruntime-cuda", _cuda_ready(), engine))
    assert "could not select device driver" in seen.error and engine.removed == len(engine.created) == 2
    assert seen.session is None


def test_observe_skips_the_container_when_layer_2_fails() -> None:
    engine = FakeEngine({"Runtimes": {"nvidia": {}}})
    facts = make_facts(available=("CUDAExecutionProvider",), libraries={"CUDAExecutionProvider": LDD_CUDA_MISSING})
    seen = gpu.observe_gpu(fake_check("onnxruntime-cuda", facts, engine))
    assert seen.host.present and engine.created == []


def test_a_session_program_without_an_answer_is_recorded_as_an_error() -> None:
    seen = gpu.GpuObservation()
    live._record_run(seen, ExecResult(139, "", "Segmentation fault (core dumped)\n"), "@@m:")
    assert seen.session == {"error": "the session program gave no answer: Segmentation fault (core dumped)"}


def test_without_the_gpu_probes_answer_the_stage_never_passes_and_says_why() -> None:
    """python found but no executable to run the gpu probe with: no answer, so layer 1 cannot pass."""
    facts = Facts(running=True, has_shell=True, python=PythonInfo("", "3.11.2"), pip={"onnxruntime": "1.32.0"})
    result = gpu.check_gpu(facts, load("onnxruntime-cpu"), gpu.GpuObservation())
    assert result.status is not Status.PASS
    assert "the gpu probe did not run" in result.observed + result.reason

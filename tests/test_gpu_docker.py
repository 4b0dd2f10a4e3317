"""The gpu stage against real fixture containers: onnx-cpu passes, onnx-cuda fails layer 2 by name.

This machine has no GPU, so layer 3 on a GPU is covered by the unit tests; here the GPU container's code
path runs for real without devices (ONNX Runtime's silent fallback, the engine refusing --gpus).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MANAGED, ROOT, fixture_image, run_pytest

from pytest_baseimage import gpu, profiles
from pytest_baseimage.engine import LABEL_PID, Engine
from pytest_baseimage.results import StageResult, Status
from pytest_baseimage.target import ImageCheck, Target

pytestmark = pytest.mark.docker

PROFILES = ROOT / "fixtures" / "profiles"
CUDA_LIBS = ["libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13"]


@pytest.fixture(autouse=True)
def no_containers_left(docker_client: Any) -> Iterator[None]:
    """Every container this process labelled is gone once a test ends."""
    yield
    # One list call, no per-container inspect: other sessions' containers come and go on a shared daemon.
    ours = docker_client.api.containers(all=True, filters={"label": [MANAGED, f"{LABEL_PID}={os.getpid()}"]})
    assert [c["Names"] for c in ours] == []


@pytest.fixture(scope="module")
def host_gpu(docker_client: Any) -> gpu.HostGpu:
    return gpu.detect_host_gpu(Engine())


def stage(image: str, profile: str | Path, **options: Any) -> tuple[StageResult, ImageCheck]:
    """Run the gpu stage (and its prerequisites) on one image, as the suite does, then remove the container."""
    check = ImageCheck(Target(image, profiles.load(str(profile)), options={"gpu": options}))
    try:
        return check.result("gpu"), check
    finally:
        check.close()


def layer(result: StageResult, name: str) -> dict[str, Any]:
    return result.details["layers"][name]


def test_onnx_cpu_passes_all_three_layers(images: Any) -> None:
    result, check = stage(images("onnx-cpu"), PROFILES / "onnx-cpu-fixture.toml")
    assert result.status is Status.PASS, result.summary()
    assert {n: layer(result, n)["status"] for n in ("compiled", "loadable", "usable")} == dict.fromkeys(
        ("compiled", "loadable", "usable"), "pass"
    )
    session = layer(result, "usable")["details"]["session"]
    assert session["providers"] == ["CPUExecutionProvider"] and session["output"] == gpu.MODEL_OUTPUT
    assert check.results()[-1].stage == "gpu" and all(r.ok for r in check.results())


def test_onnx_cuda_fails_layer_2_naming_the_missing_cuda_libraries(images: Any, host_gpu: gpu.HostGpu) -> None:
    result, _ = stage(images("onnx-cuda"), PROFILES / "onnx-cuda-fixture.toml")
    loadable = layer(result, "loadable")
    assert result.status is Status.FAIL
    assert layer(result, "compiled")["status"] == "pass"
    assert loadable["status"] == "fail" and loadable["details"]["missing"] == CUDA_LIBS
    assert "libcuda.so.1" not in loadable["observed"]
    assert all(name in result.remediation for name in CUDA_LIBS)
    usable = layer(result, "usable")
    if host_gpu.present:
        assert usable["status"] == "blocked"
    else:
        assert usable["status"] == "skipped" and usable["observed"].startswith("no GPU on this host (")


def test_onnx_cuda_under_require_gpu_fails_layer_3(images: Any, host_gpu: gpu.HostGpu) -> None:
    if host_gpu.present:
        pytest.skip(f"this host has a GPU ({host_gpu.evidence}): layer 3 is blocked by layer 2 instead")
    result, _ = stage(images("onnx-cuda"), PROFILES / "onnx-cuda-fixture.toml", require_gpu=True)
    assert layer(result, "usable")["status"] == "fail"
    assert "no GPU on this host" in result.observed


def test_gpus_none_skips_layer_3_with_its_reason(images: Any) -> None:
    result, _ = stage(images("onnx-cuda"), PROFILES / "onnx-cuda-fixture.toml", gpus="none")
    assert layer(result, "usable")["observed"] == "--gpus none: the candidate gets no GPU"


def _session(image: str, profile: str) -> gpu.GpuObservation:
    """The GPU container's code path for real, without devices: start, one exec, remove."""
    check = ImageCheck(Target(image, profiles.load(profile)))
    try:
        python = check.facts.python.executable
    finally:
        check.close()
    req = gpu.requirements(profiles.load(profile))
    return gpu.run_gpu_session(Engine(), image, python, req, gpu.GpuObservation(), device_requests=[])


def test_the_hand_made_model_runs_in_a_session_container(images: Any) -> None:
    seen = _session(images("onnx-cpu"), "onnxruntime-cpu")
    assert seen.error == ""
    assert seen.session["providers"] == ["CPUExecutionProvider"] and seen.session["output"] == gpu.MODEL_OUTPUT
    assert seen.session["nvidia_smi"]["summary"].startswith("not available")


def test_a_real_silent_cpu_fallback_fails_layer_3(images: Any) -> None:
    """onnxruntime-gpu without CUDA: the session 'works' on the CPU; the usable layer must call it a failure."""
    seen = _session(images("onnx-cuda"), "onnxruntime-cuda")
    assert seen.session["providers"] == ["CPUExecutionProvider"]
    assert "libcublasLt.so.13" in seen.log
    seen.options, seen.host = gpu.GpuOptions(), gpu.HostGpu(True, "pretend")
    req = gpu.requirements(profiles.load("onnxruntime-cuda"))
    passed = gpu.Layer("compiled", Status.PASS, "", "")
    usable = gpu.layer_usable(req, gpu.ProbeAnswer({}), seen, [passed, passed])
    assert usable.status is Status.FAIL
    assert "ONNX Runtime fell back to the CPU" in usable.observed and "libcublasLt.so.13" in usable.observed


def test_an_engine_without_gpu_support_skips_or_fails_layer_3(
    images: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, docker_client: Any
) -> None:
    """Pretend the host has a GPU: the engine's own refusal of `--gpus` becomes layer 3's reason."""
    if "nvidia" in json.dumps(docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the nvidia runtime: it would not refuse --gpus")
    # A profile whose layers 1 and 2 pass in onnx-cuda, so that observe_gpu goes on to start the container.
    profile = tmp_path / "cuda-no-libs.toml"
    profile.write_text(
        f'extends = "{PROFILES / "onnx-cuda-fixture.toml"}"\n[gpu]\nlibraries = []\n'
        '[gpu.provider_libraries]\nCUDAExecutionProvider = "libonnxruntime_providers_shared.so"\n'
    )
    monkeypatch.setattr(gpu.live, "detect_host_gpu", lambda engine: gpu.HostGpu(True, "pretend"))
    skipped, _ = stage(images("onnx-cuda"), profile)
    assert skipped.status is Status.SKIPPED, skipped.summary()
    assert "the engine could not give the container a GPU" in skipped.reason
    failed, _ = stage(images("onnx-cuda"), profile, require_gpu=True)
    assert layer(failed, "usable")["status"] == "fail" and "nvidia-ctk" in failed.remediation


@pytest.fixture
def openvino(docker_client: Any) -> str:
    tag = fixture_image("onnx-openvino")
    try:
        docker_client.images.get(tag)
    except Exception:
        pytest.skip(f"{tag} is not built (optional fixture: python fixtures/build.py --only onnx-openvino)")
    return tag


def test_onnx_openvino_passes_on_the_cpu_device(openvino: str) -> None:
    result, _ = stage(openvino, PROFILES / "onnx-openvino-fixture.toml")
    assert result.status is Status.PASS, result.summary()
    assert "OpenVINOExecutionProvider" in layer(result, "usable")["details"]["session"]["providers"]


def test_openvino_vadm_needs_the_hddl_plugin_and_a_device(openvino: str, tmp_path: Path) -> None:
    """OpenVINO 2025 has no HDDL plugin: layer 2 names it; layer 3 needs a VAD-M, which we never pass."""
    profile = tmp_path / "vadm.toml"
    profile.write_text('extends = "onnxruntime-openvino-vadm"\n[python]\nversion = ">=3.9"\n')
    result, _ = stage(openvino, profile)
    assert result.status is Status.FAIL
    assert layer(result, "loadable")["details"]["missing"] == ["libopenvino_intel_hddl_plugin.so or libHDDLPlugin.so"]
    assert "Intel VAD-M_FP16 device" in layer(result, "usable")["observed"]


def test_end_to_end_through_pytest(images: Any, tmp_path: Path, no_leaks: None) -> None:
    """`pytest --base-image` with both fixtures: cpu passes the gpu test, cuda fails it, exit code 1."""
    out = tmp_path / "compat.json"
    proc = run_pytest(
        f"--base-image={images('onnx-cpu')}",
        f"--base-image={images('onnx-cuda')}",
        f"--profile={PROFILES / 'onnx-cuda-fixture.toml'}",
        "-m",
        "gpu",
        "-rA",
        f"--compat-json={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = {image["name"]: image for image in json.loads(out.read_text())["images"]}
    cpu_gpu = next(r for r in report[images("onnx-cpu")]["results"] if r["stage"] == "gpu")
    cuda_gpu = next(r for r in report[images("onnx-cuda")]["results"] if r["stage"] == "gpu")
    assert cpu_gpu["details"]["layers"]["compiled"]["observed"].endswith("missing: CUDAExecutionProvider")
    assert cuda_gpu["details"]["layers"]["loadable"]["details"]["missing"] == CUDA_LIBS
    assert "libcudart.so.13" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_end_to_end_cpu_profile_is_compatible(images: Any, tmp_path: Path, no_leaks: None) -> None:
    proc = run_pytest(
        f"--base-image={images('onnx-cpu')}", f"--profile={PROFILES / 'onnx-cpu-fixture.toml'}", "-rA", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout and "test_gpu" in proc.stdout


def test_onnx_runtime_without_its_native_module_is_not_loadable(images: Any) -> None:
    """No native library at all used to pass layer 2 with zero libraries checked."""
    result, _ = stage(images("gpu-ort-no-native"), PROFILES / "onnx-cpu-fixture.toml")
    assert result.status is Status.FAIL, result.summary()
    loadable = layer(result, "loadable")
    assert loadable["status"] == "fail", loadable
    assert "onnxruntime_pybind11_state*.so" in loadable["observed"]


def test_a_hanging_onnx_runtime_import_costs_the_gpu_stage_its_budget_and_nothing_else(images: Any) -> None:
    """`import onnxruntime` sleeps for an hour; [gpu] timeout_s = 12 bounds the stage, and the python and
    azureml facts (from the shared probe) are judged as usual."""
    import copy
    import time

    profile = profiles.load(str(PROFILES / "onnx-cpu-fixture.toml"))
    profile.data = copy.deepcopy(profile.data)
    profile.data["gpu"]["timeout_s"] = 12
    check = ImageCheck(Target(images("gpu-ort-slow-import"), profile))
    try:
        assert check.result("python").status is Status.PASS
        assert check.result("azureml").status is Status.PASS
        started = time.monotonic()
        result = check.result("gpu")
        took = time.monotonic() - started
    finally:
        check.close()
    assert result.status is Status.FAIL, result.summary()
    assert "timed out after 2 s" in result.observed, result.observed
    assert took < 12 + gpu.PROBE_SLACK_S

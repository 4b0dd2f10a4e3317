"""The programs that run inside the candidate (pytest_baseimage/incontainer/), run here under the host's
Python and /bin/sh, as the engine runs them in a container: the host's parsers read their answers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_baseimage import gpu, incontainer, probe, scoring_client

MARK = "@@test-marker:"
PACKAGE = Path(incontainer.__file__).parent


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, capture_output=True, env=env, timeout=120)


def test_every_program_is_a_file_the_host_loads_as_it_is_shipped():
    shipped = {path.name for path in PACKAGE.iterdir() if path.suffix in (".py", ".sh")} - {"__init__.py"}
    assert shipped == {
        "probe_python.py",
        "probe.sh",
        "scoring_client.py",
        "sample_score.py",
        "ort_session.py",
        "gpu_probe.py",
        "kill_all.py",
    }
    assert (PACKAGE / "probe_python.py").read_text() == probe.PY_PROGRAM
    assert (PACKAGE / "kill_all.py").read_text() == probe.KILL_ALL_PY
    assert (PACKAGE / "scoring_client.py").read_text() == scoring_client.PROGRAM
    assert (PACKAGE / "ort_session.py").read_text() == gpu.ORT_PROGRAM
    assert (PACKAGE / "gpu_probe.py").read_text() == gpu.GPU_PROBE


def test_the_probes_python_program_answers_with_versions_dists_and_imports():
    request = json.dumps({"imports": ["json", "no_such_module_here"], "marker": MARK})
    proc = run([sys.executable, "-c", probe.PY_PROGRAM, request])
    assert proc.returncode == 0, proc.stderr
    data, problem = probe.python_answer(proc.stdout, MARK.encode())
    assert data is not None, problem
    python, pip, imports, problems = probe.python_facts(data, sys.executable)
    assert problems == []
    assert python.version == ".".join(str(part) for part in sys.version_info[:3])
    assert pip.get("pytest") == pytest.__version__  # this venv's distributions, read from their metadata
    assert imports["json"].ok and not imports["no_such_module_here"].ok
    assert "No module named" in imports["no_such_module_here"].error


def test_the_probes_python_program_reads_requires_python_and_skips_a_metadata_that_is_not_a_file(tmp_path):
    """Requires-Python comes with Name and Version from the same header; a METADATA that is a FIFO (opening it
    would block) or a directory is passed over, never read, and never ends the program."""
    site = tmp_path / "site"
    for name, header in (("Needy", "Requires-Python: >=3.9\n"), ("Plain", "")):
        info = site / f"{name.lower()}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{header}\nbody\n")
    (site / "fifo-1.0.dist-info").mkdir()
    os.mkfifo(site / "fifo-1.0.dist-info" / "METADATA")
    (site / "dir-1.0.dist-info" / "METADATA").mkdir(parents=True)
    request = json.dumps({"imports": [], "marker": MARK})
    program = f"import sys; sys.path.insert(0, {str(site)!r}); exec(compile(sys.argv.pop(1), 'probe', 'exec'))"
    proc = run([sys.executable, "-c", program, probe.PY_PROGRAM, request])
    assert proc.returncode == 0, proc.stderr
    data, problem = probe.python_answer(proc.stdout, MARK.encode())
    assert data is not None, problem
    python, pip, _, problems = probe.python_facts(data, sys.executable)
    assert problems == [] and pip["needy"] == "1.0" and pip["plain"] == "1.0"
    assert "fifo" not in pip and "dir" not in pip
    assert python.requires_python.get("needy") == ">=3.9" and "plain" not in python.requires_python


def test_the_probes_shell_script_frames_every_section_under_the_hosts_sh():
    request = json.dumps({"imports": [], "marker": MARK})
    cmd = ["/bin/sh", "-c", probe.SHELL_SCRIPT, "sh", MARK, probe.PY_PROGRAM, request, "30", "5", "1000000", "", "30"]
    proc = run(cmd)
    assert proc.returncode == 0, proc.stderr
    sections = probe.sections_of(probe.read_records(proc.stdout, MARK.encode()))
    assert {"timeout", "user", "conda_exe", "python_exe", "end"} <= set(sections)
    assert sections["user"].text.strip() == str(os.getuid())
    if sections["python_exe"].text.strip():
        data, problem = probe.python_answer(sections["python"].data, MARK.encode())
        assert data is not None, problem


@pytest.mark.skipif(bool(importlib.util.find_spec("onnxruntime")), reason="onnxruntime is installed here")
def test_the_ort_program_reports_a_missing_onnxruntime_and_a_missing_nvidia_smi():
    request = {"marker": MARK, "session": True, "nvidia_smi": True, "providers": ["CPUExecutionProvider"]}
    proc = run([sys.executable, "-S", "-c", gpu.ORT_PROGRAM, json.dumps(request)])
    assert proc.returncode == 0, proc.stderr
    answer = probe.last_marked_json(proc.stdout.decode(), MARK)
    assert answer["import_ok"] is False and "onnxruntime" in answer["import_error"]
    assert "session" not in answer  # no session without ONNX Runtime
    assert set(answer["nvidia_smi"]) == {"summary", "gpus"}


def test_the_gpu_probe_turns_its_own_crash_into_an_error_answer():
    proc = run([sys.executable, "-S", "-c", gpu.GPU_PROBE, json.dumps({"no": "config"}), MARK])
    assert proc.returncode == 0, proc.stderr
    answer = probe.last_marked_json(proc.stdout.decode(), MARK)
    assert "KeyError" in answer["error"]


def test_the_sample_entry_script_answers_as_the_host_computes(tmp_path, monkeypatch):
    """The built-in sample (incontainer/sample_score.py), run here as azmlinfsrv runs it: init(), then run()."""
    from pytest_baseimage import scoring

    sample = scoring.Sample.draw(seed=7)
    for name, data in sample.model().items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    namespace: dict = {}
    exec(compile(scoring.SAMPLE_SCRIPT, "score.py", "exec"), namespace)
    namespace["init"]()
    assert namespace["run"](sample.payload().decode()) == sample.answer()

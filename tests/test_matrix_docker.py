"""A matrix of fixture images, serial and under `-n 2`: same verdicts, stages in order, one container each.

Every run records the pids of its pytest processes (controller and xdist workers), so that the Docker
events counted here are this run's only, even when other runs share the engine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import pytest
from conftest import FIXTURE_PROFILE, MANAGED, leaked_containers, managed_containers, run_pytest
from docker_network import bridge_gateway
from engine_proxy import EngineProxy, make_pki, server_tls

pytestmark = pytest.mark.docker

VARIANTS = ("good", "no-conda", "missing-apt", "nonroot")
PID_PLUGIN = (
    "import os\n\ndef pytest_configure(config):\n    with open(os.environ['BASEIMAGE_PIDS'], 'a') as f:\n"
    "        f.write(f'{os.getpid()}\\n')\n"
)


@dataclass
class MatrixRun:
    """One pytest run: its output, reports, and the containers its processes created (from Docker events)."""

    proc: Any
    report: dict[str, Any]
    junit: dict[str, list[str]]  # image reference -> test case names, in file order
    html: str
    pids: set[int]
    creates: list[dict[str, str]] = field(default_factory=list)  # labels + image of each created container

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def verdicts(self) -> dict[str, tuple[str, list[tuple[str, str]]]]:
        return {
            image["name"]: (image["verdict"], [(r["stage"], r["status"]) for r in image["results"]])
            for image in self.report["images"]
        }

    def created(self, role: str) -> dict[str, list[str]]:
        """Image id -> the pids that created a container of this role from it."""
        out: dict[str, list[str]] = {}
        for event in self.creates:
            if event.get("org.pytest-baseimage.role") == role:
                out.setdefault(event["image"], []).append(event["org.pytest-baseimage.pid"])
        return out


def write_matrix(path: Path, names: tuple[str, ...] = VARIANTS, extra: dict[str, str] | None = None) -> Path:
    lines = [f'[defaults]\nprofile = "{FIXTURE_PROFILE}"\n']
    for name in names:
        lines.append(f'[[images]]\nname = "{name}"\nref = "pytest-baseimage-fixture/{name}:latest"\n')
        lines.append((extra or {}).get(name, ""))
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_matrix(client, work: Path, matrix: Path, *args: str, env: dict[str, str] | None = None) -> MatrixRun:
    """Run pytest on the matrix with all three reports, and collect what it created from Docker's events."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "baseimage_pids.py").write_text(PID_PLUGIN)
    pid_file = work / "pids.txt"
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")])),
        "BASEIMAGE_PIDS": str(pid_file),
        **(env or {}),
    }
    since = int(time.time()) - 1
    proc = run_pytest(
        f"--base-image-matrix={matrix}",
        "-p",
        "baseimage_pids",
        "-q",
        f"--junitxml={work / 'j.xml'}",
        f"--compat-json={work / 'r.json'}",
        f"--compat-html={work / 'r.html'}",
        *args,
        cwd=work,
        env=env,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    pids = {int(line) for line in pid_file.read_text().split()}
    run = MatrixRun(
        proc,
        json.loads((work / "r.json").read_text()),
        junit_by_image(work / "j.xml"),
        (work / "r.html").read_text(),
        pids,
    )
    run.creates = container_creates(client, since, pids)
    return run


def junit_by_image(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        out.setdefault(props.get("image", ""), []).append(case.get("name"))
    return out


def container_creates(client, since: int, pids: set[int]) -> list[dict[str, str]]:
    """Every labelled container created since `since` by one of `pids`, as its event attributes."""
    until = int(time.time()) + 1
    time.sleep(1.1)  # the engine only returns events up to `until` once that second has passed
    events = client.events(
        since=since, until=until, decode=True, filters={"type": "container", "event": "create", "label": [MANAGED]}
    )
    attrs = [event["Actor"]["Attributes"] for event in events]
    return [a for a in attrs if int(a.get("org.pytest-baseimage.pid") or 0) in pids]


def stage_of(case_name: str) -> str:
    """test_conda[no-conda]@baseimage:no-conda -> conda (xdist's loadgroup adds the @group suffix)."""
    return re.sub(r"^test_|\[.*$", "", case_name)


@pytest.fixture(scope="module")
def matrix_runs(tmp_path_factory, images, docker_client) -> dict[str, MatrixRun]:
    """The same four-image matrix, serial and with -n 2 (each checked once, read by several tests)."""
    for name in VARIANTS:
        images(name)
    base = tmp_path_factory.mktemp("matrix")
    matrix = write_matrix(base / "matrix.toml")
    runs = {
        "serial": run_matrix(docker_client, base / "serial", matrix),
        "parallel": run_matrix(docker_client, base / "parallel", matrix, "-n", "2"),
    }
    assert leaked_containers(docker_client) == []
    return runs


def test_parallel_verdicts_equal_the_serial_ones(matrix_runs):
    serial, parallel = matrix_runs["serial"], matrix_runs["parallel"]
    assert serial.proc.returncode == parallel.proc.returncode == 1, parallel.output
    assert parallel.verdicts() == serial.verdicts()
    verdicts = {name: verdict for name, (verdict, _) in parallel.verdicts().items()}
    assert verdicts == {
        "good": "compatible",
        "no-conda": "not compatible",
        "missing-apt": "not compatible",
        "nonroot": "compatible",
    }
    assert "--dist" not in parallel.output  # loadgroup was chosen without a warning


def test_parallel_reports_are_complete(matrix_runs):
    serial, parallel = matrix_runs["serial"], matrix_runs["parallel"]
    stages = [stage for stage, _ in serial.verdicts()["good"][1]]
    assert stages[:5] == ["os", "conda", "python", "apt", "azureml"]
    assert [image["name"] for image in parallel.report["images"]] == list(VARIANTS)  # the matrix's order
    for name, (_, results) in parallel.verdicts().items():
        assert [stage for stage, _ in results] == stages, name
    assert sorted(parallel.junit) == sorted(f"pytest-baseimage-fixture/{name}:latest" for name in VARIANTS)
    for cases in parallel.junit.values():
        assert [stage_of(case) for case in cases] == stages
    for name in VARIANTS:
        assert name in parallel.html


def test_each_image_runs_on_one_worker_with_its_stages_in_order(matrix_runs, docker_client):
    parallel = matrix_runs["parallel"]
    candidates = parallel.created("candidate")
    ids = {docker_client.images.get(f"pytest-baseimage-fixture/{name}:latest").id: name for name in VARIANTS}
    assert sorted(ids[image] for image in candidates) == sorted(VARIANTS)
    workers = {pids[0] for pids in candidates.values()}
    assert len(workers) == 2, f"both workers should have had images: {candidates}"
    order = ["os", "conda", "python", "apt", "azureml", "scoring", "deployment", "gpu"]
    for image, cases in parallel.junit.items():
        stages = [stage_of(case) for case in cases]
        assert stages == sorted(stages, key=order.index), image


@pytest.mark.parametrize("mode", ["serial", "parallel"])
def test_each_candidate_is_started_exactly_once(matrix_runs, docker_client, mode):
    run = matrix_runs[mode]
    candidates = run.created("candidate")
    assert len(candidates) == len(VARIANTS)
    assert all(len(pids) == 1 for pids in candidates.values()), candidates
    for pid in run.pids:
        assert managed_containers(docker_client, pid) == []


def test_markers_and_keywords_select_across_the_matrix(tmp_path, images, docker_client, no_leaks):
    matrix = write_matrix(tmp_path / "matrix.toml")
    by_marker = run_matrix(docker_client, tmp_path / "m", matrix, "-n", "2", "-m", "os or apt")
    assert by_marker.proc.returncode == 1, by_marker.output  # missing-apt fails apt
    assert {name: [s for s, _ in results] for name, (_, results) in by_marker.verdicts().items()} == {
        name: ["os", "apt"] for name in VARIANTS
    }
    by_keyword = run_matrix(docker_client, tmp_path / "k", matrix, "-n", "2", "-k", "no-conda")
    assert by_keyword.proc.returncode == 1, by_keyword.output
    assert list(by_keyword.verdicts()) == ["no-conda"]
    assert len(by_keyword.created("candidate")) == 1  # the images -k left out were never started
    # ...and are named as not judged, in the JSON, the terminal and the HTML, not left out as if never named
    left_out = [name for name in VARIANTS if name != "no-conda"]
    assert by_keyword.report["deselected_images"] == left_out
    assert f"not judged (every stage deselected with -k/-m): {', '.join(left_out)}" in by_keyword.output
    assert f"every stage deselected with -k/-m): {', '.join(left_out)}" in by_keyword.html


def test_another_dist_mode_is_kept_with_one_warning(tmp_path, images, docker_client, no_leaks):
    matrix = write_matrix(tmp_path / "matrix.toml", ("good", "no-conda"))
    run = run_matrix(docker_client, tmp_path / "w", matrix, "-n", "2", "--dist", "loadfile", "-m", "os or conda")
    assert run.proc.returncode == 1, run.output
    assert run.output.count("--dist=loadfile may split one image's stages") == 1
    assert len(run.created("candidate")) == 2


def test_entries_can_name_their_engine(tmp_path, images, docker_client, no_leaks, monkeypatch):
    """docker_host and context, pointed at the local engine: each entry gets the engine it names."""
    from docker.context import ContextAPI

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))  # here and in the pytest run: a context store of our own
    ContextAPI.create_context("here", host=host)
    matrix = write_matrix(
        tmp_path / "matrix.toml",
        ("good", "no-conda"),
        {"good": f'docker_host = "{host}"\n', "no-conda": 'context = "here"\n'},
    )
    run = run_matrix(docker_client, tmp_path / "r", matrix, "-n", "2", "-m", "os or conda")
    assert run.proc.returncode == 1, run.output
    assert {name: verdict for name, (verdict, _) in run.verdicts().items()} == {
        "good": "compatible",
        "no-conda": "not compatible",
    }
    assert host in run.report["host"]


def test_a_remote_engine_runs_every_stage_scoring_included(tmp_path, images, docker_client, no_leaks):
    """An entry whose engine is reached over TCP at a non-loopback address: the scoring server is asked from
    inside its container, so it passes there as on the local engine (it once needed a local engine)."""
    gateway = bridge_gateway(docker_client.networks.get("bridge").attrs)
    proxy = EngineProxy(gateway)
    try:
        matrix = write_matrix(tmp_path / "matrix.toml", ("good",), {"good": f'docker_host = "{proxy.url}"\n'})
        run = run_matrix(docker_client, tmp_path / "r", matrix)
    finally:
        proxy.close()
    assert run.proc.returncode == 0, run.output
    verdict, results = run.verdicts()["good"]
    assert verdict == "compatible" and ("scoring", "pass") in results, results
    assert proxy.connections > 0  # the run really went through the "remote" engine
    assert len(run.created("scoring")) == 1


def test_a_tls_context_reaches_an_engine_that_checks_client_certificates(tmp_path, images, docker_client, no_leaks):
    """A context made by `docker context create … ca=,cert=,key=` for an engine that demands a client certificate
    from its CA; a context with a certificate from another CA is refused in one line (exit 2)."""
    gateway = bridge_gateway(docker_client.networks.get("bridge").attrs)
    pki = make_pki(tmp_path / "pki", gateway)
    proxy = EngineProxy(gateway, tls=server_tls(pki))
    config = tmp_path / "docker-config"
    config.mkdir()
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    env.pop("DOCKER_HOST", None)
    for name, cert in (("tls-here", "client"), ("tls-rogue", "rogue")):
        endpoint = f"host={proxy.url},ca={pki['ca']},cert={pki[cert]},key={pki[cert + '-key']}"
        subprocess.run(
            ["docker", "context", "create", name, "--docker", endpoint], env=env, check=True, capture_output=True
        )
    # A CA bundle in the environment (common on corporate machines) must not replace the context's CA.
    run_env = {"DOCKER_CONFIG": str(config), "REQUESTS_CA_BUNDLE": certifi.where()}
    try:
        good = write_matrix(tmp_path / "good.toml", ("good",), {"good": 'context = "tls-here"\n'})
        run = run_matrix(docker_client, tmp_path / "r", good, env=run_env)
        rogue = write_matrix(tmp_path / "rogue.toml", ("good",), {"good": 'context = "tls-rogue"\n'})
        refused = run_pytest(f"--base-image-matrix={rogue}", "-q", cwd=tmp_path, env=run_env)
    finally:
        proxy.close()
    assert run.proc.returncode == 0, run.output
    verdict, results = run.verdicts()["good"]
    assert verdict == "compatible" and ("scoring", "pass") in results, results
    assert proxy.connections > 0 and f"https://{gateway}:" in run.report["host"]
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2, output
    assert "cannot reach the Docker engine at https://" in output and "(context tls-rogue)" in output
    assert "Traceback" not in output and proxy.refused > 0


def test_a_ci_fan_out_merges_into_the_same_verdicts(tmp_path, images, docker_client, matrix_runs, no_leaks):
    """One job per variant (a one-entry matrix each), then `baseimage-report merge`: as the one-run matrix."""
    from pytest_baseimage.report.cli import main as report_main

    jobs = []
    for name in ("good", "missing-apt"):
        matrix = write_matrix(tmp_path / f"{name}.toml", (name,))
        run = run_matrix(docker_client, tmp_path / name, matrix)
        assert run.proc.returncode == (0 if name == "good" else 1), run.output
        jobs.append(str(tmp_path / name / "r.json"))
    merged = tmp_path / "all.json"
    assert report_main(["merge", *jobs, "--json", str(merged), "--junit", str(tmp_path / "all.xml")]) == 1
    data = json.loads(merged.read_text())
    combined = matrix_runs["serial"].verdicts()
    assert {i["name"]: (i["verdict"], [(r["stage"], r["status"]) for r in i["results"]]) for i in data["images"]} == {
        name: combined[name] for name in ("good", "missing-apt")
    }

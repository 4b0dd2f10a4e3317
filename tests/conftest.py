"""Shared helpers for the integration tests: a real Docker engine, the fixture images, a pytest subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_PROFILE = ROOT / "fixtures" / "profiles" / "fixture.toml"
MANAGED = "org.pytest-baseimage.managed=1"


def fixture_image(name: str) -> str:
    return f"pytest-baseimage-fixture/{name}:latest"


@pytest.fixture(scope="session")
def docker_client():
    """The real engine. In CI a missing engine is a failure, elsewhere a skip with the reason."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Docker engine: {exc}")
        pytest.skip(f"no Docker engine reachable: {exc}")
    return client


@pytest.fixture(scope="session")
def images(docker_client):
    """Look up a fixture image by name; a missing one fails with the command that builds it."""

    def get(name: str) -> str:
        tag = fixture_image(name)
        try:
            docker_client.images.get(tag)
        except Exception:
            pytest.fail(f"fixture image {tag} is missing: run `python fixtures/build.py`")
        return tag

    return get


def managed_containers(client, pid: int | None = None) -> list[dict]:
    """Labelled containers, from one list call (no per-container inspect that races with removals)."""
    label = [MANAGED] + ([f"org.pytest-baseimage.pid={pid}"] if pid else [])
    return client.api.containers(all=True, filters={"label": label})


def wait_for_container(client, proc, *, role: str = "", timeout: float = 60) -> None:
    """Wait until the pytest process `proc` has a running labelled container (of `role`, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        running = [
            c
            for c in managed_containers(client, proc.pid)
            if c["State"] == "running" and (not role or c["Labels"].get("org.pytest-baseimage.role") == role)
        ]
        if running:
            return
        assert proc.poll() is None, f"pytest ended first: {proc.stdout.read() if proc.stdout else ''}"
        assert time.monotonic() < deadline, f"no {role or 'candidate'} container within {timeout} s"
        time.sleep(0.2)


def plugin_argv(*args: str) -> list[str]:
    """The plugin as a user runs it: this interpreter's pytest, without a cache dir in the test's cwd."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def run_pytest(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the plugin as a user would: a pytest process of its own, in an empty directory."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_ADDOPTS", None)
    cmd = plugin_argv(*args)
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def leaked_containers(client) -> list[str]:
    """Labelled containers and networks whose owning process has ended: every run must remove its own."""
    leaked = []
    networks = client.api.networks(filters={"label": "org.pytest-baseimage.managed=1"})
    for container in [*managed_containers(client), *networks]:
        labels = container.get("Labels") or {}
        pid = int(labels.get("org.pytest-baseimage.pid") or 0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            name = container.get("Names") or container.get("Name")
            leaked.append(f"{name} (pid {pid}, {labels.get('org.pytest-baseimage.role')})")
        except PermissionError:
            pass
    return leaked


@pytest.fixture
def no_leaks(docker_client):
    """Fails the test if any process it started left a labelled container behind."""
    yield
    assert leaked_containers(docker_client) == []


def junit(path) -> dict[str, dict]:
    """Test name (without its parameters) -> {outcome, message, props} from pytest's JUnit XML."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = tag, node.get("message", "")
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        out[case.get("name").split("[")[0]] = {"outcome": outcome, "message": message, "props": props}
    return out


def certify(tmp_path, image, *extra, profile=FIXTURE_PROFILE):
    """`pytest --base-image=IMAGE` as a user runs it, with JUnit XML: (process, junit cases); never a traceback."""
    xml = tmp_path / "junit.xml"
    proc = run_pytest(f"--base-image={image}", f"--profile={profile}", f"--junitxml={xml}", "-q", *extra, cwd=tmp_path)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc, (junit(xml) if xml.exists() else {})


def pytest_collection_modifyitems(items) -> None:
    """Every test that reaches the real engine (through `docker_client`, directly or via `images`) is marked
    `docker`, so `-m "not docker and not browser"` runs exactly the tests that need neither (the pure-test
    coverage in scripts/pure_coverage.sh counts only those)."""
    for item in items:
        if "docker_client" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


# -- a stand-in Docker client (tests/fake_docker.py) and an Engine on it, for the in-process engine tests ------
@pytest.fixture
def client():
    from fake_docker import FakeDocker

    return FakeDocker()


@pytest.fixture
def engine(client):
    """An Engine on the stand-in client; a test module with an engine fixture of its own (on the real engine)
    overrides this one."""
    from pytest_baseimage.engine import Engine

    return Engine(client=client, session_id="sess1")

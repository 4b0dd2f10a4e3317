"""A stand-in for `engine.Engine`, and the hooks of a pytest plugin (`--fake-engine-world=FILE`; tests/inprocess.py
imports them into the run's conftest.py) that make pytest-baseimage use it, so the hook logic runs in process
(pytester) with no Docker.

The fake offers what target, probe and registry ask of an engine: image inspection, containers that start or
not, ONE probe exec answered with the same length-framed records the real probe script prints (so the real
parser and the real stages judge canned facts), archive reads and looks from a dict of files, removal. A
"world" (JSON, so that xdist workers read the same one) says which images exist and which faults to show.
Every engine keeps the ids of the containers it holds in `<world>.left.<pid>-<engine>`, rewritten on every
change: the tests' stand-in for the `no_leaks` check.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_baseimage import plugin
from pytest_baseimage.engine import LABEL_ROLE, ExecResult, FileRead, PathStat, StartFault, unreachable_message
from pytest_baseimage.errors import EngineError, ImageNotFound
from pytest_baseimage.results import ImageInfo

FAKE_HOST = "fake://engine"
PACKAGES = ("libcurl4", "libunwind8", "libxml++2.6-2v5", "nginx-light", "psmisc", "rsyslog", "runit", "unzip")


def debian_image(image_id: str, **changes: Any) -> dict[str, Any]:
    """An image that passes tests/data/fake.toml (Debian 12, conda 23.11, Python 3.11, the server package and
    every required apt package with its files); `changes` replace top-level keys."""
    packages = [*PACKAGES, "liblttng-ust1"]
    status = "".join(f"Package: {p}\nStatus: install ok installed\nVersion: 1.0\n\n" for p in packages)
    files = {
        "/etc/os-release": 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
        "/var/lib/dpkg/status": status,
        "/bin/sh": "",
    }
    for package in packages:
        files[f"/var/lib/dpkg/info/{package}.list"] = f"/usr\n/usr/lib\n/usr/lib/{package}.so.1\n"
        files[f"/usr/lib/{package}.so.1"] = "\x7fELF"
    image = {
        "id": image_id,
        "architecture": "amd64",
        "runs": True,
        "files": files,
        "user": "0",
        "conda": {"exe": "/opt/conda/bin/conda", "version": "23.11.0"},
        "python": {
            "exe": "/opt/conda/bin/python3",
            "version": "3.11.7",
            "dists": {"azureml-inference-server-http": "1.4.0"},
            "imports": {"azureml_inference_server_http": ""},  # module -> its traceback ("" imports fine)
        },
    }
    image.update(changes)
    return image


def write_world(path: Path, images: dict[str, dict[str, Any]], **faults: Any) -> Path:
    """The world file: images by reference, and faults (unreachable, exec_error, inspect_error, answers)."""
    path.write_text(json.dumps({"images": images, **faults}), encoding="utf-8")
    return path


def ledger(world: Path, kind: str) -> list[str]:
    """What the fake engines of a run recorded, over every process: "left" (the container ids still held at
    the end: should be none), "created" ("role image-id" of each container made) or "swept" (the session id
    of each engine whose session cleaned up)."""
    return [entry for file in world.parent.glob(f"{world.name}.{kind}.*") for entry in json.loads(file.read_text())]


def framed(marker: str, name: str, value: str | bytes) -> bytes:
    """One record as the probe's shell `emit` writes it: marker, name, byte length, newline, bytes."""
    data = value.encode() if isinstance(value, str) else value
    return f"{marker}{name} {len(data)}\n".encode() + data


def probe_answer(image: dict[str, Any], marker: str, payload: dict[str, Any], packages: list[str]) -> bytes:
    """What the probe's shell script prints in this image: the records, in the script's order."""
    files = image["files"]
    out = [framed(marker, "timeout", "timeout -k 5 30")]
    for i, package in enumerate(packages):
        listing = files.get(f"/var/lib/dpkg/info/{package}.list")
        if listing is not None:
            out.append(framed(marker, f"list_{i}", listing))
    out.append(framed(marker, "user", image.get("user", "0")))
    conda = image.get("conda")
    out.append(framed(marker, "conda_exe", conda["exe"] if conda else ""))
    if conda:
        info = json.dumps({"conda_version": conda["version"], "python_version": "3.11.7"})
        out += [framed(marker, "conda_version_rc", "0"), framed(marker, "conda_version", f"conda {conda['version']}")]
        out += [framed(marker, "conda_info_rc", "0"), framed(marker, "conda_info", info)]
    python = image.get("python")
    out.append(framed(marker, "python_exe", python["exe"] if python else ""))
    if python:
        imports = {}
        for module in payload.get("imports", []):
            tb = python["imports"].get(module, f"ModuleNotFoundError: No module named {module!r}")
            imports[module] = {"ok": False, "traceback": tb} if tb else {"ok": True}
        answer = {
            "version": python["version"],
            "executable": python["exe"],
            "implementation": "CPython",
            "uid": int(image.get("user", "0") or 0),
            "dists": python["dists"],
            "imports": imports,
            "extra": {key: image.get("extra", {}).get(key) for key in payload.get("extensions", {})},
        }
        out += [framed(marker, "python_rc", "0"), framed(marker, "python", framed(marker, "json", json.dumps(answer)))]
    out.append(framed(marker, "end", ""))
    return b"".join(out)


@dataclass
class FakeContainer:
    id: str
    image: dict[str, Any]
    labels: dict[str, str]
    status: str = "created"
    attrs: dict[str, Any] = field(default_factory=lambda: {"Config": {"Env": ["PATH=/opt/conda/bin:/usr/bin:/bin"]}})

    def reload(self) -> None:
        """The engine's view of the container: it keeps what `start` made it."""


class _FakeAPI:
    """The low-level client: a pull, which a registry with no such repository refuses."""

    def pull(self, repository: str, **_: Any) -> Any:
        import docker

        raise docker.errors.NotFound(f"pull access denied for {repository}, repository does not exist")


class _FakeClient:
    """What registry asks of `engine.client`: the engine's platform, and pulls."""

    api = _FakeAPI()

    def version(self) -> dict[str, str]:
        return {"Os": "linux", "Arch": "amd64"}


class FakeEngine:
    """engine.Engine's interface to target, probe and registry, over a world of canned images."""

    def __init__(self, world: dict[str, Any], ledger: Path | None = None, *, session_id: str = "", **_: Any) -> None:
        if world.get("unreachable"):
            raise EngineError(unreachable_message(FAKE_HOST, "connection refused"))
        self.world = world
        self.ledger = ledger
        self.session_id = session_id
        self.host = FAKE_HOST
        self.client = _FakeClient()
        self.stopped_for: dict[str, str] = {}
        self.live: dict[str, FakeContainer] = {}
        self.created: list[str] = []  # "role image-id" of every container made, in order
        self.execs: list[list[str]] = []
        self._ids = itertools.count(1)
        self._faults: dict[str, StartFault] = {}

    # -- images and containers ---------------------------------------------------------------------------
    def image_info(self, reference: str) -> ImageInfo:
        if self.world.get("inspect_error"):
            raise EngineError(f"cannot inspect image '{reference}': {self.world['inspect_error']}")
        image = self._image(reference)
        return ImageInfo(reference=reference, image_id=image["id"], architecture=image["architecture"], os="linux")

    def _image(self, reference: str) -> dict[str, Any]:
        for ref, image in self.world["images"].items():
            if reference in (ref, image["id"]):
                return image
        raise ImageNotFound(f"image '{reference}' is not on the Docker engine at {self.host}")

    def create(self, image: str, *, role: str, command: list[str] | None = None, **_: Any) -> FakeContainer:
        labels = {LABEL_ROLE: role, "org.pytest-baseimage.session": self.session_id}
        container = FakeContainer(f"fake{next(self._ids):04d}", self._image(image), labels)
        self.live[container.id] = container
        self.created.append(f"{role} {container.image['id']}")
        self._record()
        return container

    def start(self, container: FakeContainer) -> bool:
        if container.image.get("runs", True):
            container.status = "running"
            return True
        self._faults[container.id] = StartFault("`sleep` is not in the image")
        return False

    def start_failure(self, container: FakeContainer) -> StartFault | None:
        return self._faults.get(container.id)

    def remove(self, container: FakeContainer) -> bool:
        self.live.pop(container.id, None)
        self._record()
        return True

    def remove_all(self, role: str | None = None) -> None:
        for container in list(self.live.values()):
            if role is None or container.labels.get(LABEL_ROLE) == role:
                self.remove(container)

    def defer(self, teardown: Any) -> None:
        teardown()  # nothing here takes time: done at once

    def settle(self, timeout_s: float = 0.0) -> None:
        """Nothing is ever left running in the background here."""

    def release_network(self, only: Any = None) -> None:
        """No network is made here (the fake engine is not on this machine: the scoring route is relayed)."""

    def sweep_session(self, settle_s: float = 0.0) -> None:
        """The session's cleanup ran on this engine: recorded (as "swept"), so a test can tell that it did."""
        if self.ledger is not None:
            path = self.ledger.with_name(f"{self.ledger.name}.swept.{os.getpid()}-{id(self)}")
            path.write_text(json.dumps([self.session_id]), encoding="utf-8")

    def _record(self) -> None:
        """What this engine holds now and what it made, in files of its own (xdist workers are processes of
        their own), written on every change: a run that never removed a container leaves its id behind."""
        if self.ledger is None:
            return
        for kind, value in (("left", sorted(self.live)), ("created", self.created)):
            path = self.ledger.with_name(f"{self.ledger.name}.{kind}.{os.getpid()}-{id(self)}")
            path.write_text(json.dumps(value), encoding="utf-8")

    def reap_stale(self) -> list[str]:
        return []

    def answers(self, timeout: float = 10.0) -> bool:
        return bool(self.world.get("answers", True))

    # -- inside a container ----------------------------------------------------------------------------
    def exec(self, container: FakeContainer, cmd: list[str], *, timeout: float = 120, **_: Any) -> ExecResult:
        """The probe's shell script, answered from the image's canned facts; anything else exits 127."""
        self.execs.append(cmd)
        if self.world.get("exec_error"):
            raise EngineError(
                f"cannot run `{cmd[0]}` in the candidate: the Docker engine failed: {self.world['exec_error']}"
            )
        if cmd[:2] == ["/bin/sh", "-c"] and len(cmd) >= 11:
            raw = probe_answer(container.image, cmd[4], json.loads(cmd[6]), cmd[10].split())
            return ExecResult(0, raw.decode("utf-8", "replace"), "", raw_stdout=raw)
        return ExecResult(127, "", f"exec: {cmd[0]!r}: not in the fake image")

    def stat(self, container: FakeContainer, path: str) -> PathStat:
        files = container.image["files"]
        if path in files:
            return PathStat(path, "file", len(files[path].encode()))
        return PathStat(path, problem="absent", absent=True)

    def read_file(
        self, container: FakeContainer, path: str, *, max_bytes: int = 64 << 20, parse: Any = None
    ) -> FileRead:
        st = self.stat(container, path)
        if st.problem:
            return FileRead(path, problem=st.problem, absent=st.absent)
        data = container.image["files"][path].encode()
        if len(data) > max_bytes:
            return FileRead(path, problem="too large to read", size=len(data))
        if parse is not None:
            return FileRead(path, value=parse(io.BytesIO(data)), size=len(data))
        return FileRead(path, data=data, size=len(data))


@dataclass
class FakeFactory:
    """An `Engines` factory over one world file: every engine reads it afresh."""

    world: Path

    def __call__(
        self, *, docker_host: str | None = None, docker_context: str | None = None, session_id: str = ""
    ) -> Any:
        data = json.loads(self.world.read_text(encoding="utf-8"))  # where (host, context) is the fake's
        return FakeEngine(data, self.world, session_id=session_id)


# -- the pytest plugin -------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fake-engine-world", default=None, help="tests: run pytest-baseimage on a fake engine")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Before pytest_configure, where the plugin builds its session's engines (xdist workers run this too)."""
    world = config.getoption("fake_engine_world")
    if world:
        config.stash[plugin.ENGINE_FACTORY_KEY] = FakeFactory(Path(world))

"""A stand-in for `docker.DockerClient`, for unit tests of engine.py's own logic (bounds, labels, the lease,
reaping, start faults, exec limits, archive reads) with no Docker engine. It records what was asked and
answers from plain data; faults are set per call (`fail[...]`)."""

from __future__ import annotations

import base64
import io
import itertools
import json
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

import docker

GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27


@dataclass
class Response:
    """What `requests` gives for one archive or ping call (the parts engine.py reads)."""

    status_code: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reason: str = "OK"
    closed: bool = False

    @property
    def raw(self) -> io.BytesIO:
        return io.BytesIO(self.body)

    def iter_content(self, size: int, decode: bool) -> Any:
        return iter([self.body[i : i + size] for i in range(0, len(self.body), size)] or [b""])

    def close(self) -> None:
        self.closed = True

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise docker.errors.APIError(f"{self.status_code}")


def stat_header(size: int, mode: int = 0o644, link: str = "") -> dict[str, str]:
    info = {"name": "x", "size": size, "mode": mode, "mtime": "", "linkTarget": link}
    return {"X-Docker-Container-Path-Stat": base64.b64encode(json.dumps(info).encode()).decode()}


def tar_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Container:
    """One container as the SDK's model shows it."""

    def __init__(self, client: FakeDocker, cid: str, image: str, settings: dict[str, Any]) -> None:
        self.client, self.id, self.image, self.settings = client, cid, image, settings
        self.labels = dict(settings.get("labels") or {})
        self.status = "created"
        self.exit_state: dict[str, Any] = {}
        self.attrs: dict[str, Any] = {"Config": {"Entrypoint": settings.get("entrypoint"), "Env": ["PATH=/bin"]}}
        self.log = b""
        self.archives: list[tuple[str, bytes]] = []

    def start(self) -> None:
        self.client.calls.append(("start", self.id))
        error = self.client.fail.get("start")
        error = error(self) if callable(error) and not isinstance(error, BaseException) else error
        if error:
            raise error
        self.status = self.client.status_after_start

    def reload(self) -> None:
        if self.client.fail.get("reload"):
            raise self.client.fail["reload"]
        self.attrs["State"] = self.exit_state

    def remove(self, force: bool = False, v: bool = False) -> None:
        self.client.calls.append(("remove", self.id))
        error = self.client.fail.get("remove")
        if error:
            raise error
        self.client.live.pop(self.id, None)

    def logs(self, **_: Any) -> bytes:
        return self.log

    def put_archive(self, directory: str, data: bytes) -> bool:
        if self.client.fail.get("put_archive"):
            raise self.client.fail["put_archive"]
        self.archives.append((directory, data))
        return self.client.put_ok


class Containers:
    def __init__(self, client: FakeDocker) -> None:
        self.client = client
        self._ids = itertools.count(1)

    def create(self, image: str, **settings: Any) -> Container:
        self.client.calls.append(("create", settings))
        errors = self.client.fail.get("create") or []
        if errors:
            raise errors.pop(0)
        container = Container(self.client, f"c{next(self._ids):03d}", image, settings)
        self.client.live[container.id] = container
        return container


class Image:
    def __init__(self, image_id: str, attrs: dict[str, Any]) -> None:
        self.id, self.attrs = image_id, attrs


class Images:
    def __init__(self, client: FakeDocker) -> None:
        self.client = client

    def get(self, reference: str) -> Image:
        if self.client.fail.get("images"):
            raise self.client.fail["images"]
        if reference not in self.client.image_store:
            raise docker.errors.ImageNotFound(f"No such image: {reference}")
        return self.client.image_store[reference]


class API:
    """The low-level client: lists, removals by id, renames, kills, execs and the archive endpoints."""

    base_url = "http+docker://localhost"

    def __init__(self, client: FakeDocker) -> None:
        self.client = client
        self.listed: list[dict[str, Any]] = []  # what `containers(...)` lists
        self.networks_listed: list[dict[str, Any]] = []
        self.files: dict[str, tuple[int, bytes, str]] = {}  # path -> (Go mode, data, link target)
        self.exec_output: list[tuple[bytes | None, bytes | None]] = []
        self.exec_delay_s = 0.0
        self.gets: list[str] = []  # archive paths read with a GET (a look is a HEAD)

    # -- lists and removals -------------------------------------------------------------------------
    def containers(self, all: bool = False, filters: Any = None, size: bool = False) -> list[dict[str, Any]]:
        self.client.calls.append(("containers", filters))
        if self.client.fail.get("containers"):
            raise self.client.fail["containers"]
        return list(self.listed)

    def networks(self, filters: Any = None) -> list[dict[str, Any]]:
        return list(self.networks_listed)

    def remove_container(self, cid: str, force: bool = False, v: bool = False) -> None:
        self.client.calls.append(("remove_container", cid))

    def remove_network(self, nid: str) -> None:
        self.client.calls.append(("remove_network", nid))

    def rename(self, cid: str, name: str) -> None:
        self.client.calls.append(("rename", name))

    def kill(self, cid: str) -> None:
        self.client.calls.append(("kill", cid))

    def inspect_container(self, cid: str) -> dict[str, Any]:
        if cid not in self.client.live:
            raise docker.errors.NotFound(f"No such container: {cid}")
        return {}

    # -- exec ----------------------------------------------------------------------------------------
    def exec_create(self, cid: str, cmd: list[str], **_: Any) -> dict[str, str]:
        if self.client.fail.get("exec"):
            raise self.client.fail["exec"]
        return {"Id": "e1"}

    def exec_start(self, exec_id: str, stream: bool = False, demux: bool = False) -> Any:
        for frame in self.exec_output:
            time.sleep(self.exec_delay_s)
            yield frame

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return {"ExitCode": self.client.exit_code}

    # -- the archive API and ping --------------------------------------------------------------------
    api_version = "1.41"
    timeout = 60

    def head(self, url: str, params: dict[str, str], timeout: Any = None) -> Response:
        return self._archive(params["path"], with_body=False)

    def get(self, url: str, params: Any = None, stream: bool = False, timeout: Any = None) -> Response:
        if url.endswith("/_ping"):
            if self.client.fail.get("ping"):
                raise self.client.fail["ping"]
            return Response()
        self.gets.append(params["path"])
        return self._archive(params["path"], with_body=True)

    def _archive(self, path: str, with_body: bool) -> Response:
        if path == "/loop":
            return Response(500, body=b'{"message": "too many links"}', reason="Server Error")
        if path == "/broken":
            return Response(500, body=b'{"message": "archive failed"}', reason="Server Error")
        if path == "/badheader":
            return Response(200, {"X-Docker-Container-Path-Stat": "%%%"})
        if path not in self.files:
            return Response(404, body=b'{"message": "Could not find the file"}', reason="Not Found")
        mode, data, link = self.files[path]
        body = tar_of(path.rsplit("/", 1)[-1], data) if with_body and not mode & GO_DIR else b""
        return Response(200, stat_header(len(data), mode, link), body)


class FakeDocker:
    """docker.DockerClient's surface as engine.Engine uses it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.live: dict[str, Container] = {}
        self.fail: dict[str, Any] = {}  # call -> the exception it raises (create: a list, one per call)
        self.status_after_start = "running"
        self.exit_code = 0
        self.put_ok = True
        self.image_store: dict[str, Image] = {}
        self.api = API(self)
        self.containers = Containers(self)
        self.images = Images(self)

    def ping(self) -> bool:
        if self.fail.get("ping"):
            raise self.fail["ping"]
        return True

    def created(self) -> list[dict[str, Any]]:
        return [settings for name, settings in self.calls if name == "create"]

    def called(self, name: str) -> list[Any]:
        return [arg for call, arg in self.calls if call == name]

"""The gate service as a user runs it: `baseimage-gate serve --config gate.toml`, a process of its own.

A registry of its own (tests/registry_server.py) posts its notifications to the service; the service certifies
with the fixture profile and promotes staging/* to certified/{name}.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import FIXTURE_PROFILE
from registry_server import RegistryServer, _free_port

EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json")
CONFIG = """\
listen = "127.0.0.1:{port}"
database = "{database}"
data_dir = "{data_dir}"
token_env = "GATE_TOKEN"
workers = {workers}
max_attempts = {max_attempts}
retry_backoff = {retry_backoff}
job_timeout = 300
stop_grace = 10
engines = [{{ docker_host = "{docker_host}" }}]

[[registries]]
url = "{registry_url}"
username = "{username}"
password_env = "REGISTRY_PASSWORD"

[[promote]]
from = "staging/*"
to = "certified/{{name}}"
profile = "{profile}"

[harbor]
profile = "{profile}"
refresh_after = 2
"""


def gate_command() -> list[str]:
    """The console script pip installed next to this interpreter (the `python -m` form where there is none)."""
    script = Path(sys.executable).parent / "baseimage-gate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pytest_baseimage.gate"]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class GateService:
    root: Path
    port: int = field(default_factory=_free_port)
    token: str = field(default_factory=lambda: f"Tok-{uuid.uuid4().hex}-NeverPrint")
    process: subprocess.Popen | None = None
    registry: RegistryServer | None = None
    registry_password: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. the database password's variable

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/events"

    def configure(
        self, registry: RegistryServer | None = None, *, registry_url: str = "", workers: int = 1,
        max_attempts: int = 3, retry_backoff: float = 0, docker_host: str = "", extra: str = "",
        database: str = "gate.db", data_dir: str = "data", top: str = "",
    ) -> Path:  # fmt: skip
        """gate.toml for a real registry, or for an address nothing answers on (registry_url); `extra` is more
        TOML appended (tables such as [attest]), `top` more top-level keys."""
        self.registry = registry
        self.registry_password = registry.password if registry else f"Unused-{uuid.uuid4().hex}-NeverPrint"
        text = CONFIG.format(
            port=self.port, workers=workers, max_attempts=max_attempts, retry_backoff=retry_backoff,
            docker_host=docker_host,
            registry_url=f"http://{registry.address}" if registry else registry_url,
            username=registry.username if registry else "gate", profile=FIXTURE_PROFILE, database=database,
            data_dir=data_dir,
        )  # fmt: skip
        path = self.root / "gate.toml"
        path.write_text(top + text + extra)
        return path

    def env(self) -> dict[str, str]:
        env = {**os.environ, "GATE_TOKEN": self.token, "REGISTRY_PASSWORD": self.registry_password, **self.extra_env}
        env.pop("PYTEST_ADDOPTS", None)
        return env

    def start(self, timeout: float = 30) -> None:
        log = open(self.root / "gate.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [*gate_command(), "serve", "--config", str(self.root / "gate.toml")],
            cwd=self.root, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get("/healthz", auth=False).status == 200:
                    return
            except OSError:
                pass
            assert self.process.poll() is None, f"the gate ended at start: {self.log()[-3000:]}"
            assert time.monotonic() < deadline, f"the gate did not answer within {timeout} s: {self.log()[-3000:]}"
            time.sleep(0.2)

    @property
    def owner_pid(self) -> str:
        """How this process appears in a job's `owner` (host:pid:random)."""
        assert self.process is not None
        return str(self.process.pid)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=30)

    def log(self) -> str:
        path = self.root / "gate.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def request(
        self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
        auth: bool | str = True,
    ) -> Answer:  # fmt: skip
        headers = dict(headers or {})
        if auth is True:
            headers["Authorization"] = f"Bearer {self.token}"
        elif isinstance(auth, str):
            headers["Authorization"] = auth
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers, method=method)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=30) as resp:
                return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())

    def post_unread(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST a body the server may refuse before reading it all (413): its answer, whatever the pipe did."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest("POST", path)
            for name, value in {**headers, "Authorization": f"Bearer {self.token}"}.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            try:
                for start in range(0, len(body), 65536):
                    conn.send(body[start : start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused while it arrived
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.request("GET", path, **kwargs)

    def post_events(self, events: list[dict], **kwargs: Any) -> Answer:
        headers = {"Content-Type": EVENTS_TYPE, **kwargs.pop("headers", {})}
        return self.request(
            "POST", "/v1/events", body=json.dumps({"events": events}).encode(), headers=headers, **kwargs
        )

    def jobs(self) -> list[dict]:
        return self.get("/v1/jobs").json()["jobs"]

    def wait_done(self, digest: str, timeout: float, repository: str = "") -> dict:
        """The job for a digest once done (its /v1/verdicts answer is 200), or fail at the deadline."""
        deadline = time.monotonic() + timeout
        query = f"?repository={repository}" if repository else ""
        while time.monotonic() < deadline:
            answer = self.get(f"/v1/verdicts/{digest}{query}")
            if answer.status == 200:
                return answer.json()
            assert self.process is None or self.process.poll() is None, f"the gate died: {self.log()[-3000:]}"
            time.sleep(0.5)
        raise AssertionError(f"no verdict for {digest} within {timeout} s; jobs: {self.jobs()}\n{self.log()[-3000:]}")


DB_PASSWORD_VAR = "GATE_DB_PASSWORD"


def database_replica(
    root: Path, url: str, password: str, shared: Path, token: str, lease_s: float = 60, port: int = 0,
    **configure: Any,
) -> GateService:  # fmt: skip
    """One replica of several: its own directory, port and log; the PostgreSQL database `url`, the data_dir
    `shared`, the token and the rules (`configure`'s keywords) are the same for all of them."""
    root.mkdir()
    service = GateService(root, port=port or _free_port(), token=token, extra_env={DB_PASSWORD_VAR: password})
    top = f'database_password_env = "{DB_PASSWORD_VAR}"\nlease_s = {lease_s}\n'
    service.configure(database=url, data_dir=str(shared), top=top, **configure)
    return service


class SilentEngine:
    """An address that accepts connections and never answers: a certification there waits, harmlessly."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.server.settimeout(0.5)
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.server.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                self.held.append(self.server.accept()[0])
            except OSError:
                continue

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        for conn in self.held:
            conn.close()
        self.server.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def push_event(repository: str, digest: str, tag: str = "v1", action: str = "push", media_type: str = "") -> dict:
    """One notification event as distribution writes it (the fields the gate reads, and a few it does not)."""
    return {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-11-26T06:00:00Z",
        "action": action,
        "target": {
            "mediaType": media_type or "application/vnd.docker.distribution.manifest.v2+json",
            "digest": digest,
            "size": 1234,
            "length": 1234,
            "repository": repository,
            "url": f"http://127.0.0.1:5000/v2/{repository}/manifests/{digest}",
            **({"tag": tag} if tag else {}),
        },
        "request": {"id": str(uuid.uuid4()), "addr": "127.0.0.1:1", "host": "127.0.0.1", "method": "PUT"},
        "actor": {"name": "gate-user"},
        "source": {"addr": "test:5000", "instanceID": str(uuid.uuid4())},
    }


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def manifest_digest(registry: RegistryServer, repository: str, reference: str) -> str | None:
    """The digest the registry serves for repository:reference (None if it has none), asked over HTTP."""
    req = urllib.request.Request(
        f"http://{registry.address}/v2/{repository}/manifests/{reference}",
        method="HEAD",
        headers={
            "Authorization": basic(registry.username, registry.password),
            "Accept": ", ".join(MANIFEST_TYPES),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def certifying_children(gate_pid: int) -> list[int]:
    """The plugin processes the gate started (children whose command line has --base-image=)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == gate_pid and b"--base-image=" in cmdline:
            found.append(int(stat.parent.name))
    return found


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        status = Path(f"/proc/{pid}/status")
        try:
            if "\nState:\tZ" in status.read_text():
                return True
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


CONTRACT = json.loads((Path(__file__).parent / "data" / "harbor-scanner-adapter-v1.2.json").read_text())


def media(value: str) -> str:
    """A media type in one spelling: `type/sub; version=1.1`, whatever the spaces."""
    parts = [p.strip() for p in value.split(";") if p.strip()]
    return "; ".join([parts[0].lower(), *sorted(p.replace(" ", "") for p in parts[1:])]) if parts else ""


def check_contract(operation: str, answer: Answer) -> Any:
    """The answer's status, media type, headers and body as the contract says for that operation; the body."""
    import jsonschema  # the test extra

    spec = CONTRACT["operations"][operation]["responses"]
    assert str(answer.status) in spec, f"{operation}: {answer.status} is not in the contract: {answer.body[:300]!r}"
    expected = spec[str(answer.status)]
    for header, kind in expected.get("headers", {}).items():
        assert header.lower() in answer.headers, f"{operation} {answer.status}: no {header} header"
        if kind == "integer":
            assert answer.headers[header.lower()].isdigit()
    if "media_types" not in expected:
        return None
    assert media(answer.headers.get("content-type", "")) in {media(t) for t in expected["media_types"]}
    body = json.loads(answer.body)
    schema = {**CONTRACT["schemas"][expected["schema"]], "schemas": CONTRACT["schemas"]}
    jsonschema.validate(body, schema, format_checker=jsonschema.FormatChecker())
    return body

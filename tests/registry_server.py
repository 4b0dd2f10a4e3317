"""A real, private Docker registry for the tests: Debian's docker-registry on 127.0.0.1 with htpasswd auth.

Plain HTTP is enough: the Docker engine treats 127.0.0.0/8 registries as insecure-allowed, and the
registry accepts htpasswd without TLS. One server per test process (`shared_registry`), stopped at the
end of the session with every image reference the tests made through it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import plugin_argv

REGISTRY_BINARY = "/usr/bin/docker-registry"
USERNAME = "gate-user"

CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}/data
  delete:
    enabled: true
http:
  addr: {address}
  secret: {secret}
auth:
  htpasswd:
    realm: pytest-baseimage-tests
    path: {root}/htpasswd
"""

# Registry notifications to one endpoint (distribution v2.8's `notifications:`; see WAVE2-FACTS.md).
NOTIFICATIONS = """\
notifications:
  events:
    includereferences: true
  endpoints:
    - name: gate
      url: {url}
      headers:
        Authorization: [{authorization}]
      timeout: 5s
      threshold: 10
      backoff: 1s
"""


@dataclass
class RegistryServer:
    """A running registry, and what the tests pushed to and pulled from it (for the cleanup)."""

    address: str
    password: str
    root: Path
    process: subprocess.Popen
    username: str = USERNAME
    digests: dict[str, str] = field(default_factory=dict)  # repo:tag -> address/repo@sha256:...

    def ref(self, repo: str) -> str:
        return f"{self.address}/{repo}"

    def push(self, client, image: str, repo: str, tag: str) -> str:
        """Push a local image as repo:tag, drop the local tag, and return address/repo@sha256:..."""
        full = self.ref(repo)
        client.images.get(image).tag(full, tag)
        auth = {"username": self.username, "password": self.password}
        digest = ""
        try:
            for event in client.api.push(full, tag=tag, stream=True, decode=True, auth_config=auth):
                assert "error" not in event, event.get("error")
                digest = (event.get("aux") or {}).get("Digest", digest)
        finally:
            client.images.remove(f"{full}:{tag}")  # only the reference: the fixture image stays
        assert digest.startswith("sha256:")
        self.digests[f"{repo}:{tag}"] = f"{full}@{digest}"
        return self.digests[f"{repo}:{tag}"]

    def remove_local_references(self, client) -> list[str]:
        """Untag every local reference into this registry (pulled tags and digests); never an image id."""
        removed = []
        for image in client.images.list():
            for ref in [*image.tags, *(image.attrs.get("RepoDigests") or [])]:
                if ref.startswith(f"{self.address}/"):
                    try:
                        client.images.remove(ref)
                        removed.append(ref)
                    except Exception:
                        pass
        return removed

    def stop(self) -> None:
        end_process(self.process)
        shutil.rmtree(self.root, ignore_errors=True)


def end_process(process: subprocess.Popen, how: signal.Signals = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask a server to stop (`how`), and kill it if it has not within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


_SERVER: list[RegistryServer] = []


def start_registry(notify_url: str = "", notify_authorization: str = "") -> RegistryServer:
    """A registry of its own; with notify_url, it POSTs its notifications there with that Authorization."""
    if not os.access(REGISTRY_BINARY, os.X_OK) or not shutil.which("htpasswd"):
        pytest.skip("needs Debian's docker-registry and apache2-utils (htpasswd)")
    root = Path(tempfile.mkdtemp(prefix="pytest-baseimage-registry-"))
    password = f"Pw-{uuid.uuid4().hex[:16]}-NeverPrint"  # distinctive: the tests grep every output for it
    htpasswd = subprocess.run(
        ["htpasswd", "-Bin", USERNAME], input=password, capture_output=True, text=True, check=True
    )
    (root / "htpasswd").write_text(htpasswd.stdout)
    address = f"127.0.0.1:{_free_port()}"
    config = CONFIG.format(root=root, address=address, secret=uuid.uuid4().hex)
    if notify_url:
        config += NOTIFICATIONS.format(url=notify_url, authorization=notify_authorization)
    (root / "config.yml").write_text(config)
    log = open(root / "registry.log", "w")  # noqa: SIM115 - the process owns it until stop()
    process = subprocess.Popen(
        [REGISTRY_BINARY, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
    )
    server = RegistryServer(address, password, root, process)
    deadline = time.monotonic() + 20
    while not _answers(address):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return server


def shared_registry(request: pytest.FixtureRequest, docker_client) -> RegistryServer:
    """One registry per test process, whichever module asks first; stopped when the session ends."""
    if not _SERVER:
        server = start_registry()
        _SERVER.append(server)

        def stop() -> None:
            server.remove_local_references(docker_client)
            server.stop()
            _SERVER.clear()

        request.session.config.add_cleanup(stop)
    return _SERVER[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(address: str) -> bool:
    try:
        urllib.request.urlopen(f"http://{address}/v2/", timeout=1)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # up, and asking for credentials
    except OSError:
        return False
    return False


@dataclass
class Outcome:
    """One pytest run of the plugin: its exit code, its streams and every report it wrote."""

    returncode: int
    stdout: str
    stderr: str
    files: dict[str, str]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def everything(self) -> str:
        return "\n".join([self.stdout, self.stderr, *self.files.values()])


def run_plugin(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 300
) -> Outcome:
    """conftest.run_pytest, plus standard input, and with the JSON, HTML and JUnit reports always asked for."""
    reports = {"json": cwd / "verdict.json", "html": cwd / "report.html", "junit": cwd / "junit.xml"}
    for path in reports.values():
        path.unlink(missing_ok=True)
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_ADDOPTS", None)
    cmd = plugin_argv(
        *args,
        f"--compat-json={reports['json']}",
        f"--compat-html={reports['html']}",
        f"--junitxml={reports['junit']}",
    )
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=full_env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    files = {name: path.read_text() for name, path in reports.items() if path.exists()}
    return Outcome(proc.returncode, proc.stdout, proc.stderr, files)

"""Engine faults against a REAL second Docker daemon that these tests start, load and kill themselves.

The daemon has its own socket, data root, exec root, pid file and bridge (`bi-<random>`, created here and
deleted at teardown); never `--bridge none`, which deletes the host's docker0. It never touches the shared
engine: the image is copied over with `docker save | docker -H ... load`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import FIXTURE_PROFILE, fixture_image, plugin_argv

LABEL_PID = "org.pytest-baseimage.pid"
MANAGED = "org.pytest-baseimage.managed=1"


@dataclass
class SecondDaemon:
    """A dockerd of the test's own; `kill` is a crash (SIGKILL), `start` brings it back on the same state."""

    root: Path
    bridge: str
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def argv(self) -> list[str]:
        (self.root / "daemon.json").write_text("{}")  # never the host's /etc/docker/daemon.json
        return [
            shutil.which("dockerd") or "dockerd",
            f"--config-file={self.root / 'daemon.json'}",
            f"--host={self.host}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--log-level=warn",
        ]

    def start(self, timeout: float = 60) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.3)
        tail = self.log.read_text(errors="replace")[-1500:]
        self.kill()
        raise RuntimeError(f"the second dockerd did not start: {tail}")

    def kill(self) -> None:
        """SIGKILL the daemon and its containerd, as a crash would (the containers' shims live on, as they do
        after a real crash, and the restarted daemon finds them again)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None
        for pid in _processes_under(self.root, program="containerd"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A killed orphan can stay a zombie (no init reaps it here), which a pid file check takes for alive.
        for pidfile in (self.root / "dockerd.pid", self.root / "exec" / "containerd" / "containerd.pid"):
            pidfile.unlink(missing_ok=True)

    def docker(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "-H", self.host, *args], capture_output=True, text=True, check=check, timeout=120, **kwargs
        )

    def managed(self) -> list[dict]:
        import docker

        client = docker.DockerClient(base_url=self.host, timeout=30)
        try:
            return client.api.containers(all=True, filters={"label": MANAGED})
        finally:
            client.close()


def _processes_under(root: Path, program: str = "") -> list[int]:
    """Pids whose command line names this daemon's directory (its dockerd, containerd and shims, nothing
    else), optionally only those running `program`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        cmdline = b" ".join(argv).decode(errors="replace")
        if str(root) in cmdline and (not program or os.path.basename(argv[0].decode(errors="replace")) == program):
            pids.append(int(entry.name))
    return pids


def _teardown(daemon: SecondDaemon) -> None:
    if daemon.proc and daemon.proc.poll() is None:
        daemon.proc.terminate()
        try:
            daemon.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
    for pid in _processes_under(daemon.root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(daemon.root))), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(daemon.root, ignore_errors=True)
    subprocess.run(["ip", "link", "delete", daemon.bridge], capture_output=True)


@pytest.fixture(scope="module")
def second_daemon(images):
    """A running second dockerd with the fixture images these tests need loaded; skipped (with the reason)
    where one cannot be started (not root, no dockerd or ip)."""
    if os.geteuid() != 0:
        pytest.skip("starting a second dockerd needs root")
    for tool in ("dockerd", "ip", "docker"):
        if not shutil.which(tool):
            pytest.skip(f"starting a second dockerd needs `{tool}`")
    wanted = [images("engine-hang-python")]
    bridge = f"bi-{uuid.uuid4().hex[:8]}"
    daemon = SecondDaemon(Path(tempfile.mkdtemp(prefix="bi-", dir="/tmp")), bridge)
    try:
        for cmd in (
            ["ip", "link", "add", "name", bridge, "type", "bridge"],
            ["ip", "addr", "add", "10.213.0.1/24", "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot make the test bridge ({' '.join(cmd)}): {done.stderr.strip()}")
        try:
            daemon.start()
        except RuntimeError as exc:
            pytest.skip(str(exc))
        save = subprocess.Popen(["docker", "save", *wanted], stdout=subprocess.PIPE)
        daemon.docker("load", "-q", stdin=save.stdout)
        assert save.wait(timeout=300) == 0
        yield daemon
    finally:
        _teardown(daemon)


def test_engine_killed_mid_probe_is_could_not_check_without_traceback_and_leaves_nothing(second_daemon, tmp_path):
    """The reported case: the engine dies while the probe runs. Exit 2, one line per stage that names the engine,
    no traceback (pytest_unconfigure's removal used to raise), the JSON verdict written, and after the engine
    comes back the next run's reaping removes every container the dead run left there."""
    verdict = tmp_path / "verdict.json"
    env = {**os.environ, "DOCKER_HOST": second_daemon.host}
    env.pop("PYTEST_ADDOPTS", None)
    argv = plugin_argv(
        f"--base-image={fixture_image('engine-hang-python')}",
        f"--profile={FIXTURE_PROFILE}",
        f"--compat-json={verdict}",
        "--probe-timeout=60",
        "-q",
    )
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(c["State"] == "running" for c in second_daemon.managed()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no candidate started on the second daemon"
            time.sleep(0.2)
        time.sleep(1.0)  # the probe's exec is in flight (the image's python3 never ends)
        second_daemon.kill()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, out + err
    assert "Traceback" not in out + err and "a bug in pytest-baseimage" not in out + err, out + err
    assert "stopped answering" in out or "Docker engine failed" in out, out
    data = json.loads(verdict.read_text())
    assert (data["verdict"], data["exit_code"]) == ("could not be checked", 2)
    assert not any(r["status"] == "fail" for image in data["images"] for r in image["results"]), data

    second_daemon.start()
    left = [c for c in second_daemon.managed() if c["Labels"].get(LABEL_PID) == str(proc.pid)]
    assert left, "the engine died before the run could remove its containers: this is what reaping is for"
    nxt = subprocess.run(
        plugin_argv(  # its probe of this never-ending python3 times out quickly: only the reaping matters here
            f"--base-image={fixture_image('engine-hang-python')}",
            f"--profile={FIXTURE_PROFILE}",
            "-m",
            "os",
            "--probe-timeout=1",
        ),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in nxt.stdout + nxt.stderr
    assert [c["Names"] for c in second_daemon.managed() if c["Labels"].get(LABEL_PID) == str(proc.pid)] == []
    assert second_daemon.managed() == [], "the next run removed its own containers too"


def test_remove_and_create_on_a_dead_engine_are_one_line_engine_errors(second_daemon):
    """Removal never raises (it runs on the way out); creating on a dead engine is EngineError, not a crash."""
    from pytest_baseimage.engine import Engine
    from pytest_baseimage.errors import EngineError

    if second_daemon.proc is None:
        second_daemon.start()
    engine = Engine(docker_host=second_daemon.host)
    image = fixture_image("engine-hang-python")
    box = engine.create(image, role="candidate")
    try:
        with pytest.raises(EngineError, match="cannot create a container") as refused:
            engine.create(image, role="candidate", runtime="no-such-runtime")
        assert "\n" not in str(refused.value)
        second_daemon.kill()
        assert engine.remove(box) is False
        engine.remove_all()  # the lease and anything else: no exception either
        with pytest.raises(EngineError, match="cannot create a container") as dead:
            engine.create(image, role="candidate")
        assert "\n" not in str(dead.value)
    finally:
        second_daemon.start()
        engine.reap_stale()  # the same session: nothing of ours is stale, so remove explicitly
        for entry in second_daemon.managed():
            second_daemon.docker("rm", "-f", entry["Id"], check=False)

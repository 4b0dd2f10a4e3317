"""engine.py's own logic, in process against a stand-in Docker client (tests/fake_docker.py), part two: exec
limits and deadlines, the archive API's looks and reads, the session's registry of engines, SIGTERM, and
docker contexts. Containers, starts and reaping are in test_inprocess_engine.py."""

from __future__ import annotations

import base64
import json
import signal

import pytest
from fake_docker import GO_DIR, GO_SYMLINK, Response

from pytest_baseimage import engine as eng
from pytest_baseimage import engine_io, signals
from pytest_baseimage.engine import Engine
from pytest_baseimage.engines import Engines
from pytest_baseimage.errors import EngineError, ExecTimeout


def api_error(message: str):
    import docker

    return docker.errors.APIError(message)


# -- exec ---------------------------------------------------------------------------------------------------
def test_exec_returns_the_exit_code_and_both_streams(engine, client):
    box = engine.create("img", role="candidate")
    client.api.exec_output = [(b"out", None), (None, b"err")]
    client.exit_code = 3
    result = engine.exec(box, ["true"], timeout=5)
    assert (result.exit_code, result.stdout, result.stderr, result.truncated) == (3, "out", "err", False)


def test_exec_stops_reading_past_its_output_bound(engine, client):
    box = engine.create("img", role="candidate")
    client.api.exec_output = [(b"a" * 10, None)] * 5
    result = engine.exec(box, ["yes"], timeout=5, max_output=25)
    assert result.truncated and len(result.raw_stdout) == 25


def test_exec_past_its_deadline_raises_with_what_it_printed(engine, client):
    box = engine.create("img", role="candidate")
    client.api.exec_output = [(b"first", None), (b"never", None)]
    client.api.exec_delay_s = 0.3
    with pytest.raises(ExecTimeout, match="did not finish within") as caught:
        engine.exec(box, ["sleep"], timeout=0.45)
    assert caught.value.partial == b"first"


def test_an_exec_the_engine_fails_is_an_engine_error_and_a_bug_stays_a_bug(engine, client):
    box = engine.create("img", role="candidate")
    client.fail["exec"] = api_error("500 Server Error: container is not running")
    with pytest.raises(EngineError, match="cannot run `ls` in the candidate: the Docker engine failed"):
        engine.exec(box, ["ls"], timeout=5)
    client.fail["exec"] = TypeError("a bug")
    with pytest.raises(TypeError):
        engine.exec(box, ["ls"], timeout=5)


# -- the archive API: looks and reads ------------------------------------------------------------------------
def test_stat_tells_files_directories_symlinks_and_absent_paths(engine, client):
    box = engine.create("img", role="candidate")
    client.api.files = {"/f": (0o644, b"12345", ""), "/d": (GO_DIR, b"", ""), "/l": (GO_SYMLINK, b"", "/f")}
    assert (engine.stat(box, "/f").kind, engine.stat(box, "/f").size) == ("file", 5)
    assert engine.stat(box, "/d").kind == "a directory"
    assert engine.stat(box, "/l").link_target == "/f"
    missing = engine.stat(box, "/nope")
    assert missing.absent and not missing.exists
    assert engine.stat(box, "/loop").problem == "a symlink loop"


def test_stat_of_a_container_that_is_gone_or_an_unreadable_answer_is_an_engine_error(engine, client):
    box = engine.create("img", role="candidate")
    with pytest.raises(EngineError, match="unreadable stat header"):
        engine.stat(box, "/badheader")
    with pytest.raises(EngineError, match="answered 500 archive failed"):
        engine.stat(box, "/broken")
    client.live.pop(box.id)
    with pytest.raises(EngineError, match="cannot look at /f in the candidate"):
        engine.stat(box, "/f")


def test_read_file_follows_a_symlink_and_reads_or_parses_the_file(engine, client):
    box = engine.create("img", role="candidate")
    client.api.files = {
        "/etc/os-release": (GO_SYMLINK, b"", "/usr/lib/os-release"),
        "/usr/lib/os-release": (0o644, b"ID=x\n", ""),
    }
    read = engine.read_file(box, "/etc/os-release")
    assert read.ok and read.data == b"ID=x\n"
    parsed = engine.read_file(box, "/usr/lib/os-release", parse=lambda handle: handle.read().upper())
    assert parsed.value == b"ID=X\n"


def test_read_file_never_reads_what_is_too_large_or_not_a_regular_file(engine, client):
    box = engine.create("img", role="candidate")
    client.api.files = {"/big": (0o644, b"x" * 2048, ""), "/d": (GO_DIR, b"", "")}
    big = engine.read_file(box, "/big", max_bytes=1024)
    assert big.problem == "too large to read: 2 KiB" and big.data is None
    assert client.api.gets == []  # judged from the look alone: not a byte of it was fetched
    assert engine.read_file(box, "/d").problem == "not a regular file (a directory)"
    assert engine.read_file(box, "/nope").absent


def test_a_file_that_went_away_between_look_and_read_is_judged_as_a_look(engine, client, monkeypatch):
    box = engine.create("img", role="candidate")
    client.api.files = {"/f": (0o644, b"data", "")}
    monkeypatch.setattr(client.api, "get", lambda url, **kw: Response(404, body=b'{"message": "gone"}'))
    assert engine.read_file(box, "/f").absent


def test_the_path_stat_header_is_decoded_from_base64_json():
    raw = base64.b64encode(json.dumps({"mode": GO_DIR, "size": 0}).encode()).decode()
    assert engine_io._path_stat("/d", 200, {"X-Docker-Container-Path-Stat": raw}, "").kind == "a directory"


# -- the session's registry of engines ------------------------------------------------------------------------
class _Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.made: list[dict] = []
        self.fail = fail

    def __call__(self, **where):
        if self.fail:
            self.fail -= 1
            raise EngineError("cannot reach the Docker engine at x")
        self.made.append(where)
        return _StubEngine()


class _StubEngine:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def reap_stale(self):
        self.calls.append("reap")

    def settle(self):
        self.calls.append("settle")

    def remove_all(self):
        self.calls.append("remove_all")

    def release_network(self):
        self.calls.append("release_network")

    def sweep_session(self):
        self.calls.append("sweep")


def test_engines_make_one_engine_per_host_with_the_sessions_id_and_reap_once():
    factory = _Recorder()
    engines = Engines(factory, session_id="run42")
    first = engines.get(None)
    assert engines.get(None) is first and engines.get("tcp://other:2375") is not first
    assert factory.made == [
        {"docker_host": None, "docker_context": None, "session_id": "run42"},
        {"docker_host": "tcp://other:2375", "docker_context": None, "session_id": "run42"},
    ]
    assert first.calls == ["reap"]


def test_an_engine_that_could_not_be_reached_is_asked_again_next_time():
    engines = Engines(_Recorder(fail=1))
    with pytest.raises(EngineError):
        engines.get(None)
    assert engines.get(None) is not None


def test_cleanup_removes_what_every_engine_of_the_session_started():
    engines = Engines(_Recorder())
    made = [engines.get(None), engines.get("tcp://b:2375")]
    engines.cleanup()
    # the background removals first, the network once nothing is left on it, the label sweep last
    assert [engine.calls for engine in made] == [["reap", "settle", "remove_all", "release_network", "sweep"]] * 2


def test_two_sessions_never_share_an_id():
    assert Engines().session_id != Engines().session_id
    assert Engines(session_id="fixed").session_id == "fixed"


def test_sigterm_becomes_a_keyboard_interrupt_so_the_session_cleans_up():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signals.install_signal_handlers()
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- docker contexts -------------------------------------------------------------------------------------------
def _context(tmp_path, name: str, endpoint: dict, tls: dict[str, str] | None = None) -> None:
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = tmp_path / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": {"docker": endpoint}}))
    if tls:
        folder = tmp_path / "contexts" / "tls" / digest / "docker"
        folder.mkdir(parents=True)
        for file, text in tls.items():
            (folder / file).write_text(text)


def test_a_context_is_read_from_the_clis_store(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _context(tmp_path, "remote", {"Host": "tcp://remote:2375"})
    assert eng.read_context("remote") == eng.ContextEndpoint("http://remote:2375", None)  # as the SDK says tcp://
    assert eng.read_context("absent") is None


def test_a_context_with_a_certificate_but_no_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _context(tmp_path, "half", {"Host": "tcp://remote:2376"}, tls={"cert.pem": "x"})
    with pytest.raises(EngineError, match="client certificate without its key"):
        eng.read_context("half")


def test_an_unknown_context_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(EngineError, match="Docker context 'nowhere' does not exist"):
        Engine(docker_context="nowhere")


def test_the_engines_ca_is_kept_when_a_ca_bundle_variable_would_replace_it():
    """requests lets REQUESTS_CA_BUNDLE replace a session's CA file; the mounted adapter sends the engine's."""
    import requests

    session = requests.Session()
    session.verify = "/engine/ca.pem"
    sent = {}

    class Inner(requests.adapters.BaseAdapter):
        def send(self, request, **kwargs):
            sent.update(kwargs)
            return requests.Response()

        def close(self):
            pass

    session.mount("https://", Inner())
    eng.pin_engine_ca(session)
    session.get_adapter("https://engine:2376/").send(requests.Request("GET", "https://engine:2376/_ping").prepare(),
                                                     verify="/etc/ssl/REQUESTS_CA_BUNDLE.pem")  # fmt: skip
    assert sent["verify"] == "/engine/ca.pem"

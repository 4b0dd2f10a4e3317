"""The in-container request client (scoring_client.PROGRAM), run as the container runs it (`python -E -S`),
against a real HTTP server on this machine, under every Python the client promises to support that this
machine has (2.7 and 3.6 from pyenv when present; this interpreter always). No Docker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pytest_baseimage import probe, scoring_client

PYENV = Path.home() / ".pyenv" / "versions"
OLD_PYTHONS = {"2.7": PYENV / "2.7.18" / "bin" / "python", "3.6": PYENV / "3.6.15" / "bin" / "python"}
MARKER = "@@test-marker@@"


def interpreters() -> list:
    params = [pytest.param(sys.executable, id=f"{sys.version_info[0]}.{sys.version_info[1]}")]
    for version, path in OLD_PYTHONS.items():
        mark = pytest.mark.skipif(not path.exists(), reason=f"no Python {version} at {path}")
        params.append(pytest.param(str(path), id=version, marks=mark))
    return params


class Handler(BaseHTTPRequestHandler):
    score_delay_s = 0.0

    def do_GET(self):
        self.send_response(200)
        self.send_header("X-Odd", "caf\xe9")  # a Latin-1 byte in a header
        self.end_headers()
        self.wfile.write(b"x" * 10_000)

    def do_POST(self):
        time.sleep(self.score_delay_s)
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    Handler.score_delay_s = 0.0


def client(tmp_path: Path, python: str, port: int, payload: bytes, boot_timeout_s: float = 5.0) -> subprocess.Popen:
    request = {
        "port": port,
        "liveness_path": "/",
        "score_path": "/score",
        "swagger_path": "/swagger.json",
        "swagger": True,
        "content_type": "application/json",
        "boot_timeout_s": boot_timeout_s,
        "request_timeout_s": 5.0,
        "poll_interval_s": 0.05,
        "max_body": 1 << 20,
    }
    for name, data in scoring_client.files(request, payload, MARKER).items():
        (tmp_path / Path(name).name).write_bytes(data)
    command = scoring_client.command(python)
    command[-2:] = [str(tmp_path / "client.py"), str(tmp_path / "request.json")]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("python", interpreters())
def test_a_healthy_server_is_scored_with_any_text(tmp_path, server, python):
    payload = json.dumps({"data": "café ☕"}, ensure_ascii=False).encode("utf-8")
    proc = client(tmp_path, python, server.server_address[1], payload)
    out, err = proc.communicate(timeout=30)
    answer = probe.last_marked_json(out, MARKER)
    assert proc.returncode == 0 and answer is not None, err
    assert answer["done"] is True and "client_error" not in answer
    assert answer["healthy_after_s"] >= 0 and answer["ran_s"] >= answer["score_done_s"] >= answer["healthy_after_s"]
    assert answer["score"]["status"] == 200 and answer["score"]["body"] == payload.decode("utf-8")
    assert answer["liveness"]["headers"]["x-odd"] == "caf\xe9"
    assert len(answer["liveness"]["body"]) == scoring_client.SIDE_BODY_CHARS  # only the status is judged
    assert answer["swagger"]["status"] == 200
    assert "00000000" in answer["listen"]  # this server listens on 0.0.0.0, read from /proc/net/tcp


@pytest.mark.parametrize("python", interpreters())
def test_nothing_listening_is_polled_until_the_deadline(tmp_path, python):
    import socket

    with socket.socket() as spare:  # a port nobody listens on
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    proc = client(tmp_path, python, port, b"{}", boot_timeout_s=0.6)
    out, err = proc.communicate(timeout=30)
    answer = probe.last_marked_json(out, MARKER)
    assert answer is not None, err
    assert answer["healthy_after_s"] is None and answer["score"] is None and answer["polls"] > 3
    assert answer["liveness"]["error"] == "closed" and answer["listen"] == []


def test_a_client_killed_with_its_server_leaves_what_it_saw(tmp_path, server):
    Handler.score_delay_s = 10.0  # run() "hangs"; the server then dies and takes the client with it
    proc = client(tmp_path, sys.executable, server.server_address[1], b"{}")
    deadline = time.monotonic() + 20
    lines: list[str] = []
    while not any(line.startswith(MARKER) for line in lines):
        assert time.monotonic() < deadline, "no first answer line"
        lines.append(proc.stdout.readline())
    proc.kill()
    rest, _ = proc.communicate(timeout=10)
    answer = probe.last_marked_json("".join(lines) + rest, MARKER)
    assert answer is not None and "done" not in answer
    assert answer["healthy_after_s"] is not None and answer["score"] is None

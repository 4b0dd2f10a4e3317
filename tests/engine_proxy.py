"""A Docker engine that looks remote: tcp://<a non-loopback address of this machine>:<port>, forwarded byte for
byte to the local engine's unix socket. Real API traffic (exec attach, archives) goes through it; nothing on
the far side may rely on reaching the candidate's ports from the test host."""

from __future__ import annotations

import contextlib
import socket
import threading


class EngineProxy:
    def __init__(self, address: str, unix_path: str = "/var/run/docker.sock") -> None:
        self.unix_path = unix_path
        self.server = socket.create_server((address, 0))
        self.url = f"tcp://{address}:{self.server.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.unix_path)
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, target), daemon=True).start()

    def close(self) -> None:
        self.server.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

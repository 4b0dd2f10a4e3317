"""A Docker engine that looks remote: tcp://<a non-loopback address of this machine>:<port>, forwarded byte for
byte to the local engine's unix socket, optionally behind TLS with client certificates (as `dockerd
--tlsverify` does). Real API traffic (exec attach, archives) goes through it; nothing on the far side may
rely on reaching the candidate's ports from the test host."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from pathlib import Path


class EngineProxy:
    def __init__(self, address: str, unix_path: str = "/var/run/docker.sock", tls: ssl.SSLContext | None = None):
        self.unix_path = unix_path
        self.tls = tls
        self.server = socket.create_server((address, 0))
        self.url = f"tcp://{address}:{self.server.getsockname()[1]}"
        self.connections = 0
        self.refused = 0  # TLS handshakes that failed (an untrusted client certificate)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        if self.tls is not None:
            try:
                client = self.tls.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):
                self.refused += 1
                client.close()
                return
        self.connections += 1
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self.unix_path)
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        _pipe(upstream, client)

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


def make_pki(directory: Path, server_ip: str) -> dict[str, Path]:
    """A CA, a server certificate for server_ip and a client certificate it signed, plus a client certificate
    from a second CA that the server does not trust. EC keys: fast. Needs the openssl command."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "rogue-ca"):
        run("req", "-x509", *key, "-keyout", f"{ca}-key.pem", "-out", f"{ca}.pem", "-days", "1", "-subj", f"/CN={ca}")
    (directory / "server.ext").write_text(f"subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (
        ("server", "ca", "server.ext"),
        ("client", "ca", "client.ext"),
        ("rogue", "rogue-ca", "client.ext"),
    ):
        run("req", *key, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.pem",
            "-CAkey",
            f"{ca}-key.pem",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-extfile",
            ext,
        )
    return {p.stem: p for p in directory.glob("*.pem")}


def server_tls(pki: dict[str, Path]) -> ssl.SSLContext:
    """What `dockerd --tlsverify --tlscacert ca.pem --tlscert server.pem --tlskey server-key.pem` enforces."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"], pki["server-key"])
    context.load_verify_locations(pki["ca"])
    context.verify_mode = ssl.CERT_REQUIRED
    return context

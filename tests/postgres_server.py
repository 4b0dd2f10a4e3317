"""A real, private PostgreSQL server for the tests: Debian's `postgresql` binaries, listening on 127.0.0.1.

The cluster lives in a temporary directory (initdb), runs as the unprivileged `postgres` user when the tests
run as root (the server refuses root), is reached by the gate as a role with a password (scram-sha-256 in
pg_hba.conf), and is stopped and deleted when the session ends. Each test gets a database of its own.
Missing binaries fail the test with the package to install: the tests never skip for missing set-up.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from registry_server import _free_port, end_process

ROLE = "gate"
HBA = """\
local all postgres trust
host all all 127.0.0.1/32 scram-sha-256
"""


def server_binaries(where: Path = Path("/usr/lib/postgresql")) -> Path:
    """The newest <where>/N/bin holding initdb and postgres (Debian's layout); missing ones fail, with the fix."""
    found = [p.parent for p in where.glob("*/bin/postgres") if (p.parent / "initdb").exists()]
    if not found:
        pytest.fail(
            f"PostgreSQL server binaries not found in {where}/*/bin: install Debian's `postgresql` package "
            "(scripts/setup and .ci/docker-up install it)",
            pytrace=False,
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _as_postgres() -> tuple[list[str], tuple[int, int] | None]:
    """The prefix that runs a server binary unprivileged, and the uid/gid that owns its files (None: ours)."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("no `postgres` user to run the test server as: install Debian's `postgresql` package")
    prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    return prefix, (user.pw_uid, user.pw_gid)


@dataclass
class PostgresServer:
    root: Path
    port: int
    process: subprocess.Popen
    password: str = field(default_factory=lambda: f"DbPw-{uuid.uuid4().hex[:16]}-NeverPrint")
    databases: list[str] = field(default_factory=list)

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        """The superuser over the Unix socket (trust): only the tests' own set-up uses it."""
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname, autocommit=True
        )

    def end_gate_sessions(self) -> int:
        """Terminate every connection the gate holds (as a server restart or a network cut would)."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'baseimage-gate'"
            ).fetchall()
        return sum(bool(row[0]) for row in rows)

    def create_database(self, owner: str = ROLE) -> str:
        """A fresh database, owned by the gate's role unless said otherwise; its URL (no password: `password`)."""
        name = f"gate_{uuid.uuid4().hex[:10]}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
        self.databases.append(name)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{name}"

    def log(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        end_process(self.process, signal.SIGINT, 30)  # SIGINT: "fast" shutdown, no waiting for clients
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(durable: bool = False) -> PostgresServer:
    """A running cluster; not `durable` (the tests): no fsync, as nothing of it outlives the session."""
    binaries = server_binaries()
    prefix, owner = _as_postgres()
    root = Path(tempfile.mkdtemp(prefix="pytest-baseimage-pg-"))
    (root / "sock").mkdir()
    if owner:
        for path in (root, root / "sock"):
            os.chown(path, *owner)
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    init = subprocess.run(
        [*prefix, str(binaries / "initdb"), "-D", str(root / "data"), "-U", "postgres", "-E", "UTF8",
         "--no-instructions"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr[-2000:]}")
    (root / "data" / "pg_hba.conf").write_text(HBA)
    port = _free_port()
    log = open(root / "postgres.log", "wb")  # noqa: SIM115 - the server owns it until stop()
    process = subprocess.Popen(
        [*prefix, str(binaries / "postgres"), "-D", str(root / "data"), "-c", "listen_addresses=127.0.0.1",
         "-c", f"port={port}", "-c", f"unix_socket_directories={root / 'sock'}", "-c", "max_connections=60",
         "-c", "password_encryption=scram-sha-256",
         *([] if durable else ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    server = PostgresServer(root, port, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            with server.admin() as conn:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE), server.password))
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                text = server.log()[-2000:]
                server.stop()
                pytest.fail(f"postgres did not start: {text}")
            time.sleep(0.2)


_SERVER: list[PostgresServer] = []


def shared_postgres(request: pytest.FixtureRequest) -> PostgresServer:
    """One server per test process, whichever module asks first; stopped and deleted when the session ends."""
    if not _SERVER:
        server = start_postgres()
        _SERVER.append(server)

        def stop() -> None:
            server.stop()
            _SERVER.clear()

        request.session.config.add_cleanup(stop)
    return _SERVER[0]

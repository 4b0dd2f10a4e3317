"""Container lifecycle: the only module (with scoring and registry) that talks to the Docker engine.

Every container is labelled with the session that started it, so that it can be removed when the session
ends (`engines.Engines.cleanup`, also on Ctrl-C and SIGTERM), and by the next run if this one was killed (see
`reap_stale`): a live session renews a lease on each engine it uses, and only the containers of sessions
whose lease went stale are reaped. Engine trouble is EngineError ("could not be checked"); only what is
provably the image's counts against it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .engine_background import BackgroundWork
from .engine_client import (
    ContextEndpoint,
    EngineQueries,
    api_url,
    client_from_context,
    client_from_environment,
    describe_host,
    engine_faults,
    pin_engine_ca,
    pinned_client,
    read_context,
    short_error,
    unreachable_message,
)
from .engine_io import (
    MAX_EXEC_OUTPUT,
    ContainerIO,
    ExecResult,
    FileRead,
    PathStat,
    describe_size,
    engine_error,
    one_line,
)
from .engine_reap import (
    LABEL,
    LABEL_EXPIRES,
    LABEL_HOST,
    LABEL_MANAGED,
    LABEL_PID,
    LABEL_PIDNS,
    LABEL_ROLE,
    LABEL_SESSION,
    LEASE_PREFIX,
    LEASE_RENEW_S,
    LEASE_ROLE,
    LEASE_STALE_S,
    MAX_AGE_S,
    EngineStarts,
    Owner,
    StartFault,
    containers_to_reap,
    exit_fault,
    image_start_fault,
    label_number,
    lease_name,
    lease_renewed_at,
    log_tail,
    pid_alive,
    pid_namespace,
)
from .errors import BaseImageError, EngineError, ImageNotFound

log = logging.getLogger("pytest_baseimage")


def new_session_id() -> str:
    """The label of one session's containers (see `Engines`): random, so that two runs never share one."""
    return uuid.uuid4().hex[:12]


# Resource limits for untrusted candidates: enough to import a framework and boot a server, not more.
DEFAULT_MEM_LIMIT = "2g"
DEFAULT_PIDS_LIMIT = 512
DEFAULT_NANO_CPUS = 1_000_000_000  # one CPU
DEFAULT_LOG_CONFIG = {"type": "json-file", "config": {"max-size": "10m", "max-file": "1"}}
DISABLED_HEALTHCHECK = {"test": ["NONE"]}
# What a container may write to its own filesystem: enforced by the storage driver where it can
# (storage_opt size: overlay2 on xfs with pquota, btrfs, zfs, devicemapper), else watched and stopped past it.
DEFAULT_DISK_LIMIT_BYTES = 2 << 30
# The keep-alive command: plain `sleep` exists in coreutils and busybox. The fallback is a shell builtin that
# blocks on the container's stdin, which stays open and empty (stdin_open): no `sleep`, no busy loop.
KEEPALIVE_COMMANDS: tuple[list[str], ...] = (
    ["sleep", "2147483647"],
    ["/bin/sh", "-c", "read -r _ignored"],
)


@dataclass
class _Lease:
    """This session's lease on one engine: its container (once created), and the signal that ends renewal."""

    container: Any = None
    stop: threading.Event = field(default_factory=threading.Event)


class Engine(EngineQueries, EngineStarts, ContainerIO, BackgroundWork):
    """A connection to one Docker engine, and the containers this session started on it."""

    def __init__(
        self,
        client: Any = None,
        docker_host: str | None = None,
        docker_context: str | None = None,
        session_id: str = "",
    ) -> None:
        import docker

        self.session_id = session_id or new_session_id()  # the label of this session's containers
        try:
            if client is not None:
                self.client = client
                self.client.ping()  # a client made below has already proved the engine answers (its version)
            elif docker_context:
                self.client = client_from_context(docker_context)
            elif docker_host:
                self.client = pinned_client(lambda v: docker.DockerClient(base_url=docker_host, timeout=120, version=v))
            else:
                self.client = client_from_environment()
        except docker.errors.DockerException as exc:
            context = docker_context or os.environ.get("DOCKER_CONTEXT")
            named = f"{docker_host} (context {docker_context})" if docker_context else docker_host
            where = named or os.environ.get("DOCKER_HOST") or (f"context {context}" if context else "")
            raise EngineError(unreachable_message(where or "unix:///var/run/docker.sock", short_error(exc))) from None
        self.host = describe_host(self.client)
        self._live: dict[str, Any] = {}
        self._creating = 0  # create requests under way: one cut off by a signal may still make a container
        self._lock = threading.Lock()
        self._lease: _Lease | None = None
        self._storage_opt: bool | None = None  # None: not tried yet; False: the storage driver cannot bound size
        self.stopped_for: dict[str, str] = {}  # container id -> why the watch stopped it (e.g. disk limit)
        self._start_faults: dict[str, StartFault] = {}  # container id -> why it could not start
        self._teardowns: list[threading.Thread] = []  # removals run beside the rest of the run (see `defer`)
        self._network: Future[Any] | None = None  # the internal network, once asked for (see `internal_network`)

    # -- images ---------------------------------------------------------------------------------------

    # -- containers -----------------------------------------------------------------------------------
    def labels(self, role: str) -> dict[str, str]:
        return {
            LABEL_MANAGED: "1",
            LABEL_PID: str(os.getpid()),
            LABEL_HOST: socket.gethostname(),
            LABEL_PIDNS: pid_namespace(),
            LABEL_SESSION: self.session_id,
            LABEL_EXPIRES: str(int(time.time()) + MAX_AGE_S),
            LABEL_ROLE: role,
        }

    def create(self, image: str, *, role: str, command: list[str] | None = None, **options: Any) -> Any:
        """Create (not start) a hardened, bounded, labelled container; it is tracked until `remove`."""
        import docker

        entrypoint = command or KEEPALIVE_COMMANDS[0]
        settings: dict[str, Any] = {
            "entrypoint": entrypoint,
            "command": [],
            "labels": self.labels(role),
            "detach": True,
            "privileged": False,
            "network_mode": "none",
            "mem_limit": DEFAULT_MEM_LIMIT,
            "pids_limit": DEFAULT_PIDS_LIMIT,
            "nano_cpus": DEFAULT_NANO_CPUS,
            "log_config": DEFAULT_LOG_CONFIG,
            "healthcheck": DISABLED_HEALTHCHECK,
            "stdin_open": entrypoint in KEEPALIVE_COMMANDS,  # the fallback keep-alive blocks on this stdin
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "cap_add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL"],
        }
        settings.update(options)
        for forbidden in ("volumes", "mounts", "privileged"):
            if options.get(forbidden):
                raise ValueError(f"candidates never get {forbidden}")
        with self._lock:
            self._creating += 1
        try:
            container = self._create_bounded(image, settings)
        except docker.errors.ImageNotFound:
            raise ImageNotFound(f"image '{image}' is not on the Docker engine at {self.host}") from None
        except engine_faults() as exc:
            raise EngineError(f"cannot create a container from '{image}': {short_error(exc)}") from None
        finally:
            with self._lock:
                self._creating -= 1
        with self._lock:
            self._live[container.id] = container
        if role != LEASE_ROLE:
            self._ensure_lease(image)
        return container

    def _create_bounded(self, image: str, settings: dict[str, Any]) -> Any:
        """Create with a size bound on the container's writable layer where the storage driver has one; an
        engine that refuses it is asked without, once, and its containers' size is watched instead."""
        import docker

        if self._storage_opt is not False and "storage_opt" not in settings:
            try:
                container = self.client.containers.create(
                    image, storage_opt={"size": str(DEFAULT_DISK_LIMIT_BYTES)}, **settings
                )
                self._storage_opt = True
                return container
            except docker.errors.APIError as exc:
                if "storage" not in str(exc).lower() and "size" not in str(exc).lower():
                    raise
                self._storage_opt = False
        return self.client.containers.create(image, **settings)

    def remove(self, container: Any) -> bool:
        """Remove a container; never raises. False when the engine could not be asked (reaping catches it).
        Removing the session's last container on this engine ends its lease too."""
        with self._lock:
            self._live.pop(container.id, None)
            lease = self._idle_lease()
        # The lease goes beside the last container, not after it: nothing of this session is left to guard.
        beside = threading.Thread(target=self.remove, args=(lease.container,), daemon=True) if lease else None
        if beside is not None:
            beside.start()
        try:
            container.remove(force=True, v=True)
        except engine_faults() as exc:
            if not _gone(exc):
                log.debug("could not remove container %s: %s", container.id[:12], short_error(exc))
                return False
        finally:
            if beside is not None:
                beside.join()
        return True

    def _idle_lease(self) -> _Lease | None:
        """Detach the lease (under the lock) when nothing else of this session is left on the engine."""
        lease = self._lease
        if lease is None or lease.container is None or any(cid != lease.container.id for cid in self._live):
            return None
        self._lease = None
        lease.stop.set()
        return lease

    def remove_all(self, role: str | None = None) -> None:
        """Remove every container this engine started (or only those of one role, e.g. "scoring")."""
        with self._lock:
            live = [c for c in self._live.values() if role is None or (c.labels or {}).get(LABEL_ROLE) == role]
        for container in live:
            self.remove(container)

    def sweep_session(self, settle_s: float = 2.0) -> None:
        """Remove whatever this session still has on the engine, found by its session label: also a container
        whose create request a signal cut off (the engine made it, this process never learnt its id). When a
        create was under way, look again after `settle_s`, once the engine has finished it. Never raises."""
        with self._lock:
            in_flight = self._creating > 0
        for attempt in range(2 if in_flight else 1):
            if attempt:
                time.sleep(settle_s)
            with contextlib.suppress(Exception):
                mine = {"label": f"{LABEL_SESSION}={self.session_id}"}
                for entry in self.client.api.containers(all=True, filters=mine):
                    with contextlib.suppress(Exception):
                        self._remove_container_by_id(str(entry["Id"]))
                for network in self.client.api.networks(filters=mine):
                    with contextlib.suppress(Exception):
                        self.client.api.remove_network(str(network["Id"]))

    def reap_stale(self) -> list[str]:
        """Remove the labelled containers of stale sessions (see `containers_to_reap`), then their labelled
        networks (the scoring server's internal ones), judged by the same rule; never raises."""
        managed = {"label": f"{LABEL_MANAGED}=1"}
        try:
            entries = self.client.api.containers(all=True, filters=managed)
            networks = self.client.api.networks(filters=managed)
        except Exception:
            return []
        owner = Owner(socket.gethostname(), pid_namespace(), self.session_id, time.time())
        with self._lock:
            keep = frozenset(self._live)
        network_ids = {str(n.get("Id")) for n in networks}
        stale = containers_to_reap([*entries, *networks], owner, keep)
        removed = []
        for object_id in sorted(stale, key=lambda i: i in network_ids):  # containers first: a network in use stays
            remove = self.client.api.remove_network if object_id in network_ids else self._remove_container_by_id
            try:
                remove(object_id)
                removed.append(object_id)
            except Exception:
                pass
        return removed

    def _remove_container_by_id(self, container_id: str) -> None:
        self.client.api.remove_container(container_id, force=True, v=True)

    # -- the session's lease and the watch ----------------------------------------------------------------
    def _ensure_lease(self, image: str) -> None:
        """Create this session's lease when it has a container on the engine and none yet; a daemon thread renews
        it while the process lives."""
        with self._lock:
            if self._lease is not None:
                return
            lease = self._lease = _Lease()
        # Made beside the container that needed it, not before it goes on (a container without a lease is
        # reaped only by age or a provably dead owner: it is safe meanwhile); `settle` waits for it.
        self.defer(functools.partial(self._make_lease, lease, image))

    def _make_lease(self, lease: _Lease, image: str) -> None:
        try:
            made = self.create(image, role=LEASE_ROLE, name=lease_name(self.session_id, int(time.time())))
        except BaseImageError:
            with self._lock:  # containers without a lease are reaped only by age: safe, and retried next time
                self._lease = None if self._lease is lease else self._lease
            return
        with self._lock:
            lease.container = made
            unneeded = self._idle_lease() is lease  # the session's containers went while it was being made
        if unneeded:
            self.remove(made)
            return
        threading.Thread(target=self._keep_lease, args=(lease,), daemon=True, name="baseimage-lease").start()

    def _keep_lease(self, lease: _Lease) -> None:
        last = 0
        while not lease.stop.wait(LEASE_RENEW_S):
            now = int(time.time())
            if now != last:
                with contextlib.suppress(Exception):  # an engine that is down cannot be told; reaping waits
                    self.client.api.rename(lease.container.id, lease_name(self.session_id, now))
                    last = now
            with contextlib.suppress(Exception):
                self.watch_disk()

    def watch_disk(self) -> list[str]:
        """Stop this session's containers that wrote more than DEFAULT_DISK_LIMIT_BYTES, where the storage driver
        cannot bound it; the reason is kept in `stopped_for`. Returns the ids it stopped."""
        if self._storage_opt is not False:
            return []
        entries = self.client.api.containers(filters={"label": f"{LABEL_SESSION}={self.session_id}"}, size=True)
        stopped = []
        for entry in entries:
            written = label_number(entry.get("SizeRw")) or 0
            if written > DEFAULT_DISK_LIMIT_BYTES:
                self.stopped_for[entry["Id"]] = (
                    f"it wrote {int(written) >> 20} MiB to its filesystem, over the limit of "
                    f"{DEFAULT_DISK_LIMIT_BYTES >> 20} MiB; it was stopped"
                )
                self.client.api.kill(entry["Id"])
                stopped.append(entry["Id"])
        return stopped

    @contextmanager
    def container(self, image: str, *, role: str, **options: Any) -> Iterator[Any]:
        """A created container that is always removed, whatever happens inside the block."""
        box = self.create(image, role=role, **options)
        try:
            yield box
        finally:
            self.remove(box)


@dataclass
class Candidate:
    """The long-lived container of one image: started once per session, read by the probe."""

    engine: Engine
    image: str
    container: Any
    running: bool
    keepalive: list[str] = field(default_factory=list)
    start_error: str = ""  # why no keep-alive command could run, when `running` is False

    @classmethod
    def start(cls, engine: Engine, image: str) -> Candidate:
        """Create the container, then try each keep-alive command; a static-only candidate is still useful.
        A missing USER or a foreign CPU fails every command alike: then the next one is not tried."""
        fault = None
        for command in KEEPALIVE_COMMANDS:
            container = engine.create(image, role="candidate", command=command)
            try:
                started = engine.start(container)
            except BaseException:
                engine.remove(container)
                raise
            if started:
                return cls(engine, image, container, True, command)
            fault = engine.start_failure(container)
            engine.remove(container)
            if fault is not None and fault.every_command:
                break
        # Nothing runs in this image: keep a created container for the archive API. Commands that are missing
        # get the probe's usual note ("no `sleep`, no /bin/sh"); a reason of the image's own is kept.
        container = engine.create(image, role="candidate", command=KEEPALIVE_COMMANDS[0])
        reason = fault.reason if fault is not None and " is not in the image" not in fault.reason else ""
        return cls(engine, image, container, False, [], reason)

    def ended(self) -> bool:
        """True when the keep-alive, which started, has exited since (a foreign CPU's exec format error can end
        it a moment after the start): `running` is then False and `start_error` says why. An engine that cannot
        be asked tells nothing: False."""
        if not self.running:
            return False
        try:
            self.container.reload()
        except engine_faults():
            return False
        if self.container.status == "running":
            return False
        stopped = self.engine.stopped_for.get(self.container.id)  # the disk watch stopped it: say that
        self.running, self.start_error = False, stopped or exit_fault(self.container).reason
        return True

    @property
    def id(self) -> str:
        return self.container.id

    def exec(self, cmd: list[str], timeout: float = 120) -> ExecResult:
        return self.engine.exec(self.container, cmd, timeout=timeout)

    def read_file(self, path: str, **options: Any) -> FileRead:
        return self.engine.read_file(self.container, path, **options)

    def stat(self, path: str) -> PathStat:
        return self.engine.stat(self.container, path)

    def configured_env(self) -> dict[str, str]:
        """The image's configured environment (its ENV lines), as the container was created with it."""
        env = ((getattr(self.container, "attrs", None) or {}).get("Config") or {}).get("Env") or []
        return dict(str(item).partition("=")[::2] for item in env if isinstance(item, str))

    def stop(self) -> None:
        self.engine.remove(self.container)


def _gone(exc: BaseException) -> bool:
    """A removal error that means the container is (being) removed already."""
    import docker

    return isinstance(exc, docker.errors.NotFound) or "already in progress" in str(exc)


# Re-exported: the public names that moved to engine_client, engine_io and engine_reap stay importable here.
__all__ = [
    "LABEL",
    "LABEL_EXPIRES",
    "LABEL_HOST",
    "LABEL_MANAGED",
    "LABEL_PID",
    "LABEL_PIDNS",
    "LABEL_ROLE",
    "LABEL_SESSION",
    "LEASE_PREFIX",
    "LEASE_RENEW_S",
    "LEASE_ROLE",
    "LEASE_STALE_S",
    "MAX_AGE_S",
    "MAX_EXEC_OUTPUT",
    "ContainerIO",
    "ContextEndpoint",
    "ExecResult",
    "FileRead",
    "Owner",
    "PathStat",
    "StartFault",
    "api_url",
    "client_from_context",
    "client_from_environment",
    "containers_to_reap",
    "describe_host",
    "describe_size",
    "engine_error",
    "engine_faults",
    "exit_fault",
    "image_start_fault",
    "label_number",
    "lease_name",
    "lease_renewed_at",
    "log_tail",
    "one_line",
    "pid_alive",
    "pid_namespace",
    "pin_engine_ca",
    "pinned_client",
    "read_context",
    "short_error",
    "unreachable_message",
]

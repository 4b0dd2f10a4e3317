"""Container lifecycle: the only module (with scoring and registry) that talks to the Docker engine.

Every container is labelled with the session that started it, so that it can be removed at the end, on
Ctrl-C, at interpreter exit, and by the next run if this one was killed (see `reap_stale`): a live session
renews a lease on each engine it uses, and only the containers of sessions whose lease went stale are reaped.
Engine trouble is EngineError ("could not be checked"); only what is provably the image's counts against it.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import signal
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import BaseImageError, EngineError, ExecTimeout, ImageNotFound
from .results import ImageInfo

log = logging.getLogger("pytest_baseimage")

LABEL = "org.pytest-baseimage"
LABEL_MANAGED = f"{LABEL}.managed"
LABEL_PID = f"{LABEL}.pid"
LABEL_HOST = f"{LABEL}.host"
LABEL_SESSION = f"{LABEL}.session"
LABEL_EXPIRES = f"{LABEL}.expires"
LABEL_ROLE = f"{LABEL}.role"
LABEL_PIDNS = f"{LABEL}.pidns"  # the owner's PID namespace: a pid is only meaningful inside its own

# A container older than this is stale even when its owner cannot be checked (another host's engine).
MAX_AGE_S = 12 * 3600
SESSION_ID = uuid.uuid4().hex[:12]

# The session lease: a created (never started) container per session and engine, renamed every
# LEASE_RENEW_S to `LEASE_PREFIX<session>-<unix time>`. Labels are immutable, a name is not, and a rename
# is one cheap call any engine supports. A lease not renewed for LEASE_STALE_S marks its session stale.
LEASE_ROLE = "lease"
LEASE_PREFIX = "pytest-baseimage-lease-"
LEASE_RENEW_S = 20.0
LEASE_STALE_S = 120.0

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
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    truncated: bool = False  # the output passed max_output: the rest was not read
    raw_stdout: bytes = b""  # stdout as the candidate wrote it (the probe's framing counts bytes)


# What one exec may print before the rest is left unread: the candidate is untrusted, its output is held in memory.
MAX_EXEC_OUTPUT = 32 << 20


@dataclass(frozen=True)
class ContextEndpoint:
    """A docker context's engine: its URL, and its TLS settings (a docker.tls.TLSConfig) when it has any."""

    host: str
    tls: Any = None


def read_context(name: str) -> ContextEndpoint | None:
    """A named context, read from the store where the docker CLI keeps it: $DOCKER_CONFIG (or ~/.docker)
    /contexts/{meta,tls}/<sha256 of the name>/. The SDK's own reader only looks there when a config.json
    sits beside it, which `docker context create` does not write. None when there is no such context."""
    from docker.context.config import get_context_host
    from docker.errors import DockerException
    from docker.tls import TLSConfig

    store = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "contexts"
    context_id = hashlib.sha256(name.encode("utf-8")).hexdigest()
    tls_dir = store / "tls" / context_id / "docker"
    try:
        meta = json.loads((store / "meta" / context_id / "meta.json").read_text(encoding="utf-8"))
        endpoint = dict((meta.get("Endpoints") or {}).get("docker") or {})
        pem = {p.name[:2]: str(p) for p in tls_dir.iterdir()} if tls_dir.is_dir() else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise EngineError(f"cannot read Docker context '{name}': {type(exc).__name__}: {exc}") from None
    tls = None
    skip_verify = bool(endpoint.get("SkipTLSVerify"))
    if pem or skip_verify:  # ca*, cert*, key*: the file names the CLI writes; any of them (or skip) means TLS
        if ("ce" in pem) != ("ke" in pem):
            raise EngineError(f"Docker context '{name}' has a client certificate without its key, or a key alone")
        client_cert = (pem["ce"], pem["ke"]) if "ce" in pem else None
        try:
            tls = TLSConfig(client_cert=client_cert, ca_cert=pem.get("ca"), verify=not skip_verify)
        except DockerException as exc:  # e.g. a certificate file that is gone
            raise EngineError(f"cannot use Docker context '{name}': {_short(exc)}") from None
    host = str(endpoint.get("Host") or "")
    return ContextEndpoint(get_context_host(host, tls is not None) if host else "", tls)


def _client_from_environment() -> Any:
    """A Docker client configured as the docker CLI would be: DOCKER_HOST, else DOCKER_CONTEXT, else the
    config's current context (the SDK alone ignores DOCKER_CONTEXT)."""
    import docker
    from docker.context.config import get_current_context_name

    name = "" if os.environ.get("DOCKER_HOST") else os.environ.get("DOCKER_CONTEXT") or get_current_context_name()
    if not name or name == "default":
        return _pinned(lambda version: docker.from_env(timeout=120, version=version))
    return _client_from_context(name)


def _client_from_context(name: str) -> Any:
    """A client for a named docker context, with its TLS certificates when it has them."""
    import docker

    ctx = read_context(name)
    if ctx is None or not ctx.host:
        raise EngineError(f"Docker context '{name}' does not exist (see `docker context ls`)")
    return _pinned(
        lambda version: docker.DockerClient(base_url=ctx.host, tls=ctx.tls or False, timeout=120, version=version)
    )


def _pinned(make: Any) -> Any:
    """A client made with a fixed API version (so that its constructor sends no request), its engine CA pinned
    (see pin_engine_ca), and then the engine's own API version, as version="auto" would have chosen."""
    from docker.constants import MINIMUM_DOCKER_API_VERSION
    from docker.errors import DockerException

    probe = make(MINIMUM_DOCKER_API_VERSION)
    pin_engine_ca(probe.api)
    try:
        version = probe.api.version(api_version=False)["ApiVersion"]
    except Exception as exc:  # TLS refusals, refused connections, a non-engine answering: one line upstream
        raise DockerException(f"Error while fetching server API version: {exc}") from None
    finally:
        probe.close()
    client = make(version)  # a client made with a fixed version sends nothing on construction
    pin_engine_ca(client.api)
    return client


def api_url(api: Any, path: str) -> str:
    """The engine's URL for `path` at the client's API version, as the SDK builds its own (public names only:
    the SDK's request helpers are private)."""
    return f"{api.base_url}/v{api.api_version}{path}"


def pin_engine_ca(session: Any) -> None:
    """Keep the engine's own CA (a TLS context, DOCKER_CERT_PATH) in force when REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE is set: requests lets those replace a session's CA file, and the engine's certificate
    then fails to verify, though the docker CLI accepts it."""
    from requests.adapters import BaseAdapter

    ca_file = getattr(session, "verify", None)
    if not isinstance(ca_file, str):
        return  # True/False: the usual bundles, or no verification, as requests does it

    class KeepEngineCA(BaseAdapter):
        """The https adapter the SDK mounted, sent every request with the engine's CA file as `verify` (through
        requests' public adapter interface: Session.mount, BaseAdapter.send)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def send(self, request: Any, **kwargs: Any) -> Any:
            kwargs["verify"] = ca_file
            return self.inner.send(request, **kwargs)

        def close(self) -> None:
            self.inner.close()

    session.mount("https://", KeepEngineCA(session.get_adapter("https://")))


def engine_faults() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the engine (not the image) failed: the SDK's own, and the HTTP layer's
    (a daemon that died mid-request raises requests' ConnectionError, not a DockerException)."""
    import docker
    import requests

    return (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError)


def unreachable_message(where: str, error: str) -> str:
    """Why the engine cannot be used, with the fix that fits: a socket we may not open is not a missing daemon."""
    if "permission denied" in error.lower():
        socket_path = where.removeprefix("unix://") if where.startswith("unix://") else where
        return (
            f"permission denied on {socket_path}: add your user to the docker group "
            "(`sudo usermod -aG docker $USER`, then log in again) or run as root"
        )
    return (
        f"cannot reach the Docker engine at {where} ({error}); "
        "start it (e.g. `dockerd`, or `.ci/docker-up`) or set DOCKER_HOST"
    )


# The start errors that are provably the image's own: (pattern in the engine's error, what to tell the user,
# whether every command fails alike). Anything else a start can fail with (a daemon restarting, a runtime
# error, a full disk) is the engine's.
_IMAGE_START_FAULTS: tuple[tuple[re.Pattern[str], str, bool], ...] = (
    (
        re.compile(r"unable to find user ([^:\s]+): no matching entries in passwd file"),
        "the image's USER {0} does not exist in /etc/passwd",
        True,
    ),
    (
        re.compile(r"unable to find group ([^:\s]+): no matching entries in group file"),
        "the image's USER names group {0}, which does not exist in /etc/group",
        True,
    ),
    (
        re.compile(r"exec format error"),
        "the image's programs are built for another CPU (exec format error): rebuild it for linux/amd64",
        True,
    ),
    (
        re.compile(r'exec: "([^"]*)": (?:executable file not found|stat [^:]*: no such file or directory)'),
        "`{0}` is not in the image",
        False,
    ),
    (re.compile(r'exec: "([^"]*)": permission denied'), "`{0}` in the image is not executable", False),
)


@dataclass(frozen=True)
class StartFault:
    """Why the image cannot run a command: said for a user, and whether any other command would fail alike."""

    reason: str
    every_command: bool = False  # a missing USER or a foreign CPU: no other keep-alive command can help


def exit_fault(container: Any) -> StartFault:
    """Why a container's command ended (its state's error and its log's tail: newer runc logs exec errors and
    exits 1), as the image's fault when it provably is one, else as what was seen."""
    state = container.attrs.get("State") or {}
    command = " ".join((container.attrs.get("Config") or {}).get("Entrypoint") or [])
    said = f"{state.get('Error') or ''}\n{_log_tail(container)}"
    return image_start_fault(said) or StartFault(f"its command `{command}` ended (exit code {state.get('ExitCode')})")


def image_start_fault(error: str) -> StartFault | None:
    """What the image did wrong, when a start error is provably its own; None when the engine is to blame."""
    for pattern, message, every in _IMAGE_START_FAULTS:
        match = pattern.search(error)
        if match:
            return StartFault(message.format(*match.groups()), every)
    return None


def _pid_namespace() -> str:
    """This process's PID namespace ("pid:[4026531836]"), '' where /proc does not say."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _number(value: Any) -> float | None:
    """A label's number, or None when it is missing or malformed (labels are anyone's to write)."""
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def lease_name(session: str, renewed: int) -> str:
    return f"{LEASE_PREFIX}{session}-{renewed}"


def lease_renewed_at(name: str) -> float | None:
    """When a lease container (by its name) was last renewed; None for a name that is not a lease's."""
    name = name.lstrip("/")
    if not name.startswith(LEASE_PREFIX):
        return None
    return _number(name.rsplit("-", 1)[-1])


@dataclass(frozen=True)
class Owner:
    """Where the reaper runs: a pid is checked only on the same host and in the same PID namespace."""

    host: str
    pidns: str
    session: str
    now: float


def containers_to_reap(entries: list[dict[str, Any]], owner: Owner, keep: frozenset[str] = frozenset()) -> list[str]:
    """Ids of labelled containers (entries of the engine's container list) that belong to stale sessions.

    A session with a lease is stale when the lease was not renewed for LEASE_STALE_S, or when its owner runs
    on this host, in this PID namespace, and is gone. A container without a lease (an older run) is stale
    only when it is older than MAX_AGE_S, or when its owner is provably gone in the same way."""
    leases: dict[str, float] = {}
    dead: set[str] = set()
    for entry in entries:
        labels = entry.get("Labels") or {}
        if labels.get(LABEL_ROLE) != LEASE_ROLE:
            continue
        session = str(labels.get(LABEL_SESSION) or "")
        renewed = max((lease_renewed_at(n) or 0.0 for n in entry.get("Names") or []), default=0.0)
        leases[session] = max(leases.get(session, 0.0), renewed)
        if _owner_gone(labels, owner):
            dead.add(session)
    stale = {s for s, renewed in leases.items() if owner.now - renewed > LEASE_STALE_S} | dead
    out = []
    for entry in entries:
        labels = entry.get("Labels") or {}
        session = str(labels.get(LABEL_SESSION) or "")
        if entry.get("Id") in keep or (session and session == owner.session):
            continue
        if session in leases:
            if session in stale:
                out.append(entry["Id"])
            continue
        expires = _number(labels.get(LABEL_EXPIRES))
        created = _number(entry.get("Created"))
        too_old = (expires is not None and owner.now > expires) or (
            created is not None and owner.now - created > MAX_AGE_S
        )
        if too_old or _owner_gone(labels, owner):
            out.append(entry["Id"])
    return out


def _owner_gone(labels: dict[str, str], owner: Owner) -> bool:
    """The owning process is provably gone: same host, same PID namespace (both known), and no such pid."""
    pid = _number(labels.get(LABEL_PID))
    same_place = labels.get(LABEL_HOST) == owner.host and owner.pidns and labels.get(LABEL_PIDNS) == owner.pidns
    return bool(same_place) and pid is not None and pid == int(pid) and not _pid_alive(int(pid))


def describe_host(client: Any) -> str:
    """Where the engine is, as a user would write it (the SDK says http+docker://localhost for a socket)."""
    url = str(getattr(client.api, "base_url", ""))
    if url.startswith("http+docker://"):
        return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return url or "docker"


@dataclass
class _Lease:
    """This session's lease on one engine: its container (once created), and the signal that ends renewal."""

    container: Any = None
    stop: threading.Event = field(default_factory=threading.Event)


class Engine:
    """A connection to one Docker engine, and the containers this session started on it."""

    def __init__(self, client: Any = None, docker_host: str | None = None, docker_context: str | None = None) -> None:
        import docker

        try:
            if client is not None:
                self.client = client
                self.client.ping()  # a client made below has already proved the engine answers (its version)
            elif docker_context:
                self.client = _client_from_context(docker_context)
            elif docker_host:
                self.client = _pinned(lambda v: docker.DockerClient(base_url=docker_host, timeout=120, version=v))
            else:
                self.client = _client_from_environment()
        except docker.errors.DockerException as exc:
            context = docker_context or os.environ.get("DOCKER_CONTEXT")
            named = f"{docker_host} (context {docker_context})" if docker_context else docker_host
            where = named or os.environ.get("DOCKER_HOST") or (f"context {context}" if context else "")
            raise EngineError(unreachable_message(where or "unix:///var/run/docker.sock", _short(exc))) from None
        self.host = describe_host(self.client)
        self._live: dict[str, Any] = {}
        self._creating = 0  # create requests under way: one cut off by a signal may still make a container
        self._lock = threading.Lock()
        self._lease: _Lease | None = None
        self._storage_opt: bool | None = None  # None: not tried yet; False: the storage driver cannot bound size
        self.stopped_for: dict[str, str] = {}  # container id -> why the watch stopped it (e.g. disk limit)
        self._start_faults: dict[str, StartFault] = {}  # container id -> why it could not start
        _ENGINES.append(self)

    def answers(self, timeout: float = 10.0) -> bool:
        """Whether the engine still answers, within `timeout` (a hung daemon must not hold every failing stage
        for the client's 120 s): a failure seen after it stopped answering is not the image's."""
        api = self.client.api
        try:
            api.get(f"{api.base_url}/_ping", timeout=timeout).raise_for_status()
        except Exception:
            return False
        return True

    # -- images ---------------------------------------------------------------------------------------
    def image_info(self, reference: str) -> ImageInfo:
        """Inspect a local image; ImageNotFound with a one-line reason when it is not there."""
        import docker

        try:
            image = self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            raise ImageNotFound(f"image '{reference}' is not on the Docker engine at {self.host}") from None
        except engine_faults() as exc:
            raise EngineError(f"cannot inspect image '{reference}': {_short(exc)}") from None
        attrs = image.attrs
        digests = attrs.get("RepoDigests") or []
        return ImageInfo(
            reference=reference,
            image_id=image.id,
            digest=_matching_digest(reference, digests),
            size_bytes=int(attrs.get("Size") or 0),
            created=str(attrs.get("Created") or ""),
            architecture=str(attrs.get("Architecture") or ""),
            os=str(attrs.get("Os") or ""),
            variant=str(attrs.get("Variant") or ""),
            user=str((attrs.get("Config") or {}).get("User") or ""),
        )

    # -- containers -----------------------------------------------------------------------------------
    def labels(self, role: str) -> dict[str, str]:
        return {
            LABEL_MANAGED: "1",
            LABEL_PID: str(os.getpid()),
            LABEL_HOST: socket.gethostname(),
            LABEL_PIDNS: _pid_namespace(),
            LABEL_SESSION: SESSION_ID,
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
            raise EngineError(f"cannot create a container from '{image}': {_short(exc)}") from None
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

    def start(self, container: Any) -> bool:
        """Start a created container; False when the image cannot run its command (see `start_failure`).
        An engine that fails (not the image) raises EngineError."""
        try:
            container.start()
        except engine_faults() as exc:
            self._start_faults[container.id] = self._start_fault(exc)
            return False
        try:
            container.reload()
        except engine_faults() as exc:
            raise EngineError(f"the Docker engine failed after starting a container: {_short(exc)}") from None
        if container.status == "running":
            return True
        self._start_faults[container.id] = exit_fault(container)
        return False

    def _start_fault(self, exc: BaseException) -> StartFault:
        """The image's fault in a start error, or EngineError: a GPU the host cannot give is left to the caller
        (the gpu stage says so), everything else that is not provably the image's is the engine's."""
        text = str(getattr(exc, "explanation", None) or exc)
        fault = image_start_fault(text)
        if fault:
            return fault
        if "device driver" in text or "nvidia" in text.lower():
            return StartFault(text[:300])
        raise EngineError(f"the Docker engine could not start a container: {_short(exc)}") from None

    def start_failure(self, container: Any) -> StartFault | None:
        """Why `start` returned False for this container (None when it did not)."""
        return self._start_faults.get(container.id)

    def remove(self, container: Any) -> bool:
        """Remove a container; never raises. False when the engine could not be asked (reaping catches it).
        Removing the session's last container on this engine ends its lease too."""
        with self._lock:
            self._live.pop(container.id, None)
            lease = self._idle_lease()
        try:
            container.remove(force=True, v=True)
        except engine_faults() as exc:
            if not _gone(exc):
                log.debug("could not remove container %s: %s", container.id[:12], _short(exc))
                return False
        finally:
            if lease is not None:
                self.remove(lease.container)
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
                mine = {"label": f"{LABEL_SESSION}={SESSION_ID}"}
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
        owner = Owner(socket.gethostname(), _pid_namespace(), SESSION_ID, time.time())
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
        try:
            lease.container = self.create(image, role=LEASE_ROLE, name=lease_name(SESSION_ID, int(time.time())))
        except BaseImageError:
            with self._lock:  # containers without a lease are reaped only by age: safe, and retried next time
                self._lease = None if self._lease is lease else self._lease
            return
        threading.Thread(target=self._keep_lease, args=(lease,), daemon=True, name="baseimage-lease").start()

    def _keep_lease(self, lease: _Lease) -> None:
        last = 0
        while not lease.stop.wait(LEASE_RENEW_S):
            now = int(time.time())
            if now != last:
                with contextlib.suppress(Exception):  # an engine that is down cannot be told; reaping waits
                    self.client.api.rename(lease.container.id, lease_name(SESSION_ID, now))
                    last = now
            with contextlib.suppress(Exception):
                self.watch_disk()

    def watch_disk(self) -> list[str]:
        """Stop this session's containers that wrote more than DEFAULT_DISK_LIMIT_BYTES, where the storage driver
        cannot bound it; the reason is kept in `stopped_for`. Returns the ids it stopped."""
        if self._storage_opt is not False:
            return []
        entries = self.client.api.containers(filters={"label": f"{LABEL_SESSION}={SESSION_ID}"}, size=True)
        stopped = []
        for entry in entries:
            written = _number(entry.get("SizeRw")) or 0
            if written > DEFAULT_DISK_LIMIT_BYTES:
                self.stopped_for[entry["Id"]] = (
                    f"it wrote {int(written) >> 20} MiB to its filesystem, over the limit of "
                    f"{DEFAULT_DISK_LIMIT_BYTES >> 20} MiB; it was stopped"
                )
                self.client.api.kill(entry["Id"])
                stopped.append(entry["Id"])
        return stopped

    # -- inside a container -------------------------------------------------------------------------
    def exec(
        self, container: Any, cmd: list[str], *, timeout: float = 120, user: str = "", max_output: int = MAX_EXEC_OUTPUT
    ) -> ExecResult:
        """Run a command in a running container with a deadline. The output is streamed and read up to
        `max_output` bytes (stdout and stderr together). A program that cannot start gives the runtime's
        exit code (126/127) with its message; an engine that fails raises EngineError, and a deadline passed
        raises ExecTimeout (the process is left to the caller to kill: only it knows what to kill it with)."""
        deadline = time.monotonic() + timeout
        for attempt in range(2):
            box: dict[str, Any] = {}
            streams: tuple[list[bytes], list[bytes]] = ([], [])

            def run(box: dict[str, Any] = box, streams: tuple[list[bytes], list[bytes]] = streams) -> None:
                try:
                    box["result"] = _exec_capped(container.client.api, container.id, cmd, user, max_output, streams)
                except Exception as exc:  # judged in the caller's thread, below
                    box["error"] = exc

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            worker.join(max(deadline - time.monotonic(), 0.0))
            if worker.is_alive():
                raise ExecTimeout(
                    f"`{cmd[0]}` in the candidate did not finish within {timeout:.0f} s", partial=b"".join(streams[0])
                )
            if "error" not in box:
                return box["result"]
            if not _lost_framing(box["error"]):
                raise _engine_error(f"cannot run `{cmd[0]}` in the candidate", box["error"])
            if attempt:  # twice in a row: give up, as the engine's (client's) fault, never the image's
                raise EngineError(
                    f"cannot run `{cmd[0]}` in the candidate: the Docker SDK lost the exec stream's framing twice "
                    f"({_short(box['error'])}; docker-py issue 3160)"
                )
        raise AssertionError("unreachable")

    def stat(self, container: Any, path: str) -> PathStat:
        """What is at `path` (symlinks followed, by the engine, within the container), from one HEAD request
        of the archive API: nothing is read or copied."""
        api = container.client.api
        try:
            url = api_url(api, f"/containers/{container.id}/archive")
            res = api.head(url, params={"path": path}, timeout=api.timeout)
            if res.status_code == 404:  # a missing file, or a missing container? Asking costs no archive
                api.inspect_container(container.id)  # raises NotFound for a container that is gone
            elif res.status_code >= 400:  # HEAD has no body: GET says why
                res = api.get(url, params={"path": path}, stream=True, timeout=api.timeout)
            message = _error_body(res) if res.status_code >= 400 and res.status_code != 404 else ""
        except Exception as exc:
            raise _engine_error(f"cannot look at {path} in the candidate", exc) from None
        return _path_stat(path, res.status_code, res.headers, message)

    def read_file(
        self,
        container: Any,
        path: str,
        *,
        max_bytes: int = 64 << 20,
        parse: Callable[[IO[bytes]], Any] | None = None,
    ) -> FileRead:
        """Read a regular file through the archive API (no shell, no exec), following symlinks. Its size is
        known from the archive's stat header before anything is read, so a file over `max_bytes` is not read
        at all; the tar is streamed, never buffered whole. With `parse`, the file's stream is handed to it
        (bounded by `max_bytes`) and its return value is kept in `FileRead.value` instead of the bytes."""
        st = self.stat(container, path)  # a HEAD: ~1 ms, where a GET makes the engine start an archiver
        if st.link_target:  # the engine resolved the whole chain: its end is what to read
            st = self.stat(container, st.link_target)
        if st.problem:
            return FileRead(path, problem=st.problem, absent=st.absent)
        if st.kind != "file":
            return FileRead(path, problem=f"not a regular file ({st.kind})", size=st.size)
        if st.size > max_bytes:
            return FileRead(path, problem=f"too large to read: {describe_size(st.size)}", size=st.size)
        api = container.client.api
        try:
            url = api_url(api, f"/containers/{container.id}/archive")
            res = api.get(url, params={"path": st.path}, stream=True, timeout=api.timeout)
            if res.status_code >= 400:  # changed since the look: judge the answer as a look's
                st = _path_stat(st.path, res.status_code, res.headers, _error_body(res))
                return FileRead(path, problem=st.problem or "changed while read", absent=st.absent)
            return _read_archive(res, st, max_bytes, parse)
        except EngineError:
            raise
        except Exception as exc:
            raise _engine_error(f"cannot read {path} in the candidate", exc) from None

    def put_files(self, container: Any, directory: str, files: dict[str, bytes], mode: int = 0o644) -> None:
        """Copy files into a container (no host mounts): `files` maps relative names to content."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = mode
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
        try:
            copied = container.put_archive(directory, buf.getvalue())
        except engine_faults() as exc:
            raise EngineError(f"could not copy files into the container at {directory}: {_short(exc)}") from None
        if not copied:
            raise EngineError(f"could not copy files into the container at {directory}")

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


_ENGINES: list[Engine] = []


def cleanup_all() -> None:
    """Remove every container any engine of this process started (atexit, signals, session end)."""
    for engine in list(_ENGINES):
        engine.remove_all()
        engine.sweep_session()


def install_signal_handlers() -> None:
    """Turn SIGTERM into KeyboardInterrupt so that pytest's teardown, and ours, run as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, on_term)


atexit.register(cleanup_all)


def _log_tail(container: Any, max_bytes: int = 4096) -> str:
    """The end of a container's log (its last lines, then bytes), for why it ended; '' when it cannot be read."""
    try:
        data = container.logs(stdout=True, stderr=True, tail=5)
    except Exception:
        return ""
    return bytes(data or b"")[-max_bytes:].decode("utf-8", "replace")


def _gone(exc: BaseException) -> bool:
    """A removal error that means the container is (being) removed already."""
    import docker

    return isinstance(exc, docker.errors.NotFound) or "already in progress" in str(exc)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _matching_digest(reference: str, digests: list[str]) -> str:
    """The repo@sha256 digest that belongs to the reference's repository, else the first one."""
    repo = reference.split("@")[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: repo.rfind(":")]
    for digest in digests:
        if digest.split("@")[0] == repo:
            return digest
    return digests[0] if digests else ""


def _exec_capped(
    api: Any, container_id: str, cmd: list[str], user: str, max_output: int, streams: tuple[list[bytes], list[bytes]]
) -> ExecResult:
    """One exec, its output read as it streams into `streams` (so a caller that gave up can see what came)
    and left unread past max_output bytes."""
    exec_id = api.exec_create(container_id, cmd, stdout=True, stderr=True, user=user)["Id"]
    size, truncated = 0, False
    for frame in api.exec_start(exec_id, stream=True, demux=True):
        for part, sink in zip(frame, streams):
            if part:
                sink.append(part[: max(max_output - size, 0)])
                size += len(part)
        if size > max_output:
            truncated = True
            break
    code = api.exec_inspect(exec_id).get("ExitCode")
    raw = b"".join(streams[0])
    err = _decode(b"".join(streams[1]))
    return ExecResult(int(code) if code is not None else 127, _decode(raw), err, truncated, raw)


def _lost_framing(exc: BaseException) -> bool:
    """docker-py reads a payload byte as a frame header when the engine's first output arrives with the
    upgraded connection's headers (docker-py issue 3160): the command ran, only the client lost its output.
    Running it again is the known way out; it is the client's glitch, not the image's doing."""
    return isinstance(exc, ValueError) and str(exc).endswith("is not a valid stream")


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def one_line(exc: BaseException) -> str:
    """The first line of an exception, without the SDK's long HTTP preamble."""
    return _short(exc)


def _engine_error(what: str, exc: BaseException) -> BaseException:
    """An engine or transport failure as one line (EngineError); anything else is a bug and stays itself."""
    import docker
    import requests
    import urllib3

    if isinstance(exc, EngineError):
        return exc
    transport = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError)
    if isinstance(exc, (docker.errors.DockerException, *transport)):
        return EngineError(f"{what}: the Docker engine failed: {_short(exc)}")
    return exc


def describe_size(size: int) -> str:
    """A byte count as people read it: MiB from 1 MiB up, else KiB, else bytes."""
    if size >= 1 << 20:
        return f"{size / (1 << 20):.0f} MiB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.0f} KiB"
    return f"{size} bytes"


# Go's os.FileMode type bits, as the archive API's stat header carries them.
_GO_MODE_KINDS = (
    (1 << 31, "a directory"),
    (1 << 27, "a symlink"),
    (1 << 25, "a named pipe"),
    (1 << 24, "a socket"),
    (1 << 21, "a character device"),
    (1 << 26, "a block device"),
    (1 << 19, "an irregular file"),
)


@dataclass(frozen=True)
class PathStat:
    """One path as the archive API sees it: `kind` is "file" for a regular file, else what it is; `problem`
    says why it could not be looked at (absent, a symlink loop); `link_target` is where a symlink leads."""

    path: str
    kind: str = ""
    size: int = 0
    link_target: str = ""
    problem: str = ""
    absent: bool = False

    @property
    def exists(self) -> bool:
        return not self.problem


@dataclass(frozen=True)
class FileRead:
    """A file read from a container: `data` (or `value`, when a parser read it) when it could be read,
    else `problem` says why not ("absent", "too large to read: 70 MiB", "not a regular file (…)")."""

    path: str
    data: bytes | None = None
    value: Any = None
    problem: str = ""
    absent: bool = False
    size: int = 0

    @property
    def ok(self) -> bool:
        return not self.problem


def _path_stat(path: str, status: int, headers: Any, message: str) -> PathStat:
    if status == 404 and "no such container" not in message.lower():  # the path is absent, not the container
        return PathStat(path, problem="absent", absent=True)
    if status >= 400:
        if "too many links" in message:  # the engine resolves symlinks itself and gives up on a loop
            return PathStat(path, problem="a symlink loop")
        raise EngineError(f"cannot look at {path} in the candidate: the Docker engine answered {message}")
    raw = headers.get("X-Docker-Container-Path-Stat") or ""
    try:
        info = json.loads(base64.b64decode(raw))
        mode, size = int(info.get("mode") or 0), int(info.get("size") or 0)
        target = str(info.get("linkTarget") or "")
    except (ValueError, TypeError, AttributeError) as exc:
        raise EngineError(f"cannot look at {path} in the candidate: unreadable stat header ({exc})") from None
    kind = next((name for bit, name in _GO_MODE_KINDS if mode & bit), "file")
    return PathStat(path, kind, size, target if kind == "a symlink" else "")


def _error_body(res: Any) -> str:
    """The engine's one-line reason for an error answer (a few KiB at most are read)."""
    try:
        body = res.raw.read(4096)
    finally:
        res.close()
    text = body.decode("utf-8", "replace")
    with contextlib.suppress(ValueError, AttributeError):
        text = str(json.loads(text).get("message") or text)
    first = text.strip().splitlines()[:1]
    return f"{res.status_code} {first[0][:300] if first else res.reason}"


class _ChunkReader(io.RawIOBase):
    """A file-like view of an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            self._rest = next(self._chunks, b"")
            if not self._rest:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _read_archive(res: Any, st: PathStat, max_bytes: int, parse: Callable[[IO[bytes]], Any] | None) -> FileRead:
    """Stream one regular file's archive (an open GET answer) and read its single member."""
    try:
        reader = io.BufferedReader(_ChunkReader(res.iter_content(1 << 16, False)), 1 << 16)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            member = tar.next()
            if member is None or not member.isfile():
                return FileRead(st.path, problem="not a regular file", size=st.size)
            if member.size > max_bytes:  # grew since the stat
                return FileRead(st.path, problem=f"too large to read: {describe_size(member.size)}", size=member.size)
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file always has one
            if parse is not None:
                return FileRead(st.path, value=parse(handle), size=member.size)
            return FileRead(st.path, data=handle.read(max_bytes), size=member.size)
    finally:
        res.close()


def _short(exc: BaseException) -> str:
    """The first line of an exception, without the SDK's long HTTP preamble."""
    text = str(getattr(exc, "explanation", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

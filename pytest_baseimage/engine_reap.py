"""Whose a container is, and when it is stale: the labels every container gets, the session leases, the
owners that are provably gone, and which start failures are the image's own."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from .engine_client import engine_faults, short_error
from .errors import EngineError

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

# The session lease: a created (never started) container per session and engine, renamed every
# LEASE_RENEW_S to `LEASE_PREFIX<session>-<unix time>`. Labels are immutable, a name is not, and a rename
# is one cheap call any engine supports. A lease not renewed for LEASE_STALE_S marks its session stale.
LEASE_ROLE = "lease"
LEASE_PREFIX = "pytest-baseimage-lease-"
LEASE_RENEW_S = 20.0
LEASE_STALE_S = 120.0

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
    said = f"{state.get('Error') or ''}\n{log_tail(container)}"
    return image_start_fault(said) or StartFault(f"its command `{command}` ended (exit code {state.get('ExitCode')})")


def image_start_fault(error: str) -> StartFault | None:
    """What the image did wrong, when a start error is provably its own; None when the engine is to blame."""
    for pattern, message, every in _IMAGE_START_FAULTS:
        match = pattern.search(error)
        if match:
            return StartFault(message.format(*match.groups()), every)
    return None


def pid_namespace() -> str:
    """This process's PID namespace ("pid:[4026531836]"), '' where /proc does not say."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def label_number(value: Any) -> float | None:
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
    return label_number(name.rsplit("-", 1)[-1])


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
        expires = label_number(labels.get(LABEL_EXPIRES))
        created = label_number(entry.get("Created"))
        too_old = (expires is not None and owner.now > expires) or (
            created is not None and owner.now - created > MAX_AGE_S
        )
        if too_old or _owner_gone(labels, owner):
            out.append(entry["Id"])
    return out


def _owner_gone(labels: dict[str, str], owner: Owner) -> bool:
    """The owning process is provably gone: same host, same PID namespace (both known), and no such pid."""
    pid = label_number(labels.get(LABEL_PID))
    same_place = labels.get(LABEL_HOST) == owner.host and owner.pidns and labels.get(LABEL_PIDNS) == owner.pidns
    return bool(same_place) and pid is not None and pid == int(pid) and not pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(container: Any, max_bytes: int = 4096) -> str:
    """The end of a container's log (its last lines, then bytes), for why it ended; '' when it cannot be read."""
    try:
        data = container.logs(stdout=True, stderr=True, tail=5)
    except Exception:
        return ""
    return bytes(data or b"")[-max_bytes:].decode("utf-8", "replace")


class EngineStarts:
    """Starting a container, and whether a failed start is the image's fault (mixed into engine.Engine)."""

    _start_faults: dict[str, StartFault]

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
            raise EngineError(f"the Docker engine failed after starting a container: {short_error(exc)}") from None
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
        raise EngineError(f"the Docker engine could not start a container: {short_error(exc)}") from None

    def start_failure(self, container: Any) -> StartFault | None:
        """Why `start` returned False for this container (None when it did not)."""
        return self._start_faults.get(container.id)

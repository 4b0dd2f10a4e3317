"""Inside a running container: exec with a deadline and a cap on its output, and bounded reads and writes
through the archive API (no shell, no host mounts). `Engine` has these as methods (ContainerIO)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from .engine_client import api_url, engine_faults, short_error
from .errors import EngineError, ExecTimeout


@dataclass
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    truncated: bool = False  # the output passed max_output: the rest was not read
    raw_stdout: bytes = b""  # stdout as the candidate wrote it (the probe's framing counts bytes)


# What one exec may print before the rest is left unread: the candidate is untrusted, its output is held in memory.
MAX_EXEC_OUTPUT = 32 << 20


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
    return short_error(exc)


def engine_error(what: str, exc: BaseException) -> BaseException:
    """An engine or transport failure as one line (EngineError); anything else is a bug and stays itself."""
    import docker
    import requests
    import urllib3

    if isinstance(exc, EngineError):
        return exc
    transport = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError)
    if isinstance(exc, (docker.errors.DockerException, *transport)):
        return EngineError(f"{what}: the Docker engine failed: {short_error(exc)}")
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


class ContainerIO:
    """The engine's methods that work inside a container (mixed into engine.Engine)."""

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
                raise engine_error(f"cannot run `{cmd[0]}` in the candidate", box["error"])
            if attempt:  # twice in a row: give up, as the engine's (client's) fault, never the image's
                raise EngineError(
                    f"cannot run `{cmd[0]}` in the candidate: the Docker SDK lost the exec stream's framing twice "
                    f"({short_error(box['error'])}; docker-py issue 3160)"
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
            raise engine_error(f"cannot look at {path} in the candidate", exc) from None
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
            raise engine_error(f"cannot read {path} in the candidate", exc) from None

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
            raise EngineError(f"could not copy files into the container at {directory}: {short_error(exc)}") from None
        if not copied:
            raise EngineError(f"could not copy files into the container at {directory}")

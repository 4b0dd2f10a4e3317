"""Fact gathering: what to ask a candidate, in as few `docker exec` calls as possible, and the parsers.

Plain files (os-release, the dpkg status database, dpkg's file lists) are read through the archive API, so
they need no shell. Everything else comes from ONE exec of a POSIX shell script, which runs `conda` and then
ONE Python process; an image without a shell gets its Python found on its configured PATH through the archive
API and exec'd directly. That Python program is written for Python 2.7 and 3.5+ alike, because 2020-era images
run 3.5.

The script's output is framed by length, never by line position: each section is captured whole and written
as `<marker><name> <byte length>\n<bytes>`, so a section that ends without a newline (conda >= 24.11's
`info --json`), binary bytes, or text that looks like a marker cannot move a boundary.
"""

from __future__ import annotations

import contextlib
import json
import math
import posixpath
import re
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from . import incontainer
from .engine import FileRead, PathStat, describe_size
from .errors import EngineError, ExecTimeout
from .facts import CondaInfo, Facts, ImportResult, OsRelease, PythonInfo, missing_reason
from .probe_parse import (
    Record,
    last_line,
    last_marked_json,
    normalise_dists,
    parse_conda_info,
    parse_conda_version,
    parse_dpkg_status,
    parse_os_release,
    python_answer,
    python_facts,
    read_records,
    sections_of,
    split_sections,
    unquote,
)

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
DPKG_STATUS_PATH = "/var/lib/dpkg/status"
DPKG_INFO_DIR = "/var/lib/dpkg/info"
# os-release is a few hundred bytes; more than this is not an os-release file.
OS_RELEASE_MAX = 64 << 10
# A 120,000-package status database is about 100 MB: this bound is never reached by a real image.
DPKG_STATUS_MAX = 512 << 20
DPKG_LIST_MAX = 16 << 20
# What one section of the probe (one command's output) may print; the rest is cut in the candidate.
SECTION_MAX = 16 << 20
PROBE_TIMEOUT_S = 30.0
KILL_GRACE_S = 5  # after the deadline's SIGTERM, `timeout -k` sends SIGKILL this much later
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONDA_CANDIDATES = (
    "/opt/conda/bin/conda",
    "/opt/miniconda/bin/conda",
    "/opt/miniconda3/bin/conda",
    "/usr/local/bin/conda",
    "/root/miniconda3/bin/conda",
)
# Exit codes of `timeout`: 124 when the command ended on SIGTERM, 128+9 when it had to be killed.
TIMEOUT_CODES = ("124", "137")
# How much later than the probe deadline and its grace the host gives up on the exec.
HOST_SLACK_S = 2.0

# The Python program (incontainer/probe_python.py), run in the candidate's own interpreter.
PY_PROGRAM = incontainer.source("probe_python.py")

# The shell script that runs the probe in one exec (incontainer/probe.sh, which describes its arguments).
SHELL_SCRIPT = incontainer.source("probe.sh").replace("CONDA_CANDIDATES", " ".join(CONDA_CANDIDATES))

# Ends every process of the candidate but its pid 1 (the keep-alive) after a host-side deadline: with a shell,
# or with the image's Python when there is none. kill(-1) spares the caller and pid 1.
KILL_ALL_SH = ["/bin/sh", "-c", "kill -9 -1"]
KILL_ALL_PY = incontainer.source("kill_all.py")  # the kill(-1) the host runs past its deadline, without a shell


class Runner(Protocol):
    """What the probe needs of a candidate: the engine's Candidate has these."""

    running: bool

    def exec(self, cmd: list[str], timeout: float = ...) -> Any: ...

    def read_file(self, path: str, **options: Any) -> FileRead: ...

    def stat(self, path: str) -> PathStat: ...

    def configured_env(self) -> dict[str, str]: ...


@dataclass
class ProbeRequest:
    """What the stages want to know beyond the basics (composition.Composition.probe_request gathers it)."""

    imports: list[str] = field(default_factory=list)
    apt: list[str] = field(default_factory=list)  # packages whose files must really be there


# -- gathering ------------------------------------------------------------------------------------------
def gather(candidate: Runner, request: ProbeRequest | None = None, *, timeout_s: float = PROBE_TIMEOUT_S) -> Facts:
    """All facts of one candidate: archive reads (os-release, dpkg, file lists) and at most one exec (each
    command in it is killed after `timeout_s`), side by side: the reads need no exec and go in a thread of
    their own. A probe that times out or floods is recorded in `Facts.probe_error` (the image's fault), never
    raised; only the engine failing raises (EngineError)."""
    request = request or ProbeRequest()
    static_notes: dict[str, str] = {}
    notes: dict[str, str] = {}
    lists: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        reading = pool.submit(_static_facts, candidate, static_notes)
        if not candidate.running:
            notes["shell"] = "no process could start in the image (no `sleep`, no /bin/sh)"
            for key in ("conda", "python"):
                notes[key] = "cannot run anything in the image: it has no shell"
            found: dict[str, Any] = {}
        else:
            run = Probe(candidate, request, timeout_s, notes)
            found, lists = run.run(), run.lists
        static = reading.result()
    apt = _check_apt_files(candidate, request.apt, static["dpkg"], lists)
    return Facts(**static, **apt, **found, notes={**static_notes, **notes})


def _static_facts(candidate: Runner, notes: dict[str, str]) -> dict[str, Any]:
    """What the archive API tells without running anything in the image."""
    return {"os": _read_os_release(candidate, notes), "dpkg": _read_dpkg(candidate, notes)}


def _read_os_release(candidate: Runner, notes: dict[str, str]) -> OsRelease | None:
    """os-release(5): /etc/os-release wins when it exists; /usr/lib/os-release is read only when it is
    absent. One that exists but cannot be read (too large, a loop, a device) is the answer: a failure."""
    for path in OS_RELEASE_PATHS:
        read = candidate.read_file(path, max_bytes=OS_RELEASE_MAX)
        if read.ok:
            return parse_os_release((read.data or b"").decode("utf-8", "replace"))
        if not read.absent:
            limit = f" (the limit is {describe_size(OS_RELEASE_MAX)})" if read.size > OS_RELEASE_MAX else ""
            notes["os"] = f"{path} cannot be read: {read.problem}{limit}"
            return None
    notes["os"] = "no /etc/os-release or /usr/lib/os-release in the image"
    return None


def _read_dpkg(candidate: Runner, notes: dict[str, str]) -> dict[str, str] | None:
    """The status database, parsed as it streams."""

    def parse(handle: IO[bytes]) -> dict[str, str]:
        return parse_dpkg_status(line.decode("utf-8", "replace") for line in iter(handle.readline, b""))

    read = candidate.read_file(DPKG_STATUS_PATH, max_bytes=DPKG_STATUS_MAX, parse=parse)
    if read.ok:
        return read.value
    if read.absent:
        notes["dpkg"] = f"no dpkg database at {DPKG_STATUS_PATH}"
    else:
        limit = f" (the limit is {describe_size(DPKG_STATUS_MAX)})" if read.size > DPKG_STATUS_MAX else ""
        notes["dpkg"] = f"{DPKG_STATUS_PATH} cannot be read: {read.problem}{limit}"
    return None


# -- apt files really there ------------------------------------------------------------------------------
_MAIN_DIRS = ("/usr/lib/", "/lib/", "/usr/lib64/", "/lib64/", "/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/")
FILES_PER_PACKAGE = 3


def main_files(listing: str, limit: int = FILES_PER_PACKAGE) -> list[str]:
    """From a dpkg .list, the files whose absence breaks the package: shared libraries first, then
    programs; directories (paths that other entries live under) and docs are skipped."""
    paths = [line.strip() for line in listing.splitlines() if line.strip().startswith("/")]
    dirs = {posixpath.dirname(path) for path in paths}
    candidates = [p for p in paths if p not in dirs and p.startswith(_MAIN_DIRS) and "/doc/" not in p]
    libs = [p for p in candidates if re.search(r"\.so(\.\d+)*$", p)]
    programs = [p for p in candidates if re.match(r"^/(usr/)?s?bin/[^/]+$", p)]
    return (libs + programs)[:limit]


_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.:-]*")


def _check_apt_files(
    candidate: Runner, packages: list[str], dpkg: dict[str, str] | None, lists: dict[str, str]
) -> dict[str, Any]:
    """For each required package dpkg lists, look that its main files are there: through the archive API
    (HEAD requests, a few at a time), so the image cannot answer for itself. Which files a package has comes
    from its dpkg file list, image data either way: as the probe's shell printed it (`lists`), else read
    through the archive API (an archive GET costs the engine an archiver process: ~20 times a look)."""
    listed = [p for p in dict.fromkeys(packages) if dpkg is not None and p in dpkg and "(provided by" not in dpkg[p]]
    with ThreadPoolExecutor(max_workers=8) as pool:
        unread = [p for p in listed if p not in lists]
        files = dict(zip(unread, pool.map(lambda p: _list_files(candidate, p), unread)))
        files.update({p: main_files(lists[p]) for p in listed if p in lists})
        wanted = sorted({path for paths in files.values() for path in paths or ()})
        present = dict(zip(wanted, pool.map(lambda path: _present(candidate, path), wanted)))
    missing: dict[str, str] = {}
    for package in listed:
        paths = files[package]
        if paths is None:
            missing[package] = f"{DPKG_INFO_DIR}/{package}.list"
        elif gone := next((path for path in paths if not present[path]), None):
            missing[package] = gone
    return {"apt_missing": missing, "apt_checked": {p: tuple(files[p] or ()) for p in listed}}


def _list_files(candidate: Runner, package: str) -> list[str] | None:
    """The main files of a package from its dpkg file list, read through the archive API; None when it
    has no list."""
    for name in (package, f"{package}:amd64"):  # a look (HEAD) is ~20 times cheaper than a read (GET)
        path = f"{DPKG_INFO_DIR}/{name}.list"
        if candidate.stat(path).exists:
            read = candidate.read_file(path, max_bytes=DPKG_LIST_MAX)
            return main_files((read.data or b"").decode("utf-8", "replace")) if read.ok else None
    return None


def _present(candidate: Runner, path: str) -> bool:
    st = candidate.stat(path)
    if st.exists and st.link_target:
        st = candidate.stat(st.link_target)
    return st.exists


# -- the exec -------------------------------------------------------------------------------------------
class Probe:
    """One candidate's exec: the shell script, or the image's Python run directly when there is no shell."""

    def __init__(self, candidate: Runner, request: ProbeRequest, timeout_s: float, notes: dict[str, str]) -> None:
        self.candidate = candidate
        self.request = request
        self.timeout_s = float(timeout_s)
        self.notes = notes
        self.uid = ""  # from the Python program: the user an image without a shell runs as
        self.packages = [name for name in dict.fromkeys(request.apt) if _PACKAGE_NAME.fullmatch(name)]
        self.lists: dict[str, str] = {}  # package -> its dpkg file list, as the shell printed it
        self.marker = f"@@{uuid.uuid4().hex}:"
        self.payload = json.dumps({"imports": request.imports, "marker": self.marker})

    def run(self) -> dict[str, Any]:
        """The exec's facts (Facts fields; notes go to the shared notes): through the shell when it starts,
        else, when the image has no /bin/sh, by running its Python and conda directly."""
        found = self.with_shell()
        if "has_shell" not in found and not self.candidate.stat("/bin/sh").exists:
            self.notes.clear()
            return self.without_shell()
        return found

    def with_shell(self) -> dict[str, Any]:
        deadline = self._host_deadline()
        cmd = ["/bin/sh", "-c", SHELL_SCRIPT, "sh", self.marker, PY_PROGRAM, self.payload]
        cmd += [f"{self.timeout_s:g}", str(KILL_GRACE_S), str(SECTION_MAX + 1), " ".join(self.packages)]
        cmd += [str(math.ceil(self.timeout_s))]  # whole seconds, for the shell's arithmetic on what is left
        raw, error, stderr = self._run(cmd, deadline, KILL_ALL_SH)
        records = read_records(raw, self.marker.encode())
        sections = sections_of(records)
        if "user" not in sections:
            reason = (stderr or raw.decode("utf-8", "replace")).strip().splitlines()
            text = f"/bin/sh could not run the probe ({reason[0][:200]})" if reason else "/bin/sh gave no answer"
            self.notes["shell"] = error or text
            for key in ("conda", "python"):
                self.notes.setdefault(key, f"cannot look for {key}: {error or text}")
            return {"running": True, "probe_error": error}
        error = error or self._section_error(sections)
        for i, package in enumerate(self.packages):
            if f"list_{i}" in sections and sections[f"list_{i}"].complete:
                self.lists[package] = sections[f"list_{i}"].text
        conda = self._conda(sections, error)
        python, pip, imports = self._python(sections, error)
        return dict(
            has_shell=True,
            running=True,
            user=sections["user"].text.strip(),
            conda=conda,
            python=python,
            pip=pip,
            imports=imports,
            probe_error=error,
        )

    def _host_deadline(self) -> float:
        """The whole probe gets the probe's deadline: inside the candidate its commands share it (each gets what
        is left, through the image's `timeout -k`), so the host's deadline, the grace and a little slack later,
        only catches what slips through, or is the only one where the image has no `timeout` (then the host
        kills every process in the candidate). Asking nothing beforehand keeps the probe one exec long."""
        return self.timeout_s + KILL_GRACE_S + HOST_SLACK_S

    def without_shell(self) -> dict[str, Any]:
        """No /bin/sh: find python3/python and conda on the image's configured PATH (conda also in its usual
        install locations) by looking through the archive API, and exec each directly: the Python program,
        and `conda --version` (one exec more, only for images without a shell)."""
        self.notes["shell"] = "no /bin/sh in the image"
        search = [d for d in (self.candidate.configured_env().get("PATH") or DEFAULT_PATH).split(":") if d]
        exe = self._find([posixpath.join(d, name) for name in ("python3", "python") for d in search])
        kill = [exe, "-c", KILL_ALL_PY] if exe else []
        conda, error = self._conda_direct(
            self._find([posixpath.join(d, "conda") for d in search], CONDA_CANDIDATES), kill
        )
        if not exe:
            self.notes["python"] = f"no `python3` or `python` on the image's PATH ({':'.join(search)[:200]})"
            return {"running": True, "conda": conda, "probe_error": error}
        raw, py_error, stderr = self._run(
            [exe, "-c", PY_PROGRAM, self.payload], self.timeout_s + KILL_GRACE_S, kill, exe
        )
        sections = {"python_exe": Record("python_exe", exe.encode()), "python": Record("python", raw + stderr.encode())}
        python, pip, imports = self._python(sections, py_error)
        return dict(
            running=True,
            user=self.uid,
            conda=conda,
            python=python,
            pip=pip,
            imports=imports,
            probe_error=error or py_error,
        )

    def _find(self, *paths: Iterable[str]) -> str:
        """The first of these paths that is a regular file (after symlinks), looked at in order."""
        for path in (p for group in paths for p in group):
            if self._runnable(posixpath.dirname(path), posixpath.basename(path)):
                return path
        return ""

    def _conda_direct(self, path: str, kill: list[str]) -> tuple[CondaInfo | None, str]:
        """`conda --version` exec'd directly (its shebang needs no shell); the probe error if it failed."""
        if not path:
            self.notes["conda"] = "no `conda` on the image's PATH or in the usual install locations"
            return None, ""
        raw, error, stderr = self._run([path, "--version"], self.timeout_s + KILL_GRACE_S, kill, f"{path} --version")
        text = raw.decode("utf-8", "replace") + "\n" + stderr
        version = parse_conda_version(text)
        said = f"`conda --version` said: {text.strip()[:300]!r}"
        return CondaInfo(version=version, executable=path, error="" if version else error or said), error

    def _runnable(self, directory: str, name: str) -> str:
        path = posixpath.join(directory, name)
        st = self.candidate.stat(path)
        if st.exists and st.link_target:
            st = self.candidate.stat(st.link_target)
        return path if st.exists and st.kind == "file" else ""

    def _run(self, cmd: list[str], deadline: float, kill: list[str], what: str = "") -> tuple[bytes, str, str]:
        """The exec's stdout, the probe error (a host-side timeout or a flood), and its stderr."""
        try:
            result = self.candidate.exec(cmd, timeout=deadline)
        except ExecTimeout as exc:
            self._kill(kill)
            running = [r.text for r in read_records(exc.partial, self.marker.encode()) if r.name == "run"]
            doing = running[-1] if running else what or cmd[0]
            return exc.partial, f"timed out after {self.timeout_s:g} s running `{_short_cmd(doing)}`", ""
        raw = getattr(result, "raw_stdout", b"") or str(result.stdout).encode("utf-8", "surrogateescape")
        if getattr(result, "truncated", False):
            self._kill(kill)
            running = [r.text for r in read_records(raw, self.marker.encode()) if r.name == "run"]
            doing = _short_cmd(running[-1] if running else what or cmd[0])
            return raw, f"printed more than {describe_size(SECTION_MAX)} running `{doing}`; the rest was not read", ""
        return raw, "", str(result.stderr or "")

    def _kill(self, cmd: list[str]) -> None:
        """Best effort: the container is removed at the end anyway; this only stops it burning CPU now."""
        if not cmd:
            return
        with contextlib.suppress(EngineError):
            self.candidate.exec(cmd, timeout=10)

    def _section_error(self, sections: dict[str, Record]) -> str:
        """A command the candidate's `timeout` stopped, or a section the candidate's `head` cut."""
        timed = bool(sections.get("timeout") and sections["timeout"].data)
        for name, what in (("conda_version", "--version"), ("conda_info", "info --json"), ("python", "")):
            record = sections.get(name)
            if record is None:
                continue
            exe = sections.get("python_exe" if name == "python" else "conda_exe")
            doing = _short_cmd(f"{exe.text if exe else name} {what or '-c <probe>'}")
            rc = sections.get(f"{name}_rc")
            if timed and rc is not None and rc.text.strip() in TIMEOUT_CODES:
                return f"timed out after {self.timeout_s:g} s running `{doing}`"
            if len(record.data) > SECTION_MAX:  # the cap in the candidate cut it
                return f"printed more than {describe_size(SECTION_MAX)} running `{doing}`; the rest was not read"
        return ""

    def _conda(self, sections: dict[str, Record], error: str) -> CondaInfo | None:
        exe = sections["conda_exe"].text.strip() if "conda_exe" in sections else ""
        if not exe:
            if "conda_exe" in sections:
                self.notes["conda"] = "no `conda` on PATH or in the usual install locations"
            return None
        raw_version = sections["conda_version"].text if "conda_version" in sections else ""
        info = parse_conda_info(sections["conda_info"].text) if "conda_info" in sections else {}
        version = parse_conda_version(raw_version) or str(info.get("conda_version", ""))
        if not version and error:
            return CondaInfo(executable=exe, info=info, error=error)
        reason = f"`conda --version` said: {raw_version.strip()[:300]!r}" if raw_version else (error or "no answer")
        return CondaInfo(version=version, executable=exe, info=info, error="" if version else reason)

    def _python(
        self, sections: dict[str, Record], error: str
    ) -> tuple[PythonInfo | None, dict[str, str], dict[str, ImportResult]]:
        exe = sections["python_exe"].text.strip() if "python_exe" in sections else ""
        if not exe:
            if "python_exe" in sections:
                self.notes["python"] = "no `python3` or `python` on PATH"
            return None, {}, {}
        section = sections["python"].data if "python" in sections else b""
        data, problem = python_answer(section, self.marker.encode())
        if data is None:
            if error:
                self.notes["python"] = missing_reason("python", error)
                return None, {}, {}
            output = last_line(section.decode("utf-8", "replace"))
            if problem != "no answer":
                self.notes["python"] = f"{exe} gave a malformed answer to the probe: {problem}"
            else:
                self.notes["python"] = f"{exe} did not run the probe: {output[:300] or 'no output'}"
            return PythonInfo(executable=exe), {}, {}
        python, pip, imports, problems = python_facts(data, exe)
        if problems:
            self.notes["python"] = f"{exe} answered the probe with malformed facts: {'; '.join(problems)[:300]}"
            python = PythonInfo(executable=python.executable, implementation=python.implementation)
        uid = data.get("uid")
        self.uid = str(uid) if isinstance(uid, int) else ""
        return python, pip, imports


def _short_cmd(text: str) -> str:
    """A command as a stage names it: the probe program itself is not worth printing."""
    text = text.replace(PY_PROGRAM, "<probe>")
    words = text.split(" -c ", 1)
    return (words[0] + " -c <probe>" if len(words) > 1 else text)[:200]


# Re-exported: the parsers' old home, where the live stages and the tests read them.
__all__ = [
    "Probe",
    "ProbeRequest",
    "Record",
    "gather",
    "last_line",
    "last_marked_json",
    "main_files",
    "normalise_dists",
    "parse_conda_info",
    "parse_conda_version",
    "parse_dpkg_status",
    "parse_os_release",
    "python_answer",
    "python_facts",
    "read_records",
    "sections_of",
    "split_sections",
    "unquote",
]

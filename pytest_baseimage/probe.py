"""Fact gathering: what to ask a candidate, in as few `docker exec` calls as possible, and the parsers.

Plain files (os-release, the dpkg status database) are read through the archive API, so they need no
shell. Everything else comes from ONE exec of a POSIX shell script, which runs `conda` and then ONE Python
process. That Python program is written for Python 2.7 and 3.5+ alike, because 2020-era images run 3.5.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from packaging.utils import canonicalize_name

from .engine import MAX_EXEC_OUTPUT
from .errors import EngineError
from .facts import CondaInfo, Facts, ImportResult, OsRelease, PythonInfo

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
DPKG_STATUS_PATH = "/var/lib/dpkg/status"
PROBE_TIMEOUT_S = 180.0
CONDA_CANDIDATES = (
    "/opt/conda/bin/conda",
    "/opt/miniconda/bin/conda",
    "/opt/miniconda3/bin/conda",
    "/usr/local/bin/conda",
    "/root/miniconda3/bin/conda",
)

# Runs in the candidate's Python: keep it compatible with Python 2.7 and 3.5 (no f-strings, no annotations).
PY_PROGRAM = r"""
import sys, os, json, traceback, platform
req = json.loads(sys.argv[1])
out = {"version": "%d.%d.%d" % tuple(sys.version_info[:3]), "executable": sys.executable,
       "implementation": platform.python_implementation(), "dists": {}, "imports": {}, "extra": {}}

def meta(path):
    name = version = None
    try:
        with open(path) as fh:
            for line in fh:
                if not line.strip():
                    break
                if line.startswith("Name:") and name is None:
                    name = line[5:].strip()
                elif line.startswith("Version:") and version is None:
                    version = line[8:].strip()
    except Exception:
        pass
    return name, version

for entry in sys.path:
    if not entry or not os.path.isdir(entry):
        continue
    try:
        names = sorted(os.listdir(entry))
    except Exception:
        continue
    for n in names:
        p = os.path.join(entry, n)
        if n.endswith(".dist-info"):
            p = os.path.join(p, "METADATA")
        elif n.endswith(".egg-info"):
            if os.path.isdir(p):
                p = os.path.join(p, "PKG-INFO")
        else:
            continue
        name, version = meta(p)
        if name and version and name not in out["dists"]:
            out["dists"][name] = version

for mod in req.get("imports", []):
    try:
        __import__(mod)
        out["imports"][mod] = {"ok": True}
    except BaseException:
        out["imports"][mod] = {"ok": False, "traceback": traceback.format_exc()[-6000:]}

for key, code in sorted(req.get("extensions", {}).items()):
    scope = {"__name__": "probe_" + key}
    try:
        exec(code, scope)
        out["extra"][key] = scope.get("result")
    except BaseException:
        out["extra"][key] = {"error": traceback.format_exc()[-6000:]}

sys.stdout.write("\n" + req["marker"] + "json\n" + json.dumps(out) + "\n")
sys.stdout.flush()
"""

SHELL_SCRIPT = r"""
M="$1"
T=""
if command -v timeout >/dev/null 2>&1; then T="timeout 120"; fi
echo "${M}user"; id -u 2>/dev/null || echo "?"
CONDA=""
if command -v conda >/dev/null 2>&1; then CONDA=$(command -v conda); else
  for c in CONDA_CANDIDATES; do if [ -x "$c" ]; then CONDA="$c"; break; fi; done
fi
echo "${M}conda_exe"; echo "$CONDA"
if [ -n "$CONDA" ]; then
  echo "${M}conda_version"; $T "$CONDA" --version 2>&1
  echo "${M}conda_info"; $T "$CONDA" info --json 2>/dev/null
fi
PY=""
for c in python3 python; do if command -v "$c" >/dev/null 2>&1; then PY=$(command -v "$c"); break; fi; done
echo "${M}python_exe"; echo "$PY"
if [ -n "$PY" ]; then echo "${M}python"; $T "$PY" -c "$2" "$3" 2>&1; echo "${M}python_rc"; echo "$?"; fi
echo "${M}end"
""".replace("CONDA_CANDIDATES", " ".join(CONDA_CANDIDATES))


# Extension probes: name -> function(profile) returning Python source that sets `result`, or None when the
# profile does not need it. Live stages (e.g. gpu) register here so their facts come in the same exec.
EXTENSIONS: dict[str, Callable[[Any], str | None]] = {}


class Runner(Protocol):
    """What the probe needs of a candidate: the engine's Candidate has these."""

    running: bool

    def exec(self, cmd: list[str], timeout: float = ...) -> Any: ...

    def read_file(self, path: str) -> bytes | None: ...


@dataclass
class ProbeRequest:
    """What the profile wants to know beyond the basics."""

    imports: list[str] = field(default_factory=list)
    extensions: dict[str, str] = field(default_factory=dict)  # name -> Python source that sets `result`


# -- parsers (pure) -------------------------------------------------------------------------------------
def parse_os_release(text: str) -> OsRelease:
    """Parse os-release(5): KEY=value lines, values optionally quoted with shell rules."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
            value = parts[0] if parts else ""
        except ValueError:
            value = value.strip("\"'")
        values[key.strip()] = value
    return OsRelease(
        id=values.get("ID", "").lower(),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", ""),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        codename=values.get("VERSION_CODENAME", "") or values.get("UBUNTU_CODENAME", ""),
    )


_CONDA_VERSION = re.compile(r"^conda\s+(\d+(?:\.\d+)*(?:[.\-+]?\w+)*)\s*$", re.MULTILINE)


def parse_conda_version(text: str) -> str:
    """`conda --version` prints `conda 4.5.11` (to stderr before 4.6, stdout after); '' if not found."""
    match = _CONDA_VERSION.search(text)
    return match.group(1) if match else ""


def parse_conda_info(text: str) -> dict[str, Any]:
    """`conda info --json` may print warnings before the object: take the first JSON object found."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Installed packages from /var/lib/dpkg/status, and the names they provide.

    A provided name (Debian 13 and Ubuntu 24.04 renamed libcurl4 to libcurl4t64, which `Provides: libcurl4`)
    counts as installed, as it does for apt, with the provider named in its version text.
    """
    packages: dict[str, str] = {}
    provided: dict[str, str] = {}
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        name, status = fields.get("Package"), fields.get("Status", "")
        if not name or status.split()[-1:] != ["installed"]:
            continue
        version = fields.get("Version", "")
        packages[name] = version
        for entry in filter(None, (part.strip() for part in fields.get("Provides", "").split(","))):
            virtual, _, rest = entry.partition(" ")
            pinned = rest.strip("() ").lstrip("= ").strip()
            provided.setdefault(virtual.split(":")[0], f"{pinned or version} (provided by {name})")
    for virtual, version in provided.items():
        packages.setdefault(virtual, version)
    return packages


def normalise_dists(dists: dict[str, str]) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in dists.items()}


def split_sections(output: str, marker: str) -> dict[str, str]:
    """Cut the shell script's output at its marker lines; the marker is random, so output can't forge one."""
    sections: dict[str, str] = {}
    current = None
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith(marker):
            if current is not None:
                sections[current] = "\n".join(lines)
            current, lines = line[len(marker) :].strip(), []
        else:
            lines.append(line)
    if current is not None:
        sections[current] = "\n".join(lines)
    return sections


def last_marked_json(stdout: str, marker: str) -> dict[str, Any] | None:
    """The last complete line of `marker` + a JSON object in a candidate's output; None when there is none
    (killed before its first line, or garbled). A line cut by a kill is skipped for the one before it."""
    for line in reversed(stdout.splitlines()):
        if not line.startswith(marker):
            continue
        try:
            data = json.loads(line[len(marker) :])
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def last_line(traceback_text: str) -> str:
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# -- gathering ------------------------------------------------------------------------------------------
def gather(candidate: Runner, request: ProbeRequest | None = None) -> Facts:
    """All facts of one candidate: two archive reads and at most one exec."""
    request = request or ProbeRequest()
    notes: dict[str, str] = {}
    os_release = _read_os_release(candidate, notes)
    dpkg_text = candidate.read_file(DPKG_STATUS_PATH)
    dpkg = parse_dpkg_status(dpkg_text.decode("utf-8", "replace")) if dpkg_text is not None else None
    if dpkg is None:
        notes["dpkg"] = f"no dpkg database at {DPKG_STATUS_PATH}"
    if not candidate.running:
        notes.setdefault("shell", "no process could start in the image (no `sleep`, no /bin/sh)")
        for key in ("conda", "python"):
            notes[key] = "cannot run anything in the image: it has no shell"
        return Facts(os=os_release, dpkg=dpkg, notes=notes)
    return _exec_facts(candidate, request, os_release, dpkg, notes)


def _read_os_release(candidate: Runner, notes: dict[str, str]) -> OsRelease | None:
    for path in OS_RELEASE_PATHS:
        data = candidate.read_file(path)
        if data is not None:
            return parse_os_release(data.decode("utf-8", "replace"))
    notes["os"] = "no /etc/os-release or /usr/lib/os-release in the image"
    return None


def _exec_facts(
    candidate: Runner,
    request: ProbeRequest,
    os_release: OsRelease | None,
    dpkg: dict[str, str] | None,
    notes: dict[str, str],
) -> Facts:
    marker = f"@@{uuid.uuid4().hex}:"
    payload = json.dumps({"imports": request.imports, "extensions": request.extensions, "marker": marker})
    result = candidate.exec(["/bin/sh", "-c", SHELL_SCRIPT, "sh", marker, PY_PROGRAM, payload], timeout=PROBE_TIMEOUT_S)
    if getattr(result, "truncated", False):
        raise EngineError(
            f"the probe's exec printed more than {MAX_EXEC_OUTPUT >> 20} MiB (something in the image floods "
            "its output, e.g. a sitecustomize or .pth file); the rest was not read"
        )
    sections = split_sections(result.stdout, marker)
    if "end" not in sections and "user" not in sections:
        reason = (result.stderr or result.stdout).strip().splitlines()
        notes["shell"] = "no /bin/sh in the image" + (f" ({reason[0][:200]})" if reason else "")
        notes.setdefault("conda", "cannot look for conda: the image has no shell")
        notes.setdefault("python", "cannot look for python: the image has no shell")
        return Facts(os=os_release, dpkg=dpkg, running=True, notes=notes)
    conda = _conda_from(sections, notes)
    python, pip, imports, extra = _python_from(sections, marker, request, notes)
    return Facts(
        os=os_release,
        has_shell=True,
        running=True,
        user=sections.get("user", "").strip(),
        conda=conda,
        python=python,
        dpkg=dpkg,
        pip=pip,
        imports=imports,
        extra=extra,
        notes=notes,
    )


def _conda_from(sections: dict[str, str], notes: dict[str, str]) -> CondaInfo | None:
    exe = sections.get("conda_exe", "").strip()
    if not exe:
        notes["conda"] = "no `conda` on PATH or in the usual install locations"
        return None
    raw_version = sections.get("conda_version", "")
    info = parse_conda_info(sections.get("conda_info", ""))
    version = parse_conda_version(raw_version) or str(info.get("conda_version", ""))
    error = "" if version else f"`conda --version` said: {raw_version.strip()[:300]!r}"
    return CondaInfo(version=version, executable=exe, info=info, error=error)


def _python_from(
    sections: dict[str, str], marker: str, request: ProbeRequest, notes: dict[str, str]
) -> tuple[PythonInfo | None, dict[str, str], dict[str, ImportResult], dict[str, Any]]:
    exe = sections.get("python_exe", "").strip()
    if not exe:
        notes["python"] = "no `python3` or `python` on PATH"
        return None, {}, {}, {}
    answer = sections.get("json", "")
    try:
        data = json.loads(answer)
    except ValueError:
        output = sections.get("python", "").strip()
        notes["python"] = f"{exe} did not run the probe: {last_line(output)[:300] or 'no output'}"
        return PythonInfo(executable=exe), {}, {}, {}
    python = PythonInfo(
        executable=str(data.get("executable") or exe),
        version=str(data.get("version", "")),
        implementation=str(data.get("implementation", "")),
    )
    imports = {
        name: ImportResult(
            module=name,
            ok=bool(value.get("ok")),
            error=last_line(value.get("traceback", "")),
            traceback=str(value.get("traceback", "")),
        )
        for name, value in (data.get("imports") or {}).items()
    }
    return python, normalise_dists(data.get("dists") or {}), imports, dict(data.get("extra") or {})

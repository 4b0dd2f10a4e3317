"""The probe's parsers (pure): os-release, conda, the dpkg status database, pip metadata names, the probe's
length-framed records and the Python program's answer, every field type-checked."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from .facts import ImportResult, OsRelease, PythonInfo


def parse_os_release(text: str) -> OsRelease:
    """Parse os-release(5): KEY=value lines, values optionally quoted with shell rules (in linear time)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = unquote(value)
    return OsRelease(
        id=values.get("ID", "").lower(),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", ""),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        codename=values.get("VERSION_CODENAME", "") or values.get("UBUNTU_CODENAME", ""),
    )


def unquote(value: str) -> str:
    """The first shell word of an os-release value: '…' literal, "…" with \\-escapes of " \\ $ `, bare
    words with \\-escapes; an unterminated quote keeps what it has. One pass: shlex is quadratic here."""
    out: list[str] = []
    quote = ""
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
        elif quote == '"':
            if ch == '"':
                quote = ""
            elif ch == "\\" and i + 1 < n and value[i + 1] in '"\\$`':
                i += 1
                out.append(value[i])
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(value[i])
        elif ch.isspace():
            if out:
                break
        else:
            out.append(ch)
        i += 1
    return "".join(out)


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
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def parse_dpkg_status(text: str | Iterable[str]) -> dict[str, str]:
    """Installed packages from /var/lib/dpkg/status (its text, or its lines as they stream), and the names
    they provide.

    A provided name (Debian 13 and Ubuntu 24.04 renamed libcurl4 to libcurl4t64, which `Provides: libcurl4`)
    counts as installed, as it does for apt, with the provider named in its version text.
    """
    packages: dict[str, str] = {}
    provided: dict[str, str] = {}
    fields: dict[str, str] = {}

    def end_stanza() -> None:
        name, status = fields.get("Package"), fields.get("Status", "")
        if not name or status.split()[-1:] != ["installed"]:
            return
        version = fields.get("Version", "")
        packages[name] = version
        for entry in filter(None, (part.strip() for part in fields.get("Provides", "").split(","))):
            virtual, _, rest = entry.partition(" ")
            pinned = rest.strip("() ").lstrip("= ").strip()
            provided.setdefault(virtual.split(":")[0], f"{pinned or version} (provided by {name})")

    for line in text.splitlines() if isinstance(text, str) else text:
        if not line.strip():
            end_stanza()
            fields = {}
        elif line[:1] not in (" ", "\t") and ":" in line:
            key, _, value = line.partition(":")
            if key.strip() in ("Package", "Status", "Version", "Provides"):
                fields[key.strip()] = value.strip()
    end_stanza()
    for virtual, version in provided.items():
        packages.setdefault(virtual, version)
    return packages


def normalise_dists(dists: dict[str, str]) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in dists.items()}


@dataclass(frozen=True)
class Record:
    """One framed section of the probe's output; `complete` is False when the stream ended inside it."""

    name: str
    data: bytes
    complete: bool = True

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def read_records(output: bytes, marker: bytes) -> list[Record]:
    """The records `<marker><name> <length>\\n<bytes>` in order. A record's bytes are skipped by length, so
    nothing inside one is ever read as a marker; bytes between records (there should be none) are skipped."""
    records: list[Record] = []
    pos = 0
    while True:
        start = output.find(marker, pos)
        if start < 0:
            return records
        head_end = output.find(b"\n", start, start + len(marker) + 80)
        name, _, length = output[start + len(marker) : max(head_end, 0)].partition(b" ")
        if head_end < 0 or not length.isdigit() or not name.replace(b"_", b"").isalnum():
            pos = start + 1
            continue
        size = int(length)
        body = output[head_end + 1 : head_end + 1 + size]
        records.append(Record(name.decode("ascii"), body, len(body) == size))
        pos = head_end + 1 + size


def sections_of(records: list[Record]) -> dict[str, Record]:
    """The last record of each name (a name appears once, but for `run`)."""
    return {record.name: record for record in records}


def split_sections(output: str, marker: str) -> dict[str, str]:
    """The probe's output as name -> text (for tests and tools that hold it as text)."""
    raw = output.encode("utf-8", "surrogateescape")
    return {name: record.text for name, record in sections_of(read_records(raw, marker.encode())).items()}


def last_marked_json(stdout: str, marker: str) -> dict[str, Any] | None:
    """The last complete line of `marker` + a JSON object in a candidate's output; None when there is none
    (killed before its first line, or garbled). A line cut by a kill is skipped for the one before it."""
    for line in reversed(stdout.splitlines()):
        if not line.startswith(marker):
            continue
        try:
            data = json.loads(line[len(marker) :])
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict):
            return data
    return None


def last_line(traceback_text: str) -> str:
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def python_answer(section: bytes, marker: bytes) -> tuple[dict[str, Any] | None, str]:
    """The Python program's answer in its section (the last well-formed `json` record), or why there is
    none. Only a JSON object counts; what the image printed around it is ignored."""
    problem = "no answer"
    for record in reversed(read_records(section, marker)):
        if record.name != "json":
            continue
        if not record.complete:
            problem = "its answer was cut short"
            continue
        try:
            data = json.loads(record.data.decode("utf-8", "replace"))
        except RecursionError:
            problem = "its answer is nested too deeply to read"
            continue
        except ValueError as exc:
            problem = f"its answer is not JSON ({exc})"
            continue
        if isinstance(data, dict):
            return data, ""
        problem = f"its answer is a JSON {type(data).__name__}, not an object"
    return None, problem


def python_facts(
    data: dict[str, Any], exe: str
) -> tuple[PythonInfo, dict[str, str], dict[str, ImportResult], list[str]]:
    """The Python program's answer, every field type-checked: a field of the wrong type is the image's
    defect (its interpreter answered it), named in the returned problems, never a crash here."""
    problems: list[str] = []

    def typed(key: str, kind: type, default: Any) -> Any:
        value = data.get(key, default)
        if isinstance(value, kind):
            return value
        problems.append(f"`{key}` is a {type(value).__name__}, not a {kind.__name__}")
        return default

    version = typed("version", str, "")
    if version and not re.fullmatch(r"\d+(\.\d+){1,2}", version):
        problems.append(f"`version` is {version[:40]!r}, not a Python version")
        version = ""
    requires = {
        canonicalize_name(name)[:200]: spec[:200]
        for name, spec in list(typed("requires_python", dict, {}).items())[:5000]
        if isinstance(name, str) and isinstance(spec, str)
    }
    python = PythonInfo(
        executable=typed("executable", str, "") or exe,
        version=version,
        implementation=typed("implementation", str, ""),
        requires_python=requires,
    )
    dists = {
        str(name): version
        for name, version in typed("dists", dict, {}).items()
        if isinstance(name, str) and isinstance(version, str)
    }
    imports: dict[str, ImportResult] = {}
    for name, value in typed("imports", dict, {}).items():
        if not isinstance(value, dict) or not isinstance(value.get("traceback", ""), str):
            imports[str(name)] = ImportResult(str(name), False, "the probe's answer for this import is malformed")
            continue
        tb = value.get("traceback", "")
        imports[str(name)] = ImportResult(str(name), value.get("ok") is True, last_line(tb), tb)
    return python, normalise_dists(dists), imports, problems

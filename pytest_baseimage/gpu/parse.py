"""Readers of the gpu probe's answer (pure): ldd, the linker cache, nvidia-smi, and ProbeAnswer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import probe
from ..facts import Facts
from .spec import DRIVER_LIBRARY_PREFIXES


# -- parsers (pure) -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LddReport:
    """`ldd` (or `ld.so --list`) output: what resolved where, and what did not."""

    resolved: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    error: str = ""  # the tool could not run or the file is not a dynamic object


def parse_ldd(text: str) -> LddReport:
    resolved: dict[str, str] = {}
    missing: list[str] = []
    error = ""
    for raw in text.splitlines():
        line = raw.strip()
        if "=>" in line:
            name, _, target = (part.strip() for part in line.partition("=>"))
            if target.startswith("not found"):
                missing.append(name)
            elif target.split(" (")[0].strip():
                resolved[name] = target.split(" (")[0].strip()
        elif line.startswith("/"):
            path = line.split(" (")[0].strip()
            resolved[path.rsplit("/", 1)[-1]] = path
        elif "not a dynamic executable" in line or "statically linked" in line:
            error = line
    return LddReport(resolved, tuple(dict.fromkeys(missing)), error)


def parse_ldconfig(text: str) -> set[str]:
    """Library names in `ldconfig -p`: lines like `\tlibcudart.so.13 (libc6,x86-64) => /usr/...`."""
    return {line.split()[0] for line in text.splitlines()[1:] if "=>" in line and line.strip()}


def is_driver_library(name: str) -> bool:
    return name.startswith(DRIVER_LIBRARY_PREFIXES)


def parse_nvidia_smi(text: str) -> dict[str, str]:
    """Driver and CUDA version from `nvidia-smi`'s banner."""
    found = {}
    for key, pattern in (("driver", r"Driver Version:\s*([\w.]+)"), ("cuda", r"CUDA Version:\s*([\w.]+)")):
        match = re.search(pattern, text)
        if match:
            found[key] = match.group(1)
    return found


@dataclass(frozen=True)
class ProbeAnswer:
    """The gpu probe's answer (from its own exec in the candidate, GpuObservation.probe), with safe accessors."""

    data: dict[str, Any]
    problem: str = ""  # why there is no usable answer

    @classmethod
    def from_facts(cls, facts: Facts, probed: dict[str, Any] | None = None) -> ProbeAnswer:
        """From the gpu probe's own exec (`probed`); the facts say why there was none (no Python)."""
        if facts.python is None or not facts.python.version:
            return cls({}, facts.notes.get("python", "no Python in the image"))
        if not isinstance(probed, dict):
            return cls({}, "the gpu probe did not run: the probe found no Python executable to run it with")
        data = probed
        if "error" in data and "ort" not in data:
            return cls({}, f"the gpu probe failed in the candidate: {probe.last_line(str(data['error']))}")
        return cls(data)

    @property
    def ort(self) -> dict[str, Any]:
        return self.data.get("ort") or {}

    @property
    def ort_log(self) -> str:
        return str((self.data.get("ort_run") or {}).get("stderr", ""))

    def ldd(self, entry: dict[str, Any] | None) -> tuple[LddReport, dict[str, Any]]:
        raw = (entry or {}).get("ldd") or {}
        report = parse_ldd(str(raw.get("out", "")))
        if not raw.get("tool"):
            report = LddReport(error=str(raw.get("err") or "no ldd and no dynamic loader in the image"))
        return report, raw

    def known_names(self) -> set[str]:
        """Every library name the dynamic loader could find: linker cache, LD_LIBRARY_PATH, default dirs."""
        names = parse_ldconfig(str((self.data.get("ldconfig") or {}).get("out", "")))
        for listing in (self.data.get("search") or {}).values():
            names.update(listing)
        return names

    def pip_location(self, name: str) -> str:
        for directory, names in (self.data.get("pip_nvidia") or {}).items():
            if name in names:
                return directory
        return ""

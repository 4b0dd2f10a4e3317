"""Profiles already found valid: a run whose profile files are byte for byte ones the same schema passed
before skips the schema (pydantic's import and model build cost ~0.1 s, a tenth of a whole run).

Only passes are remembered, never errors, and only for checks that depend on the data alone: a merged
profile that names files (a scoring script, payload or model directory, which may have changed or gone
since) is always checked. The key covers the data, the check's kind, the schema's own source and the versions
of pydantic and packaging, so a change to any of them checks again. The store is one line a key in the
user's cache directory; a store that cannot be read or written only means the schema runs every time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import metadata, resources
from pathlib import Path
from typing import Any

FILE_KEYS = ("score_script", "payload_file", "model_dir")  # checked against the disk: never remembered
MAX_BYTES = 256 << 10  # past this the store starts again (4,000 keys): it never grows without bound
SCHEMA_SOURCES = ("profile_schema.py", "profile_words.py")


def store_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-baseimage" / "valid-profiles"


def key(data: dict[str, Any], merged: bool) -> str | None:
    """The key of one check of `data`; None when its outcome depends on more than the data."""
    scoring = data.get("scoring")
    if merged and isinstance(scoring, dict) and any(scoring.get(name) for name in FILE_KEYS):
        return None
    try:
        text = json.dumps(data, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None
    digest = hashlib.sha256(_schema_fingerprint().encode())
    digest.update(f"\0merged={merged}\0".encode())
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def known(entry: str | None) -> bool:
    return entry is not None and entry.encode() in _passed(store_path())


@functools.cache  # read once a process and store: a profile load checks up to four pieces of data
def _passed(path: Path) -> set[bytes]:
    try:
        with path.open("rb") as handle:
            return set(handle.read(MAX_BYTES).split())
    except OSError:
        return set()


def remember(entry: str | None) -> None:
    if entry is None:
        return
    path = store_path()
    _passed(path).add(entry.encode())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "wb" if path.is_file() and path.stat().st_size >= MAX_BYTES else "ab"
        with path.open(mode) as handle:
            handle.write(entry.encode() + b"\n")
    except OSError:
        pass


@functools.cache  # once a process: the schema's files cannot change under a run
def _schema_fingerprint() -> str:
    digest = hashlib.sha256()
    package = resources.files("pytest_baseimage")
    for name in SCHEMA_SOURCES:
        digest.update((package / name).read_bytes())
    for dist in ("pydantic", "packaging"):
        try:
            digest.update(f"\0{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"\0{dist}=?".encode())
    return digest.hexdigest()

"""The image matrix: many images in one run, each with its profile, part options and Docker engine.

A matrix file lists the images (``[[images]]``) and may set common settings (``[defaults]``); every
repeated ``--base-image`` is the short form of an entry. Settings layer as command line < ``[defaults]``
< entry, and part tables (``[images.scoring]``, ``[images.gpu]``, ...) merge key by key, so an entry
only states what differs. The file is validated strictly: a typo must never silently weaken a gate.

This module also decides the xdist distribution mode, because "one image, one worker" is what makes a
matrix run in parallel without starting an image twice or breaking the stage order.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .engine import read_context
from .errors import BaseImageError, EngineError, ExitCode
from .profiles import Profile
from .target import Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PATH = "path"  # a file or directory, relative to the matrix file, that must exist
VALUE = "value"  # any TOML value, passed to the part as is
BOOL = "bool"  # true or false
# Any other kind names a function of the part module that parses the value (and raises on a bad one).
Kind = Union[str, Callable[[Any], Any]]

# option key -> kind, per part. A part module declares its own with MATRIX_OPTIONS; these cover the parts
# that do not (yet), so that their matrix tables are still checked key by key.
FALLBACK_PART_OPTIONS: dict[str, dict[str, str]] = {
    "scoring": {"score_script": PATH, "model_dir": PATH, "payload_file": PATH, "expected_file": PATH},
    "gpu": {"gpus": "parse_gpus", "require_gpu": BOOL},
}

ENGINE_KEYS = ("docker_host", "context")
SETTING_KEYS = ("profile", "platform", *ENGINE_KEYS)
ENTRY_KEYS = ("ref", "name", *SETTING_KEYS)
TOP_KEYS = ("defaults", "images")
HOST_SCHEMES = ("unix://", "tcp://", "ssh://", "npipe://")
PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
LOCAL = ""  # docker_host meaning "the default engine", explicitly (context = "default")


class MatrixError(BaseImageError):
    """A matrix file (or --base-image list) that cannot be used: a one-line usage error."""

    exit_code = ExitCode.USAGE_ERROR


@dataclass(frozen=True)
class Settings:
    """What an entry, the [defaults] table or the command line says; None means "not said here"."""

    profile: str | None = None
    docker_host: str | None = None
    platform: str | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    docker_context: str | None = None  # the context docker_host came from, when it carries TLS settings

    def over(self, base: Settings) -> Settings:
        """These settings where given, `base` elsewhere; part tables merge key by key."""
        options = {
            part: {**base.options.get(part, {}), **self.options.get(part, {})}
            for part in (*base.options, *(p for p in self.options if p not in base.options))
        }
        engine = self if self.docker_host is not None else base  # host and its context go together
        return Settings(
            profile=self.profile if self.profile is not None else base.profile,
            docker_host=engine.docker_host,
            platform=self.platform if self.platform is not None else base.platform,
            options=options,
            docker_context=engine.docker_context,
        )


@dataclass(frozen=True)
class Entry:
    """One image to check; `where` names it in error messages ("matrix.toml: images[2]")."""

    ref: str
    name: str
    settings: Settings = field(default_factory=Settings)
    where: str = ""


@dataclass(frozen=True)
class Matrix:
    """A parsed, validated matrix file; every path in it is already absolute."""

    path: Path
    defaults: Settings
    entries: tuple[Entry, ...]


# -- loading -----------------------------------------------------------------------------------------------
def part_schemas(parts: Mapping[str, Any]) -> dict[str, dict[str, Kind]]:
    """The matrix keys each installed part accepts: its MATRIX_OPTIONS, else the fallback, else none."""
    schemas: dict[str, dict[str, Kind]] = {}
    for name, module in parts.items():
        declared = getattr(module, "MATRIX_OPTIONS", None) or FALLBACK_PART_OPTIONS.get(name, {})
        schemas[name] = {key: _kind(module, kind) for key, kind in declared.items()}
    return schemas


def _kind(module: Any, kind: Kind) -> Kind:
    if callable(kind) or kind in (PATH, VALUE, BOOL):
        return kind
    return getattr(module, kind, VALUE)  # a parser the part does not have (any more): take the value as is


def load(path: str | Path, schemas: Mapping[str, Mapping[str, Kind]]) -> Matrix:
    """Read and validate a matrix file; MatrixError with one line naming the file and the key."""
    file = Path(path).expanduser()
    label = str(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MatrixError(f"matrix file {label}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MatrixError(f"matrix file {label} is not valid TOML: {exc}") from None
    _known(data, TOP_KEYS, label)
    base = file.resolve().parent
    defaults_table = data.get("defaults", {})
    if not isinstance(defaults_table, dict):
        raise MatrixError(f"{label}: [defaults] must be a table")
    defaults = _settings(defaults_table, f"{label}: defaults", base, schemas, SETTING_KEYS)
    images = data.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, dict) for i in images):
        raise MatrixError(f'{label}: needs at least one [[images]] table with ref = "repo:tag"')
    entries = tuple(_entry(table, f"{label}: images[{index}]", base, schemas) for index, table in enumerate(images))
    return Matrix(file.resolve(), defaults, entries)


def _entry(table: dict[str, Any], where: str, base: Path, schemas: Mapping[str, Mapping[str, Kind]]) -> Entry:
    ref = table.get("ref")
    if not isinstance(ref, str) or not ref.strip():
        raise MatrixError(f'{where}: needs ref = "repo:tag" (an image reference)')
    name = table.get("name", ref)
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "[]") or not name.isprintable():
        raise MatrixError(f"{where}: name must be a non-empty line of text without [ or ]")
    settings = _settings(table, where, base, schemas, ENTRY_KEYS)
    return Entry(ref.strip(), name.strip(), settings, f"{where} ({name.strip()})")


def _settings(
    table: dict[str, Any], where: str, base: Path, schemas: Mapping[str, Mapping[str, Kind]], keys: tuple[str, ...]
) -> Settings:
    _known(table, (*keys, *schemas), where)
    for key in SETTING_KEYS:
        if key in table and not isinstance(table[key], str):
            raise MatrixError(f"{where}: {key} must be a string")
    if all(key in table for key in ENGINE_KEYS):
        raise MatrixError(f"{where}: give docker_host or context, not both")
    options = {
        part: _part_options(table[part], f"{where}: {part}", base, schemas[part]) for part in schemas if part in table
    }
    profile = table.get("profile")
    docker_host, docker_context = _engine(table, where)
    return Settings(
        profile=_profile_ref(profile, base) if profile is not None else None,
        docker_host=docker_host,
        platform=_platform(table.get("platform"), where),
        options=options,
        docker_context=docker_context,
    )


def _known(table: Mapping[str, Any], known: tuple[str, ...] | list[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise MatrixError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(known))})")


def _part_options(table: Any, where: str, base: Path, schema: Mapping[str, Kind]) -> dict[str, Any]:
    """A part's table: known keys only, each value checked as its kind; paths made absolute."""
    if not isinstance(table, dict):
        raise MatrixError(f"{where} must be a table")
    if not schema:
        raise MatrixError(f"{where}: this part takes no per-image options")
    _known(table, list(schema), where)
    return {key: _option(value, schema[key], f"{where}.{key}", base) for key, value in table.items()}


def _option(value: Any, kind: Kind, where: str, base: Path) -> Any:
    if kind == PATH:
        return _existing_path(value, where, base)
    if kind == BOOL:
        if not isinstance(value, bool):
            raise MatrixError(f"{where} must be true or false")
        return value
    if callable(kind):
        try:
            return kind(value)
        except Exception as exc:  # the part's parser says why; any failure is the file's, not a bug
            raise MatrixError(f"{where}: {exc}") from None
    return value


def _existing_path(value: Any, where: str, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise MatrixError(f"{where} must be a path")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise MatrixError(f"{where}: {path} does not exist")
    return str(path.resolve())


def _profile_ref(value: str, base: Path) -> str:
    """A built-in name stays a name; anything path-like is taken relative to the matrix file."""
    if not value.strip():
        return value
    looks_like_path = value.endswith(".toml") or "/" in value or "\\" in value
    if not looks_like_path or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def _platform(value: str | None, where: str) -> str | None:
    if value is not None and not PLATFORM_RE.match(value):
        raise MatrixError(f"{where}: platform {value!r} is not os/arch[/variant], e.g. linux/amd64")
    return value


def _engine(table: Mapping[str, Any], where: str) -> tuple[str | None, str | None]:
    """(host URL, context name when it carries TLS) of docker_host or of a named docker context; LOCAL for
    the default engine; (None, None) when the table does not say."""
    if "docker_host" in table:
        host = table["docker_host"].strip()
        if not host.startswith(HOST_SCHEMES):
            raise MatrixError(f"{where}: docker_host {host!r} must start with {', '.join(HOST_SCHEMES)}")
        return host, None
    if "context" in table:
        return resolve_context(table["context"], where)
    return None, None


def resolve_context(name: str, where: str) -> tuple[str, str | None]:
    """A docker context's engine URL, read as the docker CLI does (DOCKER_CONFIG, ~/.docker), and its name
    when the engine needs the context's TLS certificates."""
    if name == "default":
        return LOCAL, None
    try:
        context = read_context(name)
    except EngineError as exc:  # a broken context store is the user's to fix, in one line
        raise MatrixError(f"{where}: {exc}") from None
    if context is None or not context.host:
        raise MatrixError(f"{where}: no docker context {name!r} (see `docker context ls`)")
    return context.host, (name if context.tls else None)


# -- entries to targets -----------------------------------------------------------------------------------
def entries(matrix_path: str | None, images: list[str], schemas: Mapping[str, Mapping[str, Kind]]) -> list[Entry]:
    """The matrix file's entries, then each --base-image as an entry with the file's defaults."""
    matrix = load(matrix_path, schemas) if matrix_path else None
    defaults = matrix.defaults if matrix else Settings()
    found = [Entry(e.ref, e.name, e.settings.over(defaults), e.where) for e in matrix.entries] if matrix else []
    for image in images:
        if not image.strip():
            raise MatrixError("--base-image needs an image reference, e.g. --base-image=myimage:v1")
        found.append(Entry(image, image, defaults, f"--base-image={image}"))
    if not found:
        raise MatrixError("no image to check: give --base-image=IMAGE or --base-image-matrix=FILE")
    return _distinct(found)


def _distinct(found: list[Entry]) -> list[Entry]:
    """Drop a repeated --base-image; refuse two entries that would start one image twice or share a name."""
    by_key: dict[tuple[str, str | None, str | None], Entry] = {}
    by_name: dict[str, Entry] = {}
    out = []
    for entry in found:
        key = (entry.ref, entry.settings.docker_host or None, entry.settings.docker_context)
        twin = by_key.get(key)
        if twin is not None:
            if twin.settings == entry.settings and twin.name == entry.name:
                continue
            raise MatrixError(
                f"{entry.where}: image {entry.ref} is already checked by {twin.where}; one run "
                "starts each image once per engine, so check other settings in a second run"
            )
        clash = by_name.get(entry.name)
        if clash is not None:
            raise MatrixError(f"{entry.where}: name {entry.name!r} is already used by {clash.where}")
        by_key[key] = by_name[entry.name] = entry
        out.append(entry)
    return out


def targets(found: list[Entry], cli: Settings, load_profile: Callable[[str], Profile]) -> list[Target]:
    """One Target per entry, over the command-line settings; each distinct profile is loaded once."""
    loaded: dict[str, Profile] = {}
    out = []
    for entry in found:
        settings = entry.settings.over(cli)
        ref = settings.profile or ""
        if ref not in loaded:
            try:
                loaded[ref] = load_profile(ref)
            except BaseImageError as exc:
                prefix = f"{entry.where}: " if entry.settings.profile and entry.settings.profile != cli.profile else ""
                raise MatrixError(f"{prefix}{exc}") from None
        options: dict[str, Any] = {part: copy.deepcopy(dict(table)) for part, table in settings.options.items()}
        if settings.platform:
            options["platform"] = settings.platform
        out.append(
            Target(
                reference=entry.ref,
                profile=loaded[ref],
                name=entry.name,
                docker_host=settings.docker_host or None,
                docker_context=settings.docker_context if settings.docker_host else None,
                options=options,
            )
        )
    return out


# -- xdist --------------------------------------------------------------------------------------------------
GROUPING_MODE = "loadgroup"


@dataclass(frozen=True)
class DistChoice:
    """What to set `config.option.dist` to (None: leave it) and a warning to show once (or "")."""

    dist: str | None = None
    warning: str = ""


def choose_dist(*, dist: str, distload: bool, numprocesses: Any, has_images: bool) -> DistChoice:
    """With -n and images, keep each image's stages on one worker, unless the user picked a mode.

    Called before xdist turns `-n` into --dist=load, so "no" still means "not chosen". loadgroup honours
    the plugin's xdist_group(baseimage:<name>) marks: one container per image, stages in order.
    """
    if not has_images or not numprocesses:
        return DistChoice()
    if dist == "no" and not distload:
        return DistChoice(dist=GROUPING_MODE)
    chosen = "load" if distload and dist == "no" else dist
    if chosen in (GROUPING_MODE, "no"):
        return DistChoice()
    return DistChoice(
        warning=(
            f"pytest-baseimage: --dist={chosen} may split one image's stages over several workers, and each "
            f"worker then starts its own container; drop --dist (the default with images is {GROUPING_MODE}) "
            f"or pass --dist={GROUPING_MODE}"
        )
    )

"""Profiles: requirement sets as TOML data, never code. Loading, `extends`, validation, specifiers.

A profile names the built-in profile it extends; a user's profile overrides single requirements by
setting only those keys (tables merge key by key, lists and values replace). Every version rule is a
`packaging` specifier, or a list of them meaning "any one of these".
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PROFILE = "azureml-current"

# The schema: section -> allowed keys. Unknown keys are errors, so a typo never silently weakens a gate.
SCHEMA: dict[str, set[str]] = {
    "": {"name", "description", "extends", "sources", "os", "conda", "python", "apt", "azureml", "scoring", "gpu"},
    "os": {"accept", "remediation", "notes"},
    "conda": {"required", "version", "remediation", "notes"},
    "python": {"version", "remediation", "notes"},
    "apt": {"required", "any_of", "remediation", "notes"},
    "azureml": {"packages", "imports", "remediation", "notes"},
    "scoring": {
        "enabled",
        "server",
        "command",
        "port",
        "env",
        "model_path",
        "expected_status",
        "payload",
        "payload_file",
        "expected",
        "expected_json",
        "score_script",
        "model_dir",
        "boot_timeout_s",
        "request_timeout_s",
        "reproducible",
        "remediation",
        "notes",
        "workdir",
        "app_root",
        "liveness_path",
        "score_path",
        "swagger_path",
        "swagger_expected",
        "content_type",
        "network",
    },
    "gpu": {"providers", "libraries", "device_type", "require_gpu", "provider_libraries", "remediation", "notes"},
}


def spec_list(value: Any, where: str) -> list[SpecifierSet]:
    """A specifier string, or a list of them meaning "any one of"; validated with `packaging`."""
    items = value if isinstance(value, list) else [value]
    specs = []
    for item in items:
        if not isinstance(item, str):
            raise ProfileError(f"{where}: expected a version specifier string, got {item!r}")
        try:
            specs.append(SpecifierSet(item))
        except InvalidSpecifier:
            raise ProfileError(f"{where}: {item!r} is not a valid version specifier (PEP 440)") from None
    return specs


def version_matches(version: str, specs: list[SpecifierSet]) -> bool:
    """True when the version satisfies any one of the specifier sets; unparsable versions never match."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    return any(spec.contains(parsed, prereleases=True) for spec in specs)


def describe_specs(specs: list[SpecifierSet]) -> str:
    parts = [str(spec) or "any version" for spec in specs]
    return " or ".join(parts)


@dataclass(frozen=True)
class OsRule:
    id: str
    version: list[SpecifierSet]

    def describe(self) -> str:
        return f"{self.id} {describe_specs(self.version)}"


@dataclass
class Profile:
    """A loaded, validated, fully merged profile. `data` keeps the merged TOML for the stages to read."""

    name: str
    description: str
    sources: list[str]
    data: dict[str, Any]
    path: str = ""
    chain: list[str] = field(default_factory=list)  # this profile and the ones it extends

    def section(self, name: str) -> dict[str, Any] | None:
        value = self.data.get(name)
        return value if isinstance(value, dict) else None

    # Typed views of the sections the static stages read.
    def os_rules(self) -> list[OsRule]:
        section = self.section("os") or {}
        rules = []
        for index, entry in enumerate(section.get("accept", [])):
            where = f"profile {self.name}: os.accept[{index}]"
            if not isinstance(entry, dict) or "id" not in entry:
                raise ProfileError(f'{where}: expected {{ id = "ubuntu", version = ">=16.04" }}')
            rules.append(OsRule(str(entry["id"]).lower(), spec_list(entry.get("version", ""), where)))
        return rules

    def specs(self, section: str, key: str = "version") -> list[SpecifierSet]:
        value = (self.section(section) or {}).get(key, "")
        return spec_list(value, f"profile {self.name}: {section}.{key}")

    def packages(self, section: str, key: str) -> dict[str, list[SpecifierSet]]:
        table = (self.section(section) or {}).get(key, {})
        if not isinstance(table, dict):
            raise ProfileError(f"profile {self.name}: {section}.{key} must be a table of name = specifier")
        return {name: spec_list(spec, f"profile {self.name}: {section}.{key}.{name}") for name, spec in table.items()}

    def remediation(self, section: str, default: str = "") -> str:
        return str((self.section(section) or {}).get("remediation", default))


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".toml"))


def load(name_or_path: str) -> Profile:
    """Load a built-in profile by name, or a profile file by path; follows `extends`."""
    data, path, chain = _load_merged(name_or_path, seen=())
    _validate(data, chain[0])
    profile = Profile(
        name=str(data.get("name") or chain[0]),
        description=str(data.get("description", "")),
        sources=[str(s) for s in data.get("sources", [])],
        data=data,
        path=path,
        chain=chain,
    )
    _check_specifiers(profile)
    return profile


def _builtin_dir() -> Any:
    return resources.files("pytest_baseimage") / "profiles"


def _read(name_or_path: str, relative_to: Path | None) -> tuple[dict[str, Any], str, str]:
    candidate = Path(name_or_path)
    if relative_to is not None and not candidate.is_absolute():
        candidate = relative_to / candidate
    looks_like_path = name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path
    if looks_like_path or candidate.is_file():
        if not candidate.is_file():
            raise ProfileError(f"profile file {name_or_path} does not exist")
        text, label = candidate.read_text(encoding="utf-8"), str(candidate)
    else:
        builtin = _builtin_dir() / f"{name_or_path}.toml"
        if not builtin.is_file():
            known = ", ".join(builtin_names())
            raise ProfileError(f"unknown profile '{name_or_path}' (built-in: {known}; or give a .toml path)")
        text, label = builtin.read_text(encoding="utf-8"), f"built-in {name_or_path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {label} is not valid TOML: {exc}") from None
    return data, label, name_or_path


def _load_merged(
    name_or_path: str, seen: tuple[str, ...], relative_to: Path | None = None
) -> tuple[dict[str, Any], str, list[str]]:
    data, label, _ = _read(name_or_path, relative_to)
    name = str(data.get("name") or Path(name_or_path).stem)
    if name in seen:
        raise ProfileError(f"profile {name} extends itself ({' -> '.join((*seen, name))})")
    parent_ref = data.get("extends")
    if not parent_ref:
        return data, label, [name]
    if not isinstance(parent_ref, str):
        raise ProfileError(f"profile {label}: 'extends' must be a profile name or path")
    base_dir = Path(label).parent if Path(label).is_file() else None
    parent, _, chain = _load_merged(parent_ref, (*seen, name), base_dir)
    merged = _deep_merge(parent, data)
    merged.pop("extends", None)
    merged["name"] = name
    return merged, label, [name, *chain]


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else in `override` replaces. `false` tables switch a stage off."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def _validate(data: dict[str, Any], label: str) -> None:
    for key, value in data.items():
        if key not in SCHEMA[""]:
            raise ProfileError(f"profile {label}: unknown field '{key}' (known: {', '.join(sorted(SCHEMA['']))})")
        if key in SCHEMA and key != "":
            if value is False:
                continue
            if not isinstance(value, dict):
                raise ProfileError(f"profile {label}: [{key}] must be a table")
            for sub in value:
                if sub not in SCHEMA[key]:
                    known = ", ".join(sorted(SCHEMA[key]))
                    raise ProfileError(f"profile {label}: unknown field '{key}.{sub}' (known: {known})")


def _check_specifiers(profile: Profile) -> None:
    """Parse every specifier once at load time, so a bad one is a usage error, not a failed stage."""
    profile.os_rules()
    if profile.section("conda") is not None:
        profile.specs("conda")
    if profile.section("python") is not None:
        profile.specs("python")
    if profile.section("azureml") is not None:
        profile.packages("azureml", "packages")
    apt = profile.section("apt") or {}
    for key in ("required", "any_of"):
        if not isinstance(apt.get(key, []), list):
            raise ProfileError(f"profile {profile.name}: apt.{key} must be a list")

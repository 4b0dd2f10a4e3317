"""Profiles: requirement sets as TOML data, never code. Loading, `extends`, validation, specifiers.

A profile names the built-in profile it extends; a user's profile overrides single requirements by
setting only those keys (tables merge key by key, lists and values replace). Every version rule is a
`packaging` specifier, or a list of them meaning "any one of these".
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from . import profile_cache
from .errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PROFILE = "azureml-current"

# Releases the remediation templates pick their examples from ({os_image}, {python_example},
# {conda_example}): the lowest one that satisfies the profile's own rule is suggested. Data, not logic:
# packaging decides what satisfies.
KNOWN_RELEASES: dict[str, tuple[str, ...]] = {
    "python": ("2.7", *(f"3.{minor}" for minor in range(0, 30))),
    "conda": (
        *(f"4.{minor}" for minor in range(5, 15)),
        *("22.9", "22.11", "23.1", "23.3", "23.5", "23.7", "23.9", "23.10", "23.11"),
        *("24.1", "24.3", "24.5", "24.7", "24.9", "24.11", "25.1", "25.3", "25.5", "25.7"),
    ),
    "ubuntu": ("14.04", "16.04", "18.04", "20.04", "22.04", "24.04", "24.10", "25.04", "25.10", "26.04"),
    "debian": ("9", "10", "11", "12", "13"),
}
PLACEHOLDERS = re.compile(r"\{(os_image|python_example|conda_example)\}")


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

    @property
    def abstract(self) -> bool:
        return self.data.get("abstract") is True

    def setting(self, section: str, key: str) -> Any:
        """section.key as the profile sets it, else the schema's default (e.g. probe.timeout_s -> 30.0)."""
        table = self.section(section)
        if table is not None and key in table:
            return table[key]
        from . import profile_schema  # late: pydantic costs ~0.1 s, paid only when a profile loads

        return profile_schema.field_info(section, key).get_default(call_default_factory=True)

    # Typed views of the sections the static stages read (the values were checked when the profile loaded).
    def os_rules(self) -> list[OsRule]:
        section = self.section("os") or {}
        where = f"profile {self.name}: os.accept"
        return [
            OsRule(str(entry["id"]).lower(), spec_list(entry.get("version", ""), f"{where}[{index}]"))
            for index, entry in enumerate(section.get("accept", []))
        ]

    def specs(self, section: str, key: str = "version") -> list[SpecifierSet]:
        value = (self.section(section) or {}).get(key, "")
        return spec_list(value, f"profile {self.name}: {section}.{key}")

    def packages(self, section: str, key: str) -> dict[str, list[SpecifierSet]]:
        table = (self.section(section) or {}).get(key, {})
        return {name: spec_list(spec, f"profile {self.name}: {section}.{key}.{name}") for name, spec in table.items()}

    def remediation(self, section: str, default: str = "") -> str:
        """The section's fix, with {os_image}, {python_example} and {conda_example} filled from this profile's
        own rules, so a fix never suggests a version the same profile refuses."""
        text = str((self.section(section) or {}).get("remediation", default))
        return PLACEHOLDERS.sub(lambda match: self.example(match.group(1)), text)

    def example(self, placeholder: str) -> str:
        """The lowest known release that the profile accepts, as the remediation templates spell it."""
        if placeholder == "os_image":
            for rule in self.os_rules():
                found = lowest_release(rule.id, rule.version)
                if found:
                    return f"{rule.id}:{found}"
            return "<an accepted distribution: " + ", ".join(rule.describe() for rule in self.os_rules()) + ">"
        what = placeholder.split("_")[0]
        specs = self.specs(what)
        return lowest_release(what, specs) or f"<a {what} version {describe_specs(specs)}>"


def lowest_release(what: str, specs: list[SpecifierSet]) -> str | None:
    """The lowest of KNOWN_RELEASES[what] that satisfies any of the specifiers (None: none does)."""
    matching = [v for v in KNOWN_RELEASES.get(what, ()) if version_matches(v, specs)]
    return min(matching, key=Version) if matching else None


def builtin_names(include_abstract: bool = False) -> list[str]:
    """The shipped profiles a run can use (abstract ones, only meant to be extended, on request)."""
    names = sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".toml"))
    if include_abstract:
        return names
    return [name for name in names if not _is_abstract(name)]


def _is_abstract(builtin: str) -> bool:
    return _parse((_builtin_dir() / f"{builtin}.toml").read_text("utf-8"), builtin).get("abstract") is True


def load(name_or_path: str, *, allow_abstract: bool = False) -> Profile:
    """Load a built-in profile by name, or a profile file by path; follows `extends`, validates the whole.

    Each file is checked on its own first (an error names the file that has it), then the merged profile.
    An abstract profile is refused unless asked for (it is only meant to be extended)."""
    data, label, chain = _load_merged(name_or_path, seen=())
    base_dir = Path(label).parent if Path(label).is_file() else None
    _check(data, label, merged=True, base_dir=base_dir)
    profile = Profile(
        name=str(data.get("name") or chain[0]),
        description=str(data.get("description", "")),
        sources=[str(s) for s in data.get("sources", [])],
        data=data,
        path=label,
        chain=chain,
    )
    if profile.abstract and not allow_abstract:
        raise ProfileError(_abstract_message(profile.name))
    return profile


def _abstract_message(name: str) -> str:
    children = [other for other in builtin_names() if load(other).chain[1:2] == [name]] or builtin_names()
    use = " or ".join([", ".join(children[:-1]), children[-1]] if len(children) > 1 else children)
    return f"profile {name} is abstract: it is meant to be extended; use {use}, or a profile of yours that extends it"


def _builtin_dir() -> Any:
    return resources.files("pytest_baseimage") / "profiles"


def _parse(text: str, label: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {label} is not valid TOML: {exc}") from None


def _read(name_or_path: str, relative_to: Path | None) -> tuple[dict[str, Any], str]:
    """One profile file, checked on its own against the schema; (its data, its label for messages)."""
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
    data = _parse(text, label)
    _check(data, label)
    return data, label


def _check(data: dict[str, Any], label: str, *, merged: bool = False, base_dir: Path | None = None) -> None:
    """The schema's check of one file or of the merged chain, skipped for data it passed before (`profile_cache`)."""
    entry = profile_cache.key(data, merged)
    if profile_cache.known(entry):
        return
    try:
        from . import profile_schema  # late: pydantic costs ~0.1 s, paid only when a profile is checked

        profile_schema.validate(data, merged=merged, base_dir=base_dir)
    except ValueError as exc:
        raise ProfileError(f"profile {label}: {exc}") from None
    profile_cache.remember(entry)


def _load_merged(
    name_or_path: str, seen: tuple[str, ...], relative_to: Path | None = None
) -> tuple[dict[str, Any], str, list[str]]:
    data, label = _read(name_or_path, relative_to)
    name = str(data.get("name") or Path(name_or_path).stem)
    if name in seen:
        raise ProfileError(f"profile {name} extends itself ({' -> '.join((*seen, name))})")
    parent_ref = data.get("extends")
    if not parent_ref:
        return data, label, [name]
    base_dir = Path(label).parent if Path(label).is_file() else None
    parent, _, chain = _load_merged(parent_ref, (*seen, name), base_dir)
    parent.pop("abstract", None)  # a profile that extends an abstract one is concrete unless it says otherwise
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

"""The registry options, checked against each other (pure: no pytest): Credentials, RegistryOptions (and Secret)."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..secret import Secret  # the gate reads it too, without this package's pytest part
from .base import RegistryUsageError
from .reference import check_reference, normalise_registry, registry_of


# -- secrets and options -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """An explicit registry user, as Azure ML's `base_image_registry` takes it (address, user, password)."""

    registry: str
    username: str
    password: Secret
    source: str  # where the password came from, for messages: "$NAME" or "stdin"

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password.reveal(), "serveraddress": self.registry}

    def secret_forms(self) -> list[str]:
        """The password, and the Basic-auth token an HTTP error might echo."""
        password = self.password.reveal()
        token = base64.b64encode(f"{self.username}:{password}".encode()).decode()
        return [password, token]


@dataclass(frozen=True)
class RegistryOptions:
    """The registry part of a Target's options (`Target.options["registry"]`)."""

    pull: str = "missing"
    registry: str = ""  # normalised address, e.g. myacr.azurecr.io or 127.0.0.1:5000
    username: str = ""
    password: Secret | None = None
    password_source: str = ""
    require_digest: bool = False
    dockerfile: str = ""
    build_args: dict[str, str] = field(default_factory=dict)
    refused: tuple[str, ...] = ()  # values given where secrets must not go: redacted, never used

    @property
    def credentials(self) -> Credentials | None:
        if not (self.registry and self.username and self.password):
            return None
        return Credentials(self.registry, self.username, self.password, self.password_source)

    def credentials_for(self, reference: str) -> Credentials | None:
        """Explicit credentials go only to the registry they were given for, never to another host."""
        creds = self.credentials
        return creds if creds and registry_of(reference) == creds.registry else None

    def secrets(self) -> list[str]:
        found = list(self.refused)
        if self.credentials:
            found += self.credentials.secret_forms()
        elif self.password:
            found.append(self.password.reveal())
        return [s for s in found if s]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RegistryOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


def parse_options(
    values: Mapping[str, Any],
    *,
    images: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    read_stdin: Callable[[], str] = lambda: "",
    worker: bool = False,
) -> RegistryOptions:
    """Check the options against each other; every refusal is one line that says what to do instead."""
    environ = os.environ if environ is None else environ
    if values.get("password") is not None:
        raise RegistryUsageError(
            "--registry-password is refused: a password on the command line is visible to other users "
            "(ps, shell history, CI logs); use --registry-password-env=NAME or --registry-password-stdin"
        )
    registry = normalise_registry(values.get("registry") or "")
    username = values.get("username") or ""
    password, source = _password(values, environ, read_stdin, worker)
    if (username or password is not None) and not registry:
        raise RegistryUsageError(
            "--registry-username and the registry password need --registry=ADDRESS: credentials are sent "
            "only to the registry they are given for"
        )
    if password is not None and not username:
        raise RegistryUsageError("a registry password was given without --registry-username=USER")
    if username and password is None and not worker:
        raise RegistryUsageError(
            f"--registry-username={username} needs a password: --registry-password-env=NAME or "
            "--registry-password-stdin"
        )
    dockerfile = values.get("dockerfile") or ""
    if dockerfile and not Path(dockerfile).is_file():
        raise RegistryUsageError(f"--base-image-dockerfile={dockerfile}: no such file")
    build_args = _build_args(values.get("build_args") or [])
    if build_args and not dockerfile:
        raise RegistryUsageError("--build-arg needs --base-image-dockerfile=PATH")
    pull = values.get("pull") or "missing"
    require_digest = bool(values.get("require_digest"))
    for image in images:
        check_reference(image, require_digest)
    return RegistryOptions(
        pull=("missing" if worker and pull == "always" else pull),  # the controller pulled it already
        registry=registry,
        username=username,
        password=password,
        password_source=source,
        require_digest=require_digest,
        dockerfile=dockerfile,
        build_args=build_args,
    )


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _password(
    values: Mapping[str, Any], environ: Mapping[str, str], read_stdin: Callable[[], str], worker: bool
) -> tuple[Secret | None, str]:
    name, from_stdin = values.get("password_env") or "", bool(values.get("password_stdin"))
    if name and from_stdin:
        raise RegistryUsageError(
            "give the registry password once: --registry-password-env or --registry-password-stdin"
        )
    if name:
        if not ENV_NAME.fullmatch(name):  # never echo it: it may be the password itself, pasted by mistake
            raise RegistryUsageError(
                "--registry-password-env takes the NAME of an environment variable that holds the password, "
                "and what was given is not a variable name"
            )
        value = environ.get(name, "")
        if not value:
            raise RegistryUsageError(
                f"--registry-password-env={name}: the environment variable {name} is not set or empty"
            )
        return Secret(value), f"${name}"
    if from_stdin:
        if worker:  # xdist workers inherit the controller's pulled image, not its stdin
            return None, "stdin"
        value = read_stdin()
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
        if not value:
            raise RegistryUsageError("--registry-password-stdin: standard input was empty")
        return Secret(value), "stdin"
    return None, ""


def _build_args(pairs: Iterable[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RegistryUsageError(f"--build-arg takes KEY=VALUE, not '{key.strip() or pair}'")
        args[key.strip()] = value
    return args


def validate_targets(targets: Iterable[Any]) -> None:
    """Every Target's reference (matrix entries too) is well formed, and pinned under --require-digest."""
    for target in targets:
        options = RegistryOptions.from_dict(target.options.get("registry"))
        check_reference(target.reference, options.require_digest)

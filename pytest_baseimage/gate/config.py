"""gate.toml: validated by a pydantic model; secrets are read from the environment or files, never the text.

The model refuses unknown keys (a typo must not silently turn a rule off) and any key that would hold a
secret inline: only `*_env` (a variable NAME) and `*_file` (a PATH) name where a secret lives.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import BaseImageError, ExitCode
from ..secret import Secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the backport has the same API
    import tomli as tomllib

PG_SCHEMES = ("postgresql", "postgres")
Severity = Literal["Unknown", "Negligible", "Low", "Medium", "High", "Critical"]


class GateConfigError(BaseImageError):
    """gate.toml is missing, malformed, or names a secret that is not set: a usage error (exit 4)."""

    exit_code = ExitCode.USAGE_ERROR


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryEntry(Model):
    """A registry the gate reads from and promotes into; the password comes from password_env or password_file."""

    url: str
    username: str = ""
    password_env: str = ""
    password_file: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError("a registry url is http(s)://host[:port], with no path")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_secret_source(self) -> RegistryEntry:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc


class PromoteRule(Model):
    """Images pushed to a repository matching `from` (a glob) are certified with `profile` and copied to `to`."""

    from_: str = Field(alias="from")
    to: str
    profile: str
    registry: str = ""  # a [[registries]] url; empty: the first one

    @field_validator("to")
    @classmethod
    def _name_placeholder(cls, value: str) -> str:
        if "{" in value.replace("{name}", ""):
            raise ValueError("`to` may only use the {name} placeholder")
        return value

    def matches(self, repository: str) -> bool:
        return fnmatch.fnmatchcase(repository, self.from_)

    def target(self, repository: str) -> str:
        """certified/{name} with name = the last path part of the source repository (staging/app -> app)."""
        return self.to.replace("{name}", repository.rsplit("/", 1)[-1])


class Engine(Model):
    """A Docker engine workers certify on: a docker_host URL, or a docker context's name (read as the docker
    CLI reads it, TLS material included); neither is the local engine (DOCKER_HOST, DOCKER_CONTEXT or the
    socket)."""

    docker_host: str = ""
    context: str = ""

    @model_validator(mode="after")
    def _one_engine(self) -> Engine:
        if self.docker_host and self.context:
            raise ValueError("give docker_host or context, not both")
        if self.context and self.context != "default":  # found now, not by every check that would use it
            from ..engine import read_context
            from ..errors import EngineError

            try:
                found = read_context(self.context)
            except EngineError as exc:
                raise ValueError(str(exc)) from None
            if found is None or not found.host:
                raise ValueError(f"no docker context {self.context!r} (see `docker context ls`)")
        return self

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """`env` for a check on this engine: the engine named as the docker CLI would take it."""
        if self.context:
            env = {k: v for k, v in env.items() if k != "DOCKER_HOST"}  # DOCKER_HOST would win over the context
            env["DOCKER_CONTEXT"] = self.context
        elif self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        return env


class HarborSection(Model):
    """The Harbor scanner adapter: which profile a scan uses, and the severity of each kind of finding."""

    enabled: bool = True
    profile: str = "azureml-current"
    failed_severity: Severity = "High"
    unchecked_severity: Severity = "Unknown"
    refresh_after: int = Field(default=5, ge=1, le=300)


class AttestSection(Model):
    """Attestations by the plugin's --attest (issue 16): a DSSE envelope per job, served at .../attestation.

    The signing key stays where it is: key_env names the variable holding the PEM key (the check inherits it),
    key_file its path; the gate passes only the name or the path to the plugin.
    """

    enabled: bool = False
    key_env: str = ""
    key_file: str = ""
    unsigned: bool = False
    push: bool = False  # also store it in the registry as cosign does (tag sha256-<hex>.att)

    @model_validator(mode="after")
    def _one_key(self) -> AttestSection:
        if self.enabled and sum(bool(x) for x in (self.key_env, self.key_file, self.unsigned)) != 1:
            raise ValueError("attestations need exactly one of key_env, key_file or unsigned = true")
        return self


class GateConfig(Model):
    listen: str = "127.0.0.1:8790"
    database: str = "gate.db"  # an SQLite path, or a postgresql:// URL (no password) for several replicas
    database_password_env: str = ""  # PostgreSQL: the variable holding the password (or libpq's PGPASSFILE)
    database_password_file: str = ""
    lease_s: float = Field(default=60, ge=1, le=3600)  # a running job whose heartbeat is older is requeued
    data_dir: str = "gate-data"  # verdicts, HTML reports and attestations, one directory per job
    token_env: str = ""  # the inbound bearer token's variable
    basic_username: str = ""  # inbound basic auth, as an alternative to the token
    basic_password_env: str = ""
    workers: int = Field(default=2, ge=1, le=64)
    max_attempts: int = Field(default=3, ge=1, le=20)
    # A retried check waits retry_backoff seconds, doubled at each attempt (at most 10 minutes): a registry or
    # engine that is away for a minute does not use up max_attempts in a second.
    retry_backoff: float = Field(default=10.0, ge=0, le=600)
    job_timeout: float = Field(default=1800, gt=0)
    stop_grace: float = Field(default=30, ge=0, le=600)  # on stop: seconds a check has to clean up after SIGTERM
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    require_all_stages: bool = False
    registries: list[RegistryEntry] = Field(default_factory=list)
    engines: list[Engine] = Field(default_factory=lambda: [Engine()])
    promote: list[PromoteRule] = Field(default_factory=list)
    harbor: HarborSection = Field(default_factory=HarborSection)
    attest: AttestSection = Field(default_factory=AttestSection)
    public_url: str = ""  # how users reach this service; recorded as the report URL in attestations

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("listen is host:port")
        return value

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        if "://" not in value:
            return value  # an SQLite path
        parts = urlsplit(value)
        if parts.scheme not in PG_SCHEMES or not parts.hostname:
            raise ValueError("database is an SQLite path or a postgresql://user@host:port/name URL")
        if parts.password is not None or "password" in parts.query.lower():
            # The message never repeats the value: it holds the password.
            raise ValueError("a password in the database URL is refused: name it with database_password_env or _file")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GateConfig:
        if not self.token_env and not self.basic_username:
            raise ValueError("events need authentication: set token_env or basic_username/basic_password_env")
        if bool(self.basic_username) != bool(self.basic_password_env):
            raise ValueError("basic_username and basic_password_env go together")
        urls = {r.url for r in self.registries}
        for rule in self.promote:
            if rule.registry and rule.registry.rstrip("/") not in urls:
                raise ValueError(f"promote rule {rule.from_!r} names registry {rule.registry!r}, not in [[registries]]")
        if self.promote and not self.registries:
            raise ValueError("[[promote]] rules need a [[registries]] entry")
        if not self.engines:
            raise ValueError("engines may not be empty")
        if (self.database_password_env or self.database_password_file) and not self.postgres:
            raise ValueError("database_password_env/_file go with a postgresql:// database")
        if self.database_password_env and self.database_password_file:
            raise ValueError("give database_password_env or database_password_file, not both")
        return self

    @property
    def postgres(self) -> bool:
        return urlsplit(self.database).scheme in PG_SCHEMES

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def rule_for(self, repository: str) -> PromoteRule | None:
        """The first rule whose `from` matches: rules are read in order, like a firewall."""
        return next((rule for rule in self.promote if rule.matches(repository)), None)

    def registry_for(self, rule: PromoteRule) -> RegistryEntry:
        wanted = rule.registry.rstrip("/")
        return next((r for r in self.registries if r.url == wanted), self.registries[0])


@dataclass(frozen=True)
class Secrets:
    """Every secret the gate holds, read once at start; `values()` is what scrubbing removes from any output."""

    token: Secret | None
    basic_password: Secret | None
    registry_passwords: dict[str, Secret]  # registry url -> password
    attest_key: Secret | None = None  # only to scrub it: the check reads it from the variable itself
    database_password: Secret | None = None

    def values(self) -> list[str]:
        held = (
            self.token, self.basic_password, self.attest_key, self.database_password,
            *self.registry_passwords.values(),
        )  # fmt: skip
        found = [s.reveal() for s in held if s]
        return [value for value in found if value]


@dataclass(frozen=True)
class Loaded:
    config: GateConfig
    secrets: Secrets
    base: Path  # relative paths in the config are relative to its directory

    def path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path


def load(path: str | Path, environ: dict[str, str] | None = None) -> Loaded:
    """Read, validate and resolve secrets; every problem is one GateConfigError line (exit 4)."""
    environ = dict(os.environ if environ is None else environ)
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GateConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GateConfigError(f"{path}: not TOML: {exc}") from None
    try:
        config = GateConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise GateConfigError(f"{path}: {where}: {first['msg']}") from None
    base = path.resolve().parent
    if config.postgres:
        _need_driver()
    return Loaded(config, _secrets(config, environ, base), base)


def _need_driver() -> None:
    """A postgresql:// database needs psycopg (the gate-postgres extra): said at load, one line, exit 4."""
    try:
        import psycopg  # noqa: F401 - only whether it imports (with a libpq: the binary wheel brings one)
    except ImportError as exc:
        raise GateConfigError(
            f"database: a postgresql:// URL needs psycopg ({exc}): pip install 'pytest-baseimage[gate-postgres]'"
        ) from None


def _secrets(config: GateConfig, environ: dict[str, str], base: Path) -> Secrets:
    token = _from_env(environ, config.token_env, "token_env") if config.token_env else None
    basic = _from_env(environ, config.basic_password_env, "basic_password_env") if config.basic_password_env else None
    passwords = {}
    for entry in config.registries:
        if entry.password_env:
            passwords[entry.url] = _from_env(environ, entry.password_env, f"{entry.url} password_env")
        elif entry.password_file:
            passwords[entry.url] = _from_file(base, entry.password_file, f"{entry.url} password_file")
    attest = config.attest
    if attest.enabled and importlib.util.find_spec("pytest_baseimage.attest") is None:
        raise GateConfigError("[attest] needs a pytest-baseimage with --attest (the attest package is not installed)")
    key = _from_env(environ, attest.key_env, "[attest] key_env") if attest.enabled and attest.key_env else None
    if attest.enabled and attest.key_file and not (base / attest.key_file).is_file():
        raise GateConfigError(f"[attest] key_file: {base / attest.key_file} is not a file")
    database = None
    if config.database_password_env:
        database = _from_env(environ, config.database_password_env, "database_password_env")
    elif config.database_password_file:
        database = _from_file(base, config.database_password_file, "database_password_file")
    return Secrets(token, basic, passwords, key, database)


def _from_env(environ: dict[str, str], name: str, what: str) -> Secret:
    value = environ.get(name, "")
    if not value:
        raise GateConfigError(f"{what}: the environment variable {name} is not set or empty")
    return Secret(value)


def _from_file(base: Path, name: str, what: str) -> Secret:
    path = Path(name) if Path(name).is_absolute() else base / name
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise GateConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if not value:
        raise GateConfigError(f"{what}: {path} is empty")
    return Secret(value)

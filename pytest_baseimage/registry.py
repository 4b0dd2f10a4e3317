"""Images from registries: credentials, pulls with progress, digest pinning, and build-then-test.

A gate runs this right after a push, so the image is usually *not* on the engine yet: `resolve` pulls it
(with the user's Docker config, or an explicit registry user whose password never travels on the command
line), and records the exact digest that was tested. `build_targets` builds a Dockerfile first, for teams
that want to check a base image before they push it.

Secrets: the password lives in a `Secret` (its repr is `***`), is sent only to the registry it was given
for, and every message this module raises or prints is scrubbed of it; `secrets(config)` hands it to the
report writers so they can redact it too.
"""

from __future__ import annotations

import base64
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from .engine import Engine
from .errors import BaseImageError, EngineError, ExitCode, ImageNotFound
from .results import ImageInfo
from .secret import Secret  # re-exported: the gate reads it without importing pytest
from .text import redact, strip_ansi

PULL_POLICIES = ("missing", "always", "never")
DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
PROGRESS_INTERVAL_S = 2.0  # a progress line at most this often: a CI log stays readable
BUILD_TAIL_LINES = 25
BUILT_KEY = "baseimage_built"  # xdist workerinput key: the controller builds, workers reuse its image ids
PREFIX = "pytest-baseimage"

Writer = Callable[[str], None]


# -- errors ------------------------------------------------------------------------------------------------
class RegistryUsageError(BaseImageError):
    """The registry options contradict each other or put a secret where it would leak: fix the command."""

    exit_code = ExitCode.USAGE_ERROR


class PullError(ImageNotFound):
    """The image is not local and the registry would not hand it over: could not be checked (exit 2)."""


class BuildFailed(EngineError):
    """`--base-image-dockerfile` did not build; the message is one line, then the build log's tail."""


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


def add_options(group: Any) -> None:
    """The registry, pull and build options (plugin.pytest_addoption calls this)."""
    group.addoption(
        "--pull",
        choices=PULL_POLICIES,
        default="missing",
        help="when to pull --base-image: missing (default: only if it is not on the engine), "
        "always (refresh a tag; a digest is never re-pulled), never (local images only).",
    )
    group.addoption(
        "--registry",
        default="",
        metavar="ADDRESS",
        help="private registry address (e.g. myacr.azurecr.io), as Azure ML's base_image_registry: "
        "an image given without a registry host is pulled from it, and --registry-username's "
        "credentials are sent only to it. Without a user, the Docker config's credentials are used.",
    )
    group.addoption("--registry-username", default="", metavar="USER", help="user name for --registry.")
    group.addoption(
        "--registry-password-env",
        default="",
        metavar="NAME",
        help="read --registry-username's password from the environment variable NAME.",
    )
    group.addoption(
        "--registry-password-stdin",
        action="store_true",
        default=False,
        help="read --registry-username's password from standard input (as `docker login`).",
    )
    group.addoption(
        "--registry-password",
        default=None,
        metavar="REFUSED",
        help="refused: a password on the command line leaks (ps, shell history, CI logs). "
        "Use --registry-password-env or --registry-password-stdin.",
    )
    group.addoption(
        "--require-digest",
        action="store_true",
        default=False,
        help="refuse images given by a moving tag (usage error, exit 4): only repo@sha256:... "
        "or an image id, so the verdict is about exactly one image.",
    )
    group.addoption(
        "--base-image-dockerfile",
        default="",
        metavar="PATH",
        help="build this Dockerfile (its directory is the context) and check the result.",
    )
    group.addoption(
        "--build-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="baseimage_build_args",
        help="a build argument for --base-image-dockerfile (repeat).",
    )


_OPTIONS = pytest.StashKey["RegistryOptions"]()


def options_from_config(config: pytest.Config) -> dict[str, Any]:
    """The registry options for every Target; a RegistryUsageError (exit 4) when they are wrong."""
    return read_options(config).to_dict()


def read_options(config: pytest.Config) -> RegistryOptions:
    """Parse once per session: stdin can be read only once, and secrets() must see the same password."""
    if _OPTIONS not in config.stash:
        values = {
            "pull": config.getoption("pull"),
            "registry": config.getoption("registry"),
            "username": config.getoption("registry_username"),
            "password_env": config.getoption("registry_password_env"),
            "password_stdin": config.getoption("registry_password_stdin"),
            "password": config.getoption("registry_password"),
            "require_digest": config.getoption("require_digest"),
            "dockerfile": config.getoption("base_image_dockerfile"),
            "build_args": config.getoption("baseimage_build_args"),
        }
        worker = hasattr(config, "workerinput")
        config.stash[_OPTIONS] = parse_options(
            values,
            images=config.getoption("base_images") or [],
            environ=os.environ,
            read_stdin=(lambda: "") if worker else (lambda: _read_stdin(config)),
            worker=worker,
        )
    return config.stash[_OPTIONS]


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
        _check_reference(image, require_digest)
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


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _password(
    values: Mapping[str, Any], environ: Mapping[str, str], read_stdin: Callable[[], str], worker: bool
) -> tuple[Secret | None, str]:
    name, from_stdin = values.get("password_env") or "", bool(values.get("password_stdin"))
    if name and from_stdin:
        raise RegistryUsageError(
            "give the registry password once: --registry-password-env or --registry-password-stdin"
        )
    if name:
        if not _ENV_NAME.fullmatch(name):  # never echo it: it may be the password itself, pasted by mistake
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


def _read_stdin(config: pytest.Config) -> str:
    """pytest keeps fd 0 on /dev/null while it captures; lift that for one read, as its pdb support does."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        return sys.stdin.read()
    capman.suspend_global_capture(in_=True)
    try:
        return sys.stdin.read()
    finally:  # back to the state pytest_configure runs in: output not captured, stdin captured
        capman.resume_global_capture()
        capman.suspend_global_capture()


def _build_args(pairs: Iterable[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RegistryUsageError(f"--build-arg takes KEY=VALUE, not '{key.strip() or pair}'")
        args[key.strip()] = value
    return args


def secrets(config: pytest.Config) -> list[str]:
    """What the report writers must redact (`write_json(..., secrets=registry.secrets(config))`)."""
    try:
        found = read_options(config).secrets()
    except BaseImageError:
        found = []
    refused = config.getoption("registry_password", None)
    return [*found, *([refused] if refused else [])]


# -- references ----------------------------------------------------------------------------------------------
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?")
IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{64}")
SHORT_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12,63}")


def validate_targets(targets: Iterable[Any]) -> None:
    """Every Target's reference (matrix entries too) is well formed, and pinned under --require-digest."""
    for target in targets:
        options = RegistryOptions.from_dict(target.options.get("registry"))
        _check_reference(target.reference, options.require_digest)


def _check_reference(image: str, require_digest: bool) -> None:
    if not image.strip():
        return  # the plugin says how to give one
    if not (REFERENCE.fullmatch(image) or IMAGE_ID.fullmatch(image)):
        raise RegistryUsageError(
            f"--base-image={image} is not an image reference: expected [registry/]repository[:tag][@sha256:...] "
            "in lower case, or an image id"
        )
    if require_digest and not is_pinned(image):
        raise RegistryUsageError(
            f"--require-digest: '{image}' is a moving tag; pin it as {split_reference(image)[0]}@sha256:<digest> "
            f"(for a pulled or pushed image `docker inspect --format '{{{{index .RepoDigests 0}}}}' {image}` prints "
            "it; an image built here has no digest until it is pushed, so push it first) or give its image id "
            f"(`docker inspect --format '{{{{.Id}}}}' {image}`)"
        )


def is_pinned(reference: str) -> bool:
    """A digest reference or a full image id names one image forever; a tag can move under a gate."""
    return "@" in reference or bool(IMAGE_ID.fullmatch(reference))


def normalise_registry(address: str) -> str:
    """`https://myacr.azurecr.io/` -> `myacr.azurecr.io`; Docker Hub's many names -> docker.io."""
    address = re.sub(r"^[a-z]+://", "", address.strip()).split("/")[0].lower()
    return DOCKER_HUB if address in _HUB_ALIASES else address


def has_registry_host(reference: str) -> bool:
    """Docker's rule: the first path component is a host if it has a dot or a port, or is localhost."""
    first, sep, _ = reference.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost" or first.startswith("["))


def registry_of(reference: str) -> str:
    return normalise_registry(reference.partition("/")[0]) if has_registry_host(reference) else DOCKER_HUB


def qualify(reference: str, registry: str) -> str:
    """An image without a host comes from --registry, as Azure ML joins base_image_registry and base_image."""
    if not registry or registry == DOCKER_HUB or has_registry_host(reference) or IMAGE_ID.fullmatch(reference):
        return reference
    return f"{registry}/{reference}"


def split_reference(reference: str) -> tuple[str, str]:
    """(repository, tag or digest); a missing tag is `latest`, as `docker pull` assumes."""
    if "@" in reference:
        repo, _, digest = reference.partition("@")
        return repo, digest
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, "latest"


# -- resolving (and pulling) -------------------------------------------------------------------------------
def resolve(engine: Engine, target: Any, *, write: Writer | None = None) -> ImageInfo:
    """The image a Target names, pulled if the policy says so, with the digest that will be tested."""
    options = RegistryOptions.from_dict(target.options.get("registry"))
    reference = qualify(target.reference, options.registry)
    if options.require_digest and not is_pinned(reference):  # validate_targets refuses it earlier, as exit 4
        raise ImageNotFound(f"--require-digest: '{target.reference}' is a moving tag; it was not checked")
    try:
        info = _resolve(engine, reference, options, write or _stderr, target.options.get("platform"))
    except BaseImageError as exc:
        raise type(exc)(scrub(str(exc), options.secrets())) from None
    info.engine_platform = engine_platform(engine)
    return info


_ENGINE_PLATFORMS: dict[int, str] = {}


def engine_platform(engine: Engine) -> str:
    """os/arch of the engine (`docker version`), asked once per engine; "" when it does not say."""
    key = id(engine)
    if key not in _ENGINE_PLATFORMS:
        try:
            version = engine.client.version()
        except Exception as exc:  # the engine answered the inspect a moment ago: this is engine trouble
            raise EngineError(f"cannot ask the Docker engine at {engine.host} for its platform: {exc}") from None
        os_name, arch = str(version.get("Os") or ""), str(version.get("Arch") or "")
        _ENGINE_PLATFORMS[key] = f"{os_name}/{arch}" if os_name and arch else ""
    return _ENGINE_PLATFORMS[key]


def _resolve(
    engine: Engine, reference: str, options: RegistryOptions, write: Writer, platform: str | None = None
) -> ImageInfo:
    local = _local_info(engine, reference)
    if local is not None and _is_local_id(reference, local):
        return local
    if local is None and IMAGE_ID.fullmatch(reference):
        raise ImageNotFound(
            f"image '{reference}' is not on the Docker engine at {engine.host} (an image id "
            "cannot be pulled; give repo@sha256:... to pull by digest)"
        )
    if options.pull == "never" or (local is not None and (options.pull == "missing" or "@" in reference)):
        if local is None:
            raise ImageNotFound(
                f"image '{reference}' is not on the Docker engine at {engine.host}, and --pull=never forbids pulling it"
            )
        if options.pull == "never" or "@" in reference or not _names_registry(reference, options):
            return _pin(local, reference)
        current = remote_digest(engine, reference, options.credentials_for(reference))
        if _has_digest(engine, reference, current):
            local.digest = current
            return local
        why = f"the registry's tag now names {current.partition('@')[2][:19]}…, not the local copy"
    else:
        why = "--pull=always" if local is not None else f"not on the Docker engine at {engine.host}"
    try:
        digest = pull(
            engine,
            reference,
            options.credentials_for(reference),
            write,
            why=why,
            platform=platform,
        )
    except PullError as exc:
        if local is None:
            raise PullError(
                f"image '{reference}' is not on the Docker engine at {engine.host}, and pulling it failed: {exc}"
            ) from None
        raise PullError(f"could not refresh '{reference}' ({why}): {exc}") from None
    info = engine.image_info(reference)
    info.digest = digest or info.digest
    return info


def _names_registry(reference: str, options: RegistryOptions) -> bool:
    """A tag a gate must check against its registry: the reference names a host, or --registry was given."""
    return has_registry_host(reference) or bool(options.registry)


def remote_digest(engine: Engine, reference: str, credentials: Credentials | None) -> str:
    """repo@sha256:... that the registry's tag names now (the engine asks it: `docker manifest inspect`'s
    question, with the same credentials a pull would use). PullError (exit 2) when it cannot be asked."""
    import docker
    import requests

    repo, _tag = split_reference(reference)
    auth = credentials.auth_config() if credentials is not None else None
    try:
        answer = engine.client.api.inspect_distribution(reference, auth_config=auth)
    except docker.errors.APIError as exc:
        error = describe_pull_error(reference, _explanation(exc), credentials)
        raise PullError(f"cannot ask the registry which image '{reference}' is now: {error}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise PullError(f"lost the Docker engine while asking the registry: {_first_line(str(exc))}") from None
    digest = str((answer.get("Descriptor") or {}).get("digest") or "")
    if not digest.startswith("sha256:"):
        raise PullError(f"the registry {registry_of(reference)} named no digest for '{reference}'")
    return f"{repo}@{digest}"


def _has_digest(engine: Engine, reference: str, digest: str) -> bool:
    """The local image of `reference` is the one `digest` names (it is among its RepoDigests)."""
    try:
        attrs = engine.client.api.inspect_image(reference)
    except Exception:
        return False
    return digest in (attrs.get("RepoDigests") or [])


def _local_info(engine: Engine, reference: str) -> ImageInfo | None:
    try:
        return engine.image_info(reference)
    except ImageNotFound:
        return None


def _is_local_id(reference: str, info: ImageInfo) -> bool:
    """An image id (full or short) is local by definition: there is nothing to pull."""
    ref = reference.removeprefix("sha256:")
    return bool(SHORT_ID.fullmatch(reference) or IMAGE_ID.fullmatch(reference)) and info.image_id.removeprefix(
        "sha256:"
    ).startswith(ref)


def _pin(info: ImageInfo, reference: str) -> ImageInfo:
    """A digest reference is its own digest (the engine found the image by it)."""
    if "@" in reference:
        info.digest = reference
    return info


def pull(
    engine: Engine,
    reference: str,
    credentials: Credentials | None,
    write: Writer,
    *,
    why: str = "",
    platform: str | None = None,
) -> str:
    """Pull through the SDK with progress lines; returns repo@sha256:... of what arrived."""
    import docker
    import requests

    repo, tag = split_reference(reference)
    kwargs: dict[str, Any] = {"tag": tag, "stream": True, "decode": True}
    if platform:  # a matrix entry's `platform`, e.g. linux/amd64 for a multi-arch tag
        kwargs["platform"] = platform
    if credentials is not None:
        kwargs["auth_config"] = credentials.auth_config()
    # Without explicit credentials the SDK uses the Docker config: auths, credsStore and credHelpers.
    progress = PullProgress(reference, write)
    progress.start(why)
    try:
        for event in engine.client.api.pull(repo, **kwargs):
            if event.get("error"):
                raise describe_pull_error(reference, str(event["error"]), credentials)
            progress.update(event)
    except docker.errors.APIError as exc:
        raise describe_pull_error(reference, _explanation(exc), credentials) from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise PullError(f"lost the Docker engine while pulling: {_first_line(str(exc))}") from None
    progress.finish()
    return f"{repo}@{progress.digest}" if progress.digest else ""


_AUTH = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "incorrect username or password",
    "denied",
    "status: 401",
    "401 unauthorized",
)
_MISSING = ("manifest unknown", "name unknown", "not found")
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "dial tcp",
    "x509",
    "tls:",
    "timeout",
    "server gave http response",
    "network is unreachable",
    "connection reset",
)


def describe_pull_error(reference: str, message: str, credentials: Credentials | None) -> PullError:
    """The daemon's error as one line that says what to do (pure: unit-tested on the daemon's texts)."""
    registry = registry_of(reference)
    repo, tag = split_reference(reference)
    path = repo.partition("/")[2] if has_registry_host(repo) else repo
    kind = "digest" if "@" in reference else "tag"
    low = message.lower()
    detail = _first_line(message)
    if "pull access denied" in low or "does not exist or may require" in low:
        return PullError(
            f"registry {registry} has no repository '{path}', or it needs credentials "
            f"(--registry={registry} --registry-username=USER --registry-password-env=NAME, "
            f"or `docker login {registry}`)"
        )
    if any(marker in low for marker in _AUTH):
        if credentials is not None:
            return PullError(
                f"registry {registry} refused user '{credentials.username}' with the password from "
                f"{credentials.source} ({detail}); check both, and that the user may pull '{path}'"
            )
        return PullError(
            f"registry {registry} wants credentials ({detail}): pass --registry={registry} "
            f"--registry-username=USER --registry-password-env=NAME, or run `docker login {registry}`"
        )
    if any(marker in low for marker in _MISSING):
        return PullError(
            f"registry {registry} has no {kind} '{tag}' in repository '{path}' (or no such "
            f"repository): check the repository name and the {kind}"
        )
    if any(marker in low for marker in _UNREACHABLE):
        return PullError(f"cannot reach registry {registry} ({detail})")
    return PullError(f"the registry {registry} answered: {detail}")


@dataclass
class _Layer:
    current: int = 0
    total: int = 0
    done: bool = False


_LAYER_STATUSES = {
    "Pulling fs layer",
    "Waiting",
    "Downloading",
    "Verifying Checksum",
    "Download complete",
    "Extracting",
    "Pull complete",
    "Already exists",
}


@dataclass
class PullProgress:
    """Compact, rate-limited pull progress: a line to start, one per interval, one at the end."""

    reference: str
    write: Writer
    interval_s: float = PROGRESS_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    digest: str = ""
    layers: dict[str, _Layer] = field(default_factory=dict)
    _started: float = 0.0
    _last: float = 0.0

    def start(self, why: str) -> None:
        self._started = self._last = self.clock()
        self.write(f"{PREFIX}: pulling {self.reference}" + (f" ({why})" if why else ""))

    def update(self, event: Mapping[str, Any]) -> None:
        status = str(event.get("status") or "")
        if status.startswith("Digest: "):
            self.digest = status.split(" ", 1)[1].strip()
        layer_id = event.get("id")
        if layer_id and status in _LAYER_STATUSES:
            layer = self.layers.setdefault(str(layer_id), _Layer())
            detail = event.get("progressDetail") or {}
            if status == "Downloading":
                layer.current = int(detail.get("current") or layer.current)
                layer.total = int(detail.get("total") or layer.total)
            elif status in ("Download complete", "Verifying Checksum"):
                layer.current = layer.total
            elif status in ("Pull complete", "Already exists"):
                layer.done, layer.current = True, layer.total
        now = self.clock()
        if now - self._last >= self.interval_s:
            self._last = now
            self.write(self.line())

    def line(self) -> str:
        done = sum(1 for layer in self.layers.values() if layer.done)
        current = sum(layer.current for layer in self.layers.values())
        total = sum(layer.total for layer in self.layers.values())
        size = f", {_mb(current)} of {_mb(total)} MB" if total else ""
        return f"{PREFIX}: pulling {self.reference}: {done}/{len(self.layers)} layers{size}"

    def finish(self) -> None:
        took = self.clock() - self._started
        self.write(f"{PREFIX}: pulled {self.reference} ({self.digest or 'no digest reported'}) in {took:.1f} s")


# -- build-then-test ------------------------------------------------------------------------------------------
def build_targets(config: pytest.Config) -> list[str]:
    """Build --base-image-dockerfile and return [image id] to check; [] without the option.

    The xdist controller builds; workers take its image ids from `config.workerinput[BUILT_KEY]` (the
    plugin's pytest_configure_node copies `built(config)` there). Raises BuildFailed (exit 2) or
    RegistryUsageError (exit 4).
    """
    if hasattr(config, "workerinput"):
        return list(config.workerinput.get(BUILT_KEY, []))
    options = read_options(config)
    if not options.dockerfile:
        return []
    from .session import session_of  # the session (registered before this runs) owns the engines

    session = session_of(config)
    engine = session.engines.get(None) if session is not None else Engine()
    try:
        if options.credentials is not None:
            _login(engine, options.credentials)
        image_id = build(engine, Path(options.dockerfile), options.build_args, _stderr)
    except BaseImageError as exc:
        raise type(exc)(scrub(str(exc), options.secrets())) from None
    config.stash[_BUILT] = [image_id]
    return [image_id]


_BUILT = pytest.StashKey[list]()


def built(config: pytest.Config) -> list[str]:
    """The image ids this controller built (for xdist's workerinput)."""
    return list(config.stash.get(_BUILT, []))


def _login(engine: Engine, credentials: Credentials) -> None:
    """Let the build's FROM pull from the private registry (the SDK keeps the login in memory only)."""
    import docker

    try:
        engine.client.login(
            username=credentials.username,
            password=credentials.password.reveal(),
            registry=credentials.registry,
            reauth=True,
        )
    except docker.errors.APIError as exc:
        raise PullError(
            f"cannot log in to registry {credentials.registry} as '{credentials.username}' with the "
            f"password from {credentials.source}: {_first_line(_explanation(exc))}"
        ) from None


def build(engine: Engine, dockerfile: Path, build_args: Mapping[str, str], write: Writer) -> str:
    """Build with the SDK, streaming the steps; BuildFailed with the log's tail when it does not build."""
    import docker

    dockerfile = dockerfile.resolve()
    log = BuildLog(write)
    write(f"{PREFIX}: building {dockerfile}" + (f" with {', '.join(sorted(build_args))}" if build_args else ""))
    image_id, error = "", ""
    try:
        for event in engine.client.api.build(
            path=str(dockerfile.parent),
            dockerfile=dockerfile.name,
            buildargs=dict(build_args),
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if event.get("error"):
                error = str(event["error"])
                break
            log.add(str(event.get("stream") or ""))
            image_id = str((event.get("aux") or {}).get("ID") or image_id)
    except docker.errors.APIError as exc:
        error = _explanation(exc)
    except docker.errors.DockerException as exc:
        error = str(exc)
    image_id = image_id or log.built_id()
    if error or not image_id:
        raise BuildFailed(log.failure(dockerfile, error or "the build reported no image"))
    write(f"{PREFIX}: built {dockerfile} -> {image_id}")
    return image_id


@dataclass
class BuildLog:
    """The build's output: step lines go to the terminal as they come, everything is kept for the tail."""

    write: Writer
    lines: list[str] = field(default_factory=list)

    def add(self, chunk: str) -> None:
        for line in strip_ansi(chunk).splitlines():
            if not line.strip():
                continue
            self.lines.append(line.rstrip())
            if line.startswith("Step "):
                self.write(f"{PREFIX}: build: {line.rstrip()}")

    def built_id(self) -> str:
        for line in reversed(self.lines):
            if line.startswith("Successfully built "):
                return line.split()[-1]
        return ""

    def failure(self, dockerfile: Path, error: str) -> str:
        tail = self.lines[-BUILD_TAIL_LINES:]
        head = f"building {dockerfile} failed: {_first_line(error)}"
        if not tail:
            return head
        return "\n".join([head, f"  last {len(tail)} lines of the build log:", *(f"  | {line}" for line in tail)])


# -- helpers -------------------------------------------------------------------------------------------------
def scrub(text: str, secret_values: Iterable[str]) -> str:
    """No terminal escapes and no secrets in anything the user or a report will see."""
    return redact(strip_ansi(text), list(secret_values))


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _explanation(exc: Any) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else "no detail"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f}"

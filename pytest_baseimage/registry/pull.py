"""Resolving an image: pulled per the policy (with progress), its digest pinned."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine import Engine
from ..errors import BaseImageError, EngineError, ImageNotFound
from ..results import ImageInfo
from .base import PREFIX, PROGRESS_INTERVAL_S, PullError, Writer, explanation, first_line, megabytes, scrub, to_stderr
from .options import Credentials, RegistryOptions
from .reference import IMAGE_ID, SHORT_ID, has_registry_host, is_pinned, qualify, registry_of, split_reference


# -- resolving (and pulling) -------------------------------------------------------------------------------
def resolve(engine: Engine, target: Any, *, write: Writer | None = None) -> ImageInfo:
    """The image a Target names, pulled if the policy says so, with the digest that will be tested."""
    options = RegistryOptions.from_dict(target.options.get("registry"))
    reference = qualify(target.reference, options.registry)
    if options.require_digest and not is_pinned(reference):  # validate_targets refuses it earlier, as exit 4
        raise ImageNotFound(f"--require-digest: '{target.reference}' is a moving tag; it was not checked")
    try:
        info = _resolve(engine, reference, options, write or to_stderr, target.options.get("platform"))
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
        error = describe_pull_error(reference, explanation(exc), credentials)
        raise PullError(f"cannot ask the registry which image '{reference}' is now: {error}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise PullError(f"lost the Docker engine while asking the registry: {first_line(str(exc))}") from None
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
        raise describe_pull_error(reference, explanation(exc), credentials) from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise PullError(f"lost the Docker engine while pulling: {first_line(str(exc))}") from None
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
    detail = first_line(message)
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
        size = f", {megabytes(current)} of {megabytes(total)} MB" if total else ""
        return f"{PREFIX}: pulling {self.reference}: {done}/{len(self.layers)} layers{size}"

    def finish(self) -> None:
        took = self.clock() - self._started
        self.write(f"{PREFIX}: pulled {self.reference} ({self.digest or 'no digest reported'}) in {took:.1f} s")

"""Reaching a Docker engine: the SDK client for DOCKER_HOST or a docker context (its TLS CA kept in force),
which failures are the engine's, and how to say an engine cannot be reached."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EngineError, ImageNotFound
from .results import ImageInfo


@dataclass(frozen=True)
class ContextEndpoint:
    """A docker context's engine: its URL, and its TLS settings (a docker.tls.TLSConfig) when it has any."""

    host: str
    tls: Any = None


def read_context(name: str) -> ContextEndpoint | None:
    """A named context, read from the store where the docker CLI keeps it: $DOCKER_CONFIG (or ~/.docker)
    /contexts/{meta,tls}/<sha256 of the name>/. The SDK's own reader only looks there when a config.json
    sits beside it, which `docker context create` does not write. None when there is no such context."""
    from docker.context.config import get_context_host
    from docker.errors import DockerException
    from docker.tls import TLSConfig

    store = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "contexts"
    context_id = hashlib.sha256(name.encode("utf-8")).hexdigest()
    tls_dir = store / "tls" / context_id / "docker"
    try:
        meta = json.loads((store / "meta" / context_id / "meta.json").read_text(encoding="utf-8"))
        endpoint = dict((meta.get("Endpoints") or {}).get("docker") or {})
        pem = {p.name[:2]: str(p) for p in tls_dir.iterdir()} if tls_dir.is_dir() else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise EngineError(f"cannot read Docker context '{name}': {type(exc).__name__}: {exc}") from None
    tls = None
    skip_verify = bool(endpoint.get("SkipTLSVerify"))
    if pem or skip_verify:  # ca*, cert*, key*: the file names the CLI writes; any of them (or skip) means TLS
        if ("ce" in pem) != ("ke" in pem):
            raise EngineError(f"Docker context '{name}' has a client certificate without its key, or a key alone")
        client_cert = (pem["ce"], pem["ke"]) if "ce" in pem else None
        try:
            tls = TLSConfig(client_cert=client_cert, ca_cert=pem.get("ca"), verify=not skip_verify)
        except DockerException as exc:  # e.g. a certificate file that is gone
            raise EngineError(f"cannot use Docker context '{name}': {short_error(exc)}") from None
    host = str(endpoint.get("Host") or "")
    return ContextEndpoint(get_context_host(host, tls is not None) if host else "", tls)


def client_from_environment() -> Any:
    """A Docker client configured as the docker CLI would be: DOCKER_HOST, else DOCKER_CONTEXT, else the
    config's current context (the SDK alone ignores DOCKER_CONTEXT)."""
    import docker
    from docker.context.config import get_current_context_name

    name = "" if os.environ.get("DOCKER_HOST") else os.environ.get("DOCKER_CONTEXT") or get_current_context_name()
    if not name or name == "default":
        return pinned_client(lambda version: docker.from_env(timeout=120, version=version))
    return client_from_context(name)


def client_from_context(name: str) -> Any:
    """A client for a named docker context, with its TLS certificates when it has them."""
    import docker

    ctx = read_context(name)
    if ctx is None or not ctx.host:
        raise EngineError(f"Docker context '{name}' does not exist (see `docker context ls`)")
    return pinned_client(
        lambda version: docker.DockerClient(base_url=ctx.host, tls=ctx.tls or False, timeout=120, version=version)
    )


def pinned_client(make: Any) -> Any:
    """A client made with a fixed API version (so that its constructor sends no request), its engine CA pinned
    (see pin_engine_ca), and then the engine's own API version, as version="auto" would have chosen."""
    from docker.constants import MINIMUM_DOCKER_API_VERSION
    from docker.errors import DockerException

    probe = make(MINIMUM_DOCKER_API_VERSION)
    pin_engine_ca(probe.api)
    try:
        version = probe.api.version(api_version=False)["ApiVersion"]
    except Exception as exc:  # TLS refusals, refused connections, a non-engine answering: one line upstream
        raise DockerException(f"Error while fetching server API version: {exc}") from None
    finally:
        probe.close()
    client = make(version)  # a client made with a fixed version sends nothing on construction
    pin_engine_ca(client.api)
    return client


def api_url(api: Any, path: str) -> str:
    """The engine's URL for `path` at the client's API version, as the SDK builds its own (public names only:
    the SDK's request helpers are private)."""
    return f"{api.base_url}/v{api.api_version}{path}"


def pin_engine_ca(session: Any) -> None:
    """Keep the engine's own CA (a TLS context, DOCKER_CERT_PATH) in force when REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE is set: requests lets those replace a session's CA file, and the engine's certificate
    then fails to verify, though the docker CLI accepts it."""
    from requests.adapters import BaseAdapter

    ca_file = getattr(session, "verify", None)
    if not isinstance(ca_file, str):
        return  # True/False: the usual bundles, or no verification, as requests does it

    class KeepEngineCA(BaseAdapter):
        """The https adapter the SDK mounted, sent every request with the engine's CA file as `verify` (through
        requests' public adapter interface: Session.mount, BaseAdapter.send)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def send(self, request: Any, **kwargs: Any) -> Any:
            kwargs["verify"] = ca_file
            return self.inner.send(request, **kwargs)

        def close(self) -> None:
            self.inner.close()

    session.mount("https://", KeepEngineCA(session.get_adapter("https://")))


def engine_faults() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the engine (not the image) failed: the SDK's own, and the HTTP layer's
    (a daemon that died mid-request raises requests' ConnectionError, not a DockerException)."""
    import docker
    import requests

    return (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError)


def unreachable_message(where: str, error: str) -> str:
    """Why the engine cannot be used, with the fix that fits: a socket we may not open is not a missing daemon."""
    if "permission denied" in error.lower():
        socket_path = where.removeprefix("unix://") if where.startswith("unix://") else where
        return (
            f"permission denied on {socket_path}: add your user to the docker group "
            "(`sudo usermod -aG docker $USER`, then log in again) or run as root"
        )
    return (
        f"cannot reach the Docker engine at {where} ({error}); "
        "start it (e.g. `dockerd`, or `.ci/docker-up`) or set DOCKER_HOST"
    )


def describe_host(client: Any) -> str:
    """Where the engine is, as a user would write it (the SDK says http+docker://localhost for a socket)."""
    url = str(getattr(client.api, "base_url", ""))
    if url.startswith("http+docker://"):
        return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return url or "docker"


def short_error(exc: BaseException) -> str:
    """The first line of an exception, without the SDK's long HTTP preamble."""
    text = str(getattr(exc, "explanation", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def matching_digest(reference: str, digests: list[str]) -> str:
    """The repo@sha256 digest of the reference's own repository; "" when none is. The engine lists a digest
    for every repository the image was pushed to or pulled from: another repository's is not the digest of
    what was tested under this name (an image id names no repository at all)."""
    from .registry.reference import canonical_repository, split_reference  # late: registry imports the engine

    repo = canonical_repository(split_reference(reference)[0])
    return next((d for d in digests if canonical_repository(d.partition("@")[0]) == repo), "")


class EngineQueries:
    """What the engine says about itself and its images (mixed into engine.Engine, which sets client and host)."""

    client: Any
    host: str

    def answers(self, timeout: float = 10.0) -> bool:
        """Whether the engine still answers, within `timeout` (a hung daemon must not hold every failing stage
        for the client's 120 s): a failure seen after it stopped answering is not the image's."""
        api = self.client.api
        try:
            api.get(f"{api.base_url}/_ping", timeout=timeout).raise_for_status()
        except Exception:
            return False
        return True

    def image_info(self, reference: str) -> ImageInfo:
        """Inspect a local image; ImageNotFound with a one-line reason when it is not there."""
        import docker

        try:
            image = self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            raise ImageNotFound(f"image '{reference}' is not on the Docker engine at {self.host}") from None
        except engine_faults() as exc:
            raise EngineError(f"cannot inspect image '{reference}': {short_error(exc)}") from None
        attrs = image.attrs
        digests = attrs.get("RepoDigests") or []
        return ImageInfo(
            reference=reference,
            image_id=image.id,
            digest=matching_digest(reference, digests),
            size_bytes=int(attrs.get("Size") or 0),
            created=str(attrs.get("Created") or ""),
            architecture=str(attrs.get("Architecture") or ""),
            os=str(attrs.get("Os") or ""),
            variant=str(attrs.get("Variant") or ""),
            user=str((attrs.get("Config") or {}).get("User") or ""),
        )

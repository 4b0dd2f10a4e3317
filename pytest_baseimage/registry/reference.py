"""Image references: the grammar, pinning, and which registry a reference names (pure)."""

from __future__ import annotations

import re

from .base import DOCKER_HUB, HUB_ALIASES, RegistryUsageError

# -- references ----------------------------------------------------------------------------------------------
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?")
IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{64}")
SHORT_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12,63}")


def check_reference(image: str, require_digest: bool) -> None:
    if not image.strip():
        return  # the plugin says how to give one
    if not ((REFERENCE.fullmatch(image) and _lower_path(image)) or IMAGE_ID.fullmatch(image)):
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


def _lower_path(reference: str) -> bool:
    """The repository's path is lower case (only a registry host may have capitals): `UPPER/case` names no
    host (no dot, port or localhost), so Docker refuses it as a repository, and so does the usage check."""
    name = split_reference(reference)[0]
    path = name.partition("/")[2] if has_registry_host(name) else name
    return path == path.lower()


def canonical_repository(name: str) -> str:
    """One spelling of a repository, to compare two: `ubuntu` and `docker.io/library/ubuntu` are the same."""
    if has_registry_host(name):
        host, _, path = name.partition("/")
        host = normalise_registry(host)
    else:
        host, path = DOCKER_HUB, name
    return f"{host}/library/{path}" if host == DOCKER_HUB and "/" not in path else f"{host}/{path}"


def is_pinned(reference: str) -> bool:
    """A digest reference or a full image id names one image forever; a tag can move under a gate."""
    return "@" in reference or bool(IMAGE_ID.fullmatch(reference))


def normalise_registry(address: str) -> str:
    """`https://myacr.azurecr.io/` -> `myacr.azurecr.io`; Docker Hub's many names -> docker.io."""
    address = re.sub(r"^[a-z]+://", "", address.strip()).split("/")[0].lower()
    return DOCKER_HUB if address in HUB_ALIASES else address


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

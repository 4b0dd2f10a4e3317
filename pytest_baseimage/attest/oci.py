"""Attestations in the image's registry, stored as cosign stores them, so Kyverno and policy-controller find them.

cosign's layout (WAVE2-FACTS.md, "Attestations"): an OCI image manifest tagged `sha256-<hex>.att` (the image's
digest with ':' replaced), each layer a DSSE envelope of media type `application/vnd.dsse.envelope.v1+json`
with the annotation `predicateType`, and here also `subject` pointing at the image (OCI 1.1). A registry with
the referrers API (`GET /v2/<name>/referrers/<digest>`) indexes the manifest by its subject on push; readers
ask that API first and fall back to the tag when it answers 404 (Debian's docker-registry 2.8 has no such API,
checked here, and stores the subject intact).

The HTTP side is the registry API v2 with `requests` (already a dependency of the docker SDK). Credentials are
registry.py's: the explicit --registry-username user for its own registry only, else the Docker config's
`auths` entry for the host. Plain HTTP only for loopback registries, as Docker allows them without TLS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import BaseImageError, ExitCode
from ..registry.base import DOCKER_HUB, scrub
from ..registry.options import Credentials, RegistryOptions
from ..registry.reference import has_registry_host, registry_of, split_reference
from ..text import one_line
from .statement import PREDICATE_TYPE, REGISTRY_DIGEST, profile_of, subject_of

DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPES = (
    OCI_MANIFEST,
    OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
PROFILE_ANNOTATION = "dev.pytest-baseimage.profile"  # a new verdict for the same profile replaces the old layer
TIMEOUT_S = 30.0
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution spec's own limit for manifests
MAX_BLOB_BYTES = 16 * 1024 * 1024  # an envelope is a few kB; anything larger is not ours to read
LOOPBACK = re.compile(r"^(localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?$")


class RegistryUnavailable(BaseImageError):
    """The registry could not be asked or refused the request: the evidence could not be stored or read."""

    exit_code = ExitCode.UNCHECKED


@dataclass(frozen=True)
class Ref:
    registry: str
    repo: str
    reference: str  # a tag or a sha256:... digest

    @classmethod
    def parse(cls, ref: str) -> Ref:
        """host/repo:tag or host/repo@sha256:... (registry.py's rules); Docker Hub's short names get library/."""
        repo, reference = split_reference(ref)
        if "@" in ref and ":" in repo.rsplit("/", 1)[-1]:  # repo:tag@digest: the digest names the image
            repo = repo.rsplit(":", 1)[0]
        registry = registry_of(ref)
        path = repo.split("/", 1)[1] if has_registry_host(repo) else repo
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        return cls(registry, path, reference)


def att_tag(digest: str) -> str:
    """cosign's tag for the attestations of an image: sha256:abc -> sha256-abc.att."""
    return digest.replace(":", "-") + ".att"


class Client:
    """Registry API v2 calls for one registry, with its credentials; every read bounded, every call timed out."""

    def __init__(self, registry: str, credentials: Credentials | None, secrets: list[str] | None = None) -> None:
        import requests

        self.registry = registry
        host = "registry-1.docker.io" if registry == DOCKER_HUB else registry
        self.base = f"{'http' if LOOPBACK.match(registry) else 'https'}://{host}"
        self.credentials = credentials or _docker_config_credentials(registry)
        self.session = requests.Session()
        self.secrets = [*(secrets or []), *(self.credentials.secret_forms() if self.credentials else [])]

    def request(self, method: str, path: str, scope: str, **kwargs: Any) -> Any:
        """One call; on 401 authenticate as the challenge asks (Basic, or a Bearer token for `scope`) and retry."""
        import requests

        url = path if path.startswith("http") else f"{self.base}{path}"
        try:
            response = self.session.request(method, url, timeout=TIMEOUT_S, stream=True, **kwargs)
            if response.status_code == 401 and self.credentials is not None:
                self._authenticate(response.headers.get("WWW-Authenticate", ""), scope)
                response = self.session.request(method, url, timeout=TIMEOUT_S, stream=True, **kwargs)
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"registry {self.registry}: {self._clean(str(exc))}") from None
        return response

    def _authenticate(self, challenge: str, scope: str) -> None:
        assert self.credentials is not None
        user, password = self.credentials.username, self.credentials.password.reveal()
        if challenge.lower().startswith("bearer"):
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            realm = params.pop("realm", "")
            answer = self.session.get(
                realm, params={**params, "scope": scope}, auth=(user, password), timeout=TIMEOUT_S
            )
            if answer.status_code != 200:
                raise RegistryUnavailable(f"registry {self.registry}: token request refused ({answer.status_code})")
            token = (answer.json() or {}).get("token") or (answer.json() or {}).get("access_token") or ""
            self.session.headers["Authorization"] = f"Bearer {token}"
            self.secrets.append(token)
        else:
            self.session.auth = (user, password)

    def read(self, response: Any, limit: int) -> bytes:
        """The body, refused when larger than `limit`: the registry's answers are bounded like the candidate's."""
        data = b""
        for chunk in response.iter_content(64 * 1024):
            data += chunk
            if len(data) > limit:
                response.close()
                raise RegistryUnavailable(f"registry {self.registry}: an answer larger than {limit} bytes")
        return data

    def fail(self, what: str, response: Any) -> RegistryUnavailable:
        body = self._clean(self.read(response, 4096).decode("utf-8", "replace")) if response is not None else ""
        status = getattr(response, "status_code", "?")
        return RegistryUnavailable(f"registry {self.registry}: {what}: HTTP {status} {one_line(body)[:200]}")

    def _clean(self, text: str) -> str:
        return scrub(text, self.secrets)

    # -- manifests and blobs ---------------------------------------------------------------------------------
    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        """(body, media type, digest) of a manifest, None when the registry has none by that name."""
        response = self.request(
            "GET", f"/v2/{repo}/manifests/{reference}", f"repository:{repo}:pull", headers=_accept()
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.fail(f"cannot read the manifest {repo}:{reference}", response)
        body = self.read(response, MAX_MANIFEST_BYTES)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise RegistryUnavailable(f"registry {self.registry}: the manifest for {reference} has digest {digest}")
        media_type = response.headers.get("Content-Type", "").split(";")[0] or _media_type_of(body)
        return body, media_type, digest

    def blob(self, repo: str, digest: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        response = self.request("GET", f"/v2/{repo}/blobs/{digest}", f"repository:{repo}:pull")
        if response.status_code != 200:
            raise self.fail(f"cannot read the blob {digest}", response)
        data = self.read(response, limit)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryUnavailable(f"registry {self.registry}: the blob {digest} does not match its digest")
        return data

    def put_blob(self, repo: str, data: bytes) -> dict[str, Any]:
        """Upload (monolithic POST then PUT) unless the registry has it; returns its descriptor fields."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        scope = f"repository:{repo}:pull,push"
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope).status_code == 200:
            return {"digest": digest, "size": len(data)}
        started = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope)
        if started.status_code != 202 or not started.headers.get("Location"):
            raise self.fail("cannot start a blob upload", started)
        location = started.headers["Location"]
        location = location if location.startswith("http") else f"{self.base}{location}"
        separator = "&" if "?" in location else "?"
        done = self.request(
            "PUT",
            f"{location}{separator}digest={digest}",
            scope,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if done.status_code != 201:
            raise self.fail("cannot upload a blob", done)
        return {"digest": digest, "size": len(data)}

    def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> str:
        response = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            f"repository:{repo}:pull,push",
            data=body,
            headers={"Content-Type": media_type},
        )
        if response.status_code != 201:
            raise self.fail(f"cannot store the manifest {repo}:{tag}", response)
        return response.headers.get("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())

    def referrers(self, repo: str, digest: str) -> list[dict[str, Any]] | None:
        """The OCI 1.1 referrers of a digest; None when the registry has no referrers API (404)."""
        response = self.request(
            "GET", f"/v2/{repo}/referrers/{digest}", f"repository:{repo}:pull", headers={"Accept": OCI_INDEX}
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.fail("cannot list referrers", response)
        try:
            index = json.loads(self.read(response, MAX_MANIFEST_BYTES))
        except ValueError:
            return None  # not an index: treat as no referrers API, and read the tag
        return [m for m in index.get("manifests") or [] if isinstance(m, dict)]


def _accept() -> dict[str, str]:
    return {"Accept": ", ".join(MANIFEST_TYPES)}


def _media_type_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("mediaType") or OCI_MANIFEST)
    except (ValueError, AttributeError):
        return OCI_MANIFEST


def _docker_config_credentials(registry: str) -> Credentials | None:
    """The `auths` entry `docker login` wrote for this host ($DOCKER_CONFIG or ~/.docker/config.json), if any;
    credential helpers are not run."""
    from ..secret import Secret

    path = os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            auths = (json.load(handle) or {}).get("auths") or {}
        encoded = (auths.get(registry) or auths.get(f"https://{registry}") or {}).get("auth") or ""
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (OSError, ValueError, AttributeError):
        return None
    return Credentials(registry, user, Secret(password), "docker config") if user and password else None


# -- push ----------------------------------------------------------------------------------------------------
def push_for_report(report: Any, envelope: dict[str, Any], registry_options: dict[str, Any], secrets: list[str]) -> str:
    """Store one image's envelope next to it; returns the line for the terminal. RegistryUnavailable (exit 2)
    when the image has no registry digest or the registry refuses."""
    subject = subject_of(report)  # the statement's own subject: the digest the evidence is bound to
    if subject.kind != REGISTRY_DIGEST:
        raise RegistryUnavailable(
            f"{report.name}: no registry digest to attach an attestation to (a local image); push the image first"
        )
    repo_digest = f"{subject.name}@sha256:{subject.sha256}"
    options = RegistryOptions.from_dict(registry_options)
    ref = Ref.parse(repo_digest)
    client = Client(ref.registry, options.credentials_for(repo_digest), secrets)
    tag = push(client, ref.repo, ref.reference, envelope)
    return f"attestation pushed: {ref.registry}/{ref.repo}:{tag}"


def push(client: Client, repo: str, digest: str, envelope: dict[str, Any]) -> str:
    """Add the envelope to the image's `.att` manifest (replacing an earlier one for the same profile)."""
    subject = client.manifest(repo, digest)
    if subject is None:
        raise RegistryUnavailable(f"registry {client.registry}: no image {repo}@{digest} to attest")
    layer_bytes = json.dumps(envelope, sort_keys=True).encode("utf-8")
    profile = profile_of(_payload(envelope))
    layer = {
        "mediaType": DSSE_MEDIA_TYPE,
        **client.put_blob(repo, layer_bytes),
        "annotations": {"predicateType": PREDICATE_TYPE, PROFILE_ANNOTATION: profile},
    }
    tag = att_tag(digest)
    kept = [
        entry
        for entry in _existing_layers(client, repo, tag)
        if (entry.get("annotations") or {}).get(PROFILE_ANNOTATION) != profile
    ]
    layers = [*kept, layer]
    config = {
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [entry["digest"] for entry in layers]},
    }
    config_descriptor = {"mediaType": OCI_CONFIG, **client.put_blob(repo, json.dumps(config).encode())}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_descriptor,
        "layers": layers,
        "subject": {"mediaType": subject[1], "digest": digest, "size": len(subject[0])},
    }
    client.put_manifest(repo, tag, json.dumps(manifest).encode(), OCI_MANIFEST)
    return tag


def _existing_layers(client: Client, repo: str, tag: str) -> list[dict[str, Any]]:
    found = client.manifest(repo, tag)
    if found is None:
        return []
    try:
        return [entry for entry in json.loads(found[0]).get("layers") or [] if isinstance(entry, dict)]
    except (ValueError, AttributeError):
        return []


def _payload(envelope: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(base64.b64decode(envelope.get("payload") or ""))
    except ValueError:
        return {}


# -- fetch ---------------------------------------------------------------------------------------------------
def current_digest(client: Client, repo: str, reference: str) -> str:
    """The digest the registry serves for a tag (or confirms for a digest) now."""
    found = client.manifest(repo, reference)
    if found is None:
        raise RegistryUnavailable(f"registry {client.registry}: no image {repo}:{reference}")
    return found[2]


def envelopes(client: Client, repo: str, digest: str) -> list[Any]:
    """Every DSSE layer attached to the image: via the referrers API, else via cosign's `.att` tag."""
    manifests: list[bytes] = []
    listed = client.referrers(repo, digest)
    if listed is not None:
        for descriptor in listed:
            found = client.manifest(repo, str(descriptor.get("digest") or ""))
            if found is not None:
                manifests.append(found[0])
    if not manifests:
        found = client.manifest(repo, att_tag(digest))
        manifests += [found[0]] if found is not None else []
    out: list[Any] = []
    seen: set[str] = set()
    for body in manifests:
        try:
            layers = json.loads(body).get("layers") or []
        except (ValueError, AttributeError):
            continue
        for layer in layers:
            if not isinstance(layer, dict) or layer.get("mediaType") != DSSE_MEDIA_TYPE:
                continue
            if layer.get("digest") in seen:
                continue
            seen.add(str(layer.get("digest")))
            try:
                out.append(json.loads(client.blob(repo, str(layer.get("digest")))))
            except ValueError:
                out.append(None)  # not JSON: verify reports it as a bad envelope
    return out

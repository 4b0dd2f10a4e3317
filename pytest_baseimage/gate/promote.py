"""Registry-side promotion: copy repository@digest to another repository without moving a layer through here.

Blobs are cross-repository mounts (`POST /v2/<to>/blobs/uploads/?mount=<digest>&from=<from>`, the
distribution spec's "mount a blob from another repository"), then the manifest is PUT by digest and then by
tag. The manifest bytes are the ones fetched *by digest* and checked against it, so a tag moved in staging
after the push cannot slip a different image into the certified repository.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from ..secret import Secret

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MAX_MANIFEST = 4 << 20  # the distribution spec's recommended manifest size limit
TIMEOUT = 30.0


class PromotionError(Exception):
    """The copy did not complete; the message names the step, never a credential."""


@dataclass
class RegistryClient:
    """Just enough of the distribution API for a copy: Basic auth, or the Bearer token challenge."""

    url: str
    username: str = ""
    password: Secret | None = None
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def _basic(self) -> str:
        raw = f"{self.username}:{self.password.reveal() if self.password else ''}"
        return "Basic " + base64.b64encode(raw.encode()).decode()

    def request(
        self, method: str, path: str, *, scope: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One call, retried once with credentials when the registry challenges; HTTP errors are returned."""
        headers = dict(headers or {})
        if scope in self._tokens:
            headers["Authorization"] = self._tokens[scope]
        status, answer, data = self._send(method, path, headers, body)
        if status == 401 and self.username:
            headers["Authorization"] = self._authorize(answer.get("www-authenticate", ""), scope)
            status, answer, data = self._send(method, path, headers, body)
        return status, answer, data

    def _send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with _OPENER.open(req, timeout=TIMEOUT) as resp:
                return resp.status, _lower(resp.headers), resp.read(MAX_MANIFEST + 1)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _lower(exc.headers), exc.read(64 << 10)
        except OSError as exc:
            raise PromotionError(f"{method} {self.url}{path.split('?')[0]}: {exc}") from None

    def _authorize(self, challenge: str, scope: str) -> str:
        if challenge.lower().startswith("bearer "):
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope.split()}, doseq=True)
            req = urllib.request.Request(f"{params.get('realm', '')}?{query}", headers={"Authorization": self._basic()})
            try:
                with _OPENER.open(req, timeout=TIMEOUT) as resp:
                    answer = json.loads(resp.read(1 << 20))
            except (OSError, ValueError) as exc:
                raise PromotionError(f"token request failed: {exc}") from None
            value = "Bearer " + str(answer.get("token") or answer.get("access_token") or "")
        else:
            value = self._basic()
        self._tokens[scope] = value
        return value


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Blob and upload answers are checked by status: a redirect is not followed with credentials attached."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()} if headers else {}


def copy(client: RegistryClient, source: str, digest: str, target: str, tags: list[str]) -> list[str]:
    """Copy source@digest to target (by digest, then each tag); returns the references written."""
    manifest, media_type = fetch_manifest(client, source, digest)
    _copy_content(client, source, target, manifest, media_type)
    put_manifest(client, target, digest, manifest, media_type)
    for tag in tags:
        put_manifest(client, target, tag, manifest, media_type)
    return [f"{target}@{digest}", *(f"{target}:{tag}" for tag in tags)]


def fetch_manifest(client: RegistryClient, repository: str, digest: str) -> tuple[bytes, str]:
    """The manifest's exact bytes, verified against the digest they were asked by."""
    status, headers, body = client.request(
        "GET", f"/v2/{repository}/manifests/{digest}", scope=_pull(repository), headers={"Accept": MANIFEST_ACCEPT}
    )
    if status != 200:
        raise PromotionError(f"GET manifest {repository}@{digest}: HTTP {status}")
    if len(body) > MAX_MANIFEST:
        raise PromotionError(f"manifest {repository}@{digest} is over {MAX_MANIFEST} bytes")
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise PromotionError(f"manifest {repository}@{digest}: the registry answered other bytes than the digest")
    media_type = headers.get("content-type", "").split(";")[0].strip()
    return body, media_type or json.loads(body).get("mediaType", "")


def _copy_content(client: RegistryClient, source: str, target: str, manifest: bytes, media_type: str) -> None:
    data = json.loads(manifest)
    if media_type in INDEX_TYPES:
        for child in data.get("manifests", []):
            child_bytes, child_type = fetch_manifest(client, source, child["digest"])
            _copy_content(client, source, target, child_bytes, child_type)
            put_manifest(client, target, child["digest"], child_bytes, child_type)
        return
    for blob in [data.get("config", {}), *data.get("layers", [])]:
        if blob.get("digest"):
            mount(client, source, target, blob["digest"])


def mount(client: RegistryClient, source: str, target: str, digest: str) -> None:
    """One blob into target, mounted from source: 201 Created, or already there."""
    scope = f"repository:{target}:pull,push repository:{source}:pull"
    status, _, _ = client.request("HEAD", f"/v2/{target}/blobs/{digest}", scope=scope)
    if status == 200:
        return
    query = urllib.parse.urlencode({"mount": digest, "from": source})
    status, headers, _ = client.request("POST", f"/v2/{target}/blobs/uploads/?{query}", scope=scope, body=b"")
    if status == 201:
        return
    if status == 202 and headers.get("location"):  # an upload was opened instead: close it, copy nothing
        client.request("DELETE", urllib.parse.urlsplit(headers["location"]).path, scope=scope)
    raise PromotionError(f"mount {digest} from {source} into {target}: HTTP {status}")


def put_manifest(client: RegistryClient, repository: str, reference: str, body: bytes, media_type: str) -> None:
    scope = f"repository:{repository}:pull,push"
    status, headers, _ = client.request(
        "PUT", f"/v2/{repository}/manifests/{reference}", scope=scope, headers={"Content-Type": media_type}, body=body
    )
    if status != 201:
        raise PromotionError(f"PUT manifest {repository}:{reference}: HTTP {status}")
    written = headers.get("docker-content-digest", "")
    expected = "sha256:" + hashlib.sha256(body).hexdigest()
    if written and written != expected:
        raise PromotionError(f"PUT manifest {repository}:{reference}: the registry stored {written}, not {expected}")


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"

"""The OCI 1.1 referrers API path of `verify --image`, over real HTTP.

Debian's docker-registry 2.8 (test_attest_docker.py) answers 404 there, so its tests read cosign's `.att` tag.
This server is a small stand-in for a registry that has the API: it serves only what the test stored (an image
manifest, and an attestation manifest listed by `GET /v2/<name>/referrers/<digest>`), and no `.att` tag at all,
so a pass can only come from the referrers path.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pytest_baseimage.attest import dsse, oci, statement
from pytest_baseimage.report.cli import main as report_main
from pytest_baseimage.results import ImageInfo, ImageReport, StageResult, Status


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Store:
    """path -> (content type, body)."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[str, bytes]] = {}
        self.asked: list[str] = []


def handler(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            store.asked.append(self.path)
            found = store.items.get(self.path.split("?")[0])
            if found is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", found[0])
            self.send_header("Content-Length", str(len(found[1])))
            self.end_headers()
            self.wfile.write(found[1])

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server():
    store = Store()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler(store))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield store, f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_verify_image_reads_attestations_through_the_referrers_api(server, tmp_path: Path, capsys):
    store, address = server
    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "cosign.pub"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    image_manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "layers": []}).encode()
    image_digest = digest_of(image_manifest)
    store.items["/v2/team/base/manifests/v1"] = (oci.OCI_MANIFEST, image_manifest)
    store.items[f"/v2/team/base/manifests/{image_digest}"] = (oci.OCI_MANIFEST, image_manifest)
    info = ImageInfo(reference=f"{address}/team/base:v1", image_id="sha256:" + "e" * 64)
    info.digest = f"{address}/team/base@{image_digest}"
    report = ImageReport(info.reference, info, "fixture", [StageResult("os", Status.PASS)])
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    envelope = dsse.envelope(statement.statement(report, {"name": "fixture"}), dsse.signer_from_pem(pem, "test"))
    layer = json.dumps(envelope).encode()
    store.items[f"/v2/team/base/blobs/{digest_of(layer)}"] = ("application/octet-stream", layer)
    attestation = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "layers": [{"mediaType": oci.DSSE_MEDIA_TYPE, "digest": digest_of(layer), "size": len(layer)}],
            "subject": {"mediaType": oci.OCI_MANIFEST, "digest": image_digest, "size": len(image_manifest)},
        }
    ).encode()
    store.items[f"/v2/team/base/manifests/{digest_of(attestation)}"] = (oci.OCI_MANIFEST, attestation)
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [{"digest": digest_of(attestation)}]}
    store.items[f"/v2/team/base/referrers/{image_digest}"] = (oci.OCI_INDEX, json.dumps(index).encode())

    assert report_main(["verify", "--key", str(public), "--image", f"{address}/team/base:v1"]) == 0
    assert "PASSED:" in capsys.readouterr().out
    assert f"/v2/team/base/referrers/{image_digest}" in store.asked
    assert not any(path.endswith(".att") for path in store.asked)  # the tag fallback was not needed

"""The gate with [attest] on: each job's verdict is signed by the plugin's --attest (the same code path as a
pytest run) and served at /v1/verdicts/<digest>/attestation, where `baseimage-report verify` accepts it with
the public key, for that image's digest only."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from gate_service import GateService
from registry_server import start_registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leaks")]

DEADLINE = 180


def key_pair(folder) -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = folder / "attest.pem", folder / "attest.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return str(private), str(public)


def verify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from pytest_baseimage.report.cli import main; sys.exit(main())"]
    environment = {**os.environ, **(env or {})}
    return subprocess.run([*command, "verify", *args], capture_output=True, text=True, timeout=60, env=environment)


def test_a_certified_job_serves_a_signed_attestation_that_verifies_for_its_digest_only(tmp_path, docker_client, images):
    private, public = key_pair(tmp_path)
    (tmp_path / "gate").mkdir()
    gate = GateService(tmp_path / "gate")
    registry = start_registry(notify_url=gate.events_url, notify_authorization=f"Bearer {gate.token}")
    try:
        gate.configure(registry, extra=f'\n[attest]\nenabled = true\nkey_file = "{private}"\n')
        gate.start()
        digest = registry.push(docker_client, images("good"), "staging/signed", "v1").split("@", 1)[1]
        other = registry.push(docker_client, images("no-conda"), "staging/other", "v1").split("@", 1)[1]
        assert gate.wait_done(digest, DEADLINE)["verdict"] == "compatible"
        gate.wait_done(other, DEADLINE)
        answer = gate.get(f"/v1/verdicts/{digest}/attestation")
        assert answer.status == 200, answer.body[:500]
        envelope = tmp_path / "envelope.intoto.json"
        envelope.write_bytes(answer.body)
        statement = json.loads(base64.b64decode(json.loads(answer.body.splitlines()[0])["payload"]))
        assert statement["subject"][0]["digest"]["sha256"] == digest.split(":", 1)[1]
        assert statement["predicate"]["result"] == "PASSED"
        # A registry image's verdict passes only against the image's current digest: the file alone is not enough;
        # with the image it was made for it passes, with another it does not.
        alone = verify("--key", public, str(envelope))
        assert alone.returncode == 1 and "give --image" in alone.stdout, alone.stdout + alone.stderr
        login = ["--registry-username", registry.username, "--registry-password-env", "REGISTRY_PASSWORD_FOR_TEST"]
        env = {"REGISTRY_PASSWORD_FOR_TEST": registry.password}
        image = f"{registry.address}/staging/signed:v1"
        mine = verify("--key", public, str(envelope), "--image", image, *login, env=env)
        other_image = f"{registry.address}/staging/other:v1"
        theirs = verify("--key", public, str(envelope), "--image", other_image, *login, env=env)
        assert mine.returncode == 0, mine.stdout + mine.stderr
        assert theirs.returncode == 1, theirs.stdout + theirs.stderr
        assert registry.password not in mine.stdout + mine.stderr + gate.log()
    finally:
        gate.stop()
        registry.remove_local_references(docker_client)
        registry.stop()

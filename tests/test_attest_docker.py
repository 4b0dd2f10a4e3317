"""Attestations against a real registry (Debian's docker-registry on 127.0.0.1, htpasswd): pushed as cosign does,
read back by its tag with plain HTTP calls in the test, and checked with `baseimage-report verify --image`."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import FIXTURE_PROFILE
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from registry_server import RegistryServer, run_plugin, shared_registry

pytestmark = pytest.mark.docker

PREDICATE = "https://in-toto.io/attestation/test-result/v0.1"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def registry(request, docker_client) -> RegistryServer:
    return shared_registry(request, docker_client)


@pytest.fixture(scope="module")
def pushed(registry, docker_client, images) -> dict[str, str]:
    """good and no-conda in the registry: name -> repo@sha256:..."""
    return {name: registry.push(docker_client, images(name), f"attest/{name}", "v1") for name in ("good", "no-conda")}


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path | str]:
    key = ec.generate_private_key(ec.SECP256R1())
    folder = tmp_path_factory.mktemp("keys")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = folder / "cosign.pub"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {"pem": pem, "public": public}


def http(registry: RegistryServer, path: str, **headers: str) -> requests.Response:
    auth = (registry.username, registry.password)
    return requests.get(f"http://{registry.address}{path}", auth=auth, headers=headers, timeout=30)


def verify(registry: RegistryServer, public: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest_baseimage.report", "verify", "--key", str(public), *args]
    auth = [f"--registry-username={registry.username}", "--registry-password-env=REG_PW"]
    env = {"REG_PW": registry.password, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([*cmd, *auth], capture_output=True, text=True, timeout=120, env=env)
    assert "Traceback" not in proc.stderr and registry.password not in proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def attested(registry, pushed, keys, tmp_path_factory, docker_client) -> dict:
    """One run over both images with --attest and --attest-push, the signing key from an environment variable."""
    cwd = tmp_path_factory.mktemp("run")
    bundle = cwd / "verdict.intoto.json"
    tags = {name: f"{ref.partition('@')[0]}:v1" for name, ref in pushed.items()}
    out = run_plugin(
        *(f"--base-image={tags[name]}" for name in ("good", "no-conda")),
        f"--profile={FIXTURE_PROFILE}",
        f"--registry={registry.address}",
        f"--registry-username={registry.username}",
        "--registry-password-env=REG_PW",
        f"--attest={bundle}",
        "--attest-key-env=ATTEST_KEY",
        "--attest-push",
        "-q",
        cwd=cwd,
        env={"REG_PW": registry.password, "ATTEST_KEY": str(keys["pem"])},
    )
    registry.remove_local_references(docker_client)
    everything = out.everything() + bundle.read_text()
    assert registry.password not in everything and "PRIVATE KEY" not in everything
    assert "Traceback" not in out.output, out.output
    return {"out": out, "bundle": bundle, "tags": tags}


def test_push_then_fetch_by_tag_as_cosign_stores_it(registry, pushed, attested, no_leaks):
    out = attested["out"]
    assert out.returncode == 1, out.output  # no-conda fails its conda stage; the evidence says so too
    repo, _, digest = pushed["good"].partition("@")
    tag = digest.replace(":", "-") + ".att"
    assert f"attestation pushed: {repo}:{tag}" in out.stdout
    answer = http(registry, f"/v2/attest/good/manifests/{tag}", Accept=MANIFEST)
    assert answer.status_code == 200, answer.text
    manifest = answer.json()
    assert manifest["subject"]["digest"] == digest
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"]["predicateType"] == PREDICATE
    envelope = http(registry, f"/v2/attest/good/blobs/{layer['digest']}").json()
    assert envelope in [json.loads(line) for line in attested["bundle"].read_text().splitlines()]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"][0]["digest"] == {"sha256": digest.removeprefix("sha256:")}
    assert statement["subject"][0]["name"] == repo
    assert statement["predicate"]["result"] == "PASSED"


def test_a_new_verdict_for_the_same_profile_replaces_the_old_layer(registry, pushed, keys, attested, tmp_path):
    digest = pushed["good"].partition("@")[2]
    path = f"/v2/attest/good/manifests/{digest.replace(':', '-')}.att"
    before = http(registry, path, Accept=MANIFEST).json()["layers"]
    again = run_plugin(
        f"--base-image={attested['tags']['good']}",
        f"--profile={FIXTURE_PROFILE}",
        f"--registry={registry.address}",
        f"--registry-username={registry.username}",
        "--registry-password-env=REG_PW",
        "--attest-key-env=ATTEST_KEY",
        "--attest-push",
        "-q",
        cwd=tmp_path,
        env={"REG_PW": registry.password, "ATTEST_KEY": str(keys["pem"])},
    )
    assert again.returncode == 0, again.output
    after = http(registry, path, Accept=MANIFEST).json()["layers"]
    assert len(before) == len(after) == 1 and before[0]["digest"] != after[0]["digest"]  # ECDSA signs afresh


def test_verify_image_passes_for_the_passing_image_and_not_for_the_failing_one(registry, keys, attested):
    good = verify(registry, keys["public"], "--image", attested["tags"]["good"], "--profile", "fixture")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines()[-1] == "verify: PASSED (exit 0)"
    failing = verify(registry, keys["public"], "--image", attested["tags"]["no-conda"])
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "FAILED:" in failing.stdout and "failed: conda" in failing.stdout
    wrong_profile = verify(
        registry, keys["public"], "--image", attested["tags"]["good"], "--profile", "azureml-current"
    )
    assert wrong_profile.returncode == 1


def test_a_verdict_never_verifies_against_another_images_digest(registry, pushed, keys, attested):
    # The passing image's bundle line, offered for the failing image.
    bundle = attested["bundle"]
    offered = verify(registry, keys["public"], str(bundle), "--image", attested["tags"]["no-conda"])
    assert offered.returncode == 1 and "for another image than" in offered.stdout
    # The passing image's .att manifest copied under the failing image's tag, as an attacker with push rights could.
    good_digest, bad_digest = (pushed[name].partition("@")[2] for name in ("good", "no-conda"))
    body = http(registry, f"/v2/attest/good/manifests/{good_digest.replace(':', '-')}.att", Accept=MANIFEST).content
    manifest = json.loads(body)
    for blob in [manifest["config"], *manifest["layers"]]:  # the blobs into the other repository (cross-mount)
        mount = requests.post(
            f"http://{registry.address}/v2/attest/no-conda/blobs/uploads/?mount={blob['digest']}&from=attest/good",
            auth=(registry.username, registry.password),
            timeout=30,
        )
        assert mount.status_code == 201, mount.text
    put = requests.put(
        f"http://{registry.address}/v2/attest/no-conda/manifests/{bad_digest.replace(':', '-')}.att",
        data=body,
        headers={"Content-Type": MANIFEST},
        auth=(registry.username, registry.password),
        timeout=30,
    )
    assert put.status_code == 201, put.text
    copied = verify(registry, keys["public"], "--image", attested["tags"]["no-conda"])
    assert copied.returncode == 1, copied.stdout
    assert f"rejected: the attestation is for another image than {bad_digest}" in copied.stdout


def test_verify_without_a_reachable_registry_is_exit_2(registry, keys):
    proc = verify(registry, keys["public"], "--image", "127.0.0.1:9/attest/good:v1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("baseimage-report verify: registry 127.0.0.1:9:")


def test_an_attestation_that_cannot_be_stored_makes_the_run_exit_2(tmp_path, images, keys, no_leaks):
    """A local image has no registry digest to attach evidence to: the gate asked for it, so no pass."""
    out = run_plugin(
        f"--base-image={images('good')}",
        f"--profile={FIXTURE_PROFILE}",
        "--attest-key-env=ATTEST_KEY",
        "--attest-push",
        "-q",
        cwd=tmp_path,
        env={"ATTEST_KEY": str(keys["pem"])},
    )
    assert out.returncode == 2, out.output
    assert "attestation not stored: pytest-baseimage-fixture/good:latest: no registry digest" in out.stdout
    data = json.loads(out.files["json"])
    assert (data["exit_code"], data["images"][0]["verdict"]) == (2, "could not be checked")
    assert data["images"][0]["error"].startswith("the attestation could not be stored:")

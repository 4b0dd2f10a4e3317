"""Attestations as pure logic: the statement, the DSSE envelope checked independently of the signing library
(PAE recomputed by hand, signature checked with `cryptography`), and `verify` refusing tampered or foreign
evidence. The registry round trip is in test_attest_docker.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pytest_baseimage.attest import dsse, statement
from pytest_baseimage.report.cli import main as report_main
from pytest_baseimage.results import ImageInfo, ImageReport, StageResult, Status

ID_A = "sha256:" + "a" * 64
ID_B = "sha256:" + "b" * 64


def pem_pair(tmp_path: Path, kind: str) -> tuple[Path, Path, object]:
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa" else ed25519.Ed25519PrivateKey.generate()
    private = tmp_path / f"{kind}.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = tmp_path / f"{kind}.pub"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public, key.public_key()


def report(statuses: dict[str, Status], *, digest: str = "", reference: str = "team/img:1") -> ImageReport:
    results = [StageResult(stage, status) for stage, status in statuses.items()]
    info = ImageInfo(reference=reference, image_id=ID_A, digest=digest)
    return ImageReport(reference, info, "fixture", results)


PROFILE = {"name": "fixture", "python": {"version": "~=3.11.0"}}


def test_pae_matches_the_dsse_test_vector():
    from securesystemslib.dsse import Envelope

    pae = Envelope(b"hello world", "http://example.com/HelloWorld", {}).pae()
    assert pae == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


@pytest.mark.parametrize(
    ("statuses", "result", "warned", "failed"),
    [
        ({"os": Status.PASS, "conda": Status.PASS}, "PASSED", [], []),
        ({"os": Status.PASS, "conda": Status.WAIVED}, "WARNED", ["conda"], []),
        ({"os": Status.FAIL, "apt": Status.BLOCKED}, "FAILED", [], ["os", "apt"]),
    ],
)
def test_the_result_and_test_lists_follow_the_verdict(statuses, result, warned, failed):
    body = statement.statement(report(statuses), PROFILE, url="https://ci.example/report.html")
    predicate = body["predicate"]
    assert (body["_type"], body["predicateType"]) == (statement.STATEMENT_TYPE, statement.PREDICATE_TYPE)
    assert (predicate["result"], predicate["warnedTests"], predicate["failedTests"]) == (result, warned, failed)
    assert predicate["url"] == "https://ci.example/report.html"
    assert predicate["configuration"][0] == {
        "name": "profile:fixture",
        "digest": {"sha256": statement.profile_digest(PROFILE)},
    }


def test_the_subject_is_the_registry_digest_of_the_given_repository_else_the_image_id():
    pulled = report({"os": Status.PASS}, digest=f"reg.example/team/img@{ID_B}", reference="reg.example/team/img:1")
    assert statement.statement(pulled, PROFILE)["subject"][0] == {
        "name": "reg.example/team/img",
        "digest": {"sha256": "b" * 64},
        "annotations": {statement.DIGEST_KIND: statement.REGISTRY_DIGEST},
    }
    # A digest the engine remembers from a push to some other repository is not this image's registry digest.
    local = report({"os": Status.PASS}, digest=f"127.0.0.1:5000/elsewhere@{ID_B}", reference="team/img:1")
    subject = statement.statement(local, PROFILE)["subject"][0]
    assert (subject["digest"]["sha256"], subject["annotations"][statement.DIGEST_KIND]) == ("a" * 64, "image-id")


def test_an_unchecked_image_gets_no_attestation():
    with pytest.raises(statement.NotAttestable):
        statement.statement(report({"os": Status.ERROR}), PROFILE)


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519"])
def test_the_envelope_verifies_independently_of_the_signing_library(tmp_path, kind):
    private, _, public_key = pem_pair(tmp_path, kind)
    signer = dsse.signer_from_pem(private.read_bytes(), "test key")
    body = statement.statement(report({"os": Status.PASS}), PROFILE)
    envelope = dsse.envelope(body, signer)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(envelope["payload"])
    assert json.loads(payload) == body
    pae = b"DSSEv1 %d %s %d %s" % (
        len(b"application/vnd.in-toto+json"),
        b"application/vnd.in-toto+json",
        len(payload),
        payload,
    )
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    if kind == "ecdsa":
        public_key.verify(signature, pae, ec.ECDSA(hashes.SHA256()))
    else:
        public_key.verify(signature, pae)
    with pytest.raises(InvalidSignature):  # the signature covers the PAE, not the bare payload
        (
            public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            if kind == "ecdsa"
            else public_key.verify(signature, payload)
        )


def write_bundle(tmp_path: Path, envelope: dict) -> Path:
    path = tmp_path / "verdict.intoto.json"
    path.write_text(json.dumps(envelope) + "\n")
    return path


def signed_bundle(tmp_path: Path, statuses: dict[str, Status]) -> tuple[Path, Path, dict]:
    private, public, _ = pem_pair(tmp_path, "ecdsa")
    signer = dsse.signer_from_pem(private.read_bytes(), "test key")
    reg = report(statuses, digest=f"reg.example/team/img@{ID_A}", reference="reg.example/team/img:1")
    envelope = dsse.envelope(statement.statement(reg, PROFILE), signer)
    return write_bundle(tmp_path, envelope), public, envelope


def test_tampering_with_one_payload_byte_fails_verify(tmp_path, capsys):
    _, public, envelope = signed_bundle(tmp_path, {"os": Status.FAIL})
    payload = bytearray(base64.b64decode(envelope["payload"]))
    at = payload.index(b'"FAILED"') + 1
    payload[at : at + 6] = b"PASSED"  # FAILED -> PASSED: one field, the signature unchanged
    forged = {**envelope, "payload": base64.b64encode(bytes(payload)).decode()}
    path = write_bundle(tmp_path, forged)
    assert report_main(["verify", "--key", str(public), str(path)]) == 1
    assert "rejected: no signature in the envelope verifies with the given public key" in capsys.readouterr().out
    one_byte = bytearray(base64.b64decode(envelope["payload"]))
    one_byte[-2] ^= 0x01
    write_bundle(tmp_path, {**envelope, "payload": base64.b64encode(bytes(one_byte)).decode()})
    assert report_main(["verify", "--key", str(public), str(path)]) == 1


def test_another_key_and_an_unsigned_envelope_fail_verify(tmp_path, capsys):
    path, _, envelope = signed_bundle(tmp_path, {"os": Status.PASS})
    (tmp_path / "other").mkdir()
    _, other_public, _ = pem_pair(tmp_path / "other", "ed25519")
    assert report_main(["verify", "--key", str(other_public), str(path)]) == 1
    write_bundle(tmp_path, {**envelope, "signatures": []})
    assert report_main(["verify", "--key", str(other_public), str(path)]) == 1
    assert "the envelope is unsigned" in capsys.readouterr().out


def test_verify_usage_errors_are_exit_4_in_one_line(tmp_path, capsys):
    path, public, _ = signed_bundle(tmp_path, {"os": Status.PASS})
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_pub = tmp_path / "rsa.pub"
    rsa_pub.write_bytes(
        rsa_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for argv in (
        ["verify", "--key", str(public)],  # neither FILE nor --image
        ["verify", "--key", str(tmp_path / "absent.pub"), str(path)],
        ["verify", "--key", str(rsa_pub), str(path)],
        ["verify", str(path)],  # no --key
        ["verify", "--key", str(public), "--image", "sha256:" + "a" * 64],  # an id: no registry to ask
        ["verify", "--key", str(public), "--image", "Not A Reference"],
    ):
        assert report_main(argv) == 4, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 6
    assert "for an image known here by its id, verify FILE alone" in err


def test_a_registry_subject_in_a_file_needs_the_image_to_compare_digests(tmp_path, capsys):
    path, public, _ = signed_bundle(tmp_path, {"os": Status.PASS})
    assert report_main(["verify", "--key", str(public), str(path)]) == 1
    assert "give --image REF to compare its digest" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attest=a.json"], "--attest needs a signing key"),
        (["--attest=a.json", "--attest-key=absent.pem"], "--attest-key=absent.pem: cannot read it (No such file"),
        (["--attest=a.json", "--attest-key=rsa.pem"], "not an ECDSA P-256 or Ed25519 key in PEM"),
        (["--attest=a.json", "--attest-key-env=ATTEST_KEY_UNSET"], "ATTEST_KEY_UNSET is not set or empty"),
        (["--attest-key=rsa.pem"], "an attestation key needs --attest=FILE or --attest-push"),
        (["--attest=no/such/dir/a.json", "--attest-unsigned"], "--attest=no/such/dir/a.json: the directory"),
    ],
)
def test_bad_attestation_options_are_exit_4_before_anything_starts(tmp_path, args, message):
    """Refused in pytest_configure, before any engine call: this needs no Docker engine."""
    from conftest import run_pytest

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "rsa.pem").write_bytes(pem)
    proc = run_pytest("--base-image=pytest-baseimage-fixture/good:latest", *args, cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0] and "PRIVATE KEY" not in proc.stdout + proc.stderr

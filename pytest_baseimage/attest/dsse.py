"""DSSE envelopes (https://github.com/secure-systems-lab/dsse): signing and verifying with securesystemslib.

securesystemslib[crypto] (Production/Stable, checked offline here; see WAVE2-FACTS.md) does the PAE and the
signature; this module only decides which keys are accepted (ECDSA P-256 or Ed25519, PEM, as cosign's own
`cosign.pub` is) and turns every failure into one line. A private key is never printed: errors name where it
came from ("--attest-key=FILE", "$NAME", "stdin"), never its content.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..errors import BaseImageError, ExitCode

PAYLOAD_TYPE = "application/vnd.in-toto+json"
ACCEPTED = "an ECDSA P-256 or Ed25519 key in PEM"


class KeyError_(BaseImageError):
    """A signing or verifying key that cannot be used: bad input, exit 4."""

    exit_code = ExitCode.USAGE_ERROR


class BadEnvelope(BaseImageError):
    """An envelope that does not verify (bad signature, malformed, wrong payload type): the evidence fails."""

    exit_code = ExitCode.NOT_COMPATIBLE


def _accepted(key: Any, source: str, kind: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(key.curve, ec.SECP256R1):
        return
    raise KeyError_(f"{source}: not {ACCEPTED} ({kind} key of another type)")


def signer_from_pem(pem: bytes, source: str) -> Any:
    """A securesystemslib CryptoSigner for an unencrypted PEM private key (PKCS#8, SEC1 or OpenSSH)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    try:
        key = load_pem_private_key(pem, password=None)
    except TypeError:  # cryptography: a password is needed
        raise KeyError_(f"{source}: the private key is encrypted; give an unencrypted PEM key") from None
    except ValueError:
        raise KeyError_(f"{source}: not a PEM private key ({ACCEPTED})") from None
    _accepted(key, source, "private")
    return CryptoSigner(key)


def public_key_from_pem(pem: bytes, source: str) -> Any:
    """A securesystemslib Key for a PEM public key (SubjectPublicKeyInfo, as `openssl pkey -pubout` writes)."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise KeyError_(f"{source}: not a PEM public key ({ACCEPTED})") from None
    _accepted(key, source, "public")
    return SSlibKey.from_crypto(key)


def envelope(statement: dict[str, Any], signer: Any | None) -> dict[str, Any]:
    """The DSSE envelope over the statement's JSON; unsigned (no signatures) when signer is None."""
    from securesystemslib.dsse import Envelope

    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")
    env = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    if signer is not None:
        env.sign(signer)
    return env.to_dict()


def verified_statement(data: Any, key: Any) -> dict[str, Any]:
    """The statement inside an envelope that `key` signed; BadEnvelope with one line otherwise."""
    from securesystemslib.dsse import Envelope

    if not isinstance(data, dict) or data.get("payloadType") != PAYLOAD_TYPE:
        raise BadEnvelope(f"not a DSSE envelope with payloadType {PAYLOAD_TYPE}")
    try:
        env = Envelope.from_dict(_standard_base64(data))
    except Exception as exc:  # the library raises several types for malformed fields
        raise BadEnvelope(f"malformed DSSE envelope ({type(exc).__name__})") from None
    if not env.signatures:
        raise BadEnvelope("the envelope is unsigned")
    if not any(_verifies(key, sig.signature, env.pae()) for sig in env.signatures.values()):
        raise BadEnvelope("no signature in the envelope verifies with the given public key")
    try:
        statement = json.loads(env.payload)
    except ValueError:
        raise BadEnvelope("the signed payload is not JSON") from None
    if not isinstance(statement, dict):
        raise BadEnvelope("the signed payload is not a JSON object")
    return statement


def _verifies(key: Any, signature_hex: str, pae: bytes) -> bool:
    """One signature against the key. keyid is an unauthenticated hint in DSSE, so it is not required to match
    (securesystemslib's Envelope.verify requires it; cosign writes an empty one)."""
    from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
    from securesystemslib.signer import Signature

    try:
        key.verify_signature(Signature(key.keyid, signature_hex), pae)
    except (UnverifiedSignatureError, VerificationError):
        return False
    return True


def _standard_base64(data: dict[str, Any]) -> dict[str, Any]:
    """DSSE verifiers accept URL-safe base64 too: normalise payload and signatures to the standard alphabet."""

    def standard(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        raw = text.replace("-", "+").replace("_", "/")
        return base64.b64encode(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)).decode()

    given = data.get("signatures") or []
    signatures = [{**sig, "sig": standard(sig.get("sig"))} if isinstance(sig, dict) else sig for sig in given]
    return {**data, "payload": standard(data.get("payload")), "signatures": signatures}

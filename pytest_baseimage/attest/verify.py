"""`baseimage-report verify`: is there a signed verdict that this image, as it is now, passed?

Three checks, all needed: the envelope's signature verifies with the given public key (DSSE); the
statement's subject digest is the image's current digest (a verdict never transfers to another image, nor to
the same tag after it moved); its result is PASSED (WARNED too with --accept-warned), for --profile if given.
Exit 0 passed, 1 failed or not passed (no attestation, bad signature, other digest, FAILED), 2 the registry
or engine could not be asked, 4 usage (bad key, unreadable file, bad options).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import BaseImageError, ExitCode
from ..text import one_line
from . import dsse, oci, statement

MAX_FILE_BYTES = 64 * 1024 * 1024


class VerifyUsage(BaseImageError):
    exit_code = ExitCode.USAGE_ERROR


@dataclass
class Finding:
    ok: bool
    line: str


def add_parser(commands: Any, formatter: Any) -> None:
    """The `verify` subcommand of baseimage-report."""
    cmd = commands.add_parser(
        "verify",
        help="check a signed attestation of a verdict against an image",
        description=__doc__,
        formatter_class=formatter,
    )
    cmd.add_argument("file", nargs="?", metavar="FILE", help="an --attest file (one DSSE envelope per line)")
    cmd.add_argument("--key", required=True, metavar="PUB.pem", help="the public key (ECDSA P-256 or Ed25519, PEM)")
    cmd.add_argument("--image", metavar="REF", help="the image (registry/repo:tag or @sha256:...): its current digest")
    cmd.add_argument("--profile", metavar="NAME", help="require a verdict for this profile")
    cmd.add_argument("--accept-warned", action="store_true", help="accept WARNED (compatible with waivers)")
    cmd.add_argument("--registry-username", default="", metavar="USER")
    cmd.add_argument("--registry-password-env", default="", metavar="NAME")
    cmd.add_argument("--registry-password-stdin", action="store_true")


def run(args: argparse.Namespace) -> int:
    """The verify command; prints one line per envelope and a last line with the outcome."""
    try:
        if not args.file and not args.image:
            raise VerifyUsage("verify needs FILE, --image REF, or both")
        key = dsse.public_key_from_pem(_read(args.key, "--key", 64 * 1024), f"--key={args.key}")
        client, ref = _client(args) if args.image else (None, None)
        findings = _check(args, key, client, ref)
    except BaseImageError as exc:
        sys.stderr.write(f"baseimage-report verify: {one_line(str(exc))}\n")
        return int(exc.exit_code)
    for finding in findings:
        print(finding.line)
    passed = bool(findings) and (any(f.ok for f in findings) if args.image else all(f.ok for f in findings))
    print(f"verify: {'PASSED' if passed else 'NOT PASSED'} (exit {0 if passed else 1})")
    return 0 if passed else int(ExitCode.NOT_COMPATIBLE)


def _read(path: str, option: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise VerifyUsage(f"{option}={path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise VerifyUsage(f"{option}={path}: larger than {limit} bytes")
    return data


def _client(args: argparse.Namespace) -> tuple[oci.Client, oci.Ref]:
    """The registry client for --image, with registry.py's password rules (env or stdin, never argv)."""
    from ..registry import parse_options
    from ..registry.reference import IMAGE_ID, REFERENCE

    if IMAGE_ID.fullmatch(args.image) or not REFERENCE.fullmatch(args.image):
        raise VerifyUsage(
            f"--image={args.image}: give the registry reference the attestation is stored beside "
            "(registry/repository:tag or @sha256:...); for an image known here by its id, verify FILE alone"
        )
    ref = oci.Ref.parse(args.image)
    values = {
        "registry": ref.registry if args.registry_username else "",
        "username": args.registry_username,
        "password_env": args.registry_password_env,
        "password_stdin": args.registry_password_stdin,
    }
    try:
        options = parse_options(values, environ=os.environ, read_stdin=sys.stdin.read)
    except BaseImageError as exc:
        raise VerifyUsage(str(exc)) from None
    return oci.Client(ref.registry, options.credentials), ref


def _check(args: argparse.Namespace, key: Any, client: oci.Client | None, ref: oci.Ref | None) -> list[Finding]:
    expected = ""
    if client is not None and ref is not None:
        expected = oci.current_digest(client, ref.repo, ref.reference)
    if args.file:
        envelopes = _file_envelopes(args.file)
    else:
        assert client is not None and ref is not None
        envelopes = oci.envelopes(client, ref.repo, expected)
        if not envelopes:
            return [Finding(False, f"no attestation stored for {args.image} ({expected})")]
    return [_judge(envelope, key, expected, args) for envelope in envelopes]


def _file_envelopes(path: str) -> list[Any]:
    """One envelope per non-empty line (the in-toto bundle form), or one JSON document."""
    text = _read(path, "FILE", MAX_FILE_BYTES).decode("utf-8", "replace")
    try:
        whole = json.loads(text)
        return [whole]
    except ValueError:
        pass
    out: list[Any] = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append(None)
    return out


def _judge(envelope: Any, key: Any, expected: str, args: argparse.Namespace) -> Finding:
    try:
        body = dsse.verified_statement(envelope, key)
    except dsse.BadEnvelope as exc:
        return Finding(False, f"rejected: {one_line(str(exc))}")
    subjects = body.get("subject") or []
    digests = [f"sha256:{(s.get('digest') or {}).get('sha256', '')}" for s in subjects if isinstance(s, dict)]
    names = ", ".join(str(s.get("name", "")) for s in subjects if isinstance(s, dict))
    predicate = body.get("predicate") or {}
    result, profile = str(predicate.get("result", "")), statement.profile_of(body)
    where = f"{one_line(names)} ({', '.join(digests) or 'no digest'}), profile {one_line(profile) or '?'}"
    if body.get("predicateType") != statement.PREDICATE_TYPE:
        return Finding(False, f"rejected: predicateType {one_line(str(body.get('predicateType')))}: {where}")
    if expected and expected not in digests:
        return Finding(False, f"rejected: the attestation is for another image than {expected}: {where}")
    if not expected:
        expected_now = _current_of(subjects)
        if not expected_now:
            return Finding(False, f"not checked: a registry image; give --image REF to compare its digest: {where}")
        if expected_now not in digests:
            return Finding(False, f"rejected: the image is now {expected_now}, not the attested digest: {where}")
    if args.profile and profile != args.profile:
        return Finding(False, f"rejected: profile {one_line(profile) or '?'}, not {args.profile}: {where}")
    accepted = ("PASSED", "WARNED") if args.accept_warned else ("PASSED",)
    if result not in accepted:
        failed = ", ".join(str(t) for t in predicate.get("failedTests") or [])
        return Finding(False, f"{result or 'no result'}: {where}" + (f"; failed: {one_line(failed)}" if failed else ""))
    return Finding(True, f"{result}: {where}, signature verified")


def _current_of(subjects: list[Any]) -> str:
    """FILE without --image: the current digest of the image the subject names: the local engine's image id for
    an image-id subject; "" for a registry subject, which needs --image (the statement names no tag)."""
    subject = subjects[0] if subjects and isinstance(subjects[0], dict) else {}
    kind = (subject.get("annotations") or {}).get(statement.DIGEST_KIND)
    if kind != statement.IMAGE_ID or not subject.get("name"):
        return ""
    try:
        import docker

        client = docker.from_env(timeout=30)
        return str(client.images.get(str(subject["name"])).id)
    except docker.errors.ImageNotFound:
        return "absent from the local engine"  # matches no digest: rejected
    except Exception as exc:  # the engine could not be asked: the check cannot be made
        name = subject["name"]
        raise oci.RegistryUnavailable(f"cannot ask the Docker engine for {name}: {one_line(str(exc))}") from None

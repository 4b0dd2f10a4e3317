"""The gate's evidence, as a part of the plugin: waivers (--waivers, --no-waivers, a matrix's [*.waivers] table)
and attestations of each verdict (--attest, --attest-push). plugin.py calls add_options, options_from_config
and validate_targets like any part, `finish` once the verdict is known, and `summary_lines` for the terminal.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from . import waivers
from .errors import BaseImageError, ExitCode
from .registry.options import ENV_NAME
from .registry.plugin import read_stdin
from .secret import Secret
from .text import one_line

MATRIX_OPTIONS = waivers.MATRIX_OPTIONS  # [defaults.waivers] / [images.waivers]: file = "waivers.yml"


class EvidenceUsageError(BaseImageError):
    """Bad waiver or attestation options, found in pytest_configure: exit 4, one line."""

    exit_code = ExitCode.USAGE_ERROR


def add_options(group: Any) -> None:
    group.addoption(
        "--waivers",
        default="",
        metavar="FILE.yml",
        help="accept known gaps until a date: a YAML file of waivers (stage, images, justification, expires, owner, "
        "run). A waived failure does not fail the verdict ('compatible with waivers', exit 0).",
    )
    group.addoption(
        "--no-waivers",
        action="store_true",
        default=False,
        help="a gate that refuses waivers: every stage is judged normally, even where --waivers or the matrix "
        "names a file.",
    )
    group.addoption(
        "--waiver-max-days",
        type=int,
        default=None,
        metavar="N",
        help="refuse (exit 4) a waiver that expires more than N days from today.",
    )
    group.addoption(
        "--attest",
        default="",
        metavar="FILE.intoto.json",
        help="write a DSSE envelope of an in-toto Statement (test-result predicate) per checked image, one per line.",
    )
    group.addoption(
        "--attest-key", default="", metavar="KEY.pem", help="sign with this ECDSA P-256 or Ed25519 PEM key."
    )
    group.addoption(
        "--attest-key-env", default="", metavar="NAME", help="sign with the PEM key held in environment variable NAME."
    )
    group.addoption("--attest-key-stdin", action="store_true", default=False, help="read the PEM key from stdin.")
    group.addoption(
        "--attest-unsigned", action="store_true", default=False, help="without a key, write the envelope unsigned."
    )
    group.addoption(
        "--attest-push",
        action="store_true",
        default=False,
        help="store each signed envelope in the image's registry as cosign does (tag sha256-<hex>.att).",
    )
    group.addoption("--attest-url", default="", metavar="URL", help="the report's URL, recorded in the attestation.")


def options_from_config(config: Any) -> dict[str, Any]:
    """Target.options["waivers"]: the command line's file (a matrix table may set another), refusal and cap."""
    attest_options(config)  # the attestation options are the session's: checked here, where exit 4 is made
    out: dict[str, Any] = {"refused": bool(config.getoption("no_waivers"))}
    if config.getoption("waivers"):
        out["file"] = os.path.abspath(config.getoption("waivers"))
    if config.getoption("waiver_max_days") is not None:
        out["max_days"] = config.getoption("waiver_max_days")
    return out


def validate_targets(targets: list[Any]) -> None:
    """Every waiver file any image uses is read now: a bad one is exit 4 before anything starts."""
    for target in targets:
        waivers.loaded(target.options.get("waivers") or {})


# -- attestation options ------------------------------------------------------------------------------------
@dataclass
class AttestOptions:
    """The session's attestation options, read once on the controller (stdin cannot be read twice)."""

    path: str = ""
    push: bool = False
    url: str = ""
    key: Secret | None = None  # the PEM private key
    key_source: str = ""
    unsigned: bool = False
    signer: Any = field(default=None, repr=False)


_ATTEST = "baseimage_attest_options"


def attest_options(config: Any) -> AttestOptions:
    """Read and check once (stdin can be read once): exit 4 for a missing, bad or doubly given key."""
    cached = getattr(config, _ATTEST, None)
    if cached is not None:
        return cached
    option = config.getoption
    found = AttestOptions(path=option("attest"), push=bool(option("attest_push")), url=option("attest_url"))
    found.unsigned = bool(option("attest_unsigned"))
    sources = [s for s in ("attest_key", "attest_key_env", "attest_key_stdin") if option(s)]
    if len(sources) > 1:
        raise EvidenceUsageError("give the attestation key once: --attest-key, --attest-key-env or --attest-key-stdin")
    if sources and not (found.path or found.push):
        raise EvidenceUsageError("an attestation key needs --attest=FILE or --attest-push")
    if not hasattr(config, "workerinput") and (found.path or found.push):
        if found.path:
            from .session import check_output_path

            check_output_path("--attest", found.path)  # written at the end: refused now, before anything starts
        _read_key(config, found)
        if found.key is None and not found.unsigned:
            raise EvidenceUsageError(
                "--attest needs a signing key (--attest-key=KEY.pem, --attest-key-env=NAME or --attest-key-stdin); "
                "--attest-unsigned writes it unsigned"
            )
        if found.push and found.key is None:
            raise EvidenceUsageError("--attest-push stores signed attestations only: give a key")
        if found.key is not None:
            from .attest import dsse

            found.signer = dsse.signer_from_pem(found.key.reveal().encode(), found.key_source)
    setattr(config, _ATTEST, found)
    return found


def _read_key(config: Any, found: AttestOptions) -> None:
    option = config.getoption
    if option("attest_key"):
        path = option("attest_key")
        try:
            with open(path, encoding="utf-8") as handle:
                found.key, found.key_source = Secret(handle.read(64 * 1024)), f"--attest-key={path}"
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise EvidenceUsageError(f"--attest-key={one_line(path)}: cannot read it ({reason})") from None
    elif option("attest_key_env"):
        name = option("attest_key_env")
        if not ENV_NAME.fullmatch(name):  # never echo it: it may be the key itself, pasted by mistake
            raise EvidenceUsageError("--attest-key-env takes the NAME of an environment variable, not its value")
        if not os.environ.get(name):
            raise EvidenceUsageError(f"--attest-key-env={name}: the environment variable {name} is not set or empty")
        found.key, found.key_source = Secret(os.environ[name]), f"${name}"
    elif option("attest_key_stdin"):
        if option("registry_password_stdin"):
            raise EvidenceUsageError("stdin can carry the registry password or the attestation key, not both")
        text = read_stdin(config)
        if not text.strip():
            raise EvidenceUsageError("--attest-key-stdin: standard input was empty")
        found.key, found.key_source = Secret(text), "stdin"


# -- the end of the run --------------------------------------------------------------------------------------
_LINES = "baseimage_evidence_lines"  # config attribute: the terminal lines finish() and attest_run() produced


def junit_properties(result: Any) -> dict[str, str]:
    """A waived (or expired-waiver) stage's waiver, as JUnit properties a CI dashboard can filter on."""
    waiver = result.waiver or {}
    if not waiver:
        return {}
    keys = ("justification", "owner", "expires", "message")
    return {f"waiver_{key}": one_line(str(waiver.get(key, ""))) for key in keys if waiver.get(key) not in (None, "")}


def waiver_notes(targets: list[Any], reports: list[Any]) -> list[str]:
    """Refused files, stale waivers and expired or expiring ones: for Run.notes and the terminal."""
    notes: list[str] = []
    by_name = {r.name: r for r in reports}
    files: dict[str, list[Any]] = {}
    for target in targets:
        options = target.options.get("waivers") or {}
        if options.get("file"):
            files.setdefault(options["file"], []).append(target)
    for path, users in files.items():
        options = users[0].options["waivers"]
        if options.get("refused"):
            notes.append(f"waivers refused (--no-waivers): {path} was not applied")
            continue
        judged = [
            (t, by_name[t.name].info, {r.stage for r in by_name[t.name].results}) for t in users if t.name in by_name
        ]
        for waiver in waivers.stale(waivers.loaded(options), judged):
            notes.append(f"stale waiver: waivers.{waiver.index} for {waiver.label()} matched no image in this run")
    for report in reports:
        notes += [f"{report.name}: {r.waiver['message']}" for r in report.results if r.waiver.get("message")]
    return notes


def finish(config: Any, targets: list[Any], run: Any, secrets: list[str]) -> None:
    """Before the verdict is written: the waiver notes, then the attestations. Evidence that was asked for but
    could not be written or stored makes its image "could not be checked" (exit 2), in the JSON as in the exit
    code: a gate that asked for evidence must not pass without it."""
    notes = waiver_notes(targets, run.images)
    run.notes.extend(n for n in notes if n not in run.notes)
    _lines(config).extend((f"waivers: {note}", {"yellow": True}) for note in notes)
    _lines(config).extend(attest(config, targets, run, secrets))


def _lines(config: Any) -> list[tuple[str, dict[str, bool]]]:
    if not hasattr(config, _LINES):
        setattr(config, _LINES, [])
    return getattr(config, _LINES)


def summary_lines(config: Any) -> list[tuple[str, dict[str, bool]]]:
    return list(getattr(config, _LINES, []))


FAILED_MARKUP = {"red": True, "bold": True}


def attest(config: Any, targets: list[Any], run: Any, secrets: list[str]) -> list[tuple[str, dict[str, bool]]]:
    """The envelopes, written to --attest (one JSON line per image, the in-toto bundle form) and pushed; the
    terminal lines that say where they went."""
    options = attest_options(config)
    if not (options.path or options.push):
        return []
    from .attest import dsse, statement

    profiles = {t.name: t.profile.data for t in targets}
    lines: list[tuple[str, dict[str, bool]]] = []
    envelopes: list[tuple[Any, dict[str, Any]]] = []
    for report in run.images:
        try:
            body = statement.statement(report, profiles.get(report.name, {}), options.url)
        except statement.NotAttestable as exc:
            lines.append((f"attestation: none for {one_line(str(exc))}", {}))
            continue
        envelopes.append((report, dsse.envelope(body, options.signer)))
    if options.path:
        lines.append(_write(options, envelopes))
    if options.push:
        from .attest import oci

        registry_options = {t.name: t.options.get("registry") or {} for t in targets}
        for report, env in envelopes:
            try:
                lines.append((oci.push_for_report(report, env, registry_options.get(report.name, {}), secrets), {}))
            except BaseImageError as exc:
                report.error = report.error or f"the attestation could not be stored: {one_line(str(exc))}"
                lines.append((f"attestation not stored: {one_line(str(exc))}", FAILED_MARKUP))
    return lines


def _write(options: AttestOptions, envelopes: list[tuple[Any, dict[str, Any]]]) -> tuple[str, dict[str, bool]]:
    try:
        with open(options.path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(env, sort_keys=True) + "\n" for _, env in envelopes)
    except OSError as exc:
        why = f"the attestation could not be written to {one_line(options.path)}: {exc.strerror or exc}"
        for report, _ in envelopes:
            report.error = report.error or why
        return why, FAILED_MARKUP
    signed = "signed" if options.signer is not None else "UNSIGNED"
    return f"attestation ({signed}, {len(envelopes)} image(s)): {os.path.abspath(options.path)}", {}

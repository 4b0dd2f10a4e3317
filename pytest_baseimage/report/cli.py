"""``baseimage-report``: merge the JSON reports of several runs (a CI matrix fan-out) into one report; `verify` a
signed attestation of a verdict (attest/verify.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pytest_baseimage.attest import verify
from pytest_baseimage.errors import ExitCode
from pytest_baseimage.report.html import write_html
from pytest_baseimage.report.junit import to_junit_xml
from pytest_baseimage.report.model import ReportError, Run, load_json, merge, write_json

PROG = "baseimage-report"

DESCRIPTION = """\
Merge the JSON reports of several pytest-baseimage runs (pytest --compat-json=FILE), such as
the jobs of a CI matrix, into one HTML, JUnit XML and/or JSON report; or verify a signed
attestation of a verdict (pytest --attest) against an image."""

EPILOG = """\
exit status:
  0  every image is compatible
  1  at least one image is not compatible
  2  at least one image could not be checked
  4  bad input: a missing or unreadable file, bad JSON, another schema version, bad options

example:
  baseimage-report merge cpu.json gpu.json --html report.html --junit report.xml --json all.json"""


class _UsageError(Exception):
    """argparse's complaint, raised instead of exiting so main() can return 4 (argparse would exit 2,
    which here means 'could not be checked')."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    merge_cmd = commands.add_parser(
        "merge",
        help="merge several JSON reports into one",
        description=DESCRIPTION + "\n\nWhen an image appears in more than one report, the run that started last wins.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge_cmd.add_argument("reports", nargs="+", metavar="REPORT.json", help="JSON reports to merge")
    merge_cmd.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    merge_cmd.add_argument("--junit", metavar="FILE", help="write JUnit XML, one testsuite per image")
    merge_cmd.add_argument("--json", metavar="FILE", help="write the merged JSON report")
    verify.add_parser(commands, argparse.RawDescriptionHelpFormatter)
    merge_cmd.add_argument(
        "--baseline",
        metavar="OLD.json",
        help="a previous report: the HTML then shows which stages and versions changed since",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0/1/2 from the merged verdict, 4 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        return _fail(f"{exc} (see {PROG} --help)")
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.command == "verify":
        return verify.run(args)
    try:
        run = merge([load_json(path) for path in args.reports])
        baseline = load_json(args.baseline) if args.baseline else None
        _write_outputs(run, args, baseline)
    except ReportError as exc:
        return _fail(str(exc))
    print(_summary(run))
    return int(run.exit_code)


def _write_outputs(run: Run, args: argparse.Namespace, baseline: Run | None) -> None:
    """Write each requested file; a path that cannot be written is bad input, like a missing report."""
    writers = (
        (args.html, lambda path: write_html(run, path, baseline)),
        (args.junit, lambda path: _write_text(path, to_junit_xml(run))),
        (args.json, lambda path: write_json(run, path)),
    )
    for path, write in writers:
        if not path:
            continue
        try:
            write(path)
        except OSError as exc:
            raise ReportError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _summary(run: Run) -> str:
    """What a CI log should show: one line per image and the overall verdict."""
    lines = [f"{image.verdict.value:>20}  {image.name}" for image in run.images]
    lines.append(f"{PROG}: {len(run.images)} image(s): {run.verdict.value} (exit {int(run.exit_code)})")
    return "\n".join(lines)


def _fail(message: str) -> int:
    """One line on stderr, never a traceback: bad input is the user's to fix, not a bug."""
    first = message.strip().splitlines()[0] if message.strip() else "bad input"
    sys.stderr.write(f"{PROG}: error: {first}\n")
    return int(ExitCode.USAGE_ERROR)

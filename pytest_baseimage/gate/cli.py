"""`baseimage-gate serve --config gate.toml`: bad input is one line and exit 4, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import BaseImageError, ExitCode
from ..text import redact
from . import config as gate_config


class _Redacting(logging.Filter):
    """Belt and braces: no secret the gate holds can reach a log line, whoever formats it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="baseimage-gate", description="certify on push, promote what passes")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--config", required=True, metavar="GATE.toml")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = parser.parse_args(argv)
    try:
        loaded = gate_config.load(args.config)
    except BaseImageError as exc:
        print(f"baseimage-gate: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE_ERROR)
    return serve_forever(loaded, args.log_level)


def serve_forever(loaded: gate_config.Loaded, level: str) -> int:
    try:
        import uvicorn  # only the service needs it

        from .app import create_app
    except ImportError as exc:
        print(f"baseimage-gate: {exc.name} is missing: pip install 'pytest-baseimage[gate]'", file=sys.stderr)
        return int(ExitCode.USAGE_ERROR)

    redacting = _Redacting(loaded.secrets.values())
    handler = logging.StreamHandler()
    handler.addFilter(redacting)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    host, port = loaded.config.host_port
    log_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {"uvicorn": {"level": level.upper()}, "uvicorn.access": {"level": level.upper()}},
    }
    try:
        app = create_app(loaded)
    except BaseImageError as exc:  # the database cannot be reached at start
        print(f"baseimage-gate: {redact(str(exc), loaded.secrets.values())}", file=sys.stderr)
        return int(exc.exit_code)
    try:
        uvicorn.run(app, host=host, port=port, log_config=log_config, log_level=level)
    except OSError as exc:
        print(f"baseimage-gate: cannot listen on {loaded.config.listen}: {exc.strerror or exc}", file=sys.stderr)
        return int(ExitCode.UNCHECKED)
    return 0


if __name__ == "__main__":
    sys.exit(main())

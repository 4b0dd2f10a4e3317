"""What the registry modules share: constants, errors, and scrubbing of secrets and escapes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import BaseImageError, EngineError, ExitCode, ImageNotFound
from ..text import redact, strip_ansi

PULL_POLICIES = ("missing", "always", "never")
DOCKER_HUB = "docker.io"
HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
PROGRESS_INTERVAL_S = 2.0  # a progress line at most this often: a CI log stays readable
BUILD_TAIL_LINES = 25
BUILT_KEY = "baseimage_built"  # xdist workerinput key: the controller builds, workers reuse its image ids
PREFIX = "pytest-baseimage"

Writer = Callable[[str], None]


# -- errors ------------------------------------------------------------------------------------------------
class RegistryUsageError(BaseImageError):
    """The registry options contradict each other or put a secret where it would leak: fix the command."""

    exit_code = ExitCode.USAGE_ERROR


class PullError(ImageNotFound):
    """The image is not local and the registry would not hand it over: could not be checked (exit 2)."""


class BuildFailed(EngineError):
    """`--base-image-dockerfile` did not build; the message is one line, then the build log's tail."""


# -- helpers -------------------------------------------------------------------------------------------------
def scrub(text: str, secret_values: Iterable[str]) -> str:
    """No terminal escapes and no secrets in anything the user or a report will see."""
    return redact(strip_ansi(text), list(secret_values))


def to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def explanation(exc: Any) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else "no detail"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f}"

"""User-facing errors and the exit codes a gate can rely on (they follow pytest's own)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    COMPATIBLE = 0  # every image passed every stage it could run
    NOT_COMPATIBLE = 1  # at least one stage failed
    UNCHECKED = 2  # could not be checked: pull failed, daemon down, interrupted (pytest's INTERRUPTED)
    INTERNAL_ERROR = 3  # a bug in the plugin (pytest's INTERNAL_ERROR)
    USAGE_ERROR = 4  # bad options, bad profile (pytest's USAGE_ERROR)


class BaseImageError(Exception):
    """An error with a one-line message meant for the user, never a traceback."""

    exit_code = ExitCode.UNCHECKED


class EngineError(BaseImageError):
    """Docker could not be reached, or refused what we asked."""


class ImageNotFound(EngineError):
    """The image is neither local nor pullable."""


class ProfileError(BaseImageError):
    """A profile file is missing, malformed or names an unknown field."""

    exit_code = ExitCode.USAGE_ERROR


class ExecTimeout(EngineError):
    """An exec in a container passed the host's deadline; `partial` is the stdout read until then."""

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial

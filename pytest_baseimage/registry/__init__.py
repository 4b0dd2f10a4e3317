"""Images from registries: credentials, pulls with progress, digest pinning, and build-then-test.

A gate runs this right after a push, so the image is usually *not* on the engine yet: `resolve` pulls it
(with the user's Docker config, or an explicit registry user whose password never travels on the command
line), and records the exact digest that was tested. `build_targets` builds a Dockerfile first, for teams
that want to check a base image before they push it.

Secrets: the password lives in a `Secret` (its repr is `***`), is sent only to the registry it was given
for, and every message this module raises or prints is scrubbed of it; `secrets(config)` hands it to the
report writers so they can redact it too.

The package: `options` (the options checked against each other, secrets), `reference` (the grammar),
`pull` (resolve, pull, progress), `build` (build-then-test) and `base` (errors, scrubbing) import no pytest;
`plugin` is the pytest plugin's side (pytest options, stdin, the build before the session).
"""

from __future__ import annotations

from .base import BUILD_TAIL_LINES, BUILT_KEY, BuildFailed, PullError, RegistryUsageError, scrub
from .build import BuildLog, build
from .options import Credentials, RegistryOptions, Secret, parse_options, validate_targets
from .pull import PullProgress, describe_pull_error, pull, remote_digest, resolve
from .reference import REFERENCE, is_pinned, normalise_registry, qualify, registry_of, split_reference

__all__ = [
    "BUILD_TAIL_LINES",
    "BUILT_KEY",
    "REFERENCE",
    "BuildFailed",
    "BuildLog",
    "Credentials",
    "PullError",
    "PullProgress",
    "RegistryOptions",
    "RegistryUsageError",
    "Secret",
    "build",
    "describe_pull_error",
    "is_pinned",
    "normalise_registry",
    "parse_options",
    "pull",
    "qualify",
    "registry_of",
    "remote_digest",
    "resolve",
    "scrub",
    "split_reference",
    "validate_targets",
]

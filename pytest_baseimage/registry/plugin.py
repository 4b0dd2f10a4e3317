"""The registry part of the pytest plugin: its options, stdin, secrets for the reports, and the build of
--base-image-dockerfile before the session. The only registry module that imports pytest."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ..engine import Engine
from ..errors import BaseImageError
from .base import BUILT_KEY, PULL_POLICIES, scrub, to_stderr
from .build import build, login
from .options import RegistryOptions, parse_options


def add_options(group: Any) -> None:
    """The registry, pull and build options (plugin.pytest_addoption calls this)."""
    group.addoption(
        "--pull",
        choices=PULL_POLICIES,
        default="missing",
        help="when to pull --base-image: missing (default: only if it is not on the engine), "
        "always (refresh a tag; a digest is never re-pulled), never (local images only).",
    )
    group.addoption(
        "--registry",
        default="",
        metavar="ADDRESS",
        help="private registry address (e.g. myacr.azurecr.io), as Azure ML's base_image_registry: "
        "an image given without a registry host is pulled from it, and --registry-username's "
        "credentials are sent only to it. Without a user, the Docker config's credentials are used.",
    )
    group.addoption("--registry-username", default="", metavar="USER", help="user name for --registry.")
    group.addoption(
        "--registry-password-env",
        default="",
        metavar="NAME",
        help="read --registry-username's password from the environment variable NAME.",
    )
    group.addoption(
        "--registry-password-stdin",
        action="store_true",
        default=False,
        help="read --registry-username's password from standard input (as `docker login`).",
    )
    group.addoption(
        "--registry-password",
        default=None,
        metavar="REFUSED",
        help="refused: a password on the command line leaks (ps, shell history, CI logs). "
        "Use --registry-password-env or --registry-password-stdin.",
    )
    group.addoption(
        "--require-digest",
        action="store_true",
        default=False,
        help="refuse images given by a moving tag (usage error, exit 4): only repo@sha256:... "
        "or an image id, so the verdict is about exactly one image.",
    )
    group.addoption(
        "--base-image-dockerfile",
        default="",
        metavar="PATH",
        help="build this Dockerfile (its directory is the context) and check the result.",
    )
    group.addoption(
        "--build-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="baseimage_build_args",
        help="a build argument for --base-image-dockerfile (repeat).",
    )


_OPTIONS = pytest.StashKey["RegistryOptions"]()


def options_from_config(config: pytest.Config) -> dict[str, Any]:
    """The registry options for every Target; a RegistryUsageError (exit 4) when they are wrong."""
    return read_options(config).to_dict()


def read_options(config: pytest.Config) -> RegistryOptions:
    """Parse once per session: stdin can be read only once, and secrets() must see the same password."""
    if _OPTIONS not in config.stash:
        values = {
            "pull": config.getoption("pull"),
            "registry": config.getoption("registry"),
            "username": config.getoption("registry_username"),
            "password_env": config.getoption("registry_password_env"),
            "password_stdin": config.getoption("registry_password_stdin"),
            "password": config.getoption("registry_password"),
            "require_digest": config.getoption("require_digest"),
            "dockerfile": config.getoption("base_image_dockerfile"),
            "build_args": config.getoption("baseimage_build_args"),
        }
        worker = hasattr(config, "workerinput")
        config.stash[_OPTIONS] = parse_options(
            values,
            images=config.getoption("base_images") or [],
            environ=os.environ,
            read_stdin=(lambda: "") if worker else (lambda: read_stdin(config)),
            worker=worker,
        )
    return config.stash[_OPTIONS]


def read_stdin(config: pytest.Config) -> str:
    """pytest keeps fd 0 on /dev/null while it captures; lift that for one read, as its pdb support does."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        return sys.stdin.read()
    capman.suspend_global_capture(in_=True)
    try:
        return sys.stdin.read()
    finally:  # back to the state pytest_configure runs in: output not captured, stdin captured
        capman.resume_global_capture()
        capman.suspend_global_capture()


def secrets(config: pytest.Config) -> list[str]:
    """What the report writers must redact (`write_json(..., secrets=registry.secrets(config))`)."""
    try:
        found = read_options(config).secrets()
    except BaseImageError:
        found = []
    refused = config.getoption("registry_password", None)
    return [*found, *([refused] if refused else [])]


def build_targets(config: pytest.Config) -> list[str]:
    """Build --base-image-dockerfile and return [image id] to check; [] without the option.

    The xdist controller builds; workers take its image ids from `config.workerinput[BUILT_KEY]` (the
    plugin's pytest_configure_node copies `built(config)` there). Raises BuildFailed (exit 2) or
    RegistryUsageError (exit 4).
    """
    if hasattr(config, "workerinput"):
        return list(config.workerinput.get(BUILT_KEY, []))
    options = read_options(config)
    if not options.dockerfile:
        return []
    from ..session import session_of  # the session (registered before this runs) owns the engines

    session = session_of(config)
    engine = session.engines.get(None) if session is not None else Engine()
    try:
        if options.credentials is not None:
            login(engine, options.credentials)
        image_id = build(engine, Path(options.dockerfile), options.build_args, to_stderr)
    except BaseImageError as exc:
        raise type(exc)(scrub(str(exc), options.secrets())) from None
    config.stash[_BUILT] = [image_id]
    return [image_id]


_BUILT = pytest.StashKey[list]()


def built(config: pytest.Config) -> list[str]:
    """The image ids this controller built (for xdist's workerinput)."""
    return list(config.stash.get(_BUILT, []))

"""The plugin's own command-line options, and how `--profile` stays out of another plugin's way."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from . import profiles


def add_core_options(parser: pytest.Parser, group: Any) -> None:
    """The plugin's own options (the parts add theirs: scoring, gpu, registry, probe)."""
    group.addoption(
        "--base-image",
        action="append",
        default=[],
        metavar="IMAGE",
        dest="base_images",
        help="Docker image to certify (repo:tag, repo@sha256:..., or an image id). Repeat for "
        "several images; each gets its own container and results.",
    )
    group.addoption(
        "--base-image-matrix",
        default=None,
        metavar="FILE.toml",
        help="check every image listed in a matrix file ([[images]] with ref, name, profile, docker_host "
        "or context, platform and part tables; [defaults] for common settings). With -n N (pytest-xdist) "
        "images run in parallel, one worker per image: --dist=loadgroup is chosen unless you pick a mode.",
    )
    group.addoption(
        *profile_option_names(parser),
        default=None,
        dest="base_image_profile",
        metavar="NAME|PATH",
        help=f"requirement set: a built-in name ({', '.join(profiles.builtin_names())}) or a "
        f".toml file that may extend one. Default: {profiles.DEFAULT_PROFILE}. The short form --profile is "
        "left out when another plugin (pytest-profiling) owns it.",
    )
    group.addoption(
        "--compliance-suite",
        choices=("auto", "always", "never"),
        default="auto",
        help="run the bundled compliance suite: auto = when no test paths are given (default), "
        "always = also next to your own tests, never = only your tests (use the "
        "`baseimage` / `baseimage_host` fixtures).",
    )
    group.addoption(
        "--compat-json",
        default=None,
        metavar="PATH",
        help="write the verdict and every stage result as JSON (schema_version 1).",
    )
    group.addoption(
        "--compat-html", default=None, metavar="PATH", help="write a self-contained HTML compatibility report."
    )
    group.addoption(
        "--compat-baseline",
        default=None,
        metavar="OLD.json",
        help="compare with an earlier --compat-json run; changes are shown at the top.",
    )
    group.addoption(
        "--require-all-stages",
        action="store_true",
        default=False,
        help="a stage the profile asks for but that cannot be judged here (a server that cannot be "
        "reproduced offline, no GPU on this host) makes the image 'could not be checked' (exit 2) instead "
        "of 'compatible, <stage> not checked' (exit 0).",
    )


PROFILE_ALIAS = "--profile"
# Plugins known to own PROFILE_ALIAS. A plugin registered before this one is seen in the parser; one registered
# after it would make argparse fail at start-up ("conflicting option string"), so it is looked for up front.
PROFILE_ALIAS_OWNERS = ("pytest_profiling",)


def profile_option_names(parser: pytest.Parser) -> tuple[str, ...]:
    """--base-image-profile always; the short --profile only when no other plugin has or will have it."""
    if registered(parser, PROFILE_ALIAS) or any(installed(module) for module in PROFILE_ALIAS_OWNERS):
        return ("--base-image-profile",)
    return ("--base-image-profile", PROFILE_ALIAS)


def registered(parser: pytest.Parser, option: str) -> bool:
    """Whether a plugin loaded earlier added `option`: the parser then does not leave it unknown (or refuses it
    without a value). Asked through pytest's public parse, as pytest has no public list of options."""
    try:
        return option not in parser.parse_known_and_unknown_args([option])[1]
    except (pytest.UsageError, SystemExit):
        return True


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False

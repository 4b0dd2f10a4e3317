"""Waivers: an accountable, expiring acceptance of a known gap, instead of editing the profile or the gate.

The semantics are InSpec's `--waiver-file` (see /work/shared/WAVE2-FACTS.md, "Waivers"): a waiver expires at the
start of its date (UTC), after which the stage is judged normally and the output says so; `run: false` means
the stage is not run at all; an unreadable file or date is a usage error. Unlike InSpec, `expires` and
`justification` are required here: a waiver without an end or a reason is a profile edit in disguise.

A waived stage gets its own status (Status.WAIVED) and the image the verdict "compatible with waivers" (exit 0);
`--no-waivers` lets a gate refuse them all. A waiver that matched nothing in a run is reported as stale.
"""

# ruff: noqa: UP007, UP045  (pydantic reads these annotations at run time, on Python 3.9 too)
from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from .composition import STAGE_ORDER
from .errors import BaseImageError, ExitCode
from .results import StageResult, Status
from .text import one_line

EXPIRING_DAYS = 14  # a waiver that ends sooner than this is reported as a warning
FAILED = (Status.FAIL, Status.BLOCKED)  # what a waiver can accept: the image's own failures, never an error
# The keys of a matrix file's [defaults.waivers] / [images.waivers] table (see matrix.part_schemas).
MATRIX_OPTIONS: dict[str, str] = {"file": "path"}
# Stage details that name the checks inside a stage which failed, for a waiver with `check:` (apt: a package).
CHECK_KEYS = ("missing", "files_missing")


class WaiverError(BaseImageError):
    """The waiver file cannot be used: a usage error found before anything starts (exit 4, one line)."""

    exit_code = ExitCode.USAGE_ERROR


@dataclass(frozen=True)
class Waiver:
    """One entry of the file, validated (see _model for the shape)."""

    index: int
    stage: str
    images: tuple[str, ...]
    justification: str
    expires: dt.date
    owner: str = ""
    run: bool = True
    check: str = ""  # one check inside the stage (an apt package); empty: the whole stage

    def label(self) -> str:
        return f"{self.stage} ({self.check})" if self.check else self.stage

    def active(self, today: dt.date) -> bool:
        """In force before its date; expired from the start of it (InSpec's rule)."""
        return today < self.expires

    def matches_image(self, names: Iterable[str], digests: Iterable[str]) -> bool:
        """`images` holds globs on the image's name or reference, or digests (sha256:..., repo@sha256:...)."""
        names, digests = [n for n in names if n], {d.removeprefix("sha256:") for d in digests if d}
        for pattern in self.images:
            digest = pattern.rpartition("@")[2] if "@" in pattern else pattern
            if digest.startswith("sha256:") and digest.removeprefix("sha256:") in digests:
                return True
            if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                return True
        return False

    def describe(self, message: str = "") -> dict[str, Any]:
        """What reports carry: the JSON `waiver` object of a stage result."""
        return {
            "stage": self.stage,
            "check": self.check,
            "images": list(self.images),
            "justification": self.justification,
            "owner": self.owner,
            "expires": self.expires.isoformat(),
            "run": self.run,
            "message": message,
        }


@dataclass(frozen=True)
class WaiverSet:
    """A loaded waiver file."""

    path: str
    waivers: tuple[Waiver, ...]

    def matching(self, names: Sequence[str], digests: Sequence[str], stage: str) -> list[Waiver]:
        return [w for w in self.waivers if w.stage == stage and w.matches_image(names, digests)]


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


# -- loading ---------------------------------------------------------------------------------------------------
@functools.cache
def _model() -> Any:
    """The pydantic models, built on first use (pydantic costs ~0.1 s; see profiles.Profile.setting)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

    class Entry(BaseModel):
        model_config = ConfigDict(extra="forbid")
        stage: str
        check: Optional[str] = Field(default=None, min_length=1)
        images: Union[str, list[str]]
        justification: str = Field(min_length=1)
        expires: Any
        owner: str = ""
        run: StrictBool = True

        @field_validator("stage")
        @classmethod
        def known_stage(cls, value: str) -> str:
            if value not in STAGE_ORDER:
                raise ValueError(f"unknown stage '{value}' (known: {', '.join(STAGE_ORDER)})")
            return value

        @field_validator("images")
        @classmethod
        def some_images(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
            listed = [value] if isinstance(value, str) else value
            if not listed or not all(p.strip() for p in listed):
                raise ValueError("images must name at least one glob or digest")
            return value

        @field_validator("justification")
        @classmethod
        def said(cls, value: str) -> str:
            if not value.strip():
                raise ValueError("justification must say why the gap is accepted")
            return value

        @field_validator("expires", mode="before")
        @classmethod
        def a_date(cls, value: Any) -> dt.date:
            return _date(value)

    class File(BaseModel):
        model_config = ConfigDict(extra="forbid")
        waivers: list[Entry]

    return File


def _date(value: Any) -> dt.date:
    """YYYY-MM-DD, quoted or not (the loader keeps dates as text); times and other forms are refused."""
    if isinstance(value, dt.datetime):
        raise ValueError(f"'{value}' is a time; give a date (YYYY-MM-DD)")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{one_line(repr(value))} is not a date (YYYY-MM-DD)")


def _loader() -> Any:
    """PyYAML's SafeLoader without its timestamp rule: a date stays text until _date reads it, so 2027-02-30 is
    "not a date" at its key, where plain safe_load raises a ValueError from inside the parser."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    timestamp = "tag:yaml.org,2002:timestamp"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != timestamp]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return Loader


def load(path: str, *, max_days: int | None = None, on: dt.date | None = None) -> WaiverSet:
    """Read and validate a waiver file; WaiverError (exit 4) with one line naming the file and the entry."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=_loader())
    except OSError as exc:
        raise WaiverError(f"waiver file {one_line(path)}: cannot read it ({exc.strerror or exc})") from None
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as exc:
        raise WaiverError(f"waiver file {one_line(path)} is not valid YAML: {one_line(str(exc))}") from None
    if not isinstance(data, dict):
        raise WaiverError(f"waiver file {one_line(path)}: expected a mapping with a 'waivers:' list")
    from pydantic import ValidationError

    try:
        parsed = _model().model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise WaiverError(f"waiver file {one_line(path)}: {where}: {one_line(message)}") from None
    waivers = tuple(
        Waiver(
            index=index,
            stage=entry.stage,
            images=(entry.images,) if isinstance(entry.images, str) else tuple(entry.images),
            justification=entry.justification.strip(),
            expires=entry.expires,
            owner=entry.owner,
            run=entry.run,
            check=entry.check or "",
        )
        for index, entry in enumerate(parsed.waivers)
    )
    _check_cap(path, waivers, max_days, on or today())
    return WaiverSet(os.path.abspath(path), waivers)


def _check_cap(path: str, waivers: Sequence[Waiver], max_days: int | None, on: dt.date) -> None:
    """--waiver-max-days: a gate may refuse waivers that reach too far ahead."""
    if max_days is None:
        return
    limit = on + dt.timedelta(days=max_days)
    for waiver in waivers:
        if waiver.expires > limit:
            raise WaiverError(
                f"waiver file {one_line(path)}: waivers.{waiver.index} ({waiver.label()}) expires on "
                f"{waiver.expires.isoformat()}, more than {max_days} days ahead (--waiver-max-days)"
            )


_LOADED: dict[tuple[str, int, int | None], WaiverSet] = {}


def loaded(options: dict[str, Any]) -> WaiverSet | None:
    """The waiver set of a Target's options (`Target.options["waivers"]`), read once per file; None when
    there is none or --no-waivers refused them."""
    path = options.get("file") or ""
    if not path or options.get("refused"):
        return None
    key = (os.path.abspath(path), os.stat(path).st_mtime_ns, options.get("max_days"))
    if key not in _LOADED:
        _LOADED[key] = load(path, max_days=options.get("max_days"))
    return _LOADED[key]


# -- judging (pure) ----------------------------------------------------------------------------------------------
def not_run(found: Sequence[Waiver], on: dt.date, stage: str) -> StageResult | None:
    """A stage waived with `run: false` is not run: it gets the waived status with the waiver's reason."""
    for waiver in found:
        if not waiver.run and not waiver.check and waiver.active(on):
            reason = f"not run: {_because(waiver, on)}"
            return StageResult(stage, Status.WAIVED, reason=reason, waiver=waiver.describe(_soon(waiver, on)))
    return None


def judge(result: StageResult, found: Sequence[Waiver], on: dt.date) -> StageResult:
    """The stage's own result, or WAIVED when active waivers cover its failure (the whole stage, or every
    failed check in it). Expired waivers change nothing but the message: the stage is judged normally."""
    if result.status not in FAILED or not found:
        return result
    active = [w for w in found if w.active(on)]
    whole = next((w for w in active if not w.check), None)
    if whole is not None:
        return _waived(result, whole, on)
    failed = failed_checks(result)
    by_check = {w.check: w for w in active if w.check}
    if failed and all(check in by_check for check in failed):
        return _waived(result, min((by_check[c] for c in failed), key=lambda w: w.expires), on)
    expired = [w for w in found if not w.active(on) and (not w.check or w.check in failed)]
    if expired:
        last = max(expired, key=lambda w: w.expires)
        result.waiver = last.describe(f"waiver for {last.label()} expired on {last.expires.isoformat()}")
    return result


def failed_checks(result: StageResult) -> list[str]:
    """The named checks that failed inside a stage (apt: each missing package, "a or b" for an any_of group)."""
    found: list[str] = []
    for key in CHECK_KEYS:
        value = result.details.get(key)
        found += [str(item) for item in (value if isinstance(value, (list, dict)) else [])]
    return found


def _waived(result: StageResult, waiver: Waiver, on: dt.date) -> StageResult:
    return StageResult(
        result.stage,
        Status.WAIVED,
        result.expected,
        result.observed,
        result.remediation,
        reason=f"{result.status.value}, {_because(waiver, on)}",
        duration_s=result.duration_s,
        details=result.details,
        truncated=result.truncated,
        waiver=waiver.describe(_soon(waiver, on)),
    )


def _because(waiver: Waiver, on: dt.date) -> str:
    owner = f" (owner {waiver.owner})" if waiver.owner else ""
    return f"waived until {waiver.expires.isoformat()}{owner}: {waiver.justification}"


def _soon(waiver: Waiver, on: dt.date) -> str:
    days = (waiver.expires - on).days
    if days > EXPIRING_DAYS:
        return ""
    return f"waiver for {waiver.label()} expires on {waiver.expires.isoformat()} (in {days} day{'s' * (days != 1)})"


# -- the runner's side -------------------------------------------------------------------------------------------
def image_keys(target: Any, info: Any) -> tuple[list[str], list[str]]:
    """What `images` patterns are matched against: the name and references, and the digests."""
    repo_digest = info.digest or ""
    names = [target.name, target.reference, repo_digest.partition("@")[0]]
    digests = [repo_digest.rpartition("@")[2] if "@" in repo_digest else "", info.image_id]
    return names, digests


def judged(check: Any, stage: str, run: Callable[[str], StageResult]) -> StageResult:
    """ImageCheck.result's wrapper: a `run: false` waiver stops the stage; else run it and judge the result."""
    waiver_set = loaded(check.target.options.get("waivers") or {})
    if waiver_set is None:
        return run(stage)
    check.prepare()  # the digest a waiver may name
    found = waiver_set.matching(*image_keys(check.target, check.info), stage)
    on = today()
    return not_run(found, on, stage) or judge(run(stage), found, on)


def stops(check: Any, stage: str) -> bool:
    """Whether an active `run: false` waiver keeps this stage from running (asked before a live stage starts
    early, in the background)."""
    waiver_set = loaded(check.target.options.get("waivers") or {})
    if waiver_set is None:
        return False
    found = waiver_set.matching(*image_keys(check.target, check.info), stage)
    return not_run(found, today(), stage) is not None


def stale(waiver_set: WaiverSet, judged_by_image: Sequence[tuple[Any, Any, set[str]]]) -> list[Waiver]:
    """Waivers that matched no judged (image, stage) of this run: debt to remove."""
    out = []
    for waiver in waiver_set.waivers:
        if not any(
            waiver.stage in stages and waiver.matches_image(*image_keys(target, info))
            for target, info, stages in judged_by_image
        ):
            out.append(waiver)
    return out

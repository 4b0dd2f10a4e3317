"""The image's platform, checked first: an image built for another CPU must not pass on static evidence.

An image's config says which platform it was built for (`Os`, `Architecture`, `Variant`). Azure ML runs
linux/amd64, so a profile names the platforms it accepts (`[image] platforms`), and the engine that runs
the check can start only its own (without an emulator, which the engine cannot tell us about). Both are
checked before any container starts: the os stage fails with "built for linux/arm64; this profile needs
linux/amd64", and when the engine cannot run the image at all, the stages that would run a command in it
are blocked with that reason instead of reading "the image has no shell".

Everything here is pure: ImageInfo (filled by `registry.resolve`) and the profile in, a StageResult out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .profiles import Profile
from .results import ImageInfo, StageResult, Status

STAGE = "os"  # the stage that reports the platform: the first one of every image
# arm64 images often leave Variant empty; the OCI spec treats that as v8.
DEFAULT_VARIANTS = {"arm64": "v8"}
ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Platform:
    """os/architecture[/variant], as Docker's --platform spells it."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = [p.strip().lower() for p in str(text).split("/")]
        os_name, arch, variant = [*parts, "", "", ""][:3]
        return cls(os_name, ARCH_ALIASES.get(arch, arch), variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def runs(self, other: Platform) -> bool:
        """This platform (a requirement) admits `other` (an image): same os and CPU; a variant, when named,
        must match (an empty one is the architecture's default)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if not self.variant:
            return True
        default = DEFAULT_VARIANTS.get(other.architecture, "")
        return self.variant == (other.variant or default)


def image_platform(info: ImageInfo) -> Platform | None:
    """The image's platform from its config; None when the engine did not say (nothing to check)."""
    if not info.architecture:
        return None
    return Platform(info.os.lower() or "linux", ARCH_ALIASES.get(info.architecture, info.architecture), info.variant)


def wanted(profile: Profile) -> list[Platform]:
    section = profile.section("image") or {}
    return [Platform.parse(p) for p in section.get("platforms", []) or []]


@dataclass(frozen=True)
class Mismatch:
    """Why the image's platform is wrong: for the profile, for the engine, or both."""

    image: Platform
    needed: tuple[Platform, ...]  # the profile's platforms, when the image is not one of them
    engine: Platform | None  # the engine's platform, when it cannot run the image

    @property
    def runnable(self) -> bool:
        return self.engine is None

    def text(self) -> str:
        parts = []
        if self.needed:
            parts.append(f"this profile needs {' or '.join(str(p) for p in self.needed)}")
        if self.engine is not None:
            parts.append(f"the engine runs {self.engine} and cannot start it")
        return f"built for {self.image}; " + "; ".join(parts)


def check(info: ImageInfo, profile: Profile) -> Mismatch | None:
    """The image's platform against the profile's `[image] platforms` and the engine's own platform."""
    image = image_platform(info)
    if image is None:
        return None
    needed = wanted(profile)
    profile_ok = not needed or any(p.runs(image) for p in needed)
    engine = Platform.parse(info.engine_platform) if info.engine_platform else None
    engine_ok = engine is None or Platform(engine.os, engine.architecture).runs(image)
    if profile_ok and engine_ok:
        return None
    return Mismatch(image, () if profile_ok else tuple(needed), None if engine_ok else engine)


def stage_result(stage: str, info: ImageInfo, profile: Profile) -> StageResult | None:
    """What a platform mismatch makes of `stage`: the os stage fails with it; the other stages are blocked by
    it when the engine cannot start the image, and run as usual when it can. None when the platform is fine."""
    mismatch = check(info, profile)
    if mismatch is None:
        return None
    if stage == STAGE:
        needed = mismatch.needed or (mismatch.engine,)
        expected = f"an image built for {' or '.join(str(p) for p in needed)}"
        fix = str((profile.section("image") or {}).get("remediation", "")) or (
            f"Build the image for {needed[0]}: `docker build --platform {needed[0]} ...`."
        )
        details = {"image_platform": str(mismatch.image), "engine_platform": info.engine_platform}
        return StageResult(stage, Status.FAIL, expected, mismatch.text(), fix, details=details)
    if mismatch.runnable:
        return None
    return StageResult(stage, Status.BLOCKED, reason=f"not run: the image is {mismatch.text()}")

"""The platform rule, as pure logic: an image's config platform against the profile's and the engine's."""

from __future__ import annotations

import copy

from pytest_baseimage import platforms, profiles
from pytest_baseimage.results import ImageInfo, Status


def info(arch: str, variant: str = "", engine: str = "linux/amd64") -> ImageInfo:
    return ImageInfo("x:1", os="linux", architecture=arch, variant=variant, engine_platform=engine)


def profile(platforms_: list[str] | None = None) -> profiles.Profile:
    loaded = profiles.load("azureml-current")
    loaded.data = copy.deepcopy(loaded.data)
    if platforms_ is not None:
        loaded.data["image"]["platforms"] = platforms_
    return loaded


def test_the_shipped_profiles_need_linux_amd64():
    assert profile().section("image")["platforms"] == ["linux/amd64"]


def test_an_amd64_image_on_an_amd64_engine_is_fine():
    assert platforms.check(info("amd64"), profile()) is None
    assert platforms.stage_result("os", info("amd64"), profile()) is None


def test_an_arm64_image_fails_the_os_stage_and_blocks_the_rest_on_an_amd64_engine():
    result = platforms.stage_result("os", info("arm64", "v8"), profile())
    assert result.status is Status.FAIL
    assert result.observed.startswith("built for linux/arm64/v8; this profile needs linux/amd64")
    assert "the engine runs linux/amd64 and cannot start it" in result.observed
    assert "--platform linux/amd64" in result.remediation
    python = platforms.stage_result("python", info("arm64"), profile())
    assert python.status is Status.BLOCKED and "built for linux/arm64" in python.reason


def test_an_image_the_engine_runs_but_the_profile_refuses_fails_os_only():
    arm_engine = info("arm64", engine="linux/arm64")
    assert platforms.stage_result("os", arm_engine, profile()).status is Status.FAIL
    assert platforms.stage_result("python", arm_engine, profile()) is None  # it can run: judge the rest


def test_without_a_profile_rule_the_engine_still_decides():
    result = platforms.stage_result("os", info("arm64"), profile([]))
    assert result.observed == "built for linux/arm64; the engine runs linux/amd64 and cannot start it"


def test_a_variant_named_by_the_profile_must_match_and_arm64_defaults_to_v8():
    arm_engine = "linux/arm64"
    assert platforms.check(info("arm64", "", arm_engine), profile(["linux/arm64/v8"])) is None
    assert platforms.check(info("arm", "v6", "linux/arm"), profile(["linux/arm/v7"])) is not None


def test_an_image_whose_engine_says_nothing_is_not_judged_on_it():
    assert platforms.check(ImageInfo("x:1"), profile()) is None

"""Running pytest-baseimage in process (pytester) on the fake engine of tests/fake_engine.py: one call runs
the plugin as a user would (`--base-image=... --compat-json=... --junitxml=...`) and returns what a gate
reads: the exit code, the JSON verdict, the JUnit XML and what the fake engine still held at the end."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_engine import debian_image, ledger, write_world

ROOT = Path(__file__).resolve().parents[1]
FAKE_PROFILE = ROOT / "tests" / "data" / "fake.toml"
GOOD = "fake/good:1"
GOOD_ID = "sha256:" + "a" * 64


@dataclass
class PluginRun:
    result: pytest.RunResult
    json: dict[str, Any] | None
    junit: ET.Element | None
    left: list[str]  # container ids the fake engines still held at the end
    created: list[str]  # "role image-id" of every container the run made
    swept: list[str]  # the session id of every fake engine whose session's cleanup ran
    out: str

    @property
    def code(self) -> int:
        return int(self.result.ret)

    def image(self, name: str = GOOD) -> dict[str, Any]:
        assert self.json is not None, self.out
        return next(image for image in self.json["images"] if image["name"] == name)

    def statuses(self, name: str = GOOD) -> dict[str, str]:
        return {r["stage"]: r["status"] for r in self.image(name)["results"]}


def good_world() -> dict[str, dict[str, Any]]:
    return {GOOD: debian_image(GOOD_ID)}


# The run's conftest.py loads the fake engine's plugin: xdist workers load it too (they are processes of their
# own, whose sys.path xdist fixes before this test's tests/ directory was on it, so `-p fake_engine` fails there).
CONFTEST = """
import sys

sys.path.insert(0, {tests!r})
from fake_engine import pytest_addoption, pytest_cmdline_main  # noqa: E402,F401
"""


def run_plugin(
    pytester: pytest.Pytester,
    *args: str,
    images: dict[str, dict[str, Any]] | None = None,
    profile: Path | None = FAKE_PROFILE,
    conftest: str = "",
    **faults: Any,
) -> PluginRun:
    """`pytest ... ARGS` in process on the fake engine, with --compat-json and --junitxml in pytester's
    directory; `conftest` is added to the run's conftest.py."""
    world = write_world(pytester.path / "world.json", good_world() if images is None else images, **faults)
    pytester.makeconftest(CONFTEST.format(tests=str(ROOT / "tests")) + conftest)
    json_path, xml_path = pytester.path / "verdict.json", pytester.path / "junit.xml"
    argv = [f"--fake-engine-world={world}", "-p", "no:cacheprovider"]
    argv += [f"--compat-json={json_path}", f"--junitxml={xml_path}"]
    argv += [f"--base-image-profile={profile}"] if profile else []
    # exit 2 is pytest's INTERRUPTED, which pytester would re-raise as the outer run's own Ctrl-C
    result = pytester.runpytest_inprocess(*argv, *args, no_reraise_ctrlc=True)
    out = "\n".join(result.outlines + result.errlines)
    data = json.loads(json_path.read_text(encoding="utf-8")) if json_path.exists() else None
    junit = ET.parse(xml_path).getroot() if xml_path.exists() else None
    return PluginRun(result, data, junit, ledger(world, "left"), ledger(world, "created"), ledger(world, "swept"), out)

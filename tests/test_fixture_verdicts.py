"""Every fixture image's verdict, stage by stage, is what it was when recorded: a refactor (or any change that
is not meant to change a verdict) that turns one stage's pass into a fail, or a block into a skip, fails here.

One real run over every fixture image `fixtures/build.py` makes, judged by the fixture profile. A change
that is meant to change verdicts (a new stage, a new rule) re-records, and the diff of the data file shows
exactly which verdicts moved:

    .venv/bin/python tests/test_fixture_verdicts.py --record
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "data" / "fixture_verdicts.json"
PROFILE = ROOT / "fixtures" / "profiles" / "fixture.toml"
PROBE_TIMEOUT = "--probe-timeout=5"  # the hanging probes' images end in 5 s instead of 30


def fixture_images() -> list[str]:
    """Every image fixtures/build.py makes to be judged (its fixtures, not the layers they are built on)."""
    sys.path.insert(0, str(ROOT / "fixtures"))
    try:
        import build
    finally:
        sys.path.pop(0)
    return sorted(image.tag for image in build.IMAGES.values() if image.fixture)


def verdicts(images: list[str], workdir: Path) -> dict[str, dict[str, str]]:
    """image -> {stage: status} from one run's JSON verdict (the run's exit code is 1: some images fail)."""
    out = workdir / "verdicts.json"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2", PROBE_TIMEOUT]
    argv += [f"--base-image-profile={PROFILE}", f"--compat-json={out}", *(f"--base-image={i}" for i in images)]
    proc = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=1500)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["verdict"] == "not compatible" and proc.returncode == 1, (report["verdict"], proc.returncode)
    return {image["name"]: {r["stage"]: r["status"] for r in image["results"]} for image in report["images"]}


@pytest.mark.docker
def test_every_fixture_image_keeps_its_recorded_verdict(tmp_path, images):
    recorded = json.loads(RECORD.read_text())["images"]
    wanted = fixture_images()
    for image in wanted:
        images(image.split("/")[1].split(":")[0])  # a missing image fails with the command that builds it
    unrecorded = sorted(set(wanted) - set(recorded))
    assert not unrecorded, f"not recorded yet (run tests/test_fixture_verdicts.py --record): {unrecorded}"
    seen = verdicts(wanted, tmp_path)
    moved = {
        image: {stage: f"{recorded[image].get(stage)} -> {status}" for stage, status in stages.items()}
        for image, stages in seen.items()
        if stages != recorded[image]
    }
    assert not moved, json.dumps(moved, indent=1)


def main() -> None:
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        seen = verdicts(fixture_images(), Path(tmp))
    data = {"profile": str(PROFILE.relative_to(ROOT)), "options": [PROBE_TIMEOUT], "images": seen}
    RECORD.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(seen)} images in {RECORD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

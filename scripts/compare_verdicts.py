"""Compare the verdicts of two versions of pytest-baseimage on the same images: the refactor of issue 14 must
not change one. Runs `pytest --base-image=... --compat-json` once with this checkout and once with OLD (a
source tree, e.g. `git archive <commit> | tar -x -C OLD`, its suites/ linked as pytest_baseimage/suites), and
compares per image the verdict and each stage's status and skip kind. Prints the differences; exit 1 if any.

    python scripts/compare_verdicts.py --old /tmp/base --profile fixtures/profiles/fixture.toml IMAGE...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def verdicts(images: list[str], profile: str, source: str | None) -> dict[str, dict[str, object]]:
    """image -> {"verdict": ..., "stages": {stage: "status/skip_kind"}} from one run."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    if source:
        env["PYTHONPATH"] = source
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "v.json"
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "pytest_baseimage.plugin", "-q"]
        argv += [f"--base-image={image}" for image in images] + [f"--profile={profile}", f"--compat-json={out}"]
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
        data = json.loads(out.read_text())
    if len(data.get("images", [])) != len(images):  # a run that judged nothing compares nothing
        raise SystemExit(f"the run with {source or 'this checkout'} judged no images:\n{proc.stdout[-2000:]}")
    return {
        image["name"]: {
            "verdict": image["verdict"],
            "stages": {r["stage"]: f"{r['status']}/{r.get('skip_kind', '')}" for r in image["results"]},
        }
        for image in data["images"]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="source tree of the version to compare with")
    parser.add_argument("--profile", required=True)
    parser.add_argument("images", nargs="+")
    args = parser.parse_args()
    args.profile = os.path.abspath(args.profile) if os.path.exists(args.profile) else args.profile
    old = verdicts(args.images, args.profile, args.old)
    new = verdicts(args.images, args.profile, None)
    differences = 0
    for image in args.images:
        same = old.get(image) == new.get(image)
        differences += not same
        stages = ", ".join(f"{k} {v}" for k, v in new[image]["stages"].items())
        print(f"{'same' if same else 'DIFFERENT'}  {image}: {new[image]['verdict']} ({stages})")
        if not same:
            print(f"    old: {old.get(image)}\n    new: {new.get(image)}")
    print(f"{len(args.images) - differences} of {len(args.images)} images: identical verdicts and stage results")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())

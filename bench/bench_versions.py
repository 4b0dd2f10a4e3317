"""Is this checkout slower than an older one? The same `pytest --base-image=IMG` run (every stage), with OLD's
sources and with this checkout's, alternating in one session so that load on the host hits both alike; the
medians and their ratio are printed (new / old: 1.00 is no change).

    git archive <commit> | tar -x -C /tmp/old && ln -s ../suites /tmp/old/pytest_baseimage/suites
    python bench/bench_versions.py --old /tmp/old [--image pytest-baseimage-fixture/good:latest] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "fixtures" / "profiles" / "fixture.toml"


def timed(image: str, source: str | None, cwd: str) -> float:
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    if source:
        env["PYTHONPATH"] = source
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pytest_baseimage.plugin"]
    cmd += [f"--base-image={image}", f"--profile={PROFILE}"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="source tree of the version to compare with")
    parser.add_argument("--image", default="pytest-baseimage-fixture/good:latest")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as cwd:
        timed(args.image, None, cwd)  # warm the page cache and the engine once, uncounted
        for _ in range(args.repeat):
            runs["old"].append(timed(args.image, args.old, cwd))
            runs["new"].append(timed(args.image, None, cwd))
    old, new = statistics.median(runs["old"]), statistics.median(runs["new"])
    print(f"old median {old:.2f} s {sorted(round(x, 2) for x in runs['old'])}")
    print(f"new median {new:.2f} s {sorted(round(x, 2) for x in runs['new'])}")
    print(f"new / old = {new / old:.2f}")


if __name__ == "__main__":
    main()

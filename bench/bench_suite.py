"""How close is a full certification run to the floor it cannot beat?

floor = `docker run --rm IMG true` (one container's life) + pytest's own start-up (a no-op test with the
plugin loaded). suite = `pytest --base-image=IMG`: every stage, the scoring server's boot in a second
container included; also shown: the static stages alone (`-m "not scoring and not gpu"`). All are measured
in the same run, alternating, and the medians' ratios are printed. Target: suite / floor <= 2.0.

    python bench/bench_suite.py [--image pytest-baseimage-fixture/good:latest] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "fixtures" / "profiles" / "fixture.toml"


def timed(cmd: list[str], cwd: Path, expect: int = 0) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != expect:
        sys.exit(f"bench: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="pytest-baseimage-fixture/good:latest")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "test_noop.py").write_text("def test_noop():\n    pass\n")
        docker_true = ["docker", "run", "--rm", "--network=none", "--entrypoint", "true", args.image]
        startup = [*pytest, "test_noop.py"]
        suite = [*pytest, f"--base-image={args.image}", f"--base-image-profile={PROFILE}"]
        static = [*suite, "-m", "not scoring and not gpu"]
        timed(suite, work)  # warm the page cache and the image's layers once
        floors, suites, statics = [], [], []
        for _ in range(args.repeat):
            floors.append(timed(docker_true, work) + timed(startup, work))
            suites.append(timed(suite, work))
            statics.append(timed(static, work))
    floor, full, part = (statistics.median(x) for x in (floors, suites, statics))
    print(f"image            {args.image}, {args.repeat} runs each")
    print(f"floor (median)   {floor:.3f} s  = docker run --rm IMG true + pytest start-up")
    print(f"suite (median)   {full:.3f} s  = pytest --base-image=IMG, every stage (scoring boots a server)")
    print(f"static (median)  {part:.3f} s  = the same with -m 'not scoring and not gpu'")
    print(f"ratio            {full / floor:.2f}x whole suite (target <= 2.00x), {part / floor:.2f}x static stages")


if __name__ == "__main__":
    main()

"""How close is a full certification run to the floor it cannot beat, and to an earlier version of itself?

floor = `docker run --rm IMG true` (one container's life) + pytest's own start-up (a no-op test with the
plugin loaded). suite = `pytest --base-image=IMG`: every stage, the scoring server's boot in a second
container included; also shown: the static stages alone (`-m "not scoring and not gpu"`). With `--baseline
TREE` (a checkout of an earlier commit, e.g. `git worktree add /tmp/old <commit>`), the same suite run by that
tree's code (put first on PYTHONPATH, judged by its own fixture profile) is timed too, alternating with the
others in every round, and the ratio of each round's pair is printed: a machine that slows down mid-run
slows both sides of a pair alike. The medians' ratios are printed; the target is set by the issue at hand.

    python bench/bench_suite.py [--image pytest-baseimage-fixture/good:latest] [--repeat 7] [--baseline TREE]

PYTHONDONTWRITEBYTECODE=1 makes pytest rewrite every module of the plugin on every start (its assertion
rewriting keeps its cache in `__pycache__`): the numbers are then a machine's that caches nothing; the script
says when it is set.
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
PROFILE = Path("fixtures") / "profiles" / "fixture.toml"


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def baseline_env(tree: Path) -> dict[str, str]:
    """The environment that makes `tree`'s package the one pytest loads (its suite must sit inside it)."""
    package = tree / "pytest_baseimage"
    if not (package / "suites").exists() and (tree / "suites").is_dir():
        (package / "suites").symlink_to(Path("..") / "suites")  # older trees kept the suite beside the package
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(":")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="pytest-baseimage-fixture/good:latest")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier commit, timed alternately")
    args = parser.parse_args()
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    suite = [*pytest, f"--base-image={args.image}", f"--base-image-profile={ROOT / PROFILE}"]
    static = [*suite, "-m", "not scoring and not gpu"]
    docker_true = ["docker", "run", "--rm", "--network=none", "--entrypoint", "true", args.image]
    old_suite = (
        [*pytest, f"--base-image={args.image}", f"--base-image-profile={args.baseline / PROFILE}"]
        if args.baseline
        else []
    )
    old_env = baseline_env(args.baseline.resolve()) if args.baseline else None
    times: dict[str, list[float]] = {"floor": [], "suite": [], "static": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "test_noop.py").write_text("def test_noop():\n    pass\n")
        timed(suite, work)  # warm the page cache, the image's layers and the bytecode once
        if old_suite:
            timed(old_suite, work, old_env)
        for _ in range(args.repeat):
            times["floor"].append(timed(docker_true, work) + timed([*pytest, "test_noop.py"], work))
            times["suite"].append(timed(suite, work))
            if old_suite:
                times["baseline"].append(timed(old_suite, work, old_env))
            times["static"].append(timed(static, work))
    floor, full, part = (statistics.median(times[k]) for k in ("floor", "suite", "static"))
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note             PYTHONDONTWRITEBYTECODE is set: pytest re-rewrites the plugin's modules every run")
    print(f"image            {args.image}, {args.repeat} runs each")
    print(f"floor (median)   {floor:.3f} s  = docker run --rm IMG true + pytest start-up")
    print(f"suite (median)   {full:.3f} s  = pytest --base-image=IMG, every stage (scoring boots a server)")
    print(f"static (median)  {part:.3f} s  = the same with -m 'not scoring and not gpu'")
    print(f"ratio            {full / floor:.2f}x whole suite, {part / floor:.2f}x static stages")
    if old_suite:
        old = statistics.median(times["baseline"])
        pairs = statistics.median(new / base for new, base in zip(times["suite"], times["baseline"]))
        print(f"baseline         {old:.3f} s  = the same suite run by {args.baseline} ({old / floor:.2f}x the floor)")
        print(f"this / baseline  {full / old:.2f}x of the medians, {pairs:.2f}x median of the rounds' pairs")


if __name__ == "__main__":
    main()

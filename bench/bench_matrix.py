"""Does a matrix run get faster with xdist? Serial vs `-n 2` wall time for one four-image matrix.

Both modes run the same matrix file in the same invocation, alternating (so a noisy neighbour hurts both),
after one warm-up each. Also measured, to say where the time goes: pytest's start-up alone, xdist's
start-up alone (two workers, a no-op test), the check time reported in the JSON (container start + probe
+ scoring server), and the whole machine's busy CPU time during each run (/proc/stat: pytest, dockerd,
containerd, runc and everything inside the containers). Target on 2 cores: median(-n 2) <= 0.65 x
median(serial).

The CPU time gives a bound no scheduling can beat: a run that needs C CPU-seconds takes at least C / cores
seconds. "best possible ratio" is that bound for the -n run divided by the serial wall time; when it is above
the target, the target cannot be met by parallelism on this machine, only by doing less work per image.

Each is measured twice: with every pytest plugin the machine has installed ("as installed": this
machine has hypothesis and pytest-benchmark, which cost ~0.8 s in every process, and xdist pays them in
each worker), and with only this plugin and xdist loaded ("isolated", PYTEST_DISABLE_PLUGIN_AUTOLOAD=1),
as in a CI virtualenv made for the check.

    python bench/bench_matrix.py [--repeat 3] [--workers 2] [--plugins both|installed|isolated]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "fixtures" / "profiles" / "fixture.toml"
DEFAULT_IMAGES = ("good", "no-conda", "missing-apt", "nonroot")
TARGET_RATIO = 0.65
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
ISOLATED = ["-p", "pytest_baseimage.plugin", "-p", "xdist.plugin"]  # with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1


@dataclass
class Timings:
    """Wall times of one mode, and the check seconds its JSON reports (setup timings and stages, summed over images)."""

    walls: list[float] = field(default_factory=list)
    stage_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)


def write_matrix(work: Path, images: list[str]) -> Path:
    lines = [f'[defaults]\nprofile = "{PROFILE}"\n']
    for name in images:
        lines.append(f'[[images]]\nname = "{name}"\nref = "pytest-baseimage-fixture/{name}:latest"\n')
    path = work / "matrix.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def busy_cpu_s() -> float:
    """CPU-seconds the whole machine has spent busy since boot (all processes, all cores); 0 off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = (fields + [0] * 7)[:7]  # steal is not our work
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], cwd: Path, expect: tuple[int, ...], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, machine-wide busy CPU-seconds) of one command."""
    cpu, started = busy_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed, cpu = time.perf_counter() - started, busy_cpu_s() - cpu
    if proc.returncode not in expect:
        sys.exit(f"bench: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return elapsed, cpu


def stage_seconds(report: Path) -> float:
    data = json.loads(report.read_text(encoding="utf-8"))
    return sum(
        sum(image.get("timings", {}).values()) + sum(r["duration_s"] for r in image["results"])
        for image in data["images"]
    )


def run_mode(cmd: list[str], work: Path, into: Timings, env: dict[str, str]) -> None:
    report = work / "run.json"
    wall, cpu = timed([*cmd, f"--compat-json={report}"], work, (0, 1), env)
    into.walls.append(wall)
    into.cpu_s.append(cpu)
    into.stage_s.append(stage_seconds(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per mode (default 3, at least 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plugins", choices=("both", "installed", "isolated"), default="both")
    parser.add_argument("--image", action="append", help=f"fixture names (default: {', '.join(DEFAULT_IMAGES)})")
    args = parser.parse_args()
    images = args.image or list(DEFAULT_IMAGES)
    variants = ("installed", "isolated") if args.plugins == "both" else (args.plugins,)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        matrix = write_matrix(work, images)
        (work / "test_noop.py").write_text("def test_a():\n    pass\n\n\ndef test_b():\n    pass\n")
        for variant in variants:
            measure(variant, images, matrix, work, args.workers, max(args.repeat, 2))


def measure(variant: str, images: list[str], matrix: Path, work: Path, workers: int, repeat: int) -> None:
    env = dict(os.environ)
    pytest = list(PYTEST)
    if variant == "isolated":
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        pytest += ISOLATED
    serial_cmd = [*pytest, f"--base-image-matrix={matrix}"]
    xdist_cmd = [*serial_cmd, "-n", str(workers)]
    startup = [*pytest, "test_noop.py"]
    xdist_startup = [*startup, "-n", str(workers)]
    serial, xdist, start, xstart = Timings(), Timings(), Timings(), Timings()
    load_before = os.getloadavg()[0]
    run_mode(serial_cmd, work, Timings(), env)  # warm-up: page cache, image layers, .pyc files
    run_mode(xdist_cmd, work, Timings(), env)
    for index in range(repeat):
        order = [(serial_cmd, serial), (xdist_cmd, xdist)]
        for cmd, into in order if index % 2 == 0 else reversed(order):
            run_mode(cmd, work, into, env)
        start.walls.append(timed(startup, work, (0,), env)[0])
        xstart.walls.append(timed(xdist_startup, work, (0,), env)[0])
    report(f"{len(images)} images ({', '.join(images)}), plugins {variant}", workers, serial, xdist, start, xstart)
    print(
        f"  1-min load average before / after    {load_before:.2f} / {os.getloadavg()[0]:.2f}"
        f"  ({os.cpu_count()} CPUs; other work on the machine slows both modes unevenly)"
    )


def report(title: str, workers: int, serial: Timings, xdist: Timings, start: Timings, xstart: Timings) -> None:
    ratio = xdist.median / serial.median
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"== {title}")
    print(f"serial  runs     {' '.join(f'{t:.2f}' for t in serial.walls)} s   median {serial.median:.2f} s")
    print(f"-n {workers:<2}   runs     {' '.join(f'{t:.2f}' for t in xdist.walls)} s   median {xdist.median:.2f} s")
    print(f"ratio            {ratio:.2f}x  ({verdict} the target <= {TARGET_RATIO:.2f}x)")
    print("where the time goes (medians):")
    print(f"  pytest start-up, no-op test          {start.median:.2f} s")
    print(
        f"  same with -n {workers} (xdist workers)       {xstart.median:.2f} s  "
        f"(+{xstart.median - start.median:.2f} s fixed cost of xdist)"
    )
    print(f"  check time, serial (sum over images) {statistics.median(serial.stage_s):.2f} s")
    print(f"  check time, -n {workers} (sum over images) {statistics.median(xdist.stage_s):.2f} s")
    rest = serial.median - start.median - statistics.median(serial.stage_s)
    print(f"  serial wall - start-up - checks      {rest:.2f} s  (container teardown, preflight, reports)")
    if serial.cpu_s and all(serial.cpu_s):
        cores = os.cpu_count() or 1
        s_cpu, x_cpu = statistics.median(serial.cpu_s), statistics.median(xdist.cpu_s)
        print("CPU (whole machine, busy CPU-seconds per run, medians):")
        print(f"  serial  {s_cpu:.2f} CPU-s   {s_cpu / serial.median:.2f} of {cores} cores busy on average")
        print(f"  -n {workers:<2}   {x_cpu:.2f} CPU-s   {x_cpu / xdist.median:.2f} of {cores} cores busy on average")
        for label, cpu in (
            (f"best possible -n {workers} wall, its CPU on every core   ", x_cpu),
            ("same without xdist's extra CPU (serial's CPU)", s_cpu),
        ):
            floor = cpu / cores
            side = "below" if floor / serial.median <= TARGET_RATIO else "above"
            print(f"  {label} {floor:.2f} s = {floor / serial.median:.2f}x serial ({side} the target)")


if __name__ == "__main__":
    main()

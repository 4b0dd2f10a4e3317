"""How much does the scoring stage add to booting the server by hand?

stage = `scoring.run_server` (hardened create, entry script and model copied in through the archive API,
start, liveness poll, POST /score): container create -> score answer read.
by hand = `docker run -d -p 127.0.0.1::5001 ... azmlinfsrv` (the script and model written by the container's
own shell, no mounts) + `docker port` + a curl-like poll loop on GET / + POST /score: `docker run` -> score
answer read. Both use the same image, script, model, payload and poll interval, alternate, and run in the
same process; the medians and their difference are printed. Target: stage - by hand <= 0.5 s.

    python bench/bench_scoring.py [--image pytest-baseimage-fixture/good:latest] [--repeat 7]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_baseimage import profiles, scoring  # noqa: E402
from pytest_baseimage.engine import Engine  # noqa: E402

PROFILE = ROOT / "fixtures" / "profiles" / "fixture.toml"
TARGET_S = 0.5
BENCH_LABEL = "org.pytest-baseimage.bench=scoring"  # not the managed label: the CLI run is the user's own


def stage_once(engine: Engine, image: str, spec: scoring.ScoringSpec) -> float:
    obs = scoring.run_server(engine, image, spec)
    if obs.create_to_score_s is None or obs.score is None or obs.score.status != 200:
        sys.exit(f"bench: the stage did not score: {scoring.classify(obs)}")
    return obs.create_to_score_s


def by_hand_once(image: str, spec: scoring.ScoringSpec) -> float:
    """What a person would type: docker run, docker port, then poll with curl until it answers."""
    writes = " && ".join(
        f'mkdir -p "$(dirname /{path})" && printf %s "$F{i}" > /{path}' for i, path in enumerate(spec.files)
    )
    env = [arg for i, data in enumerate(spec.files.values()) for arg in ("-e", f"F{i}={data.decode()}")]
    env += [arg for key, value in spec.env.items() for arg in ("-e", f"{key}={value}")]
    server = " ".join(spec.command)
    started = time.perf_counter()
    container = _cli(
        "docker",
        "run",
        "-d",
        "--label",
        BENCH_LABEL,
        "-p",
        f"127.0.0.1::{spec.port}",
        *env,
        "-w",
        spec.workdir,
        "--entrypoint",
        "sh",
        image,
        "-c",
        f"{writes} && exec {server}",
    )
    try:
        port = int(_cli("docker", "port", container, f"{spec.port}/tcp").splitlines()[0].rsplit(":", 1)[1])
        while _status(port, "GET", spec.liveness_path) != 200:
            if time.perf_counter() - started > spec.boot_timeout_s:
                sys.exit("bench: the hand-run server never answered")
            time.sleep(scoring.POLL_INTERVAL_S)
        if _status(port, "POST", spec.score_path, spec.payload) != 200:
            sys.exit("bench: the hand-run server did not score")
        return time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def _cli(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"bench: {cmd[:3]} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def _status(port: int, method: str, path: str, body: bytes | None = None) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="pytest-baseimage-fixture/good:latest")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    engine = Engine()
    image = engine.image_info(args.image).image_id
    spec = scoring.build_spec(profiles.load(str(PROFILE)))
    stage_once(engine, image, spec)  # warm-up: page cache, image layers
    by_hand_once(image, spec)
    stage_times, hand_times = [], []
    for _ in range(args.repeat):
        stage_times.append(stage_once(engine, image, spec))
        hand_times.append(by_hand_once(image, spec))
    stage_median, hand_median = statistics.median(stage_times), statistics.median(hand_times)
    difference = stage_median - hand_median
    print(f"image {args.image}, {args.repeat} repetitions each, create/run -> first score answer")
    print(f"  stage   median {stage_median:.3f} s  ({', '.join(f'{t:.2f}' for t in stage_times)})")
    print(f"  by hand median {hand_median:.3f} s  ({', '.join(f'{t:.2f}' for t in hand_times)})")
    verdict = "ok" if difference <= TARGET_S else "OVER TARGET"
    print(f"  difference {difference:+.3f} s (target <= {TARGET_S} s): {verdict}")


if __name__ == "__main__":
    main()

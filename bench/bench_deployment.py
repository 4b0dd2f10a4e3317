"""How much does the deployment stage add to deploying the custom-container example by hand?

stage = `deployment.live.observe_deployment`, with the session's lease on the image held as in a run: the
definitions parsed and checked, the image inspected, an internal network made, a hardened container created
with the model copied in through the archive API, started with its own CMD, GET liveness and readiness polled,
POST scoring, the log read, container and network removed.
by hand = `docker run -d -p 127.0.0.1::8080` (the model written by the container's own shell, no mounts) +
`docker port` + a poll loop on GET /health, GET /health, POST /predict + `docker rm -f`. Both use the same
image, model, payload and poll interval, alternate, and run in the same process. Two medians each: container
create (or `docker run`) -> the third answer, as bench_scoring.py measures; and the whole, set-up and
clean-up included. Target: stage - by hand <= 0.5 s.

    python bench/bench_deployment.py [--image pytest-baseimage-fixture/deploy-custom-server:latest] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_scoring import _cli, _status  # noqa: E402

from pytest_baseimage import profiles, scoring  # noqa: E402
from pytest_baseimage.deployment import judge, live  # noqa: E402
from pytest_baseimage.engine import Engine  # noqa: E402
from pytest_baseimage.results import ImageInfo  # noqa: E402

EXAMPLE = ROOT / "examples" / "azureml" / "custom"
TARGET_S = 0.5
BENCH_LABEL = "org.pytest-baseimage.bench=deployment"  # not the managed label: the CLI run is the user's own


def stage_once(check: SimpleNamespace) -> tuple[float, float]:
    """(container create -> score answer, the whole observation with set-up and clean-up)."""
    started = time.perf_counter()
    obs = live.observe_deployment(check)
    elapsed = time.perf_counter() - started
    problem = judge.live_finding(obs, 60.0) if obs is not None else None
    if obs is None or obs.run is None or obs.run.create_to_score_s is None or problem is not None:
        sys.exit(f"bench: the stage did not pass: {problem}")
    return obs.run.create_to_score_s, elapsed


def by_hand_once(image: str, model: bytes, payload: bytes) -> tuple[float, float]:
    """What a person would type: docker run, docker port, then ask the three routes until they answer."""
    started = time.perf_counter()
    container = _cli(
        "docker", "run", "-d", "--label", BENCH_LABEL, "-p", "127.0.0.1::8080",
        "-e", f"MODEL={model.decode()}", "-e", "AZUREML_MODEL_DIR=/tmp/model",
        "--entrypoint", "sh", image,
        "-c", 'mkdir -p /tmp/model && printf %s "$MODEL" > /tmp/model/model.json && exec python3 /srv/server.py',
    )  # fmt: skip
    try:
        port = int(_cli("docker", "port", container, "8080/tcp").splitlines()[0].rsplit(":", 1)[1])
        for path in ("/health", "/health"):
            while _status(port, "GET", path) != 200:
                if time.perf_counter() - started > 60:
                    sys.exit("bench: the hand-run server never answered")
                time.sleep(scoring.POLL_INTERVAL_S)
        if _status(port, "POST", "/predict", payload) != 200:
            sys.exit("bench: the hand-run server did not score")
        answered = time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    return answered, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="pytest-baseimage-fixture/deploy-custom-server:latest")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    engine = Engine()
    image_id = engine.image_info(args.image).image_id
    options = {"environment": str(EXAMPLE / "environment.yml"), "deployment": str(EXAMPLE / "deployment.yml")}
    check = SimpleNamespace(
        target=SimpleNamespace(options={"deployment": options}, reference=args.image),
        info=ImageInfo(reference=args.image, image_id=image_id),
        engine=engine,
        profile=profiles.load("azureml-custom-container"),
    )
    model = (EXAMPLE / "model" / "model.json").read_bytes().strip()
    payload = (EXAMPLE / "sample-request.json").read_bytes()
    # In a run, the probe's candidate lives through the stage, and with it the engine's lease on the image: hold
    # one here too, else every repetition pays for a lease container that a real run creates once.
    with engine.container(image_id, role="candidate"):
        stage_once(check)  # warm-up: page cache, image layers
        by_hand_once(image_id, model, payload)
        stage_times, hand_times = [], []
        for _ in range(args.repeat):
            stage_times.append(stage_once(check))
            hand_times.append(by_hand_once(image_id, model, payload))
    print(f"image {args.image}, {args.repeat} repetitions each (load average {os.getloadavg()[0]:.1f})")
    for index, what in enumerate(("create/run -> third answer", "whole, with set-up and clean-up")):
        stage = [t[index] for t in stage_times]
        hand = [t[index] for t in hand_times]
        difference = statistics.median(stage) - statistics.median(hand)
        verdict = "ok" if difference <= TARGET_S else "OVER TARGET"
        print(f" {what}:")
        print(f"  stage   median {statistics.median(stage):.3f} s  ({', '.join(f'{t:.2f}' for t in stage)})")
        print(f"  by hand median {statistics.median(hand):.3f} s  ({', '.join(f'{t:.2f}' for t in hand)})")
        print(f"  difference {difference:+.3f} s (target <= {TARGET_S} s): {verdict}")


if __name__ == "__main__":
    main()

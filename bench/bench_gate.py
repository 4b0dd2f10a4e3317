"""The gate service's speed: push-to-verdict latency for one image, and throughput with 1 and 2 workers.

Latency: Debian's docker-registry notifies a running `baseimage-gate serve`; the clock starts when `docker
push` of the `good` fixture to staging/ returns and stops when the verdict is served, then when the image is
under certified/. Throughput: 10 images (the `good` fixture with ten different labels: ten digests that share
their layers) are pushed first to a repository no rule watches, then the same 10 notification events are
posted to a fresh service with 1 worker and with 2 workers, alternating, in the same run; the local copies are removed
before each, so each run pulls. One local engine: both workers share it (and this machine's cores).

    python bench/bench_gate.py [--images 10] [--repeat 2] [--postgres]

--postgres keeps the jobs in a private PostgreSQL cluster (tests/postgres_server.py; Debian's `postgresql`
binaries), a fresh database per run, instead of SQLite.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402
from gate_service import DB_PASSWORD_VAR, GateService, manifest_digest, push_event  # noqa: E402
from postgres_server import PostgresServer, start_postgres  # noqa: E402
from registry_server import RegistryServer, start_registry  # noqa: E402

GOOD = "pytest-baseimage-fixture/good:latest"
LABELLED = "pytest-baseimage-bench/gate-{n}:latest"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="throughput runs per worker count (medians shown)")
    parser.add_argument("--postgres", action="store_true", help="jobs in PostgreSQL (a private cluster), not SQLite")
    args = parser.parse_args()
    client = docker.from_env()
    root = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    gate = GateService(root)
    postgres = start_postgres(durable=True) if args.postgres else None  # fsync on, like SQLite here
    registry = start_registry(notify_url=gate.events_url, notify_authorization=f"Bearer {gate.token}")
    built: list[str] = []
    try:
        latency(gate, registry, client, postgres)
        built = labelled_images(client, args.images)
        digests = [registry.push(client, image, f"bench/tp-{n}", "v1").split("@")[1] for n, image in enumerate(built)]
        runs: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeat):  # alternating, so a noisy neighbour hurts both
            for workers in (1, 2):
                runs[workers].append(throughput(gate, registry, client, digests, workers, postgres))
        one, two = statistics.median(runs[1]), statistics.median(runs[2])
        count = len(digests)
        print(f"throughput (median of {args.repeat}), {count} images: "
              f"1 worker {one:.1f} s ({count / one * 60:.1f}/min), "
              f"2 workers {two:.1f} s ({count / two * 60:.1f}/min); ratio 2/1 = {two / one:.2f}")  # fmt: skip
    finally:
        gate.stop()
        registry.remove_local_references(client)
        registry.stop()
        for image in built:
            client.images.remove(image)
        shutil.rmtree(root, ignore_errors=True)
        if postgres:
            postgres.stop()
    return 0


def database(gate: GateService, postgres: PostgresServer | None) -> dict[str, str]:
    """configure()'s keywords for a fresh database: SQLite's default file, or a new PostgreSQL database."""
    if postgres is None:
        return {}
    gate.extra_env[DB_PASSWORD_VAR] = postgres.password
    return {"database": postgres.create_database(), "top": f'database_password_env = "{DB_PASSWORD_VAR}"\n'}


def latency(
    gate: GateService, registry: RegistryServer, client: docker.DockerClient, postgres: PostgresServer | None
) -> None:
    gate.configure(registry, workers=1, **database(gate, postgres))
    gate.start()
    pushed_at = time.monotonic()
    reference = registry.push(client, GOOD, "staging/latency", "v1")
    pushed = time.monotonic() - pushed_at
    digest = reference.split("@")[1]
    start = time.monotonic()
    verdict = gate.wait_done(digest, 600)
    to_verdict = time.monotonic() - start
    while manifest_digest(registry, "certified/latency", "v1") != digest:
        time.sleep(0.05)
    to_promoted = time.monotonic() - start
    print(f"push took {pushed:.1f} s; push-to-verdict {to_verdict:.1f} s ({verdict['verdict']}), "
          f"push-to-promotion {to_promoted:.1f} s (the check itself: {verdict['duration_s']:.1f} s)")  # fmt: skip
    gate.stop()


def labelled_images(client: docker.DockerClient, count: int) -> list[str]:
    """`good` with one label more: a new config, hence a new digest, and no new layer."""
    names = []
    for n in range(count):
        image = client.images.get(GOOD)
        container = client.containers.create(image.id, labels={"org.pytest-baseimage.managed": "1"})
        try:
            container.commit(*LABELLED.format(n=n).split(":"), changes=[f"LABEL bench.gate={n}"])
        finally:
            container.remove()
        names.append(LABELLED.format(n=n))
    return names


def throughput(
    gate: GateService, registry: RegistryServer, client: docker.DockerClient, digests: list[str], workers: int,
    postgres: PostgresServer | None,
) -> float:  # fmt: skip
    registry.remove_local_references(client)  # every run pulls
    for stale in (gate.root / "gate.db", gate.root / "gate.db-wal", gate.root / "gate.db-shm", gate.root / "data"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    gate.configure(registry, workers=workers, **database(gate, postgres))
    text = (gate.root / "gate.toml").read_text().replace('from = "staging/*"', 'from = "bench/*"')
    (gate.root / "gate.toml").write_text(text)
    gate.start()
    start = time.monotonic()
    answer = gate.post_events([push_event(f"bench/tp-{n}", d, "v1") for n, d in enumerate(digests)])
    answered = time.monotonic() - start
    assert answer.status == 202, answer.body
    verdicts = [gate.wait_done(d, 1800, repository=f"bench/tp-{n}")["verdict"] for n, d in enumerate(digests)]
    elapsed = time.monotonic() - start
    gate.stop()
    assert set(verdicts) == {"compatible"}, verdicts
    print(f"{workers} worker(s): {len(digests)} images certified and promoted in {elapsed:.1f} s "
          f"(the {len(digests)} events answered in {answered * 1000:.0f} ms)")  # fmt: skip
    return elapsed


if __name__ == "__main__":
    sys.exit(main())

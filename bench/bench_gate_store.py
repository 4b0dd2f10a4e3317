"""What the job store costs per job, SQLite against PostgreSQL: is the database ever the gate's bottleneck?

One job's life as the service drives it: the event's enqueue, a second push of the digest merged in, the
claim, two heartbeats and an expiry scan (the lease thread), the finish. `--jobs` jobs per run, each backend
in turn (alternating, `--repeat` runs each, medians), one handle, in this process: SQLite (WAL,
synchronous=FULL) in a temp directory; PostgreSQL in a private cluster on 127.0.0.1 with fsync on
(tests/postgres_server.py, Debian's `postgresql` binaries; the tests' cluster runs without fsync).
Prints milliseconds per job for each and the ratio PostgreSQL/SQLite: a check takes seconds to minutes, so
either is far from being the bottleneck while this stays in milliseconds.

    python bench/bench_gate_store.py [--jobs 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from postgres_server import start_postgres  # noqa: E402

from pytest_baseimage.gate.store import NewJob, Store  # noqa: E402
from pytest_baseimage.gate.store_pg import PgStore  # noqa: E402
from pytest_baseimage.gate.store_sqlite import SqliteStore  # noqa: E402
from pytest_baseimage.secret import Secret  # noqa: E402


def one_run(store: Store, jobs: int) -> float:
    """Seconds per job over `jobs` job lives."""
    start = time.perf_counter()
    for n in range(jobs):
        new = NewJob("http://r", "staging/app", f"sha256:{n:064x}", "p", "certified/app", ("v1",))
        store.enqueue(new)
        store.enqueue(NewJob(**{**new.__dict__, "tags": ("v2",)}))
        job = store.claim()
        assert job is not None
        store.heartbeat([job.id])
        store.heartbeat([job.id])
        store.expire()
        assert store.finish(job.id, "compatible", 0, "", [], ["v1", "v2"])
    return (time.perf_counter() - start) / jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    postgres = start_postgres(durable=True)  # fsync on, as SQLite's synchronous=FULL: the same promise
    runs: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gate-store-") as tmp:
            for n in range(args.repeat):  # alternating, so a noisy neighbour hurts both
                sqlite = SqliteStore(Path(tmp) / f"gate-{n}.db")
                runs["sqlite"].append(one_run(sqlite, args.jobs))
                sqlite.close()
                pg = PgStore(postgres.create_database(), Secret(postgres.password))
                runs["postgresql"].append(one_run(pg, args.jobs))
                pg.close()
    finally:
        postgres.stop()
    medians = {name: statistics.median(values) * 1000 for name, values in runs.items()}
    for name, values in runs.items():
        print(f"{name}: {medians[name]:.2f} ms per job (runs: {', '.join(f'{v * 1000:.2f}' for v in values)})")
    print(f"ratio postgresql/sqlite = {medians['postgresql'] / medians['sqlite']:.2f} ({args.jobs} jobs per run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

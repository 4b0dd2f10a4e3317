"""/metrics in the Prometheus text format.

prometheus_client (the Prometheus project's own Python client) writes the exposition format and the
histogram's cumulative buckets correctly; hand-written text would have to re-derive both. Job counts are read
from the store at scrape time (a collector), so they are right after a restart and match /v1/verdicts.
No label ever carries a repository, tag or credential: only states, verdicts and reasons from fixed sets.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .store import DONE, QUEUED, RUNNING, Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
VERDICTS = ("compatible", "not compatible", "could not be checked", "usage error")
# A certification takes seconds to many minutes (pulls, the scoring stage): buckets to an hour.
BUCKETS = (5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))


class _JobCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.store.counts()
        jobs = GaugeMetricFamily("baseimage_gate_jobs", "Jobs in the store by state.", labels=["state"])
        for state in (QUEUED, RUNNING, DONE):
            jobs.add_metric([state], counts.by_state.get(state, 0))
        yield jobs
        done = GaugeMetricFamily("baseimage_gate_jobs_done", "Finished jobs by verdict.", labels=["verdict"])
        for verdict in sorted({*VERDICTS, *counts.done_by_verdict}):
            done.add_metric([verdict], counts.done_by_verdict.get(verdict, 0))
        yield done


class Metrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_JobCollector(store))
        self.duration = Histogram(
            "baseimage_gate_job_duration_seconds",
            "Seconds one job attempt took, certification and promotion.",
            ["verdict"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "baseimage_gate_events_rejected",
            "Requests to /v1/events refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.accepted = Counter(
            "baseimage_gate_events", "Notification events received, by what became of them.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip

    def observe(self, seconds: float, verdict: str) -> None:
        self.duration.labels(verdict if verdict in VERDICTS else "other").observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)

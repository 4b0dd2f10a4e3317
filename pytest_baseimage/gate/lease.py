"""Leases of running jobs: a replica heartbeats the jobs it runs and requeues those nobody heartbeats.

A replica that dies (SIGKILL, a lost host) stops heartbeating; once its jobs' heartbeat is older than
`lease_s`, any live replica puts them back in the queue, where the next claim takes them (another attempt).
A live replica's jobs are heartbeated every lease/3 seconds, so they are never taken from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

from .store import Store, StoreUnavailable

log = logging.getLogger("baseimage-gate")


class Keeper:
    """One thread: heartbeat our running jobs, then expire the others' stale ones; a database error is logged."""

    def __init__(self, store: Store, running: Callable[[], Collection[int]], requeued: Callable[[], None]) -> None:
        self.store, self.running, self.requeued = store, running, requeued
        self.interval = max(store.lease / 3, 0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="gate-lease", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        try:
            self.store.heartbeat(self.running())
            expired = self.store.expire()
        except StoreUnavailable as exc:
            log.error("heartbeat: %s", exc)
            return
        if expired:
            log.info("requeued %d job(s) whose replica stopped heartbeating", expired)
            self.requeued()

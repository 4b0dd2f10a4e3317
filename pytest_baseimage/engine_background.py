"""Work an engine does beside the run: removals begun once an observation has its answer (`defer`, waited
for by `settle`), and the session's internal network, made early and shared by the servers that take turns
on it. `Engine` has these as methods (BackgroundWork)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout  # not the builtin one before Python 3.11
from typing import Any


class BackgroundWork:
    """The engine's background methods (mixed into engine.Engine, which sets the attributes below)."""

    client: Any
    session_id: str
    _lock: threading.Lock
    _teardowns: list[threading.Thread]
    _network: Future[Any] | None
    labels: Callable[[str], dict[str, str]]  # engine.Engine's: the labels of this session's objects

    # -- the internal network --------------------------------------------------------------------------
    def warm_internal_network(self) -> None:
        """Begin making the internal network in the background, so that it is there when a server needs it."""
        with self._lock:
            if self._network is not None:
                return
            future: Future[Any] = Future()
            self._network = future

        def make() -> None:
            try:
                name = f"pytest-baseimage-{self.session_id[:12]}-{uuid.uuid4().hex[:8]}"
                labels = self.labels("network")
                future.set_result(self.client.networks.create(name, driver="bridge", internal=True, labels=labels))
            except BaseException as exc:  # handed to the caller of internal_network()
                future.set_exception(exc)

        threading.Thread(target=make, name="pytest-baseimage-network", daemon=True).start()

    def internal_network(self) -> Any:
        """This session's internal bridge network on this engine (no egress), made once and removed by
        `release_network`: the servers of a matrix take turns on it instead of each making one (0.1-0.2 s to
        create and as much to remove). Raises what the engine said when it could not be made."""
        self.warm_internal_network()
        future = self._network
        assert future is not None
        while True:  # in slices: a plain wait would hold Ctrl-C and SIGTERM
            with contextlib.suppress(FutureTimeout):
                return future.result(timeout=0.1)

    def release_network(self, only: Any = None) -> None:
        """Remove the internal network (after the containers on it are gone), or forget it when it is not `only`
        (another caller already made a new one); never raises. The next `internal_network` makes a new one."""
        with self._lock:
            future = self._network
            if only is not None and (
                future is None or not future.done() or future.exception() or future.result() is not only
            ):
                return
            self._network = None
        if future is None:
            return
        with contextlib.suppress(Exception):
            future.result(timeout=130).remove()

    # -- removals beside the run ------------------------------------------------------------------------
    def defer(self, teardown: Callable[[], Any]) -> None:
        """Run a removal in the background: an observation that has its answer need not wait for its container
        and network to go (0.2-0.3 s on the critical path). `settle` waits for them; the session's label sweep
        at exit removes whatever a killed run leaves."""

        def run() -> None:
            with contextlib.suppress(Exception):
                teardown()

        thread = threading.Thread(target=run, name="pytest-baseimage-teardown", daemon=True)
        with self._lock:
            self._teardowns = [t for t in self._teardowns if t.is_alive()]
            self._teardowns.append(thread)
        thread.start()

    def settle(self, timeout_s: float = 130.0) -> None:
        """Wait for the deferred removals, in short slices (a plain join() would block Ctrl-C and SIGTERM);
        at most `timeout_s` (past the client's own 120 s): the label sweep then removes what is left."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            pending = list(self._teardowns)
        for thread in pending:
            while thread.is_alive() and time.monotonic() < deadline:
                thread.join(0.1)

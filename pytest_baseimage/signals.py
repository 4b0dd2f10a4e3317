"""SIGTERM as Ctrl-C, and Ctrl-C or SIGTERM once a run has ended.

SIGTERM (a CI runner cancelling the job, `docker stop`, systemd) becomes a KeyboardInterrupt, so that
pytest's teardown and ours run as on Ctrl-C: the containers are removed and the verdict says "interrupted".

Once a run has ended, the verdict is known (or written) and only the cleanup is left.

Such a signal used to break the ending itself: a KeyboardInterrupt inside pytest-xdist's teardown of its
workers lost the JSON verdict, and one inside the containers' removal made the process exit 130 or 143 while
the verdict it had written said 0. From the end of the test loop on, the first signal is held: the cleanup
(bounded) completes, the process exits with the verdict's code, and one line says the signal came late. A
second signal is not held: it interrupts the cleanup as usual.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class LateSignals:
    held: list[int] = field(default_factory=list)
    _previous: dict[int, Any] = field(default_factory=dict)

    def hold(self) -> None:
        """From now on the first SIGINT or SIGTERM is only noted (main thread only, where handlers can be set)."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        for number in SIGNALS:
            self._previous[number] = signal.signal(number, self._note)

    def _note(self, number: int, frame: Any) -> None:
        if self.held:  # a second signal: the user insists, so the cleanup is interrupted as before
            self.release()
            raise KeyboardInterrupt(f"signal {number}")
        self.held.append(number)

    def release(self) -> None:
        """Put the previous handlers back; say once if a signal was held."""
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        if self.held:
            name = signal.Signals(self.held[0]).name
            sys.stderr.write(f"pytest-baseimage: {name} came after the run had ended: its verdict stands\n")
            self.held.clear()


def install_signal_handlers() -> None:
    """Turn SIGTERM into KeyboardInterrupt so that pytest's teardown, and ours, run as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, on_term)

"""The engines of one session: one per Docker host (and context), all labelling their containers with the
session's id, made by a factory (the Docker SDK's `Engine`; the in-process tests give a fake) and cleaned up
by the session that owns them (`session.VerdictSession`, registered in pytest_configure), not at import."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .engine import Engine, new_session_id

EngineFactory = Callable[..., Any]  # (docker_host=, docker_context=, session_id=) -> an Engine (or a stand-in)


class Engines:
    """The engines of one session, one per (Docker host, context), all labelling with the session's id.
    The session that owns this registry removes what they started (`cleanup`) when it ends; `factory` makes
    an engine (the real Docker one; tests give a fake)."""

    def __init__(self, factory: EngineFactory | None = None, session_id: str = "") -> None:
        self.factory: EngineFactory = factory or Engine
        self.session_id = session_id or new_session_id()
        self._engines: dict[tuple[str | None, str | None], Any] = {}
        self._lock = threading.Lock()

    def get(self, docker_host: str | None, docker_context: str | None = None) -> Any:
        """The engine of this host; the first use reaps stale containers of killed runs. EngineError (could not
        be checked) when it cannot be reached; it is asked again next time."""
        key = (docker_host, docker_context)
        with self._lock:
            if key not in self._engines:
                made = self.factory(docker_host=docker_host, docker_context=docker_context, session_id=self.session_id)
                made.reap_stale()
                self._engines[key] = made
            return self._engines[key]

    def all(self) -> list[Any]:
        with self._lock:
            return list(self._engines.values())

    def cleanup(self) -> None:
        """Remove every container these engines started, and whatever else carries this session's label."""
        for engine in self.all():
            engine.settle()  # removals begun in the background (the scoring server's)
            engine.remove_all()
            engine.release_network()  # once nothing is left on it
            engine.sweep_session()

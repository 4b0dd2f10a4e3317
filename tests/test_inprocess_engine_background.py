"""engine_background.py in process against a stand-in Docker client: the session's internal network (made
once, in the background, shared, released; a failure handed to whoever asks) and removals beside the run."""

from __future__ import annotations

import threading

import pytest
from fake_docker import FakeDocker

from pytest_baseimage.engine import LABEL_ROLE, LABEL_SESSION, Engine


class Network:
    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.name, self.labels, self.removed = name, labels, 0

    def remove(self) -> None:
        self.removed += 1


class Networks:
    """client.networks: create() records what it made (optionally slow, or failing)."""

    def __init__(self) -> None:
        self.made: list[Network] = []
        self.gate: threading.Event | None = None  # create() waits for it, when set
        self.fail: Exception | None = None
        self.settings: list[dict] = []

    def create(self, name: str, **settings) -> Network:
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail is not None:
            raise self.fail
        self.settings.append(settings)
        self.made.append(Network(name, settings.get("labels", {})))
        return self.made[-1]


@pytest.fixture
def engine() -> Engine:
    client = FakeDocker()
    client.networks = Networks()
    return Engine(client=client, session_id="sess1")


def test_the_network_is_made_once_internal_and_labelled_for_the_session(engine):
    engine.warm_internal_network()
    first = engine.internal_network()
    assert engine.internal_network() is first and len(engine.client.networks.made) == 1
    settings = engine.client.networks.settings[0]
    assert settings["internal"] is True and settings["driver"] == "bridge"  # no egress
    assert first.labels[LABEL_SESSION] == "sess1" and first.labels[LABEL_ROLE] == "network"
    assert first.name.startswith("pytest-baseimage-sess1-")


def test_warming_returns_while_the_network_is_still_being_made(engine):
    engine.client.networks.gate = threading.Event()
    engine.warm_internal_network()  # the engine is still making it: warming did not wait
    assert engine.client.networks.made == []
    engine.client.networks.gate.set()
    assert engine.internal_network() is engine.client.networks.made[0]  # the asker waits for it


def test_a_network_that_could_not_be_made_raises_for_the_asker(engine):
    engine.client.networks.fail = RuntimeError("address pools are exhausted")
    with pytest.raises(RuntimeError, match="address pools"):
        engine.internal_network()


def test_release_removes_it_once_and_the_next_ask_makes_a_new_one(engine):
    first = engine.internal_network()
    engine.release_network()
    engine.release_network()  # nothing left: a second release does nothing
    assert first.removed == 1
    assert engine.internal_network() is not first and len(engine.client.networks.made) == 2


def test_release_of_a_network_already_replaced_forgets_nothing_newer(engine):
    first = engine.internal_network()
    engine.release_network(only=first)  # the one named: released
    second = engine.internal_network()
    engine.release_network(only=first)  # a stale name: the newer one stays
    assert engine.internal_network() is second and second.removed == 0 and first.removed == 1


def test_deferred_removals_run_beside_the_caller_and_settle_waits_for_them(engine):
    release = threading.Event()
    done: list[str] = []

    def slow() -> None:
        release.wait(5)
        done.append("slow")

    engine.defer(slow)
    engine.defer(lambda: (_ for _ in ()).throw(RuntimeError("gone already")))  # a failing removal is dropped
    assert done == []  # the caller went on
    threading.Timer(0.2, release.set).start()
    engine.settle()
    assert done == ["slow"]


def test_settle_gives_up_at_its_bound(engine):
    never = threading.Event()
    done: list[str] = []
    engine.defer(lambda: never.wait(5) or done.append("late"))
    engine.settle(timeout_s=0.2)  # the label sweep removes what is left
    assert done == []  # settle came back before the removal did
    never.set()

"""Workers: each claims a job, certifies it with the plugin itself, and promotes what passed.

Certification is `python -m pytest --base-image=<registry>/<repo>@<digest> ...` in a subprocess: the same
code path, verdict and reports as a user's run, and a crash in a check cannot take the service down. The
registry password reaches the plugin the way the plugin already takes it (`--registry-password-env`), never
on argv. The child gets SIGTERM if the service dies (PR_SET_PDEATHSIG), so it removes its container.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import ExitCode
from ..report.model import ReportError, Run, load_json, write_json
from ..results import ImageInfo, ImageReport, utc_now
from ..secret import Secret
from . import promote
from .config import Engine, Loaded, RegistryEntry
from .store import RUNNING, Job, Store, StoreUnavailable

log = logging.getLogger("baseimage-gate")

PASSWORD_VAR = "BASEIMAGE_GATE_REGISTRY_PASSWORD"  # the child's environment only
VERDICT, REPORT, ATTESTATION = "verdict.json", "report.html", "attestation.json"
MAX_BACKOFF_S = 600.0  # the longest a retried check waits for its next attempt
RETRIED = {int(ExitCode.UNCHECKED)}  # engine or registry trouble may pass; a verdict on the image will not change
_PR_SET_PDEATHSIG = 1
STOPPED = "interrupted: the service running it stopped"
DATABASE_WAIT = 5.0  # seconds between store calls while the database is away (each call already retried)
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    verdict: str
    exit_code: int | None
    message: str
    retry: bool


class Workers:
    """N threads over the configured engines (worker i uses engine i mod len): more engines, more throughput."""

    def __init__(self, loaded: Loaded, store: Store, observe: Callable[[float, str], None]) -> None:
        self.loaded, self.store, self.observe = loaded, store, observe
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.children: set[subprocess.Popen] = set()
        # Harbor's per-scan robot credentials, by job id: in memory only (never in the store), so a restart
        # forgets them and such a job is retried with the configured credentials, if any.
        self.scan_logins: dict[int, tuple[str, Secret]] = {}
        self._children_lock = threading.Lock()
        self.running: set[int] = set()  # job ids our threads run: what the lease keeper heartbeats

    def start(self) -> None:
        engines = self.loaded.config.engines
        for index in range(self.loaded.config.workers):
            engine = engines[index % len(engines)]
            thread = threading.Thread(target=self._loop, args=(engine,), name=f"gate-worker-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """Interrupt running certifications (the plugin cleans up on SIGTERM); their jobs stay for the next start."""
        self.stopping.set()
        self.wake.set()
        with self._children_lock:
            children = list(self.children)
        for child in children:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.loaded.config.stop_grace
        for child in children:
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                child.kill()  # a check stuck past the grace: its container may stay (labelled, findable)
        for thread in self.threads:
            thread.join(timeout=10)

    def _loop(self, engine: Engine) -> None:
        while not self.stopping.is_set():
            try:
                job = self.store.claim()
            except StoreUnavailable as exc:  # logged and waited out; /healthz says the database is away
                log.error("cannot claim a job: %s", exc)
                self.stopping.wait(DATABASE_WAIT)
                continue
            if job is None:
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            self.running.add(job.id)
            try:
                self._attempt(job, engine)
            except StoreUnavailable:
                return  # stopping while the database was away: the lease (or the next start) requeues it
            finally:
                self.running.discard(job.id)

    def _attempt(self, job: Job, engine: Engine) -> None:
        started = time.monotonic()
        try:
            outcome = self.run(job, engine)
        except Exception as exc:  # a bug here must not kill the worker: the job is retried, then errors
            log.exception("job %s failed", job.id)
            outcome = Outcome("could not be checked", None, f"gate error: {type(exc).__name__}", True)
        if self.stopping.is_set():
            self._release(job)
            return
        self._settle(job, outcome)
        self.observe(time.monotonic() - started, outcome.verdict)

    def _release(self, job: Job) -> None:
        """A check interrupted by a stop: its job back to the queue now, for another replica or the next start
        (one try: if the database is away, the job's lease runs out and it is requeued then)."""
        try:
            self.store.requeue(job.id, STOPPED)
        except StoreUnavailable as exc:
            log.error("job %s: left running for its lease to expire: %s", job.id, exc)

    def _stored(self, what: str, call: Callable[[], T]) -> T:
        """A store call, repeated while the database is away (until it answers, or the service stops)."""
        while True:
            try:
                return call()
            except StoreUnavailable as exc:
                log.error("%s: %s; trying again in %g s", what, exc, DATABASE_WAIT)
                if self.stopping.wait(DATABASE_WAIT):
                    raise

    def _settle(self, job: Job, outcome: Outcome) -> None:
        config = self.loaded.config
        if outcome.retry and job.attempts < config.max_attempts:
            delay = min(config.retry_backoff * 2 ** max(job.attempts - 1, 0), MAX_BACKOFF_S)
            log.info("job %s (%s@%s): %s; retrying in %g s", job.id, job.repository, job.digest, outcome.message, delay)
            if not self._stored(f"job {job.id}", lambda: self.store.requeue(job.id, outcome.message, delay)):
                log.warning("job %s: its lease expired and another replica has it; this attempt is dropped", job.id)
            self.wake.set()
            return
        current = self._stored(f"job {job.id}", lambda: self.store.get(job.id))  # with tags merged in while it ran
        if current is None or current.owner != self.store.owner or current.state != RUNNING:
            log.warning("job %s: its lease expired and another replica has it; this result is dropped", job.id)
            return  # and nothing promoted: the replica that has it now decides
        job = current
        promoted = self._promote(job) if outcome.verdict == "compatible" and job.target else []
        message = outcome.message
        if isinstance(promoted, str):
            message, promoted = promoted, []
        verdict, code = outcome.verdict, outcome.exit_code
        self.scan_logins.pop(job.id, None)  # Harbor's robot credentials are not kept past the job
        if self._stored(f"job {job.id}", lambda: self.store.finish(job.id, verdict, code, message, promoted, job.tags)):
            log.info("job %s (%s@%s): %s %s", job.id, job.repository, job.digest, verdict, promoted or "")
        else:
            log.warning("job %s: its lease expired and another replica has it; this result is dropped", job.id)

    def run(self, job: Job, engine: Engine) -> Outcome:
        """One attempt: reuse a finished certification (a merged new tag), or run the plugin."""
        config = self.loaded.config
        directory = self.loaded.path(config.data_dir) / "jobs" / str(job.id)
        if job.verdict == "compatible" and (directory / VERDICT).exists():
            return Outcome(job.verdict, job.exit_code, job.message, False)
        if job.attempts > config.max_attempts:
            return self._gave_up(job, directory)
        attempt = directory / f"attempt-{job.attempts}"
        attempt.mkdir(parents=True, exist_ok=True)
        self.store.set_directory(job.id, str(directory))
        code = self._certify(job, attempt, engine)
        try:
            run = load_json(attempt / VERDICT)
        except (ReportError, OSError) as exc:
            if code is None:
                return Outcome("could not be checked", None, f"timed out after {config.job_timeout:g} s", True)
            return Outcome("could not be checked", code, f"the plugin wrote no verdict (exit {code}): {exc}", True)
        for name in (VERDICT, REPORT, ATTESTATION):
            if (attempt / name).exists():
                os.replace(attempt / name, directory / name)
        retry = run.exit_code in RETRIED or run.interrupted
        return Outcome(run.verdict.value if not run.usage_error else "usage error", run.exit_code, _why(run), retry)

    def _certify(self, job: Job, attempt: Path, engine: Engine) -> int | None:
        login = self.login(job)
        argv = command(job, login, attempt, self.loaded.config.require_all_stages) + self._attest_args(job, attempt)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "BASEIMAGE_GATE_"))}
        for name in (self.loaded.config.database_password_env, "PGPASSWORD"):
            env.pop(name, None)  # the check has no business with the gate's database
        env = engine.environment(env)
        if login:
            env[PASSWORD_VAR] = login[1].reveal()
        (attempt / "pytest.ini").write_text("[pytest]\n")  # no ini file of a parent directory applies
        with open(attempt / "output.log", "wb") as output:
            child = subprocess.Popen(
                argv, cwd=attempt, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # only a prctl call between fork and exec
            )  # fmt: skip
            with self._children_lock:
                self.children.add(child)
            try:
                return child.wait(timeout=self.loaded.config.job_timeout)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGTERM)  # the plugin removes its container on SIGTERM
                try:
                    child.wait(timeout=self.loaded.config.stop_grace)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                return None
            finally:
                with self._children_lock:
                    self.children.discard(child)

    def login(self, job: Job) -> tuple[str, Secret] | None:
        """(user, password) for the job's registry: a configured one, else what a Harbor scan request brought."""
        registry = self._registry(job.registry)
        if registry is not None and registry.username:
            password = self.loaded.secrets.registry_passwords.get(registry.url)
            return (registry.username, password) if password else None
        return self.scan_logins.get(job.id)

    def _attest_args(self, job: Job, attempt: Path) -> list[str]:
        """--attest and its key option, when [attest] is on (the plugin's options from issue 16)."""
        attest = self.loaded.config.attest
        if not attest.enabled:
            return []
        args = [f"--attest={attempt / ATTESTATION}"]
        if attest.key_env:
            args.append(f"--attest-key-env={attest.key_env}")
        elif attest.key_file:
            args.append(f"--attest-key={self.loaded.path(attest.key_file)}")
        else:
            args.append("--attest-unsigned")
        if attest.push:
            args.append("--attest-push")
        if self.loaded.config.public_url:
            args.append(f"--attest-url={self.loaded.config.public_url.rstrip('/')}/v1/verdicts/{job.digest}/report")
        return args

    def _registry(self, url: str) -> RegistryEntry | None:
        return next((r for r in self.loaded.config.registries if r.url == url), None)

    def _promote(self, job: Job) -> list[str] | str:
        registry = self._registry(job.registry)
        if registry is None:
            return f"compatible, not promoted: registry {job.registry} is not configured"
        client = promote.RegistryClient(
            registry.url, registry.username, self.loaded.secrets.registry_passwords.get(registry.url)
        )
        try:
            return promote.copy(client, job.repository, job.digest, job.target, job.tags)
        except promote.PromotionError as exc:
            return f"compatible, not promoted: {exc}"

    def _gave_up(self, job: Job, directory: Path) -> Outcome:
        """The job crashed or timed out `max_attempts` times: an error verdict in the plugin's own schema."""
        directory.mkdir(parents=True, exist_ok=True)
        message = f"gave up after {job.attempts - 1} attempts: {job.message or 'the check never finished'}"
        reference = f"{_host(job.registry)}/{job.repository}@{job.digest}"
        info = ImageInfo(reference=reference, digest=reference)
        now = utc_now()
        run = Run(
            images=[ImageReport(name=reference, info=info, profile=job.profile, error=message)],
            plugin_version="",
            started=now,
            finished=now,
            host="baseimage-gate",
        )
        write_json(run, directory / VERDICT, secrets=self.loaded.secrets.values())
        return Outcome(run.verdict.value, run.exit_code, message, False)


def command(job: Job, login: tuple[str, Secret] | None, attempt: Path, require_all: bool) -> list[str]:
    """The plugin's command line for one job: a digest reference, so a moved tag cannot change what is judged."""
    reference = f"{_host(job.registry)}/{job.repository}@{job.digest}"
    argv = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(attempt / "pytest.ini"),
        f"--rootdir={attempt}", "-q", f"--base-image={reference}", f"--base-image-profile={job.profile}",
        "--require-digest", f"--compat-json={attempt / VERDICT}", f"--compat-html={attempt / REPORT}",
    ]  # fmt: skip
    if login is not None:
        argv += [
            f"--registry={_host(job.registry)}",
            f"--registry-username={login[0]}",
            f"--registry-password-env={PASSWORD_VAR}",
        ]
    if require_all:
        argv.append("--require-all-stages")
    return argv


def _why(run: Run) -> str:
    """The verdict line of the one image, e.g. "not compatible: python: ..." (already scrubbed by the plugin)."""
    if run.usage_error:
        return run.usage_error
    if not run.images:
        return run.verdict.value
    image = run.images[0]
    failed = [f"{r.stage}: {r.observed or r.reason}" for r in image.results if r.status.value in ("fail", "error")]
    return "; ".join([image.verdict_line(), *([image.error] if image.error else []), *failed])[:2000]


def _host(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def _die_with_parent() -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_LIBC = ctypes.CDLL(None, use_errno=True)  # looked up before any fork: the child only makes the call

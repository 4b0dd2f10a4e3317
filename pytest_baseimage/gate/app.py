"""The HTTP service: Starlette routes over the store; the answer to an event comes before any work.

Starlette is a small, typed, well-maintained ASGI toolkit (the base of FastAPI) with streaming request bodies,
so a body over the limit is refused while it arrives instead of after it was buffered; uvicorn is its
reference server. Both are pure Python wheels with few dependencies.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..report.model import ReportError, load_json
from ..secret import Secret
from . import events, harbor
from .config import Loaded
from .database import open_store
from .lease import Keeper
from .metrics import CONTENT_TYPE, Metrics
from .store import DONE, Job, NewJob, StoreUnavailable
from .worker import ATTESTATION, REPORT, VERDICT, Workers

log = logging.getLogger("baseimage-gate")
DSSE_TYPE = "application/vnd.dsse.envelope.v1+json"


class TooLarge(Exception):
    pass


class Gate:
    """The service's state: config, store, workers and metrics; the routes below are its methods."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.store = open_store(loaded)
        self.metrics = Metrics(self.store)
        self.workers = Workers(loaded, self.store, self.metrics.observe)
        self.keeper = Keeper(self.store, lambda: frozenset(self.workers.running), self.workers.wake.set)

    # -- authentication and bodies ------------------------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        secrets = self.loaded.secrets
        if scheme.lower() == "bearer" and secrets.token:
            return hmac.compare_digest(value.strip().encode(), secrets.token.reveal().encode())
        if scheme.lower() == "basic" and secrets.basic_password:
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            same_user = hmac.compare_digest(user.encode(), self.config.basic_username.encode())
            return hmac.compare_digest(password.encode(), secrets.basic_password.reveal().encode()) and same_user
        return False

    async def body(self, request: Request) -> bytes:
        """The request body, refused (TooLarge) as soon as it passes max_body_bytes."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def refuse(self, reason: str, status: int, message: str) -> Response:
        self.metrics.rejected.labels(reason).inc()
        headers = {"WWW-Authenticate": 'Bearer realm="baseimage-gate"'} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    # -- routes ----------------------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        alive = sum(thread.is_alive() for thread in self.workers.threads)
        database = await run_in_threadpool(self.store.ping)
        healthy = alive == len(self.workers.threads) and self.keeper.alive() and database
        body = {"status": "ok" if healthy else "degraded", "workers": alive, "database": database}
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(await run_in_threadpool(self.metrics.text), media_type=CONTENT_TYPE)

    async def post_events(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.refuse("unauthorized", 401, "missing or wrong credentials")
        if not events.media_type_ok(request.headers.get("content-type", "")):
            return self.refuse("media_type", 415, f"expected {events.EVENT_MEDIA_TYPES[0]}")
        try:
            pushes, ignored = events.parse(await self.body(request))
        except TooLarge:
            return self.refuse("too_large", 413, f"the body is over {self.config.max_body_bytes} bytes")
        except events.BadEvents as exc:
            return self.refuse("malformed", 400, str(exc))
        created = await run_in_threadpool(self._enqueue_pushes, pushes)
        self.metrics.accepted.labels("ignored").inc(ignored + len(pushes) - len(created))
        self.metrics.accepted.labels("queued").inc(len(created))
        return JSONResponse({"queued": created, "ignored": ignored + len(pushes) - len(created)}, status_code=202)

    def _enqueue_pushes(self, pushes: list[events.Push]) -> list[int]:
        created = []
        for push in pushes:
            rule = self.config.rule_for(push.repository)
            if rule is None:  # not a staging repository (our own promotions land here too): ignored
                continue
            registry = self.config.registry_for(rule)
            target = rule.target(push.repository)
            job, fresh = self.store.enqueue(
                NewJob(registry.url, push.repository, push.digest, rule.profile, target, (push.tag,))
            )
            if fresh:
                created.append(job.id)
        if pushes:
            self.workers.wake.set()
        return created

    async def list_jobs(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.refuse("unauthorized", 401, "missing or wrong credentials")
        jobs = await run_in_threadpool(self.store.all_jobs)
        return JSONResponse({"jobs": [job.to_dict() for job in jobs]})

    async def verdict(self, request: Request) -> Response:
        found = await self._job_for(request)
        if isinstance(found, Response):
            return found
        job, directory = found
        what = request.path_params.get("what", "")
        if what not in ("", "report", "attestation"):
            return JSONResponse({"error": "not found"}, status_code=404)
        if job.state != DONE and what == "":
            return JSONResponse({"job": job.to_dict()}, status_code=202, headers={"Retry-After": "5"})
        name, media = {"": (VERDICT, "application/json"), "report": (REPORT, "text/html; charset=utf-8"),
                       "attestation": (ATTESTATION, DSSE_TYPE)}[what]  # fmt: skip
        path = directory / name
        if job.state != DONE or not path.is_file():
            return JSONResponse({"error": f"no {what or 'verdict'} for this job", "job": job.to_dict()}, 404)
        headers = {"X-Content-Type-Options": "nosniff", "X-Baseimage-Job": str(job.id)}
        return FileResponse(path, media_type=media, headers=headers)

    async def _job_for(self, request: Request) -> tuple[Job, Path] | Response:
        if not self.authorized(request):
            return self.refuse("unauthorized", 401, "missing or wrong credentials")
        digest = request.path_params["digest"]
        if not events.DIGEST.match(digest):
            return JSONResponse({"error": "not a sha256 digest"}, status_code=400)
        jobs = await run_in_threadpool(self.store.by_digest, digest)
        profile, repository = request.query_params.get("profile"), request.query_params.get("repository")
        jobs = [job for job in jobs if profile in (None, job.profile) and repository in (None, job.repository)]
        if not jobs:
            return JSONResponse({"error": "no job for this digest"}, status_code=404)
        return jobs[0], self.loaded.path(self.config.data_dir) / "jobs" / str(jobs[0].id)

    # -- Harbor ------------------------------------------------------------------------------------------------
    def harbor_error(self, status: int, message: str) -> Response:
        body = json.dumps({"error": {"message": message}})
        headers = {"WWW-Authenticate": 'Bearer realm="baseimage-gate"'} if status == 401 else None
        return Response(body, status_code=status, media_type=harbor.ERROR_TYPE, headers=headers)

    async def harbor_metadata(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.harbor_error(401, "missing or wrong credentials")
        body = json.dumps(harbor.metadata(self.config.harbor))
        return Response(body, media_type=harbor.METADATA_TYPE)

    async def harbor_scan(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.harbor_error(401, "missing or wrong credentials")
        try:
            scan = harbor.parse_scan(request.headers.get("content-type", ""), await self.body(request))
        except TooLarge:
            return self.harbor_error(413, f"the body is over {self.config.max_body_bytes} bytes")
        except harbor.ScanRefused as exc:
            return self.harbor_error(exc.status, str(exc))
        scan_id = await run_in_threadpool(self._enqueue_scan, scan)
        body = json.dumps({"id": scan_id})
        return Response(body, status_code=202, media_type=harbor.SCAN_RESPONSE_TYPE)

    def _enqueue_scan(self, scan: harbor.ScanRequest) -> str:
        tags = (scan.tag,) if scan.tag else ()
        new = NewJob(scan.registry_url, scan.repository, scan.digest, self.config.harbor.profile, "", tags, "harbor")
        job, _ = self.store.enqueue(new)
        login = _basic_login(scan.authorization)
        if login:
            self.workers.scan_logins[job.id] = login
        scan_id = str(uuid.uuid4())
        self.store.add_scan(scan_id, job.id, scan.mime_type, scan.tag)
        self.workers.wake.set()
        return scan_id

    async def harbor_report(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.harbor_error(401, "missing or wrong credentials")
        found = await run_in_threadpool(self.store.scan, request.path_params["scan_id"])
        if found is None:
            return self.harbor_error(404, "unknown scan request id")
        media = harbor.report_type(request.headers.get("accept", ""))
        if media is None:
            return self.harbor_error(501, f"reports are produced as {', '.join(harbor.REPORT_TYPES)}")
        job, mime_type, _ = found
        if job.state != DONE:
            refresh = str(self.config.harbor.refresh_after)
            return Response(status_code=302, headers={"Refresh-After": refresh, "Location": str(request.url.path)})
        path = self.loaded.path(self.config.data_dir) / "jobs" / str(job.id) / VERDICT
        try:
            run = load_json(path)
        except (ReportError, OSError) as exc:
            return self.harbor_error(500, f"the verdict cannot be read: {type(exc).__name__}")
        report = harbor.report(run, self.config.harbor, job.repository, job.digest, mime_type)
        return Response(json.dumps(report), media_type=media)


def _basic_login(authorization: str) -> tuple[str, Secret] | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, Secret(password)) if user and password else None


async def _database_away(request: Request, exc: Exception) -> Response:
    """503 while the database cannot be reached: a registry retries its notification, a client its question."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"error": "the database cannot be reached"}, status_code=503, headers={"Retry-After": "5"})


def create_app(loaded: Loaded) -> Starlette:
    gate = Gate(loaded)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        requeued = await run_in_threadpool(gate.store.recover)
        if requeued:
            log.info("requeued %d job(s) left running by a service that stopped", requeued)
        gate.workers.start()
        gate.keeper.start()
        try:
            yield {}
        finally:
            await run_in_threadpool(gate.workers.stop)  # heartbeated until the interrupted checks' jobs are requeued
            await run_in_threadpool(gate.keeper.stop)
            gate.store.close()

    routes = [
        Route("/healthz", gate.healthz),
        Route("/metrics", gate.metrics_text),
        Route("/v1/events", gate.post_events, methods=["POST"]),
        Route("/v1/jobs", gate.list_jobs),
        Route("/v1/verdicts/{digest}", gate.verdict),
        Route("/v1/verdicts/{digest}/{what}", gate.verdict),
        Route("/api/v1/metadata", gate.harbor_metadata),
        Route("/api/v1/scan", gate.harbor_scan, methods=["POST"]),
        Route("/api/v1/scan/{scan_id}/report", gate.harbor_report),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={StoreUnavailable: _database_away})
    app.state.gate = gate
    return app

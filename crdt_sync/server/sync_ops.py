"""Operating the sync from the admin API: disconnect, compact, check, export (server layer).

    DELETE /api/admin/sync/clients/{id}         close one websocket client's connection
    POST   /api/admin/sync/compactions          compact one record or the whole store: a job
    GET    /api/admin/sync/compactions[/{id}]   jobs and their progress
    POST   /api/admin/sync/check                the store check (`crdt-sync check`)
    GET    /api/admin/sync/export               the whole store as an archive (`crdt-sync export`)

None of these writes a record: compaction rewrites a record's log rows into one snapshot of
the same state (the store's own operation, which keeps racing appends), and the others read.
Jobs run as tasks of the server and are cancelled when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from ..errors import CrdtSyncError, RecordNotFound, StoreError
from ..ids import DocId, split_doc_id
from ..protocol.close import CloseCode
from ..store.base import CompactionReport, Store
from .access import AdminOnly
from .activity import ActivityLog
from .live import Hub
from .sync_watch import watching

router = APIRouter(prefix="/api/admin/sync", tags=["admin: sync"])

JOBS_KEPT = 50  # finished jobs remembered, newest first
DISCONNECT_REASON = "disconnected by an admin"


class Disconnected(BaseModel):
    id: str
    token: str
    transport: str
    client_id: str


class CompactionRequest(BaseModel):
    doc: str | None = Field(
        default=None, description="the one record to compact, 'contacts/42'; null: every record"
    )


class Report(BaseModel):
    documents: int
    updates_before: int
    updates_after: int
    bytes_before: int
    bytes_after: int


class Job(BaseModel):
    id: str
    kind: Literal["compaction"]
    doc: str | None = Field(description="the record compacted; null: the whole store")
    state: Literal["running", "done", "failed"]
    done: int = Field(description="records compacted so far")
    total: int = Field(description="records to compact (known once the job has begun)")
    started_at: float
    finished_at: float | None
    report: Report | None
    error: str | None


class Finding(BaseModel):
    count: int
    examples: list[str]


class CheckResult(BaseModel):
    ok: bool
    records: int
    log_rows: int
    sqlite: list[str] = Field(description="what SQLite's quick_check reported; empty when fine")
    broken_links: Finding
    bad_heads: Finding
    forks: Finding
    orphans: Finding
    seconds: float


@dataclass(slots=True)
class CompactionJob:
    id: str
    doc: DocId | None
    started_at: float = field(default_factory=time.time)
    state: Literal["running", "done", "failed"] = "running"
    done: int = 0
    total: int = 0
    finished_at: float | None = None
    report: CompactionReport | None = None
    error: str | None = None

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def shown(self) -> Job:
        report = self.report
        return Job(
            id=self.id,
            kind="compaction",
            doc=self.doc,
            state=self.state,
            done=self.done,
            total=self.total,
            started_at=self.started_at,
            finished_at=self.finished_at,
            report=Report(
                documents=report.documents,
                updates_before=report.updates_before,
                updates_after=report.updates_after,
                bytes_before=report.bytes_before,
                bytes_after=report.bytes_after,
            )
            if report is not None
            else None,
            error=self.error,
        )


class SyncJobs:
    """The compaction jobs of this server: at most one of the whole store at a time."""

    def __init__(self) -> None:
        self.jobs: dict[str, CompactionJob] = {}  # oldest first
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)

    def running_whole_store(self) -> CompactionJob | None:
        return next((j for j in self.jobs.values() if j.doc is None and j.state == "running"), None)

    def start(self, store: Store, doc_id: DocId | None, activity: ActivityLog) -> CompactionJob:
        job = CompactionJob(f"j{next(self._numbers)}", doc_id)
        self.jobs[job.id] = job
        finished = [j for j in self.jobs.values() if j.state != "running"]
        for old in finished[: max(0, len(finished) - JOBS_KEPT)]:
            del self.jobs[old.id]
        task = asyncio.create_task(self._run(store, job, activity))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, store: Store, job: CompactionJob, activity: ActivityLog) -> None:
        what = job.doc or "the whole store"
        try:
            if job.doc is not None:
                job.total = 1
                job.report = await store.compact(job.doc)
                job.done = 1
            else:
                job.report = await store.compact_all(progress=job.progress)
        except CrdtSyncError as exc:  # a busy or failing disk: the job says so
            job.state, job.error = "failed", exc.message
            activity.note("operation", f"compaction of {what} failed: {exc.message}", doc=job.doc)
        else:
            job.state = "done"
            report = job.report
            activity.note(
                "operation",
                f"compacted {what}: {report.documents} records, "
                f"{report.updates_before} -> {report.updates_after} log rows",
                doc=job.doc,
            )
        finally:
            job.finished_at = time.time()
            if job.state == "running":  # cancelled: the server is stopping
                job.state, job.error = "failed", "the server stopped"

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def running(app: Any, hub: Hub) -> AsyncIterator[None]:
    """The admin sync API's share of the server's lifespan: watchers in, jobs out at the end."""
    async with watching(app, hub):
        try:
            yield
        finally:
            await jobs_of(app).cancel_all()


def jobs_of(app: Any) -> SyncJobs:
    jobs: SyncJobs = app.state.sync_jobs
    return jobs


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


@router.delete("/clients/{connection_id}", response_model=Disconnected)
async def disconnect(request: Request, connection_id: str, who: AdminOnly) -> Disconnected:
    """Close one websocket connection now (1001, "disconnected by an admin").

    A client may reconnect (with backoff): to keep a device out, revoke its token.
    """
    hub = _hub(request)
    found = next((c for c in hub.connections if c.id == connection_id), None)
    if found is None:
        raise HTTPException(404, f"no open connection {connection_id!r}")
    found.request_close(CloseCode.GOING_AWAY, DISCONNECT_REASON)
    request.app.state.activity.note(
        "operation",
        f"{who.name} disconnected {found.principal.name} on /{found.endpoint} ({found.id})",
        device=found.client_id or found.principal.name,
    )
    return Disconnected(
        id=found.id, token=found.principal.name, transport=found.endpoint, client_id=found.client_id
    )


@router.post("/compactions", response_model=Job, status_code=202)
async def start_compaction(request: Request, body: CompactionRequest, who: AdminOnly) -> Job:
    """Start compacting one record, or every record that needs it; follow it at its `id`.

    A second compaction of the whole store while one runs is 409 `conflict`.
    """
    hub, jobs = _hub(request), jobs_of(request.app)
    doc_id: DocId | None = None
    if body.doc is not None:
        split_doc_id(body.doc)  # SchemaViolation (422) for a malformed id
        doc_id = DocId(body.doc)
        if await hub.store.get_record(doc_id) is None:
            raise RecordNotFound(doc_id, "no such record")
    elif (running_job := jobs.running_whole_store()) is not None:
        raise HTTPException(409, f"a compaction of the whole store is running: {running_job.id}")
    return jobs.start(hub.store, doc_id, request.app.state.activity).shown()


@router.get("/compactions", response_model=list[Job])
async def list_compactions(request: Request, who: AdminOnly) -> list[Job]:
    """Compaction jobs since the server started (the last few finished ones), newest first."""
    return [job.shown() for job in reversed(jobs_of(request.app).jobs.values())]


@router.get("/compactions/{job_id}", response_model=Job)
async def compaction(request: Request, job_id: str, who: AdminOnly) -> Job:
    job = jobs_of(request.app).jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no compaction job {job_id!r}")
    return job.shown()


@router.post("/check", response_model=CheckResult)
async def check(request: Request, who: AdminOnly) -> CheckResult:
    """Run the store check: SQLite's quick_check and every log row in its record's chain.

    Reads the whole file in one read transaction (the server keeps writing meanwhile).
    """
    store: Any = _hub(request).store
    if not hasattr(store, "check"):
        raise StoreError(f"{type(store).__name__} has no check")
    started = time.monotonic()
    report = await store.check()
    result = CheckResult(
        ok=report.is_ok,
        records=report.records,
        log_rows=report.log_rows,
        sqlite=report.sqlite,
        broken_links=Finding(
            count=report.broken_links.count, examples=report.broken_links.examples
        ),
        bad_heads=Finding(count=report.bad_heads.count, examples=report.bad_heads.examples),
        forks=Finding(count=report.forks.count, examples=report.forks.examples),
        orphans=Finding(count=report.orphans.count, examples=report.orphans.examples),
        seconds=round(time.monotonic() - started, 3),
    )
    outcome = "no problems" if result.ok else "PROBLEMS FOUND"
    request.app.state.activity.note(
        "operation", f"store check: {outcome} ({report.records} records, {report.log_rows} rows)"
    )
    return result


@router.get(
    "/export",
    response_class=FileResponse,
    responses={200: {"content": {"application/cbor-seq": {}}}},
)
async def export(request: Request, who: AdminOnly) -> FileResponse:
    """Every record (deleted ones too) with its whole CRDT state, as one archive file
    (docs/ARCHIVE.md; `crdt-sync import` reads it). Read a page at a time, never locking."""
    from ..store.archive import export_archive

    store = _hub(request).store
    folder = Path(tempfile.mkdtemp(prefix="crdt-sync-export-"))
    try:
        cursor = int(await store.cursor())
        name = f"crdt-sync-export-{cursor}.cbor"
        summary = await export_archive(store, folder / name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    request.app.state.activity.note(
        "operation", f"{who.name} exported {summary.documents} records ({summary.bytes} bytes)"
    )
    return FileResponse(
        folder / name,
        media_type="application/cbor-seq",
        filename=name,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )

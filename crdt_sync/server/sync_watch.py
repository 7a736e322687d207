"""What the sync is doing, as it happens: refused writes, activity, rates (server layer; admin).

    GET /api/admin/sync/refusals          the last refused writes: record, origin, reason, values
    GET /api/admin/sync/activity          the activity log, filtered by record, device and kind
    GET /api/admin/sync/activity/stream   the same, live (server-sent events, resumable)
    GET /api/admin/sync/rates             updates/s, refusals/s, connections: a sample a second

All of it is read from memory the server keeps anyway (`Engine.refusals`, `activity.py`): a
page that watches costs the server what it reads, never a store query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ..errors import BadRequest
from .access import AdminOnly
from .activity import KINDS, Activity, ActivityFilter, ActivityLog, Rates
from .live import Hub

router = APIRouter(prefix="/api/admin/sync", tags=["admin: sync"])

STREAM_LIFETIME = 300.0  # seconds; then the stream ends and EventSource resumes where it was
HEARTBEAT = 15.0  # seconds of quiet after which a comment keeps proxies from closing the stream
STREAM_BATCH_PAUSE = 0.1  # at most ten writes a second to one stream: a busy store is batched
RATE_INTERVAL = 1.0  # seconds between samples of the counters


class RefusedWrite(BaseModel):
    number: int = Field(description="grows by one per refusal; ask `after` it for newer ones")
    at: float
    doc: str = Field(description="the record; '' when the write named no usable record")
    origin: str = Field(description="who sent it: a client id or a token name")
    code: str
    reason: str
    values: dict[str, Any] | None = Field(
        description="the fields it tried to set and their values; null when unknown"
    )


class RefusedWrites(BaseModel):
    total: int = Field(description="refusals since the server started")
    refusals: list[RefusedWrite] = Field(description="newest first")


class ActivityEntry(BaseModel):
    number: int
    at: float
    kind: str = Field(description=" | ".join(KINDS))
    doc: str | None
    device: str | None
    summary: str
    seq: int | None
    token: str | None = Field(description="the token's name (connection events)")


class ActivityPage(BaseModel):
    entries: list[ActivityEntry] = Field(description="oldest first")
    next: int = Field(description="pass as `after` to get what comes next")
    oldest: int = Field(description="the oldest entry the server still holds")


class RateSample(BaseModel):
    at: float
    updates: int = Field(description="writes committed since the previous sample")
    updates_per_s: float
    refusals_per_s: float
    rest_requests_per_s: float
    connections: dict[str, int]


class RateSeries(BaseModel):
    interval: float
    samples: list[RateSample] = Field(description="oldest first")


def activity_log(request: Request) -> ActivityLog:
    log: ActivityLog = request.app.state.activity
    return log


@contextlib.asynccontextmanager
async def watching(app: Any, hub: Hub) -> AsyncIterator[None]:
    """Feed the activity log and sample the rates while the server runs (its lifespan)."""
    log: ActivityLog = app.state.activity
    rates: Rates = app.state.rates
    hub.store.add_commit_listener(log.on_commit)
    hub.engine.refusals.listeners.append(log.on_refusal)
    hub.listeners.append(log.on_connection)
    # `serve` builds this app once a restart's rejoins settle (front.py): the connections
    # that came before it are in the log too, so each later disconnect has its connect.
    for connection in sorted(hub.connections, key=lambda c: c.connected_at):
        log.on_connection("connect", connection)

    async def sample() -> None:
        while True:
            rates.sample(hub, app.state.telemetry)
            await asyncio.sleep(RATE_INTERVAL)

    sampler = asyncio.create_task(sample())
    try:
        yield
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


@router.get("/refusals", response_model=RefusedWrites)
async def refusals(
    request: Request,
    who: AdminOnly,
    after: Annotated[int, Query(ge=0, description="only refusals numbered above this")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RefusedWrites:
    hub: Hub = request.app.state.hub
    log = hub.engine.refusals
    return RefusedWrites(
        total=log.count,
        refusals=[
            RefusedWrite(
                number=r.number,
                at=r.at,
                doc=r.doc_id,
                origin=r.origin,
                code=r.code,
                reason=r.reason,
                values=r.values,
            )
            for r in log.recent(after=after, limit=limit)
        ],
    )


def _filter(record: str | None, device: str | None, kind: list[str] | None) -> ActivityFilter:
    kinds = frozenset(kind or ())
    unknown = kinds - set(KINDS)
    if unknown:
        raise BadRequest(f"kind: unknown kind {min(unknown)!r} (kinds: {', '.join(KINDS)})")
    return ActivityFilter(record or None, device or None, kinds)


RecordQuery = Annotated[str | None, Query(description="only this record, 'contacts/42'")]
DeviceQuery = Annotated[
    str | None, Query(description="only this device: its client id, or its token's name")
]
KindQuery = Annotated[list[str] | None, Query(description="only these kinds (repeat the key)")]


@router.get("/activity", response_model=ActivityPage)
async def activity(
    request: Request,
    who: AdminOnly,
    record: RecordQuery = None,
    device: DeviceQuery = None,
    kind: KindQuery = None,
    after: Annotated[
        int | None, Query(ge=0, description="entries after this number; the newest if absent")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ActivityPage:
    log = activity_log(request)
    chosen = _filter(record, device, kind)
    if after is None:
        entries, upto = log.newest(chosen, limit=limit), log.last
    else:
        entries, upto = log.after(after, chosen, limit=limit)
    return ActivityPage(entries=[_entry(a) for a in entries], next=upto, oldest=log.first)


@router.get(
    "/activity/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def activity_stream(
    request: Request,
    who: AdminOnly,
    record: RecordQuery = None,
    device: DeviceQuery = None,
    kind: KindQuery = None,
    after: Annotated[int | None, Query(ge=0, description="resume after this number")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: `activity` (data: an ActivityEntry), id = its number.

    Starts after `after`, or the `Last-Event-ID` an EventSource sends when it reconnects, or
    else at the newest entry. An `id`-only event moves the resume point past entries the
    filter skipped; a `gap` event says entries were dropped from the server's ring before this
    stream could send them (it was too far behind). Ends after a few minutes; EventSource
    reconnects by itself and resumes; so it does after the server restarts (the stream ends
    as soon as the server is asked to stop).
    """
    log = activity_log(request)
    chosen = _filter(record, device, kind)
    start = after
    if start is None and last_event_id:
        if not last_event_id.isdigit():
            raise BadRequest("Last-Event-ID must be an activity number")
        start = int(last_event_id)
    position = log.last if start is None else start
    # Ended when the server is asked to stop (app.Server.handle_exit), like the admin feeds.
    feeds = request.app.state.admin_feeds
    feeds.opened()
    stopping: asyncio.Event = feeds.stopping

    async def events() -> AsyncIterator[bytes]:
        nonlocal position
        yield b"retry: 1000\n\n"
        ends = time.monotonic() + STREAM_LIFETIME
        while time.monotonic() < ends and not stopping.is_set():
            if not await log.wait_after(position, HEARTBEAT, stopping):
                if not stopping.is_set():
                    yield b": still here\n\n"
                continue
            if position + 1 < log.first:
                yield _event("gap", {"from": position + 1, "to": log.first - 1}, log.first - 1)
                position = log.first - 1
            entries, upto = log.after(position, chosen, limit=1000)
            chunk = b"".join(_event("activity", _entry(a).model_dump(), a.number) for a in entries)
            if upto > (entries[-1].number if entries else position):
                chunk += f"id: {upto}\n\n".encode()
            position = upto
            if chunk:
                yield chunk
            await asyncio.sleep(STREAM_BATCH_PAUSE)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/rates", response_model=RateSeries)
async def rates(
    request: Request,
    who: AdminOnly,
    seconds: Annotated[int, Query(ge=1, le=600, description="how far back")] = 300,
) -> RateSeries:
    series: Rates = request.app.state.rates
    return RateSeries(
        interval=RATE_INTERVAL,
        samples=[
            RateSample(
                at=s.at,
                updates=s.updates,
                updates_per_s=round(s.updates_per_s, 3),
                refusals_per_s=round(s.refusals_per_s, 3),
                rest_requests_per_s=round(s.rest_requests_per_s, 3),
                connections=s.connections,
            )
            for s in series.since(seconds)
        ],
    )


def _entry(activity: Activity) -> ActivityEntry:
    return ActivityEntry(
        number=activity.number,
        at=activity.at,
        kind=activity.kind,
        doc=activity.doc,
        device=activity.device,
        summary=activity.summary,
        seq=activity.seq,
        token=activity.token,
    )


def _event(name: str, data: object, number: int) -> bytes:
    return f"event: {name}\nid: {number}\ndata: {json.dumps(data)}\n\n".encode()

"""The change feed: records as they change, pushed to admin pages over SSE (server layer).

    GET /api/admin/feed?since=CURSOR&collections=..&doc=..   text/event-stream

The engine's fan-out (after commit) only wakes the feed; what changed is then read from the
store's `changes_since` index, from the feed's cursor. So catch-up after a dropped connection
(EventSource sends `Last-Event-ID`) and live changes are one loop, nothing is missed, nothing
queues per update, and a record changed many times between two reads is sent once, as it is
now. Reads are at least `FLUSH_INTERVAL` apart: a busy store redraws a row at most a few
times a second.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from ...engine import Engine
from ...errors import BadRequest
from ...fanout import Subscriber
from ...ids import Seq
from ...schema import Schema
from ...store.base import Committed, RecordRow, Store
from ..access import AdminOnly, current_session
from ..sync_views import flat_record

router = APIRouter(prefix="/api/admin", tags=["admin: records"])

FLUSH_INTERVAL = 0.2  # seconds between two reads of the store for one feed
KEEPALIVE = 15.0  # seconds of quiet before a comment line (and a check of the token)
PAGE = 500  # records read at once


class Feeds:
    """The app's open feeds, so that stopping the server can end them first: a stream that
    never ends would hold uvicorn's graceful shutdown until every browser tab closed."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def opened(self) -> None:
        self._loop = asyncio.get_running_loop()

    def stop(self) -> None:
        """End every feed (EventSource reconnects after the restart); safe from a signal."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.stopping.set)


class Wakeup(Subscriber):
    """A subscriber that queues nothing: each commit it wants only sets its event."""

    def __init__(self, name: str, collections: Sequence[str] | None) -> None:
        super().__init__(name, collections=collections)
        self.changed = asyncio.Event()

    def offer(self, committed: Committed) -> None:
        self.changed.set()


@router.get(
    "/feed",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
async def feed(
    request: Request,
    who: AdminOnly,
    since: Annotated[
        int | None, Query(ge=0, description="the log cursor to start after (an event's `id`)")
    ] = None,
    collections: Annotated[
        list[str] | None, Query(description="comma-separated or repeated; default: all")
    ] = None,
    doc: Annotated[str | None, Query(description="only this record: collection/id")] = None,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> StreamingResponse:
    """Records as they change: one `change` event per changed record, its `id` the log cursor.

    First a `ready` event with the cursor the feed starts from; then, for each record changed
    after it, `{"seq", "doc", "collection", "id", "record", "deleted"}` (the record in the
    REST CRUD shape). Reconnecting with `Last-Event-ID` (EventSource does) or `since` resumes
    after that cursor with nothing missed: each record changed since, once, as it is now.
    """
    engine: Engine = request.app.state.engine
    store: Store = request.app.state.store
    names = _collections(engine.schema, collections, doc)
    current = int(await store.cursor())
    start = _start(last_event_id, since, current)
    wakeup = Wakeup(f"feed:{who.name}", names)
    feeds: Feeds = request.app.state.admin_feeds
    feeds.opened()
    ended = asyncio.Event()
    session = current_session(request)
    if session is not None:  # sign-out and revocation end the feed at once
        session.on_end.append(ended.set)
    engine.subscribe(wakeup)  # before the first read: no commit can fall between the two
    events = _events(
        store,
        engine.schema,
        wakeup,
        (ended, feeds.stopping),
        Seq(start),
        names,
        doc,
        who.token_hash,
    )

    def close() -> None:
        engine.unsubscribe(wakeup)
        if session is not None and ended.set in session.on_end:
            session.on_end.remove(ended.set)

    return StreamingResponse(
        _unsubscribing(events, close),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _unsubscribing(
    events: AsyncIterator[str], unsubscribe: Callable[[], None]
) -> AsyncIterator[str]:
    try:
        async for event in events:
            yield event
    finally:
        unsubscribe()


async def _events(
    store: Store,
    schema: Schema,
    wakeup: Wakeup,
    ends: tuple[asyncio.Event, ...],
    cursor: Seq,
    collections: list[str] | None,
    doc: str | None,
    token_hash: str,
) -> AsyncIterator[str]:
    yield "retry: 1000\n" + _event("ready", {"cursor": cursor}, None)
    loop = asyncio.get_running_loop()
    while not any(end.is_set() for end in ends):
        wakeup.changed.clear()
        while True:  # read until nothing is left after the cursor
            rows = await store.changes_since(cursor, collections=collections, limit=PAGE)
            for row in rows:
                if doc is None or row.doc_id == doc:
                    yield _event("change", _change(row, schema), row.last_seq)
            if rows:
                cursor = rows[-1].last_seq
            if len(rows) < PAGE:
                break
        flushed_at = loop.time()
        if not await _wait(wakeup.changed, ends, KEEPALIVE):
            if await store.find_token(token_hash) is None:
                return  # revoked: the token's feeds end with it
            yield ": keepalive\n\n"
            continue
        # Changes that land meanwhile are read together at the next flush.
        await asyncio.sleep(max(0.0, flushed_at + FLUSH_INTERVAL - loop.time()))


async def _wait(changed: asyncio.Event, ends: tuple[asyncio.Event, ...], timeout: float) -> bool:
    """Wait for a change or an end; False after `timeout` seconds of neither."""
    waits = [asyncio.ensure_future(event.wait()) for event in (changed, *ends)]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return bool(done)


def _change(row: RecordRow, schema: Schema) -> dict[str, object]:
    fields = schema.collections[row.collection].fields
    return {
        "seq": row.last_seq,
        "doc": row.doc_id,
        "collection": row.collection,
        "id": row.record_id,
        "record": flat_record(row, fields),
        "deleted": row.is_deleted,
    }


def _event(name: str, data: object, event_id: int | None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _collections(schema: Schema, asked: list[str] | None, doc: str | None) -> list[str] | None:
    names = [n for item in asked or () for n in item.split(",") if n] or None
    if doc is not None:
        collection, slash, record_id = doc.partition("/")
        if not slash or not record_id:
            raise BadRequest(f"doc must be collection/id, got {doc!r}")
        names = [collection]
    for name in names or ():
        schema.collection(name)  # UnknownCollection: 404
    return names


def _start(last_event_id: str | None, since: int | None, current: int) -> int:
    """Where the feed starts: after Last-Event-ID, else `since`, else now."""
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise BadRequest(
                f"Last-Event-ID must be a cursor this feed sent, got {last_event_id!r}"
            )
        since = int(last_event_id)
    if since is None:
        return current
    if since > current:
        raise BadRequest(f"since={since} is past the server's cursor ({current})")
    return since

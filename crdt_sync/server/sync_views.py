"""Pull views in the WatermelonDB sync shape: `/api/sync/initial` and `/api/sync/incremental`.

Both serve the records' materialized JSON views from the store (no CRDT is loaded). The initial
sync streams its answer a store page at a time, so serving a million records holds one page.
Timestamps and page tokens are described in cursors.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..ids import DocId, Seq
from ..schema import Schema
from ..store.base import RecordRow, Store
from .access import Authenticated, device_origin
from .cursors import initial_page_token, parse_initial_page, parse_since, timestamp_of
from .models import PullAnswer
from .telemetry import Telemetry

router = APIRouter(tags=["sync"])

STORE_PAGE = 1000  # records read from the store at a time while streaming
Collections = Annotated[
    list[str] | None,
    Query(description="Collections to sync, comma-separated or repeated; default: all."),
]
# WatermelonDB's `sendCreatedAsUpdated: true` expects every record under `updated`: an app that
# makes ids from data can create an id another device created too, and would otherwise be told
# to create a record it already has (which WatermelonDB logs as an error).
CreatedAsUpdated = Annotated[
    bool,
    Query(
        description="Serve every record under `updated` (for WatermelonDB's "
        "`sendCreatedAsUpdated: true`)."
    ),
]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def resolve_collections(schema: Schema, asked: Sequence[str] | None) -> list[str]:
    """The collections asked for, sorted (the store's doc id order); all when none are named."""
    names = {name.strip() for raw in asked or () for name in raw.split(",") if name.strip()}
    for name in sorted(names):
        schema.collection(name)  # UnknownCollection: 404
    return sorted(names or schema.collections)


def flat_record(row: RecordRow, fields: Iterable[str]) -> dict[str, Any]:
    """The pulled form of a record: id and every field, unset ones null; never _status/_changed."""
    view = row.view
    out: dict[str, Any] = {"id": row.record_id}
    for name in fields:
        out[name] = view.get(name)
    return out


@router.get("/api/sync/initial", responses={200: {"model": PullAnswer}})
async def initial(
    request: Request,
    who: Authenticated,
    collections: Collections = None,
    limit: Annotated[int, Query(ge=1, le=1_000_000, description="Records per page.")] = 10_000,
    page: Annotated[str | None, Query(description="The `next` token of the previous page.")] = None,
    created_as_updated: CreatedAsUpdated = False,
) -> StreamingResponse:
    """Every live record, paged, all pages under the timestamp of the first one.

    Changes made while paging come with the next incremental pull from that timestamp. The
    answer: `{"changes": {collection: {"created": [..], "updated": [], "deleted": []}},
    "timestamp": N, "next": TOKEN | null}` (with `created_as_updated`, the records are under
    `updated` instead).
    """
    store: Store = request.app.state.store
    schema: Schema = request.app.state.engine.schema
    names = resolve_collections(schema, collections)
    current = await store.cursor()
    stable, after = parse_initial_page(page, current) if page else (current, None)
    # The first page is read here, so that a store that cannot be read is answered 503.
    start = next((name for name in names if not _is_past(name, after)), None)
    first = (
        await store.scan_snapshot(collections=[start], after=after, limit=min(STORE_PAGE, limit))
        if start is not None
        else []
    )
    telemetry: Telemetry = request.app.state.telemetry
    telemetry.note_pull("initial", who.name, device_origin(request, who), int(stable))
    body = _initial_body(store, schema, names, stable, after, limit, created_as_updated, first)
    return StreamingResponse(body, media_type="application/json")


async def _initial_body(
    store: Store,
    schema: Schema,
    names: list[str],
    stable: Seq,
    after: DocId | None,
    limit: int,
    created_as_updated: bool,
    first: list[RecordRow],
) -> AsyncIterator[bytes]:
    """The answer, a store page at a time; `first` is the first page, read by the handler."""
    # The records go in one list: `created`, or `updated` after an empty `created`.
    head = '"created":[],"updated":[' if created_as_updated else '"created":['
    tail = '],"deleted":[]}' if created_as_updated else '],"updated":[],"deleted":[]}'
    yield b'{"changes":{'
    served = 0
    last = after
    pending: list[RecordRow] | None = first
    for index, name in enumerate(names):
        yield (("," if index else "") + _encode(name) + ":{" + head).encode()
        fields = schema.collections[name].fields
        is_first = True
        while served < limit and not _is_past(name, last):
            wanted = min(STORE_PAGE, limit - served)
            if pending is not None:  # the first scan is always this one
                rows, pending = pending, None
            else:
                rows = await store.scan_snapshot(collections=[name], after=last, limit=wanted)
            if rows:
                last = rows[-1].doc_id
            # Records created after the first page's timestamp come with the next pull instead.
            kept = [_encode(flat_record(row, fields)) for row in rows if row.first_seq <= stable]
            if kept:
                yield (("" if is_first else ",") + ",".join(kept)).encode()
                is_first = False
                served += len(kept)
            if len(rows) < wanted:
                break
        yield tail.encode()
    more = (
        served >= limit
        and last is not None
        and bool(await store.snapshot(collections=names, after=last, limit=1))
    )
    token = _encode(initial_page_token(stable, last)) if more and last is not None else "null"
    yield f'}},"timestamp":{timestamp_of(stable)},"next":{token}}}'.encode()


def _is_past(collection: str, last: DocId | None) -> bool:
    """Whether paging has gone past every doc id of `collection` (`name/...` sorts before
    `name0`)."""
    return last is not None and last >= f"{collection}0"


@router.get("/api/sync/incremental", responses={200: {"model": PullAnswer}})
async def incremental(
    request: Request,
    who: Authenticated,
    since: Annotated[str | None, Query(description="The timestamp of your last pull.")] = None,
    collections: Collections = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most records per answer.")] = 10_000,
    created_as_updated: CreatedAsUpdated = False,
) -> JSONResponse:
    """What changed since a timestamp: `created`, `updated`, `deleted` (ids), new `timestamp`.

    A record the pulling device created itself (its `X-Client-Id`, else its token name) comes
    under `updated`. When more than `limit` records changed, `next` is the timestamp to pull
    from again (the same as `timestamp`), else null. With `created_as_updated`, `created` is
    always empty and every changed record comes under `updated`.
    """
    store: Store = request.app.state.store
    schema: Schema = request.app.state.engine.schema
    names = resolve_collections(schema, collections)
    current = await store.cursor()
    cursor = parse_since(since, current)
    origin = device_origin(request, who)
    rows = await store.changes_since(cursor, collections=names, limit=limit)
    # A change committed after `current` was read waits for the next pull: the timestamp
    # must never pass a change the answer does not hold.
    kept = [row for row in rows if row.last_seq <= current]
    is_cut = len(rows) >= limit
    covered = (kept[-1].last_seq if kept else cursor) if is_cut else current
    changes: dict[str, dict[str, list[Any]]] = {
        name: {"created": [], "updated": [], "deleted": []} for name in names
    }
    for row in kept:
        bucket = changes[row.collection]
        if row.is_deleted:
            bucket["deleted"].append(row.record_id)
        else:
            is_created = row.first_seq > cursor and row.created_by != origin
            kind = "created" if is_created and not created_as_updated else "updated"
            bucket[kind].append(flat_record(row, schema.collections[row.collection].fields))
    telemetry: Telemetry = request.app.state.telemetry
    telemetry.note_pull("incremental", who.name, origin, int(covered))
    timestamp = timestamp_of(covered)
    return JSONResponse(
        {"changes": changes, "timestamp": timestamp, "next": timestamp if is_cut else None}
    )

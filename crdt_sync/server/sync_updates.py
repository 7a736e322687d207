"""`GET /api/sync/updates`: the update log after a timestamp, as CBOR (server layer).

The REST twin of `/ws` catch-up, for CRDT clients that cannot hold a websocket: the same log
entries, in the same seq order, each as `{doc, update, seq}`, a page of the log per answer
instead of one frame each. The answer is streamed a store page at a time, so its size costs
the server one page of memory; `limit` and a byte budget bound what the client must hold.

Rule: `since` is a sync *timestamp*, as on every `/api/sync/*` view (cursors.py): the log
position after the last pull, i.e. the log cursor + 1; `since=1` is the whole log. The answer
names both the `cursor` it covers (what `/ws` calls a cursor) and the `timestamp` to pull from
next (that cursor + 1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

import cbor2
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from ..errors import BadRequest
from ..ids import Seq
from ..store.base import LogEntry, Store
from .access import Authenticated, device_origin
from .cursors import parse_since, timestamp_of
from .errors import error_response
from .models import ERROR_RESPONSES
from .sync_views import Collections, resolve_collections
from .telemetry import Telemetry

router = APIRouter(tags=["sync"], responses=ERROR_RESPONSES)

CBOR = "application/cbor"
STORE_PAGE = 500  # log entries read from the store at a time (as /ws catch-up)
ANSWER_BUDGET = 8 << 20  # bytes of updates after which an answer stops (and says `more`)
# A definite map of 4 keys whose first value, `updates`, is an indefinite-length array: the
# entries can be written as they are read, and the cursor they cover after them.
_HEAD = b"\xa4" + cbor2.dumps("updates") + b"\x9f"
_BREAK = b"\xff"

UPDATES_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The log entries after `since`, in seq order.",
        "content": {
            CBOR: {
                "schema": {
                    "type": "object",
                    "required": ["updates", "cursor", "timestamp", "more"],
                    "properties": {
                        "updates": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["doc", "update", "seq"],
                                "properties": {
                                    "doc": {"type": "string", "description": "document id"},
                                    "update": {
                                        "type": "string",
                                        "format": "binary",
                                        "description": "a Yjs update (CBOR byte string)",
                                    },
                                    "seq": {"type": "integer", "minimum": 1},
                                },
                            },
                        },
                        "cursor": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "the log cursor this answer covers",
                        },
                        "timestamp": {
                            "type": "integer",
                            "minimum": 1,
                            "description": "`cursor + 1`: the `since` of the next pull",
                        },
                        "more": {
                            "type": "boolean",
                            "description": "the answer was cut: pull again from `timestamp`",
                        },
                    },
                }
            }
        },
    },
}


@router.get(
    "/api/sync/updates",
    response_class=StreamingResponse,
    response_model=None,
    responses=UPDATES_RESPONSE,
)
async def updates(
    request: Request,
    who: Authenticated,
    since: Annotated[
        str | None,
        Query(
            description="The `timestamp` of your last pull (log cursor + 1); 1 for the whole log.",
        ),
    ] = None,
    collections: Collections = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most entries per answer.")] = 10_000,
) -> Response:
    """The update log after `since`, in seq order, as `application/cbor`:
    `{"updates": [{"doc", "update", "seq"}, ..], "cursor": C, "timestamp": C + 1, "more": bool}`.

    What `/ws` sends on catch-up, a page at a time: apply the updates, keep `cursor` with them,
    and while `more`, pull again with `since=timestamp`. An answer stops after `limit` entries
    or about 8 MiB of updates. A `since` this server did not issue is refused (400) with
    `details.timestamp`, the server's current timestamp: a client ahead of it starts over at 1.
    """
    store: Store = request.app.state.store
    names = resolve_collections(request.app.state.engine.schema, collections)
    current = await store.cursor()
    try:
        if since is None or since in ("", "null"):
            raise BadRequest(
                "since is required: the timestamp of your last pull, or 1 for the whole log"
            )
        cursor = parse_since(since, current, start_over="pull from since=1 to start over")
    except BadRequest as exc:
        return error_response(exc, {"timestamp": timestamp_of(current)})
    # The first page is read here, so that a store that cannot be read is answered 503.
    first = await store.log_since(cursor, collections=names, limit=min(STORE_PAGE, limit + 1))
    telemetry: Telemetry = request.app.state.telemetry
    origin = device_origin(request, who)

    def note(covered: Seq) -> None:
        telemetry.note_pull("updates", who.name, origin, int(covered))

    body = _updates_body(store, names, cursor, current, limit, first, note)
    return StreamingResponse(body, media_type=CBOR)


async def _updates_body(
    store: Store,
    names: Sequence[str],
    cursor: Seq,
    current: Seq,
    limit: int,
    page: list[LogEntry],
    note: Callable[[Seq], None],
) -> AsyncIterator[bytes]:
    yield _HEAD
    served, size, last = 0, 0, cursor
    is_cut = False
    while True:
        chunk: list[bytes] = []
        for entry in page:
            if served >= limit or size >= ANSWER_BUDGET:
                is_cut = True
                break
            chunk.append(
                cbor2.dumps({"doc": entry.doc_id, "update": entry.update, "seq": int(entry.seq)})
            )
            served, size, last = served + 1, size + len(entry.update), entry.seq
        if chunk:
            yield b"".join(chunk)
        if is_cut or len(page) < STORE_PAGE:
            break
        page = await store.log_since(
            last, collections=names, limit=min(STORE_PAGE, limit - served + 1)
        )
    # Not cut: the log held nothing more when the last page was read, so everything up to
    # `current` (read before the first page) is covered too, whichever collections it touched.
    covered = last if is_cut else Seq(max(int(last), int(current)))
    note(covered)
    tail = {"cursor": int(covered), "timestamp": timestamp_of(covered), "more": is_cut}
    yield _BREAK + b"".join(cbor2.dumps(key) + cbor2.dumps(value) for key, value in tail.items())

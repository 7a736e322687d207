"""Document views: one record as JSON, and its CRDT state for CRDT clients (server layer).

`/update` and `/state-vector` serve the committed state (what the store holds), as `/yjs`
does to a joining peer. A record nobody has written is the empty document there, not a 404:
a CRDT client creates a record by sending its first update. Reading is open to device tokens;
`POST .../update` (the REST fallback for CRDT writes) needs an admin token.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from ..engine import Engine
from ..errors import BadRequest, InvalidUpdate, RecordNotFound
from ..ids import DocId, make_doc_id
from ..schema import Schema
from ..store.base import Store
from ..yupdate import MalformedUpdate, read_state_vector
from .access import AdminOnly, Authenticated, device_origin
from .bodies import decode_base64, media_type, read_body
from .models import ERROR_RESPONSES
from .sync_views import flat_record

router = APIRouter(tags=["documents"], responses=ERROR_RESPONSES)
OCTETS = "application/octet-stream"
BINARY_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}}}
}


def _doc_id(request: Request, collection: str, record_id: str) -> DocId:
    engine: Engine = request.app.state.engine
    engine.schema.collection(collection)  # UnknownCollection: 404
    return make_doc_id(collection, record_id)  # SchemaViolation on a bad id: 422


@router.get("/api/docs/{collection}/{record_id}")
async def document_view(
    request: Request, who: Authenticated, collection: str, record_id: str
) -> JSONResponse:
    """The record's JSON view with where it stands in the log; deleted records included."""
    doc_id = _doc_id(request, collection, record_id)
    store: Store = request.app.state.store
    row = await store.get_record(doc_id)
    if row is None:
        raise RecordNotFound(doc_id, "no such record")
    schema: Schema = request.app.state.engine.schema
    return JSONResponse(
        {
            "doc": doc_id,
            "record": flat_record(row, schema.collections[collection].fields),
            "is_deleted": row.is_deleted,
            "seq": row.last_seq,
            "created_seq": row.first_seq,
            "created_by": row.created_by,
            "updated_at": row.updated_at,
        }
    )


@router.get(
    "/api/docs/{collection}/{record_id}/state-vector",
    response_class=Response,
    responses=BINARY_RESPONSE,
)
async def state_vector(
    request: Request, who: Authenticated, collection: str, record_id: str
) -> Response:
    """The committed document's Yjs state vector."""
    engine: Engine = request.app.state.engine
    document = await engine.committed_state(_doc_id(request, collection, record_id))
    return Response(document.get_state(), media_type=OCTETS)


@router.get(
    "/api/docs/{collection}/{record_id}/update", response_class=Response, responses=BINARY_RESPONSE
)
async def document_update(
    request: Request,
    who: Authenticated,
    collection: str,
    record_id: str,
    sv: Annotated[
        str | None, Query(description="base64 state vector: answer only the diff")
    ] = None,
) -> Response:
    """The whole committed state as one Yjs update, or the diff against a state vector `sv`."""
    engine: Engine = request.app.state.engine
    doc_id = _doc_id(request, collection, record_id)
    vector = decode_base64(sv, "sv") if sv is not None else None
    if vector is not None:
        try:
            read_state_vector(vector)  # client ids past 2**53 included: JavaScript cannot hold them
        except MalformedUpdate as exc:
            raise InvalidUpdate(doc_id, f"sv is not a Yjs state vector: {exc}") from None
    document = await engine.committed_state(doc_id)
    try:
        update = document.get_update(vector) if vector is not None else document.get_update()
    except ValueError:
        raise InvalidUpdate(doc_id, "sv is not a Yjs state vector") from None
    return Response(update, media_type=OCTETS)


@router.post(
    "/api/docs/{collection}/{record_id}/update",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def apply_update(
    request: Request, who: AdminOnly, collection: str, record_id: str
) -> JSONResponse:
    """Apply a binary Yjs update through the one write path; answers the record after it."""
    doc_id = _doc_id(request, collection, record_id)
    media = media_type(request, OCTETS)
    if media != OCTETS:
        raise BadRequest(f"Content-Type must be {OCTETS}, got {media}")
    update = await read_body(request)
    engine: Engine = request.app.state.engine
    result = await engine.write(doc_id, update, origin=device_origin(request, who))
    return JSONResponse(
        {
            "doc": doc_id,
            "seq": result.seq,
            "record": result.view,
            "is_deleted": result.is_deleted,
            "changed": list(result.changed_fields),
        }
    )

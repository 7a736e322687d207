"""A record's history, the record at any point, restores and merged text edits (server layer).

    GET  /api/{collection}/{id}/history          every stored update: when, who, from -> to
    GET  /api/{collection}/{id}/at/{seq}         the record as it was after update `seq`
    POST /api/{collection}/{id}/restore          earlier values written again, as a new write
    POST /api/{collection}/{id}/text/{field}     a form's text edit, merged (text_merge.py)

History is the log replayed through `LiveRecord.apply` (`history.py`, as `crdt-sync docs
history`); every write here is an `Engine.patch` or `Engine.write`, so it syncs to every
device like any other. Admin tokens only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ...engine import Engine, WriteResult
from ...errors import RecordNotFound
from ...history import Step, replay, step_at
from ...ids import DocId, make_doc_id
from ...schema import Collection
from ...store.base import Store
from ...text_merge import text_edit_update
from ..access import AdminOnly, device_origin
from ..models import ERROR_RESPONSES

router = APIRouter(tags=["admin: records"], responses=ERROR_RESPONSES)
RECORD = "/api/{collection}/{record_id}"


class FieldChange(BaseModel):
    field: str
    before: Any = Field(alias="from")
    after: Any = Field(alias="to")


class HistoryStep(BaseModel):
    seq: int
    at: float = Field(description="unix seconds of the commit")
    origin: str = Field(description="who wrote it: a token name or a device's client id")
    token: str = Field(description="the name of the token it was written with ('' for none)")
    door: str = Field(
        description="how it came in: yjs, ws, rest, admin, cli or import ('' if not known)"
    )
    is_snapshot: bool = Field(description="compaction folded earlier updates into this one")
    deletes: bool
    changes: list[FieldChange]


class RecordAt(BaseModel):
    seq: int
    record: dict[str, Any]
    is_deleted: bool


class Written(BaseModel):
    doc: str
    seq: int | None = Field(description="None: it changed nothing")
    record: dict[str, Any]
    is_deleted: bool


class RestoreRequest(BaseModel):
    seq: int = Field(description="restore the values the record had after this update")
    fields: list[str] | None = Field(None, description="only these fields; default: all")
    as_: str | None = Field(
        None, alias="as", description="write them to a new record with this id (for a deleted one)"
    )

    model_config = {"populate_by_name": True, "extra": "forbid"}


class TextEdit(BaseModel):
    base_seq: int = Field(description="the record's `seq` when the form was opened")
    text: str = Field(description="the whole text as the form has it now")

    model_config = {"extra": "forbid"}


@router.get(f"{RECORD}/history", response_model=list[HistoryStep], response_model_by_alias=True)
async def history(
    request: Request, who: AdminOnly, collection: str, record_id: str
) -> list[dict[str, Any]]:
    """Every update of the record, oldest first, with what each changed (from -> to)."""
    spec, doc_id = _record(request, collection, record_id)
    steps = await _steps(request, doc_id)
    answer = []
    before: dict[str, Any] = {}
    for step in steps:
        changes = [
            {"field": name, "from": before.get(name), "to": step.view.get(name)}
            for name in step.touched
            if name in spec.fields
        ]
        answer.append(
            {
                "seq": step.seq,
                "at": step.at,
                "origin": step.origin,
                "token": step.origin.token,
                "door": step.origin.door,
                "is_snapshot": step.is_snapshot,
                "deletes": step.deletes,
                "changes": changes,
            }
        )
        before = step.view
    return answer


@router.get(f"{RECORD}/at/{{seq}}", response_model=RecordAt)
async def record_at(
    request: Request, who: AdminOnly, collection: str, record_id: str, seq: int
) -> RecordAt:
    """The record as it was just after update `seq` (its last update at or before it)."""
    spec, doc_id = _record(request, collection, record_id)
    step = step_at(doc_id, await _steps(request, doc_id), seq)
    return RecordAt(
        seq=step.seq, record=_flat(spec, record_id, step.view), is_deleted=step.is_deleted
    )


@router.post(f"{RECORD}/restore", response_model=Written)
async def restore(
    request: Request, who: AdminOnly, collection: str, record_id: str, body: RestoreRequest
) -> Written:
    """Write the values the record had after `seq` again: one field, several, or all.

    A new write like any other (it syncs to every device; history shows it). Deletes are
    final, so a deleted record is restored as a copy: give `as`, the new record's id.
    """
    spec, doc_id = _record(request, collection, record_id)
    step = step_at(doc_id, await _steps(request, doc_id), body.seq)
    names = body.fields if body.fields is not None else list(spec.fields)
    for name in names:
        spec.field(name, doc_id)  # SchemaViolation for an unknown field
    values = {name: step.view.get(name) for name in names}
    engine: Engine = request.app.state.engine
    origin = device_origin(request, who)
    if body.as_ is not None:
        target = make_doc_id(collection, body.as_)
        created = {k: v for k, v in values.items() if v is not None}
        result = await engine.patch(target, created, origin=origin, creating=True)
        return _written(spec, body.as_, result)
    row = await _store(request).get_record(doc_id)
    if row is not None and row.is_deleted:
        raise RecordNotFound(doc_id, "record is deleted (deletes are final): restore it with 'as'")
    return _written(
        spec, record_id, await engine.patch(doc_id, values, origin=origin, creating=False)
    )


@router.post(f"{RECORD}/text/{{field}}", response_model=Written)
async def edit_text(
    request: Request, who: AdminOnly, collection: str, record_id: str, field: str, body: TextEdit
) -> Written:
    """Replace a text field's content as edited from the version at `base_seq`, merged with
    every edit made since (by devices, /yjs clients, other pages) rather than over them."""
    spec, doc_id = _record(request, collection, record_id)
    row = await _store(request).get_record(doc_id)
    if row is None:
        raise RecordNotFound(doc_id, "no such record")
    if row.is_deleted:
        raise RecordNotFound(doc_id, "record is deleted")
    log = await _store(request).history(doc_id)
    update = text_edit_update(spec, doc_id, log, body.base_seq, field, body.text)
    engine: Engine = request.app.state.engine
    result = await engine.write(doc_id, update, origin=device_origin(request, who))
    return _written(spec, record_id, result)


def _record(request: Request, collection: str, record_id: str) -> tuple[Collection, DocId]:
    engine: Engine = request.app.state.engine
    spec = engine.schema.collection(collection)  # UnknownCollection: 404
    return spec, make_doc_id(collection, record_id)  # SchemaViolation on a bad id


async def _steps(request: Request, doc_id: DocId) -> list[Step]:
    log = await _store(request).history(doc_id)
    if not log:
        raise RecordNotFound(doc_id, "no such record")
    engine: Engine = request.app.state.engine
    return replay(engine.records, doc_id, log)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _flat(spec: Collection, record_id: str, view: dict[str, Any]) -> dict[str, Any]:
    return {"id": record_id, **{name: view.get(name) for name in spec.fields}}


def _written(spec: Collection, record_id: str, result: WriteResult) -> Written:
    return Written(
        doc=result.doc_id,
        seq=result.seq,
        record=_flat(spec, record_id, result.view),
        is_deleted=result.is_deleted,
    )

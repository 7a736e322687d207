"""`POST /api/sync/outgoing`: a device's changes, applied in one transaction (server layer).

Takes WatermelonDB's push body exactly as `synchronize()` sends it, and CRDT updates from CRDT
clients (base64 in JSON, or raw bytes in an `application/cbor` body). A row that breaks the
schema is refused alone and named in `experimentalRejectedIds`, so one bad row never wedges a
device's sync; the rest goes through `Engine.write_many` and commits together.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from ..batches import BatchOutcome, BatchWrite
from ..engine import Engine
from ..errors import BadRequest, KeyAlreadyUsed
from ..ids import DocId, Seq
from .access import Authenticated, device_origin
from .bodies import decode_base64, media_type, parse_cbor_map, parse_json_object, read_body
from .models import PushAnswer
from .telemetry import Telemetry

router = APIRouter(tags=["sync"])

WATERMELON_COLUMNS = frozenset({"id", "_status", "_changed"})  # never stored
TABLE_KEYS = frozenset({"created", "updated", "deleted"})
MAX_KEY_LENGTH = 200


@dataclass(slots=True)
class Push:
    writes: list[BatchWrite] = field(default_factory=list)
    batch_id: str | None = None


@router.post(
    "/api/sync/outgoing",
    responses={200: {"model": PushAnswer}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PushBody"}},
                "application/cbor": {"schema": {"$ref": "#/components/schemas/PushBody"}},
            },
        }
    },
)
async def outgoing(
    request: Request,
    who: Authenticated,
    idempotency_key: Annotated[
        str | None, Header(description="Retry-safe: a repeat returns the first answer.")
    ] = None,
) -> Response:
    """Apply a device's changes; field by field, one transaction, bad rows refused alone.

    Answer: `{"experimentalRejectedIds": {collection: [id]}, "rejected": [{collection, id,
    code, message}], "applied": [{collection, id, action, seq, changed}], "cursor": N}`.
    """
    body = await read_body(request)
    if _is_cbor(media_type(request, "application/json")):
        push = parse_push(parse_cbor_map(body), is_cbor=True)
    else:
        push = parse_push(parse_json_object(body), is_cbor=False)
    key = idempotency_key if idempotency_key is not None else push.batch_id
    if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise BadRequest(f"Idempotency-Key / batch_id must be 1-{MAX_KEY_LENGTH} characters")
    engine: Engine = request.app.state.engine
    telemetry: Telemetry = request.app.state.telemetry
    telemetry.pushes += 1
    # Keys are per token, so one device can never replay or block another's batch.
    scoped = None if key is None else f"{who.name}\x00{key}"
    async with _one_at_a_time(request.app.state.push_locks, scoped):
        if scoped is not None:
            first = await engine.store.recall(scoped)
            if first is not None:
                return _answer(first, replayed=True)
        current = await engine.store.cursor()
        try:
            outcomes = await engine.write_many(
                push.writes,
                origin=device_origin(request, who),
                idempotency_key=scoped,
                answer=lambda outcomes: encode_answer(outcomes, current),
            )
        except KeyAlreadyUsed:
            # The same key committed meanwhile through another node (or process): replay it.
            first = await engine.store.recall(scoped) if scoped is not None else None
            if first is None:
                raise
            return _answer(first, replayed=True)
    return _answer(encode_answer(outcomes, current), replayed=False)


def _answer(body: bytes, *, replayed: bool) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(body, media_type="application/json", headers=headers)


def _is_cbor(media: str) -> bool:
    if media == "application/cbor":
        return True
    if media not in ("application/json", ""):
        raise BadRequest(f"Content-Type must be application/json or application/cbor, got {media}")
    return False


@dataclass(slots=True)
class KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@asynccontextmanager
async def _one_at_a_time(locks: dict[str, KeyLock], key: str | None) -> AsyncIterator[None]:
    """Serialise requests with the same key, so a concurrent retry waits and then replays."""
    if key is None:
        yield
        return
    entry = locks.setdefault(key, KeyLock())
    entry.users += 1
    try:
        async with entry.lock:
            yield
    finally:
        entry.users -= 1
        if not entry.users:
            del locks[key]


def parse_push(body: Mapping[str, Any], *, is_cbor: bool) -> Push:
    """The writes of a push body, in order: per table created, updated, deleted; then updates.

    Raises BadRequest (nothing applied) when the body is not shaped as a push; values that
    break the schema are left for the engine to refuse row by row.
    """
    push = Push()
    batch_id = body.get("batch_id")
    if batch_id is not None and not isinstance(batch_id, str):
        raise BadRequest("batch_id must be a string")
    push.batch_id = batch_id
    last_pulled = body.get("lastPulledAt")
    if last_pulled is not None and (
        isinstance(last_pulled, bool) or not isinstance(last_pulled, int | float)
    ):
        raise BadRequest("lastPulledAt must be a number or null")
    changes, updates = body.get("changes"), body.get("updates")
    if changes is None and updates is None:
        raise BadRequest("a push has 'changes' (WatermelonDB rows) and/or 'updates' (CRDT updates)")
    if changes is not None:
        if not isinstance(changes, dict):
            raise BadRequest("changes must be an object of tables")
        for table, table_changes in changes.items():
            push.writes += _table_writes(str(table), table_changes)
    if updates is not None:
        push.writes += _update_writes(updates, is_cbor)
    return push


def _table_writes(table: str, changes: Any) -> list[BatchWrite]:
    where = f"changes.{table}"
    if not isinstance(changes, dict):
        raise BadRequest(f"{where} must be an object with created, updated, deleted")
    unknown = set(changes) - TABLE_KEYS
    if unknown:
        raise BadRequest(
            f"{where}: unknown key {sorted(unknown)[0]!r} (expected created, updated, deleted)"
        )
    writes: list[BatchWrite] = []
    for kind in ("created", "updated"):
        for index, row in enumerate(_list(changes.get(kind, []), f"{where}.{kind}")):
            record_id, fields = _row(row, f"{where}.{kind}[{index}]", narrow=kind == "updated")
            writes.append(
                BatchWrite(DocId(f"{table}/{record_id}"), patch=fields, creating=kind == "created")
            )
    for index, record_id in enumerate(_list(changes.get("deleted", []), f"{where}.deleted")):
        if not isinstance(record_id, str):
            raise BadRequest(f"{where}.deleted[{index}] must be a record id string")
        writes.append(BatchWrite(DocId(f"{table}/{record_id}"), is_delete=True))
    return writes


def _row(row: Any, where: str, *, narrow: bool) -> tuple[str, dict[str, Any]]:
    """A raw WatermelonDB row -> (id, the fields to write).

    `_status` and `_changed` are never stored. For an updated row, a non-empty `_changed` (the
    columns the device changed) narrows the write to those columns, so a full-row push does not
    overwrite what others changed meanwhile. Every column still has to exist in the schema.
    """
    if not isinstance(row, dict):
        raise BadRequest(f"{where} must be a row object")
    record_id = row.get("id")
    if not isinstance(record_id, str):
        raise BadRequest(f"{where}.id must be a string")
    changed = row.get("_changed", "")
    if changed is None:
        changed = ""
    if not isinstance(changed, str):
        raise BadRequest(f"{where}._changed must be a comma-separated string of columns")
    fields = {name: value for name, value in row.items() if name not in WATERMELON_COLUMNS}
    columns = {name.strip() for name in changed.split(",") if name.strip()}
    if narrow and columns:
        fields = {name: value for name, value in fields.items() if name in columns}
    return record_id, fields


def _update_writes(updates: Any, is_cbor: bool) -> list[BatchWrite]:
    writes = []
    for index, item in enumerate(_list(updates, "updates")):
        where = f"updates[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("doc"), str):
            raise BadRequest(f"{where} must be an object with 'doc' (collection/id) and 'update'")
        raw = item.get("update")
        if is_cbor and isinstance(raw, bytes):
            update = raw
        else:
            update = decode_base64(raw, f"{where}.update")
        writes.append(BatchWrite(DocId(item["doc"]), update=update))
    return writes


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be an array")
    return value


def encode_answer(outcomes: list[BatchOutcome], cursor_before: Seq) -> bytes:
    """The push answer; also what an idempotency key keeps (so it must depend only on outcomes)."""
    rejected_ids: dict[str, list[str]] = defaultdict(list)
    rejected: list[dict[str, Any]] = []
    applied: list[dict[str, Any]] = []
    cursor = int(cursor_before)
    for outcome in outcomes:
        collection, _, record_id = str(outcome.write.doc_id).partition("/")
        if outcome.error is not None:
            rejected_ids[collection].append(record_id)
            rejected.append(
                {
                    "collection": collection,
                    "id": record_id,
                    "code": outcome.error.code,
                    "message": outcome.error.message,
                }
            )
            continue
        result = outcome.result
        assert result is not None  # an outcome holds a result or an error, by construction
        if result.seq is not None:
            cursor = max(cursor, int(result.seq))
        applied.append(
            {
                "collection": collection,
                "id": record_id,
                "action": _action(outcome),
                "seq": result.seq,
                "changed": list(result.changed_fields),
            }
        )
    answer = {
        "experimentalRejectedIds": dict(rejected_ids),
        "rejected": rejected,
        "applied": applied,
        "cursor": cursor,
    }
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()


def _action(outcome: BatchOutcome) -> str:
    result = outcome.result
    assert result is not None
    if result.is_ignored and not outcome.write.is_delete:
        return "ignored"  # the record is deleted, and a delete is final
    if result.seq is None:
        return "unchanged"
    if outcome.write.is_delete:
        return "deleted"
    return "created" if result.is_new else "updated"

"""Getting a store ready to serve: the first admin token, and demo records."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

from ..engine import Engine
from ..errors import RecordExists
from ..ids import DocId, Origin, make_doc_id
from ..schema import Schema
from ..served_schema import settle_schema
from ..store import Store
from .auth import create_token

DEMO_RECORDS: dict[str, list[dict[str, object]]] = {
    "contacts": [
        {
            "id": "ada",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "company": "Analytical",
            "notes": "Met at the engine fair; wants a demo.",
        },
        {
            "id": "grace",
            "name": "Grace Hopper",
            "email": "grace@example.com",
            "phone": "+1 555 0100",
            "company": "Navy",
        },
        {"id": "alan", "name": "Alan Turing", "email": "alan@example.com", "company": "Bletchley"},
    ],
    "deals": [
        {
            "id": "engine",
            "title": "Difference engine",
            "amount": 12000,
            "currency": "GBP",
            "stage": "proposal",
            "contact_id": "ada",
            "close_date": "2027-01-15",
        },
        {
            "id": "cobol",
            "title": "Compiler licence",
            "amount": 4500,
            "currency": "USD",
            "stage": "qualified",
            "contact_id": "grace",
        },
    ],
    "tasks": [
        {
            "id": "call-ada",
            "title": "Call Ada about the proposal",
            "done": False,
            "due_at": "2026-12-01T09:00:00Z",
            "contact_id": "ada",
            "deal_id": "engine",
        },
        {
            "id": "send-docs",
            "title": "Send compiler docs",
            "done": True,
            "contact_id": "grace",
            "deal_id": "cobol",
        },
    ],
}


@dataclass(frozen=True, slots=True)
class Prepared:
    admin_token: str | None  # a new admin token, if the store had no token yet
    schema: Schema  # the schema to serve: the store's own (served_schema.settle_schema)
    seeded: list[DocId]  # demo records created now (not those an earlier --demo made)


async def prepare_store(
    store: Store, schema: Schema | None, *, demo: bool, migrate_schema: bool = False
) -> Prepared:
    """Settle an open store's schema, make its first admin token, seed a demo.

    The store stays open for the server to serve from (`crdt-sync serve` opens it once).

    Raises:
        SchemaMismatch: `schema` is not the store's and `migrate_schema` is false, or stored
            records break the schema it would record.
    """
    settled = await settle_schema(store, schema, migrate=migrate_schema)
    token = None
    if not await store.list_tokens():
        token = await create_token(store, name="admin", role="admin")
    seeded: list[DocId] = []
    if demo:
        engine = Engine(store, settled)
        for collection, rows in DEMO_RECORDS.items():
            if collection not in settled.collections:
                continue
            for row in rows:
                fields = {k: v for k, v in row.items() if k != "id"}
                doc_id = make_doc_id(collection, str(row["id"]))
                with suppress(RecordExists):  # seeded by an earlier run
                    await engine.patch(doc_id, fields, origin=Origin("demo"), creating=True)
                    seeded.append(doc_id)
        await engine.settle()
        engine.detach()  # the server's own engine serves this store from now on
    return Prepared(token, settled, seeded)

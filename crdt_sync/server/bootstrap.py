"""Getting a store ready to serve: the first admin token, and demo records."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from ..engine import Engine
from ..errors import RecordExists
from ..ids import Origin, make_doc_id
from ..schema import Schema
from ..store import store_at
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


async def prepare_store(db: Path | str, schema: Schema, *, demo: bool) -> str | None:
    """Create the store if needed; return a new admin token if it had none, else None.

    `db` is an SQLite file, or a PostgreSQL URL as a str.
    """
    async with store_at(db) as store:
        token = None
        if not await store.list_tokens():
            token = await create_token(store, name="admin", role="admin")
        if demo:
            engine = Engine(store, schema)
            for collection, rows in DEMO_RECORDS.items():
                if collection not in schema.collections:
                    continue
                for row in rows:
                    fields = {k: v for k, v in row.items() if k != "id"}
                    doc_id = make_doc_id(collection, str(row["id"]))
                    with suppress(RecordExists):  # seeded by an earlier run
                        await engine.patch(doc_id, fields, origin=Origin("demo"), creating=True)
        return token

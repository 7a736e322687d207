"""Helpers for the replica tests: replicas on a running server, admin edits, stored views."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crdt_sync.client import Backoff, Replica, SyncStatus
from crdt_sync.engine import Engine
from crdt_sync.ids import DocId, Origin, split_doc_id
from crdt_sync.schema import DEFAULT_SCHEMA, Collection, Field, FieldKind, Schema
from crdt_sync.store import SQLiteStore

from .conftest import RunningServer

NOTES = "met at the fair"

FAST_BACKOFF = {"initial": 0.05, "maximum": 0.5}


def replica_on(server: RunningServer | str, path: Path, token: str, **options: Any) -> Replica:
    url = server if isinstance(server, str) else server.http
    options.setdefault("backoff", Backoff(**FAST_BACKOFF))  # type: ignore[arg-type]
    return Replica(path, server=url, token=token, **options)


async def admin_patch(
    server: RunningServer, doc_id: str, patch: Mapping[str, Any], *, creating: bool = False
) -> None:
    """An admin's edit, through the engine's one write path (what REST CRUD calls)."""
    engine: Engine = server.app.state.engine  # type: ignore[attr-defined]
    await engine.patch(DocId(doc_id), patch, origin=Origin("admin"), creating=creating)


async def admin_delete(server: RunningServer, doc_id: str) -> None:
    engine: Engine = server.app.state.engine  # type: ignore[attr-defined]
    await engine.delete(DocId(doc_id), origin=Origin("admin"))


async def server_view(server: RunningServer, doc_id: str) -> dict[str, Any] | None:
    """The record as the server's store holds it; None if absent or deleted."""
    engine: Engine = server.app.state.engine  # type: ignore[attr-defined]
    view, deleted = await engine.view(DocId(doc_id))
    return None if deleted or all(v is None for k, v in view.items() if k != "id") else view


async def stored(
    server: RunningServer, doc_id: str, *, with_deleted: bool = False
) -> dict[str, Any] | None:
    """One record as the server's store file holds it (None if never written).

    A deleted record keeps its view; `with_deleted` adds its `_deleted` flag to it.
    """
    if server.store_url is not None:  # a node of a PostgreSQL deployment (tests/doors.py)
        from crdt_sync.store.postgres import PostgresStore

        async with PostgresStore(server.store_url, readers=1) as node_store:
            row = await node_store.get_record(DocId(doc_id))
    else:
        async with SQLiteStore(server.db_path) as store:
            row = await store.get_record(DocId(doc_id))
    if row is None:
        return None
    return {**row.view, "_deleted": row.is_deleted} if with_deleted else dict(row.view)


async def field_is(holder: Replica | RunningServer, doc_id: str, name: str, value: object) -> bool:
    """Whether the replica (or the server's store) holds the record with `name` set to `value`."""
    if isinstance(holder, Replica):
        view = await holder.get(*split_doc_id(DocId(doc_id)))
    else:
        view = await server_view(holder, doc_id)
    return view is not None and view[name] == value


async def collect_statuses(replica: Replica, seen: list[SyncStatus]) -> None:
    """Append each status `replica.watch()` gives to `seen`; run it as a task, cancel it after."""
    async for status in replica.watch():
        seen.append(status)


async def stored_rows(db_path: Path) -> dict[str, tuple[dict[str, Any], bool]]:
    """Every record in a server store file: doc id -> (view, is_deleted)."""
    out: dict[str, tuple[dict[str, Any], bool]] = {}
    async with SQLiteStore(db_path) as store:
        after: DocId | None = None
        while page := await store.snapshot(after=after, limit=1000, include_deleted=True):
            for row in page:
                out[row.doc_id] = (dict(row.view), row.is_deleted)
            after = page[-1].doc_id
    return out


def schema_with_nickname() -> Schema:
    """The default schema plus a `nickname` on contacts: a field the server refuses."""
    contacts = DEFAULT_SCHEMA.collections["contacts"]
    fields = dict(contacts.fields) | {"nickname": Field("nickname", FieldKind.STRING)}
    return Schema(
        dict(DEFAULT_SCHEMA.collections)
        | {"contacts": Collection("contacts", fields, contacts.title_field)}
    )


async def seed(server: RunningServer) -> None:
    await admin_patch(server, "contacts/ada", {"name": "Ada", "notes": NOTES}, creating=True)
    await admin_patch(server, "contacts/alan", {"name": "Alan"}, creating=True)
    await admin_patch(server, "deals/engine", {"title": "Engine", "amount": 100}, creating=True)


async def two_replicas_and_an_admin_converge(
    server: RunningServer, tmp_path: Path, order: str, **options: Any
) -> None:
    """Both replicas and an admin edit the same records offline; sync in `order`; compare."""
    await seed(server)
    token = server.device_token
    async with (
        replica_on(server, tmp_path / "alice.db", token, **options) as alice,
        replica_on(server, tmp_path / "bob.db", token, **options) as bob,
    ):
        await alice.sync()
        await bob.sync()
        # Offline: each edits different fields of the same records, and the same notes text.
        await alice.update(
            "contacts", "ada", {"email": "ada@example.com", "notes": "Lady " + NOTES}
        )
        await alice.update("deals", "engine", {"stage": "won"})
        await alice.update("contacts", "alan", {"phone": "+44 1"})  # bob deletes alan meanwhile
        await alice.create("tasks", {"title": "Call Ada", "contact_id": "ada"}, id="call-ada")
        await bob.update("contacts", "ada", {"phone": "+33 1", "notes": NOTES + "; wants a demo"})
        await bob.update("deals", "engine", {"amount": 250})
        await bob.delete("contacts", "alan")
        await admin_patch(server, "contacts/ada", {"company": "Analytical"})
        await admin_patch(server, "deals/engine", {"currency": "GBP"})

        first, second = (alice, bob) if order == "alice first" else (bob, alice)
        await first.sync()
        await second.sync()
        await first.sync()  # picks up what the second pushed

        ada = {
            "id": "ada",
            "name": "Ada",
            "email": "ada@example.com",
            "phone": "+33 1",
            "company": "Analytical",
            "notes": "Lady met at the fair; wants a demo",
        }
        engine = {
            "id": "engine",
            "title": "Engine",
            "amount": 250,
            "currency": "GBP",
            "stage": "won",
            "contact_id": None,
            "close_date": None,
            "notes": None,
        }
        for replica in (alice, bob):
            assert await replica.get("contacts", "ada") == ada
            assert await replica.get("deals", "engine") == engine
            assert await replica.get("contacts", "alan") is None  # a delete beats an edit
            assert (await replica.get("tasks", "call-ada") or {})["title"] == "Call Ada"
            assert replica.status.pending == 0 and replica.status.rejected == 0
        assert await server_view(server, "contacts/ada") == ada
        assert await server_view(server, "deals/engine") == engine
        assert await server_view(server, "contacts/alan") is None

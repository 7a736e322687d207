"""The engine with another process writing the same store (`crdt-sync import` beside a server).

Two engines on two SQLiteStores of one file stand for the two processes: nothing is shared
between them but the file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdt_sync.engine import VIEW_REPAIR, Engine
from crdt_sync.fanout import PendingUpdates, Subscriber
from crdt_sync.ids import DocId, Origin
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.store import SQLiteStore

from .conftest import wait_for

ADA = DocId("contacts/ada")


async def test_a_view_written_before_a_foreign_commit_was_seen_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    async with SQLiteStore(path) as server_store, SQLiteStore(path) as import_store:
        server = Engine(server_store, DEFAULT_SCHEMA)
        importer = Engine(import_store, DEFAULT_SCHEMA)
        await server.patch(ADA, {"name": "Ada"}, origin=Origin("admin"), creating=True)
        await importer.patch(ADA, {"email": "ada@archive.example"}, origin=Origin("import"))

        # The server has not looked yet: this write is checked and viewed without the email,
        # and its commit is the first to read the import's update back.
        result = await server.patch(ADA, {"phone": "+44 20"}, origin=Origin("admin"))
        assert result.view["email"] is None
        await server.settle()

        row = await server_store.get_record(ADA)
        assert row is not None
        assert (row.view["name"], row.view["email"], row.view["phone"]) == (
            "Ada",
            "ada@archive.example",
            "+44 20",
        )
        assert (await server_store.history(ADA))[-1].origin == VIEW_REPAIR
        assert (await server.view(ADA))[0]["email"] == "ada@archive.example"  # the live copy too


async def test_foreign_updates_reach_subscribers_once_the_server_looks(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    async with SQLiteStore(path) as server_store, SQLiteStore(path) as import_store:
        server = Engine(server_store, DEFAULT_SCHEMA)
        importer = Engine(import_store, DEFAULT_SCHEMA)
        await server.patch(ADA, {"name": "Ada"}, origin=Origin("admin"), creating=True)
        watcher = Subscriber("peer", doc_id=ADA)
        server.subscribe(watcher)
        imported = await importer.patch(ADA, {"email": "a@x.example"}, origin=Origin("import"))

        assert watcher.queue.qsize() == 0
        assert await server_store.follow() == 1
        assert watcher.queue.qsize() == 1
        (pending,) = await watcher.queue.get_batch()
        assert isinstance(pending, PendingUpdates)
        assert [(e.seq, e.foreign) for p in pending.parts for e in p.entries] == [
            (imported.seq, True)
        ]
        await server.settle()
        assert (await server.view(ADA))[0]["email"] == "a@x.example"
        # Nobody repairs: the importer loaded the record from the store (its view saw every
        # update), and the server's live copy was idle (no view of its lacked the email).
        assert VIEW_REPAIR not in [e.origin for e in await server_store.history(ADA)]
        row = await server_store.get_record(ADA)
        assert row is not None and (row.view["name"], row.view["email"]) == ("Ada", "a@x.example")


class GatedLoads(SQLiteStore):
    """The real store, whose loads hold their (already read) state until `gate` opens."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()

    async def load(self, doc_id: DocId) -> bytes | None:
        state = await super().load(doc_id)
        await self.gate.wait()
        return state


async def test_a_record_read_before_a_foreign_commit_and_loaded_after_it_gets_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crm.db"
    async with GatedLoads(path) as server_store, SQLiteStore(path) as import_store:
        server = Engine(server_store, DEFAULT_SCHEMA)
        importer = Engine(import_store, DEFAULT_SCHEMA)
        server_store.gate.set()
        await server.patch(ADA, {"name": "Ada"}, origin=Origin("admin"), creating=True)
        server.live.discard(ADA)
        server_store.gate.clear()

        loading = asyncio.create_task(server.view(ADA))  # reads the record, then waits
        await wait_for(lambda: server.live.is_loading(ADA))
        await importer.patch(ADA, {"email": "a@x.example"}, origin=Origin("import"))
        assert await server_store.follow() == 1  # seen while the record is still loading
        server_store.gate.set()
        await loading
        await server.settle()

        assert (await server.view(ADA))[0]["email"] == "a@x.example"
        row = await server_store.get_record(ADA)
        assert row is not None and row.view["email"] == "a@x.example"

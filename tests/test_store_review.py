"""Fixes from the store review: import errors, the writer's foreign updates, fan-out."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from crdt_sync.engine import Engine
from crdt_sync.errors import StoreError
from crdt_sync.fanout import Subscriber
from crdt_sync.ids import DocId, Origin
from crdt_sync.importing import import_archive
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.store import SQLiteStore
from crdt_sync.store.archive import export_archive

from .conftest import wait_for


async def contacts_archive(tmp_path: Path, count: int) -> Path:
    archive = tmp_path / "contacts.cbor"
    async with SQLiteStore(tmp_path / "source.db") as store:
        engine = Engine(store, DEFAULT_SCHEMA)
        for n in range(count):
            await engine.patch(
                DocId(f"contacts/c{n}"), {"name": f"C{n}"}, origin=Origin("seed"), creating=True
            )
        await export_archive(store, archive)
    return archive


async def test_an_import_whose_commit_fails_raises_store_error(tmp_path: Path) -> None:
    archive = await contacts_archive(tmp_path, 3)
    target = tmp_path / "target.db"
    async with SQLiteStore(target, busy_timeout_ms=50) as store:
        locker = sqlite3.connect(target, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreError, match="locked"):
                await import_archive(Engine(store, DEFAULT_SCHEMA), archive)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert await store.snapshot(include_deleted=True, limit=10) == []


async def test_a_patch_whose_caller_gives_up_still_commits_without_echo_to_its_sender(
    tmp_path: Path,
) -> None:
    doc_id = DocId("contacts/c1")
    async with SQLiteStore(tmp_path / "crm.db") as store:
        engine = Engine(store, DEFAULT_SCHEMA)
        ann, bob = Subscriber("ann", collections=None), Subscriber("bob", collections=None)
        engine.subscribe(ann)
        engine.subscribe(bob)
        await engine.patch(doc_id, {"name": "A"}, origin=Origin("ann"), creating=True, sender=ann)
        patching = asyncio.create_task(
            engine.patch(doc_id, {"name": "B"}, origin=Origin("ann"), sender=ann)
        )
        await asyncio.sleep(0)  # the record is live: the patch is queued for commit by now
        assert engine.counters["writes"] == 1
        patching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await patching
        await wait_for(lambda: bob.queue.qsize() == 2)  # the patch committed all the same
        assert ann.queue.qsize() == 0
        assert engine.counters["writes"] == 2
        record = await store.get_record(doc_id)
        assert record is not None and record.view["name"] == "B"


async def test_store_statistics_count_the_updates_other_processes_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crm.db"
    async with SQLiteStore(path) as server, SQLiteStore(path) as cli:
        cli_engine = Engine(cli, DEFAULT_SCHEMA)
        for n in range(3):
            await cli_engine.patch(DocId(f"contacts/c{n}"), {"name": "C"}, origin=Origin("cli"))
        assert await server.follow() == 3
        assert (await server.statistics()).extra["foreign"] == 3
        assert (await cli.statistics()).extra["foreign"] == 0

"""The replica offline: records on a real local SQLite file, each change queued with it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crdt_sync.client import Replica, SyncState
from crdt_sync.client.backoff import Backoff
from crdt_sync.errors import RecordNotFound, SchemaViolation, StoreError, UnknownCollection
from crdt_sync.store import SQLiteStore


async def test_changes_work_offline_and_each_is_queued(tmp_path: Path) -> None:
    async with Replica(tmp_path / "phone.db") as replica:
        created = await replica.create(
            "contacts", {"name": "Ada", "notes": "met at the fair"}, id="ada"
        )
        await replica.update("contacts", "ada", {"email": "ada@example.com"})
        await replica.create("deals", {"title": "Engine", "amount": 12000}, id="engine")
        await replica.delete("deals", "engine")

        assert created["name"] == "Ada"
        assert await replica.get("contacts", "ada") == {
            "id": "ada",
            "name": "Ada",
            "email": "ada@example.com",
            "phone": None,
            "company": None,
            "notes": "met at the fair",
        }
        assert await replica.get("deals", "engine") is None
        assert [v["id"] for v in await replica.query("deals", include_deleted=True)] == ["engine"]
        assert replica.status.pending == 4
        assert replica.status.state is SyncState.OFFLINE
        assert [c.intent.operation.value for c in await replica.pending()] == [
            "create",
            "update",
            "create",
            "delete",
        ]


async def test_the_queue_and_the_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "phone.db"
    async with Replica(path) as replica:
        await replica.create("contacts", {"name": "Ada"}, id="ada")
        first_id = replica.replica_id
    async with Replica(path) as replica:
        assert (await replica.get("contacts", "ada") or {})["name"] == "Ada"
        assert replica.status.pending == 1
        assert replica.replica_id == first_id


async def test_query_filters_on_field_values(tmp_path: Path) -> None:
    async with Replica(tmp_path / "phone.db") as replica:
        for i, stage in enumerate(["lead", "won", "lead"]):
            await replica.create(
                "deals", {"title": f"deal {i}", "stage": stage, "amount": i}, id=f"d{i}"
            )
        leads = await replica.query("deals", {"stage": "lead"})
        assert [d["id"] for d in leads] == ["d0", "d2"]
        assert [d["id"] for d in await replica.query("deals", {"amount": 1})] == ["d1"]
        assert [d["id"] for d in await replica.query("deals", {"close_date": None}, limit=2)] == [
            "d0",
            "d1",
        ]
        with pytest.raises(SchemaViolation, match="unknown field 'colour'"):
            await replica.query("deals", {"colour": "red"})


async def test_bad_changes_are_refused_locally_and_leave_nothing_behind(tmp_path: Path) -> None:
    async with Replica(tmp_path / "phone.db") as replica:
        await replica.create("deals", {"title": "Engine"}, id="engine")
        with pytest.raises(SchemaViolation, match=r"^deals/engine: amount"):
            await replica.update("deals", "engine", {"amount": "ten"})
        with pytest.raises(SchemaViolation, match=r"^contacts/x: name is required"):
            await replica.create("contacts", {"email": "x@example.com"}, id="x")
        with pytest.raises(UnknownCollection, match="unknown collection 'planets'"):
            await replica.create("planets", {"name": "Mars"})
        with pytest.raises(SchemaViolation, match="record id must be"):
            await replica.create("contacts", {"name": "Bad"}, id="no spaces")
        with pytest.raises(RecordNotFound, match=r"^contacts/ghost: "):
            await replica.update("contacts", "ghost", {"name": "Boo"})
        await replica.delete("deals", "engine")
        with pytest.raises(RecordNotFound, match="record is deleted"):
            await replica.update("deals", "engine", {"title": "Back"})

        assert replica.status.pending == 2  # the create and the delete, nothing else
        assert await replica.get("contacts", "x") is None


async def test_a_change_that_changes_nothing_is_not_queued(tmp_path: Path) -> None:
    async with Replica(tmp_path / "phone.db") as replica:
        await replica.create("contacts", {"name": "Ada"}, id="ada")
        await replica.update("contacts", "ada", {"name": "Ada"})
        assert replica.status.pending == 1


async def test_a_server_store_or_a_stranger_file_is_refused(tmp_path: Path) -> None:
    server_db = tmp_path / "server.db"
    async with SQLiteStore(server_db):
        pass
    with pytest.raises(StoreError, match="not a crdt-sync replica .a crdt-sync server store"):
        async with Replica(server_db):
            pass
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(StoreError, match="not a crdt-sync replica .an SQLite database"):
        async with Replica(other):
            pass
    with sqlite3.connect(other) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("photos",)]


async def test_a_replica_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "phone.db"
    async with Replica(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("UPDATE replica_version SET version = 99")
    with pytest.raises(StoreError, match="layout version 99, newer than version 1"):
        async with Replica(path):
            pass


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    backoff = Backoff(initial=0.5, maximum=4.0, uniform=uniform)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert draws[0] == (0.25, 0.5) and draws[-1] == (2.0, 4.0)
    backoff.reset()
    assert backoff.next_delay() == 0.5

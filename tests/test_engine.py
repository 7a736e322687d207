"""The engine over a real SQLite store: write order while records load, merged writes, fan-out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pycrdt import Doc, Map

from crdt_sync.batches import BatchWrite
from crdt_sync.engine import Engine, Limits
from crdt_sync.errors import LimitExceeded, SchemaViolation
from crdt_sync.fanout import PendingUpdates, Subscriber
from crdt_sync.ids import DocId, Origin
from crdt_sync.record import Records, document_from_state
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.store import SQLiteStore

records = Records(DEFAULT_SCHEMA)
ORIGIN = Origin("test")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with SQLiteStore(tmp_path / "engine.db") as store:
        yield Engine(store, DEFAULT_SCHEMA)


def client_edits(count: int, doc: Doc | None = None) -> tuple[Doc, list[bytes]]:
    """A stock client's edits, each depending on the one before (one client, growing clock)."""
    doc = doc if doc is not None else Doc()
    updates = []
    for i in range(count):
        before = doc.get_state()
        fields = doc.get("record", type=Map)
        with doc.transaction():
            if i == 0:
                fields["name"] = "Ann"
            fields["company"] = f"company {i}"
        updates.append(doc.get_update(before))
    return doc, updates


@pytest.mark.parametrize("start", ["write_nowait", "task"])
async def test_writes_started_while_their_records_load_apply_in_the_order_they_started(
    engine: Engine, start: str
) -> None:
    """A write must never overtake an earlier one to its record: each depends on the one
    before, so an overtaking write would be refused as depending on changes not seen."""
    ids = [DocId(f"contacts/o{n}") for n in range(8)]
    edits = {doc_id: client_edits(40)[1] for doc_id in ids}
    writes = []
    for i in range(40):
        for n, doc_id in enumerate(ids):
            if start == "task":
                writes.append(
                    asyncio.ensure_future(engine.write(doc_id, edits[doc_id][i], origin=ORIGIN))
                )
            else:
                writes.append(engine.write_nowait(doc_id, edits[doc_id][i], origin=ORIGIN))
            for _ in range((i + n) % 3):  # writes keep coming while loads finish, as they do
                await asyncio.sleep(0)
        if i % 7 == 0:
            await engine.view(ids[i % len(ids)])  # another user of the records meanwhile
    results = await asyncio.gather(*writes)
    assert all(result.seq is not None for result in results)
    for doc_id in ids:
        view, _ = await engine.view(doc_id)
        assert view["company"] == "company 39"
        assert len(await engine.store.history(doc_id)) == 40


async def test_pipelined_updates_are_written_as_one_log_entry(engine: Engine) -> None:
    doc_id = DocId("contacts/m1")
    client, updates = client_edits(12)
    await engine.write(doc_id, updates[0], origin=ORIGIN)  # the record is live from here on
    (merged,) = engine.write_merged_nowait(doc_id, updates[1:], origin=ORIGIN)
    result = await merged
    assert result.view["company"] == "company 11"
    history = await engine.store.history(doc_id)
    assert len(history) == 2
    stored = document_from_state(await engine.store.load(doc_id))
    assert stored.get_state() == client.get_state()


async def test_a_refused_update_among_merged_ones_fails_alone(engine: Engine) -> None:
    doc_id = DocId("contacts/m2")
    _, updates = client_edits(6)
    await engine.write(doc_id, updates[0], origin=ORIGIN)
    intruder = document_from_state(await engine.store.load(doc_id))
    before = intruder.get_state()
    intruder.get("record", type=Map)["amount"] = 3  # contacts have no amount
    bad = intruder.get_update(before)
    writes = engine.write_merged_nowait(doc_id, [*updates[1:3], bad, *updates[3:]], origin=ORIGIN)
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(writes) == 6 and len(refused) == 1
    assert (
        isinstance(refused[0], SchemaViolation) and "unknown field 'amount'" in refused[0].message
    )
    view, _ = await engine.view(doc_id)
    assert view["company"] == "company 5" and "amount" not in view
    assert len(await engine.store.history(doc_id)) == 6


async def test_a_record_peer_gets_one_update_per_commit_not_one_per_write(engine: Engine) -> None:
    doc_id = DocId("contacts/f1")
    subscriber = Subscriber("peer", doc_id=doc_id, echo_own=True)
    engine.subscribe(subscriber)
    client, updates = client_edits(20)
    await engine.write(doc_id, updates[0], origin=ORIGIN)
    await asyncio.gather(*(engine.write_nowait(doc_id, u, origin=ORIGIN) for u in updates[1:]))
    batch = await subscriber.queue.get_batch()
    assert all(isinstance(item, PendingUpdates) for item in batch)
    assert len(batch) == 1  # back to back in the outbox: merged into one item
    (item,) = batch
    assert sum(len(part.entries) for part in item.parts) == 20
    assert len(item.parts) < 20  # group commits: fewer published updates than writes
    received = Doc()
    for part in item.parts:
        received.apply_update(part.update)
    assert received.get_state() == client.get_state()


async def test_garbage_among_merged_updates_is_refused_alone(engine: Engine) -> None:
    doc_id = DocId("contacts/m3")
    _, updates = client_edits(3)
    await engine.write(doc_id, updates[0], origin=ORIGIN)
    writes = engine.write_merged_nowait(
        doc_id, [updates[1], b"\x01\x05garbage", updates[2]], origin=ORIGIN
    )
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["WriteResult", "InvalidUpdate", "WriteResult"]
    view, _ = await engine.view(doc_id)
    assert view["company"] == "company 2"


def stock_update(document: Doc, **fields: object) -> bytes:
    """What a stock Yjs client sends for setting `fields` (None deletes the key)."""
    before = document.get_state()
    record = document.get("record", type=Map)
    with document.transaction():
        for name, value in fields.items():
            if value is None:
                del record[name]
            else:
                record[name] = value
    return document.get_update(before)


async def test_a_patch_a_batch_and_a_crdt_update_report_the_same_changed_fields(
    engine: Engine,
) -> None:
    """One write path: the fields a write reports changed are those whose value changed,
    whichever way the write came (a re-sent unchanged value is not a change)."""
    first = {"name": "Ann", "email": "ann@example.com"}
    second = {"name": "Ann", "email": None, "company": "Acme"}
    via_patch = DocId("contacts/patch")
    await engine.patch(via_patch, first, origin=ORIGIN, creating=True)
    patched = await engine.patch(via_patch, second, origin=ORIGIN)
    via_batch = DocId("contacts/batch")
    await engine.write_many([BatchWrite(via_batch, patch=first, creating=True)], origin=ORIGIN)
    [batched] = await engine.write_many([BatchWrite(via_batch, patch=second)], origin=ORIGIN)
    via_update, client = DocId("contacts/update"), Doc()
    await engine.write(via_update, stock_update(client, **first), origin=ORIGIN)
    written = await engine.write(via_update, stock_update(client, **second), origin=ORIGIN)
    assert batched.result is not None
    answers = [
        (patched.changed_fields, patched.is_deleted, patched.view | {"id": ""}),
        (
            batched.result.changed_fields,
            batched.result.is_deleted,
            batched.result.view | {"id": ""},
        ),
        (written.changed_fields, written.is_deleted, written.view | {"id": ""}),
    ]
    assert answers == [(("email", "company"), False, answers[0][2])] * 3
    assert answers[0][2] == {
        "id": "",
        "name": "Ann",
        "email": None,
        "phone": None,
        "company": "Acme",
        "notes": None,
    }


async def test_a_patch_or_delete_that_changes_nothing_stores_nothing(engine: Engine) -> None:
    doc_id = DocId("contacts/same")
    await engine.patch(doc_id, {"name": "Ann", "email": "a@x.io"}, origin=ORIGIN, creating=True)
    await engine.patch(doc_id, {"email": None}, origin=ORIGIN)  # the document now has deletions
    cursor = await engine.store.cursor()
    again = await engine.patch(doc_id, {"name": "Ann", "email": None}, origin=ORIGIN)
    [batched] = await engine.write_many([BatchWrite(doc_id, patch={"name": "Ann"})], origin=ORIGIN)
    assert (again.seq, again.changed_fields) == (None, ())
    assert batched.result is not None and batched.result.seq is None
    assert await engine.store.cursor() == cursor
    await engine.delete(doc_id, origin=ORIGIN)
    cursor = await engine.store.cursor()
    assert (await engine.delete(doc_id, origin=ORIGIN)).seq is None  # deleted already
    assert (await engine.delete(DocId("contacts/never"), origin=ORIGIN)).seq is None
    assert await engine.store.cursor() == cursor
    assert await engine.store.get_record(DocId("contacts/never")) is None


async def test_a_patch_that_would_grow_a_document_past_its_limit_is_refused_and_undone(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "small.db") as store:
        engine = Engine(store, DEFAULT_SCHEMA, limits=Limits(max_document_bytes=4096))
        doc_id = DocId("contacts/big")
        await engine.patch(doc_id, {"name": "Ann"}, origin=ORIGIN, creating=True)
        cursor = await store.cursor()
        with pytest.raises(LimitExceeded, match=r"^contacts/big: document would grow to"):
            await engine.patch(doc_id, {"notes": "x" * 5000}, origin=ORIGIN)
        [refused] = await engine.write_many(
            [BatchWrite(doc_id, patch={"notes": "y" * 5000})], origin=ORIGIN
        )
        assert isinstance(refused.error, LimitExceeded)
        assert (await engine.view(doc_id))[0]["notes"] is None
        assert await store.cursor() == cursor
        assert engine.counters["refused:LimitExceeded"] == 2
        later = await engine.patch(doc_id, {"notes": "fits"}, origin=ORIGIN)
        assert later.view["notes"] == "fits" and later.changed_fields == ("notes",)

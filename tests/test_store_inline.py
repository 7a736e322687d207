"""A join's small reads on the event loop (store/inline.py): answered there within their
budget, read again on the reading thread past it, never a different answer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pycrdt import Doc, Map

from crdt_sync.errors import StoreError
from crdt_sync.ids import DocId, Origin
from crdt_sync.store import SQLiteStore, reads
from crdt_sync.store.inline import Interrupted

ANN = Origin("ann", "test")
ADA = DocId("contacts/ada")


async def _append_edits(store: SQLiteStore, edits: int) -> Doc:
    """`edits` updates to ADA, one log row each: a chain of that many rows."""
    doc = Doc()
    record = doc.get("record", type=Map)
    for n in range(edits):
        before = doc.get_state()
        record["name"] = f"Ada {n}"
        await store.append(
            ADA, doc.get_update(before), view={"name": f"Ada {n}"}, is_deleted=False, origin=ANN
        )
    return doc


def _name_in(update: bytes | None) -> str:
    assert update is not None
    doc = Doc()
    doc.apply_update(update)
    return str(doc.get("record", type=Map)["name"])


async def test_a_small_read_is_answered_on_the_loop_without_the_reading_thread(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "s.db") as store:
        await _append_edits(store, 3)
        await store.add_token("phone", "device", "hash-phone")
        answered, interrupted = store.inline.answered, store.inline.interrupted
        assert _name_in(await store.load(ADA)) == "Ada 2"
        found = await store.find_token("hash-phone")
        assert found is not None and found.name == "phone"
        assert await store.find_token("hash-nobody") is None
        assert await store.load(DocId("contacts/nobody")) is None
        assert store.inline.answered == answered + 4
        assert store.inline.interrupted == interrupted


async def test_a_read_past_its_budget_is_read_again_on_the_reading_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        await _append_edits(store, 1_500)  # a chain long enough to reach the progress handler
        store.inline.budget = 0.0  # every look at the clock finds the budget spent
        loaded = await store.load(ADA)
        assert store.inline.interrupted == 1
        with sqlite3.connect(path) as plain:
            assert loaded == reads.load(plain, ADA)  # the whole chain, not a part of it
        assert _name_in(loaded) == "Ada 1499"
        store.inline.budget = 1.0
        assert await store.load(ADA) == loaded  # the connection is usable after an interrupt


async def test_a_closed_store_reads_nothing_inline_and_says_it_is_closed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    async with store:
        await _append_edits(store, 1)
    assert store.inline.run(reads.load, ADA) is Interrupted.INTERRUPTED
    with pytest.raises(StoreError, match="the store is closed"):
        await store.load(ADA)
    with pytest.raises(StoreError, match="the store is closed"):
        await store.find_token("hash-phone")

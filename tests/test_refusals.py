"""Compensated refusals and the creation rule, on a LiveRecord and plain pycrdt writers (pure).

A writer is a stock pycrdt `Doc` (as any Yjs client keeps one); the server is a LiveRecord
applying with `compensate=True`, as the live doors do. What the writer gets back is
`checked.stored`, the update and its compensation as one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, merge_updates

from crdt_sync.engine import Engine
from crdt_sync.errors import InvalidUpdate, SchemaViolation
from crdt_sync.ids import DocId, Origin
from crdt_sync.record import (
    MAX_SERVER_CLIENT_ID,
    NO_SIZE_LIMIT,
    LiveRecord,
    Records,
    document_from_state,
)
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.store import SQLiteStore

records = Records(DEFAULT_SCHEMA)
DEAL = DocId("deals/7")
CONTACT = DocId("contacts/42")
HIGH_CLIENT = 3_000_000_000  # above any server's client id (at most 2**20)
SERVER_CLIENT_ID = 1000


def edit(writer: Doc, **fields: Any) -> bytes:
    """One transaction of `writer` setting (or, for None, deleting) fields; its update."""
    before = writer.get_state()
    record = writer.get("record", type=Map)
    with writer.transaction():
        for name, value in fields.items():
            if value is None:
                del record[name]
            else:
                record[name] = value
    return writer.get_update(before)


def fields_of(document: Doc) -> dict[str, Any]:
    return {
        k: str(v) if isinstance(v, Text) else v for k, v in document.get("record", type=Map).items()
    }


def server_with(doc_id: DocId, writer: Doc, **fields: Any) -> LiveRecord:
    live = records.live_record(doc_id, None, client_id=SERVER_CLIENT_ID)
    live.apply(edit(writer, **fields), max_document_bytes=NO_SIZE_LIMIT)
    return live


def compensated(live: LiveRecord, update: bytes) -> bytes:
    """Apply a refused update; return what the server stores and sends for it."""
    checked = live.apply(update, max_document_bytes=NO_SIZE_LIMIT, compensate=True)
    assert checked.refusal is not None and checked.stored is not None
    assert checked.changed_fields == ()
    return checked.stored


def test_a_refused_value_is_undone_the_writer_snaps_back_and_its_next_edit_lands() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(DEAL, writer, title="Roof", amount=5)
    before = live.view

    checked = live.apply(
        edit(writer, amount="ten"), max_document_bytes=NO_SIZE_LIMIT, compensate=True
    )
    assert isinstance(checked.refusal, SchemaViolation)
    assert str(checked.refusal).startswith("deals/7: amount must be a finite number")
    assert live.view == before and checked.view == before
    assert checked.stored is not None and b"ten" not in checked.stored
    writer.apply_update(checked.stored)
    assert fields_of(writer) == {"title": "Roof", "amount": 5}

    later = live.apply(edit(writer, amount=10), max_document_bytes=NO_SIZE_LIMIT, compensate=True)
    assert later.refusal is None and later.view["amount"] == 10
    assert records.view(DEAL, document_from_state(live.document.get_update()))["amount"] == 10


def test_every_field_an_update_touched_is_restored_even_its_valid_ones() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(DEAL, writer, title="Roof", stage="lead")
    stored = compensated(live, edit(writer, stage="won", currency="euros"))
    writer.apply_update(stored)
    assert fields_of(writer) == {"title": "Roof", "stage": "lead"}
    assert live.view["stage"] == "lead" and live.view["currency"] is None


def test_a_field_that_did_not_exist_is_removed_and_an_unknown_field_too() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(CONTACT, writer, name="Ann")
    stored = compensated(live, edit(writer, phone="+1", nickname="annie"))
    assert b"annie" not in stored
    writer.apply_update(stored)
    assert fields_of(writer) == {"name": "Ann"}


def test_a_required_field_removed_comes_back_with_its_value() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(CONTACT, writer, name="Ann", email="a@x")
    writer.apply_update(compensated(live, edit(writer, name=None)))
    assert fields_of(writer) == {"name": "Ann", "email": "a@x"}


def test_a_text_replaced_by_a_plain_value_comes_back_as_a_text_with_its_content() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(CONTACT, writer, name="Ann", notes=Text("héllo wörld"))
    writer.apply_update(compensated(live, edit(writer, notes=42)))
    notes = writer.get("record", type=Map)["notes"]
    assert isinstance(notes, Text) and str(notes) == "héllo wörld"
    assert live.view["notes"] == "héllo wörld"


def test_a_refused_edit_inside_a_text_is_undone_at_the_right_characters() -> None:
    """pycrdt indexes text by UTF-8 bytes: the undo must cut at the same characters."""
    schema_max = DEFAULT_SCHEMA.collections["contacts"].fields["notes"].max_length
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(CONTACT, writer, name="Ann", notes=Text("日本 ok é"))
    notes = writer.get("record", type=Map)["notes"]
    before = writer.get_state()
    notes.insert(len("日本".encode()), "x" * (schema_max + 1))  # too long: refused
    stored = compensated(live, writer.get_update(before))
    assert b"x" * 100 not in stored
    writer.apply_update(stored)
    assert str(writer.get("record", type=Map)["notes"]) == "日本 ok é"
    before = writer.get_state()
    notes.insert(0, "» ")
    later = live.apply(writer.get_update(before), max_document_bytes=NO_SIZE_LIMIT)
    assert later.view["notes"] == "» 日本 ok é"


def test_an_undelete_is_undone_the_tombstone_comes_back() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(CONTACT, writer, name="Ann")
    writer.get("meta", type=Map)["deleted"] = True
    live.apply(writer.get_update(live.document.get_state()), max_document_bytes=NO_SIZE_LIMIT)
    assert live.is_deleted
    before = writer.get_state()
    del writer.get("meta", type=Map)["deleted"]
    stored = compensated(live, writer.get_update(before))
    writer.apply_update(stored)
    assert writer.get("meta", type=Map).get("deleted") is True and live.is_deleted


def test_a_writers_quick_correction_wins_the_tie_when_its_client_id_is_above_the_servers() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(DEAL, writer, title="Roof", amount=5)
    bad = edit(writer, amount="ten")
    correction = edit(writer, amount=7)  # made before the compensation reached the writer
    stored = compensated(live, bad)
    assert live.apply(correction, max_document_bytes=NO_SIZE_LIMIT).view["amount"] == 7
    writer.apply_update(stored)
    assert fields_of(writer)["amount"] == 7
    assert fields_of(live.document)["amount"] == 7


def test_below_the_servers_client_id_the_compensation_wins_and_both_still_converge() -> None:
    writer = Doc(client_id=SERVER_CLIENT_ID - 1)
    live = server_with(DEAL, writer, title="Roof", amount=5)
    bad = edit(writer, amount="ten")
    correction = edit(writer, amount=7)
    stored = compensated(live, bad)
    live.apply(correction, max_document_bytes=NO_SIZE_LIMIT)
    writer.apply_update(stored)
    assert fields_of(writer) == fields_of(live.document) == {"title": "Roof", "amount": 5}


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda r: r.__setitem__("amount", Map({"a": 1})), "must be a plain number value"),
        (lambda r: r.__setitem__("amount", Array([1])), "must be a plain number value"),
    ],
)
def test_a_shared_type_where_a_value_goes_is_not_compensated(make: Any, expected: str) -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(DEAL, writer, title="Roof")
    before_state, before = live.document.get_update(), live.view
    state = writer.get_state()
    make(writer.get("record", type=Map))
    with pytest.raises(SchemaViolation, match=expected):
        live.apply(writer.get_update(state), max_document_bytes=NO_SIZE_LIMIT, compensate=True)
    assert live.view == before and live.document.get_update() == before_state


def test_an_unknown_root_is_not_compensated_and_leaves_nothing() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(DEAL, writer, title="Roof")
    before_state = live.document.get_update()
    state = writer.get_state()
    writer.get("other", type=Map)["x"] = 1
    with pytest.raises(SchemaViolation, match="unknown root 'other'"):
        live.apply(writer.get_update(state), max_document_bytes=NO_SIZE_LIMIT, compensate=True)
    assert live.document.get_update() == before_state


def test_bytes_that_are_no_update_are_not_compensated() -> None:
    live = records.live_record(DEAL, None)
    with pytest.raises(InvalidUpdate):
        live.apply(b"\x01\x05garbage", max_document_bytes=NO_SIZE_LIMIT, compensate=True)


def test_an_engines_live_documents_write_as_its_own_low_client_id(tmp_path: Path) -> None:
    async def client_ids() -> tuple[int, int, int]:
        async with SQLiteStore(tmp_path / "a.db") as store:
            one, two = Engine(store, DEFAULT_SCHEMA), Engine(store, DEFAULT_SCHEMA)
            await one.patch(DEAL, {"title": "x"}, origin=Origin("t"), creating=True)
            async with one.live.using(DEAL) as a, two.live.using(DEAL) as b:
                return a.document.client_id, b.document.client_id, one.live.client_id

    a, b, expected = asyncio.run(client_ids())
    assert a == expected and a <= MAX_SERVER_CLIENT_ID and b <= MAX_SERVER_CLIENT_ID
    assert a != b  # one in 2**20 to fail by chance: two engines must not share an id


# -- the creation rule ----------------------------------------------------------------------


def test_a_records_first_write_without_its_required_field_is_refused_at_every_check() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    update = edit(writer, email="ann@example.com")
    with pytest.raises(SchemaViolation, match=r"^contacts/42: name is required$"):
        records.check_update(CONTACT, document_from_state(None), update)
    live = records.live_record(CONTACT, None)
    with pytest.raises(SchemaViolation, match=r"^contacts/42: name is required$"):
        live.apply(update, max_document_bytes=NO_SIZE_LIMIT)
    assert not live.exists
    # The REST door says the same.
    with pytest.raises(SchemaViolation, match=r"^contacts/42: name is required$"):
        records.patch(CONTACT, document_from_state(None), {"email": "ann@example.com"})


def test_a_refused_create_is_compensated_into_a_record_that_does_not_exist() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = records.live_record(CONTACT, None)
    stored = compensated(live, edit(writer, email="ann@example.com"))
    assert b"ann@example.com" not in stored
    assert not live.exists and not live.has_content
    writer.apply_update(stored)
    assert fields_of(writer) == {}
    # Now a whole create from the same writer lands.
    later = live.apply(
        edit(writer, name="Ann", email="ann@example.com"), max_document_bytes=1 << 20
    )
    assert later.view["name"] == "Ann" and live.exists


def test_fields_set_in_later_transactions_are_edits_of_a_record_that_exists() -> None:
    writer = Doc(client_id=HIGH_CLIENT)
    live = records.live_record(CONTACT, None)
    live.apply(edit(writer, name="Ann"), max_document_bytes=NO_SIZE_LIMIT)
    assert live.apply(edit(writer, email="a@x"), max_document_bytes=NO_SIZE_LIMIT).view == {
        "id": "42",
        "name": "Ann",
        "email": "a@x",
        "phone": None,
        "company": None,
        "notes": None,
    }


def test_a_stored_update_is_replayed_without_the_creation_rule() -> None:
    """Stores written before the rule hold records created without their required fields."""
    writer = Doc(client_id=HIGH_CLIENT)
    live = records.live_record(CONTACT, None)
    checked = live.apply(edit(writer, email="a@x"), max_document_bytes=NO_SIZE_LIMIT, stored=True)
    assert checked.view["email"] == "a@x" and checked.refusal is None


def test_merged_updates_are_stored_without_the_content_later_ones_overwrote() -> None:
    """A pipelining client's updates are checked as one; a value it overwrote at once (here
    one the schema refuses) must not stay in the stored bytes either."""
    writer = Doc(client_id=HIGH_CLIENT)
    live = server_with(DEAL, writer, title="Roof")
    merged = merge_updates(edit(writer, currency="euros-REFUSED"), edit(writer, currency="EUR"))
    assert b"REFUSED" in merged
    checked = live.apply(merged, max_document_bytes=NO_SIZE_LIMIT, reencode=True)
    assert checked.refusal is None and checked.view["currency"] == "EUR"
    assert checked.stored is not None and b"REFUSED" not in checked.stored
    elsewhere = document_from_state(live.document.get_update())
    elsewhere.apply_update(checked.stored)
    assert fields_of(elsewhere) == {"title": "Roof", "currency": "EUR"}

"""The engine's ring of refused writes: bounded, numbered, and cheap under a flood."""

from __future__ import annotations

from pycrdt import Doc, Map

from crdt_sync.errors import SchemaViolation
from crdt_sync.refusals import MAX_VALUE_CHARS, RefusalLog, tried_values


def _update_setting(document: Doc, **fields: object) -> bytes:
    before = document.get_state()
    record = document.get("record", type=Map)
    with document.transaction():
        for name, value in fields.items():
            record[name] = value
    return document.get_update(before)


def test_the_ring_keeps_the_last_refusals_and_counts_them_all() -> None:
    log = RefusalLog(capacity=3)
    for i in range(5):
        log.note(SchemaViolation(f"deals/{i}", "bad"), "", "tablet", patch={"amount": i})
    assert log.count == 5
    assert [r.doc_id for r in log.recent()] == ["deals/4", "deals/3", "deals/2"]
    assert [r.number for r in log.recent(after=3)] == [5, 4]
    assert [r.number for r in log.recent(limit=1)] == [5]


def test_values_of_a_refused_update_are_what_it_would_change() -> None:
    document = Doc()
    _update_setting(document, title="Big", amount=1)
    copy = Doc()
    copy.apply_update(document.get_update())
    update = _update_setting(copy, amount=-5, stage="sold")
    assert tried_values(document, update) == {"amount": -5, "stage": "sold"}
    assert document.get("record", type=Map)["amount"] == 1  # worked out on a copy


def test_values_of_an_update_that_does_not_apply_are_unknown() -> None:
    assert tried_values(Doc(), b"\x07garbage") is None


def test_long_values_are_cut_and_non_json_numbers_shown_as_text() -> None:
    log = RefusalLog()
    refusal = log.note(
        SchemaViolation("contacts/1", "bad"), "", "x", patch={"name": "n" * 1000, "n": float("nan")}
    )
    assert refusal.values is not None
    assert len(refusal.values["name"]) == MAX_VALUE_CHARS
    assert refusal.values["n"] == "nan"


def test_a_flood_of_refused_updates_is_decoded_for_values_only_a_few_times_a_second() -> None:
    now = [1000.0]
    log = RefusalLog(values_per_second=2, clock=lambda: now[0])
    document = Doc()
    update = _update_setting(Doc(), name=7)
    decoded = [
        log.note(SchemaViolation("contacts/1", "bad"), "", "x", update=update, document=document)
        for _ in range(5)
    ]
    assert [r.values is not None for r in decoded] == [True, True, False, False, False]
    now[0] += 1
    later = log.note(
        SchemaViolation("contacts/1", "bad"), "", "x", update=update, document=document
    )
    assert later.values == {"name": 7}

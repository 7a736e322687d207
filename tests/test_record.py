"""Record documents: patches, the JSON view, convergence, and checks on incoming updates."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from crdt_sync.errors import InvalidUpdate, LimitExceeded, SchemaViolation, UnknownCollection
from crdt_sync.ids import DocId
from crdt_sync.record import EMPTY_UPDATE, LiveRecord, Records, document_from_state
from crdt_sync.schema import DEFAULT_SCHEMA

records = Records(DEFAULT_SCHEMA)
DEAL = DocId("deals/7")
CONTACT = DocId("contacts/42")


def replica_pair(doc_id: DocId, patch: dict[str, object]) -> tuple[Doc, Doc]:
    """Two replicas that share a record created by the first one."""
    alice = document_from_state(None)
    bob = document_from_state(None)
    bob.apply_update(records.patch(doc_id, alice, patch, creating=True))
    return alice, bob


def exchange(*documents: Doc) -> None:
    for source in documents:
        for target in documents:
            if source is not target:
                target.apply_update(source.get_update(target.get_state()))


def test_a_patch_is_one_update_that_rebuilds_the_record_elsewhere() -> None:
    document = document_from_state(None)
    update = records.patch(
        DEAL,
        document,
        {"title": "Roof", "amount": 1200, "stage": "lead", "notes": "call back"},
        creating=True,
    )
    elsewhere = document_from_state(update)
    assert records.view(DEAL, elsewhere) == {
        "id": "7",
        "title": "Roof",
        "amount": 1200,
        "currency": None,
        "stage": "lead",
        "contact_id": None,
        "close_date": None,
        "notes": "call back",
    }


def test_the_view_keeps_fractional_numbers_and_gives_integers_as_integers() -> None:
    document = document_from_state(None)
    records.patch(DEAL, document, {"title": "x", "amount": 12.5}, creating=True)
    assert records.view(DEAL, document)["amount"] == 12.5
    records.patch(DEAL, document, {"amount": 3})
    amount = records.view(DEAL, document)["amount"]
    assert amount == 3 and isinstance(amount, int)


def test_creating_without_a_required_field_is_refused_and_changes_nothing() -> None:
    document = document_from_state(None)
    state = document.get_update()
    with pytest.raises(SchemaViolation, match=r"^contacts/42: name is required$"):
        records.patch(CONTACT, document, {"email": "a@b.c"}, creating=True)
    assert document.get_update() == state


def test_a_patch_with_one_bad_value_changes_nothing() -> None:
    alice, _ = replica_pair(DEAL, {"title": "Roof"})
    state = alice.get_update()
    with pytest.raises(SchemaViolation, match=r"^deals/7: amount must be a number >= 0"):
        records.patch(DEAL, alice, {"stage": "won", "amount": -1})
    assert alice.get_update() == state


def test_unknown_fields_and_collections_are_refused() -> None:
    document = document_from_state(None)
    with pytest.raises(SchemaViolation, match="unknown field 'colour'"):
        records.patch(CONTACT, document, {"name": "A", "colour": "red"}, creating=True)
    with pytest.raises(UnknownCollection, match="^invoices/1: unknown collection"):
        records.patch(DocId("invoices/1"), document, {"name": "A"})


@pytest.mark.parametrize("bad", ["contacts", "contacts/", "contacts/a b", "contacts/" + "x" * 65])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(SchemaViolation, match="record id|document id"):
        records.patch(DocId(bad), document_from_state(None), {"name": "A"})


def test_edits_to_different_fields_of_one_record_both_survive() -> None:
    alice, bob = replica_pair(CONTACT, {"name": "Ann"})
    records.patch(CONTACT, alice, {"email": "ann@example.com"})
    records.patch(CONTACT, bob, {"phone": "+33 1 23 45 67 89"})
    exchange(alice, bob)
    assert records.view(CONTACT, alice) == records.view(CONTACT, bob)
    assert records.view(CONTACT, bob)["email"] == "ann@example.com"
    assert records.view(CONTACT, alice)["phone"] == "+33 1 23 45 67 89"


def test_concurrent_text_edits_merge_character_by_character() -> None:
    alice, bob = replica_pair(CONTACT, {"name": "Ann", "notes": "met at the fair"})
    records.patch(CONTACT, alice, {"notes": "first met at the fair"})
    records.patch(CONTACT, bob, {"notes": "met at the fair in May"})
    exchange(alice, bob)
    assert records.view(CONTACT, alice)["notes"] == "first met at the fair in May"
    assert records.view(CONTACT, bob)["notes"] == "first met at the fair in May"


def test_text_edits_next_to_multibyte_characters_cut_at_character_boundaries() -> None:
    alice, _ = replica_pair(CONTACT, {"name": "Ann", "notes": "caf\u00e9 \U0001f600 ok"})
    records.patch(CONTACT, alice, {"notes": "caf\u00e9 \U0001f600 fine"})
    assert records.view(CONTACT, alice)["notes"] == "caf\u00e9 \U0001f600 fine"


def test_a_delete_racing_an_edit_leaves_the_record_deleted() -> None:
    alice, bob = replica_pair(CONTACT, {"name": "Ann"})
    records.delete(CONTACT, alice)
    records.patch(CONTACT, bob, {"email": "late@example.com"})
    exchange(alice, bob)
    for replica in (alice, bob):
        assert records.check_update(CONTACT, replica, b"\x00\x00").is_deleted


# One optional field of every kind, with a value it takes.
EVERY_KIND = [
    (DocId("contacts/42"), "email", "ann@example.com"),  # string
    (DocId("contacts/42"), "notes", "met at the fair"),  # text
    (DocId("deals/7"), "amount", 1200),  # number
    (DocId("deals/7"), "stage", "won"),  # enum
    (DocId("deals/7"), "contact_id", "42"),  # reference
    (DocId("deals/7"), "close_date", "2026-12-03"),  # date
    (DocId("tasks/3"), "done", False),  # bool: false is a value, not an unset field
    (DocId("tasks/3"), "due_at", "2026-12-03T15:00:00.000Z"),  # datetime
]
REQUIRED = {"contacts": {"name": "Ann"}, "deals": {"title": "Roof"}, "tasks": {"title": "Call"}}


@pytest.mark.parametrize(("doc_id", "name", "value"), EVERY_KIND, ids=lambda v: str(v))
def test_null_unsets_a_field_of_every_kind_everywhere_the_record_goes(
    doc_id: DocId, name: str, value: object
) -> None:
    collection = doc_id.partition("/")[0]
    alice, bob = replica_pair(doc_id, {**REQUIRED[collection], name: value})
    assert records.view(doc_id, bob)[name] == value
    bob.apply_update(records.patch(doc_id, alice, {name: None}))
    for replica in (alice, bob):
        assert records.view(doc_id, replica)[name] is None
        assert name not in replica.get("record", type=Map)  # unset: the key is gone


@pytest.mark.parametrize(
    ("first", "then"), [(None, ""), ("met at the fair", ""), ("", "hi"), ("", None)]
)
def test_an_empty_text_reads_back_empty_and_null_unsets_it(
    first: str | None, then: str | None
) -> None:
    alice, bob = replica_pair(CONTACT, {"name": "Ann", "notes": first})
    assert records.view(CONTACT, bob)["notes"] == first
    bob.apply_update(records.patch(CONTACT, alice, {"notes": then}))
    assert records.view(CONTACT, alice)["notes"] == then
    assert records.view(CONTACT, bob)["notes"] == then
    live = records.live_record(CONTACT, bob.get_update())
    assert live.view["notes"] == then


def test_a_text_a_stock_client_sets_empty_or_empties_reads_back_empty() -> None:
    live = records.live_record(CONTACT, records.patch(CONTACT, Doc(), {"name": "Ann"}))
    update = stock_client_update(lambda d, f, m: f.__setitem__("notes", Text("")), live.document)
    checked = live.apply(update, max_document_bytes=1 << 20)
    assert checked.view["notes"] == "" and checked.changed_fields == ("notes",)
    update = stock_client_update(lambda d, f, m: f["notes"].insert(0, "hi"), live.document)
    assert live.apply(update, max_document_bytes=1 << 20).view["notes"] == "hi"
    update = stock_client_update(lambda d, f, m: f["notes"].__delitem__(slice(0, 2)), live.document)
    checked = live.apply(update, max_document_bytes=1 << 20)
    assert checked.view["notes"] == "" and checked.changed_fields == ("notes",)


FIELD_VALUES = {
    "name": st.sampled_from(["Ann", "Bob", "Cleo"]),
    "email": st.one_of(st.none(), st.sampled_from(["a@x.io", "b@y.io"])),
    "phone": st.one_of(st.none(), st.text(alphabet="0123456789 +", max_size=8)),
    "company": st.sampled_from(["Acme", "Globex", "Initech"]),
    "notes": st.text(alphabet="ab \u00e9\U0001f600", max_size=12),
}
patches = st.dictionaries(st.sampled_from(sorted(FIELD_VALUES)), st.just(None), min_size=1).flatmap(
    lambda keys: st.fixed_dictionaries({k: FIELD_VALUES[k] for k in keys})
)


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("edit"), st.integers(0, 2), patches),
            st.tuples(st.just("sync"), st.integers(0, 2), st.none()),
        ),
        min_size=1,
        max_size=16,
    )
)
def test_any_interleaving_of_edits_and_syncs_from_three_replicas_converges(
    steps: list[tuple[str, int, dict[str, object] | None]],
) -> None:
    """Replicas edit offline and sync with the server (y-sync step 1/2) whenever they like."""
    server = document_from_state(None)
    start = records.patch(CONTACT, server, {"name": "Start"}, creating=True)
    replicas = [document_from_state(start) for _ in range(3)]
    for action, who, patch in steps:
        if action == "edit" and patch is not None:
            records.patch(CONTACT, replicas[who], patch)
        else:
            sync_with_server(server, replicas[who])
    for replica in replicas * 2:
        sync_with_server(server, replica)
    views = [records.view(CONTACT, replica) for replica in replicas]
    assert views[0] == views[1] == views[2] == records.view(CONTACT, server)


def sync_with_server(server: Doc, replica: Doc) -> None:
    """One y-sync round; the server checks what it receives as the engine does."""
    diff = replica.get_update(server.get_state())
    records.check_update(CONTACT, server, diff)
    server.apply_update(diff)
    replica.apply_update(server.get_update(replica.get_state()))


def test_an_update_whose_dependencies_were_not_seen_is_refused() -> None:
    alice, bob = replica_pair(CONTACT, {"name": "Ann"})
    before = alice.get_state()
    records.patch(CONTACT, alice, {"company": "Acme"})
    middle = alice.get_state()
    records.patch(CONTACT, alice, {"company": "Globex"})
    state = bob.get_update()
    with pytest.raises(InvalidUpdate, match="depends on changes this document has not seen"):
        records.check_update(CONTACT, bob, alice.get_update(middle))
    assert bob.get_update() == state
    assert not records.check_update(CONTACT, bob, alice.get_update(before)).is_noop


@settings(max_examples=40, deadline=None)
@given(first=patches, second=patches)
def test_edits_to_disjoint_fields_all_survive_whatever_the_order(
    first: dict[str, object], second: dict[str, object]
) -> None:
    second = {k: v for k, v in second.items() if k not in first}
    alice, bob = replica_pair(CONTACT, {"name": "Start"})
    records.patch(CONTACT, alice, first)
    records.patch(CONTACT, bob, second)
    exchange(bob, alice)
    expected = records.view(CONTACT, alice)
    for name, value in {**first, **second}.items():
        assert expected[name] == value  # "" reads back "", a text field's as any other's
    assert records.view(CONTACT, bob) == expected


def stock_client_update(build: object, synced_with: Doc | None = None) -> bytes:
    """An update made the way a stock Yjs client would, after syncing, outside our patch API."""
    document = document_from_state(synced_with.get_update() if synced_with else None)
    before = document.get_state()
    fields = document.get("record", type=Map)
    meta = document.get("meta", type=Map)
    with document.transaction():
        build(document, fields, meta)  # type: ignore[operator]
    return document.get_update(before)


def test_a_checked_update_reports_the_view_it_would_give_without_touching_the_record() -> None:
    live = document_from_state(None)
    update = stock_client_update(lambda d, f, m: f.update({"name": "Ann", "notes": Text("hi")}))
    checked = records.check_update(CONTACT, live, update)
    assert checked.view["name"] == "Ann" and checked.view["notes"] == "hi"
    assert set(checked.changed_fields) == {"name", "notes"}
    assert not checked.is_noop
    assert records.view(CONTACT, live)["name"] is None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda d, f, m: f.update({"name": "Ann", "amount": 3}), "unknown field 'amount'"),
        (lambda d, f, m: f.update({"name": 42}), "name must be a string"),
        (lambda d, f, m: f.update({"name": "A", "notes": "plain"}), "notes is a text field"),
        (lambda d, f, m: f.update({"name": Text("A")}), "name must be a plain string"),
        (lambda d, f, m: f.update({"name": "A", "email": Map({"a": 1})}), "email must be a plain"),
        (lambda d, f, m: m.update({"deleted": False}), "meta may only hold deleted=true"),
        (lambda d, f, m: d.__setitem__("extra", Text("x")), "unknown root 'extra'"),
    ],
)
def test_an_update_that_breaks_the_schema_is_refused_before_it_reaches_the_record(
    build: object, message: str
) -> None:
    live = document_from_state(None)
    records.patch(CONTACT, live, {"name": "Ann"}, creating=True)
    state = live.get_update()
    update = stock_client_update(build, synced_with=live)
    with pytest.raises(SchemaViolation, match=message):
        records.check_update(CONTACT, live, update)
    assert live.get_update() == state


def test_removing_a_required_field_is_refused() -> None:
    alice, bob = replica_pair(CONTACT, {"name": "Ann"})
    before = bob.get_state()
    del bob.get("record", type=Map)["name"]
    with pytest.raises(SchemaViolation, match="name is required and cannot be removed"):
        records.check_update(CONTACT, alice, bob.get_update(before))


@pytest.mark.parametrize(
    "garbage", [b"", b"\x00", b"\xff\xff\xff\xff", b"hello world", b"\x01\x05" + bytes(range(40))]
)
def test_garbage_bytes_are_an_invalid_update_and_change_nothing(garbage: bytes) -> None:
    live, _ = replica_pair(CONTACT, {"name": "Ann"})
    state = live.get_update()
    with pytest.raises(InvalidUpdate, match=r"^contacts/42: "):
        records.check_update(CONTACT, live, garbage)
    assert live.get_update() == state


def test_an_update_already_held_is_a_noop() -> None:
    alice, bob = replica_pair(CONTACT, {"name": "Ann"})
    assert records.check_update(CONTACT, bob, alice.get_update()).is_noop


# LiveRecord: the live form of a record, checked at the cost of each update.

BAD_BUILDS = [
    lambda d, f, m: f.update({"name": "Ann", "amount": 3}),
    lambda d, f, m: f.update({"name": 42}),
    lambda d, f, m: f.update({"notes": "plain"}),
    lambda d, f, m: f.update({"name": Text("A")}),
    lambda d, f, m: f.update({"email": Map({"a": 1})}),
    lambda d, f, m: m.update({"deleted": False}),
    lambda d, f, m: d.__setitem__("extra", Text("x")),
    lambda d, f, m: f.pop("name"),
]


def live_record(start: dict[str, object]) -> tuple[LiveRecord, Doc]:
    """A live record created by a patch, and a client replica holding the same state."""
    origin = document_from_state(None)
    state = records.patch(CONTACT, origin, start, creating=True)
    return records.live_record(CONTACT, state), document_from_state(state)


def client_update(replica: Doc, build: object) -> bytes:
    before = replica.get_state()
    with replica.transaction():
        build(replica, replica.get("record", type=Map), replica.get("meta", type=Map))  # type: ignore[operator]
    return replica.get_update(before)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("patch"), patches),
            st.tuples(st.just("text"), st.text(alphabet="xy\u00e9", min_size=1, max_size=4)),
            st.tuples(st.just("bad"), st.integers(0, len(BAD_BUILDS) - 1)),
            st.tuples(st.just("delete"), st.none()),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_live_record_accepts_and_refuses_exactly_what_the_full_check_does(
    steps: list[tuple[str, object]],
) -> None:
    """Each update goes to a LiveRecord and to the reference (check on a copy, then apply)."""
    live, _ = live_record({"name": "Start", "notes": "ab"})
    reference = document_from_state(live.document.get_update())
    for action, arg in steps:
        # A client in sync with the server makes the update, as a stock Yjs client would.
        replica = document_from_state(reference.get_update())
        if action == "patch":
            records.patch(CONTACT, replica, arg)  # type: ignore[arg-type]
            update = replica.get_update(reference.get_state())
        elif action == "text":
            text = str(arg)
            update = client_update(
                replica,
                lambda d, f, m, t=text: (
                    f["notes"].insert(0, t) if "notes" in f else f.update({"notes": Text(t)})
                ),
            )
        elif action == "bad":
            update = client_update(replica, BAD_BUILDS[arg])  # type: ignore[index]
        else:
            update = records.delete(CONTACT, replica) or EMPTY_UPDATE
        try:
            expected = records.check_update(CONTACT, reference, update)
        except (SchemaViolation, InvalidUpdate) as refused:
            with pytest.raises(type(refused), match=re.escape(refused.message)):
                live.apply(update, max_document_bytes=1 << 20)
        else:
            reference.apply_update(update)
            checked = live.apply(update, max_document_bytes=1 << 20)
            assert (checked.view, checked.is_deleted, checked.is_noop) == (
                expected.view,
                expected.is_deleted,
                expected.is_noop,
            )
            assert checked.changed_fields == expected.changed_fields
        assert live.view == records.view(CONTACT, reference)
        assert live.document.get_state() == reference.get_state()
        assert live.document.get_update() == reference.get_update()
    live.close()


def test_a_refused_update_leaves_no_trace_and_the_next_good_one_applies() -> None:
    live, replica = live_record({"name": "Ann"})
    records.patch(CONTACT, replica, {"company": "Acme"})
    good = replica.get_update(live.document.get_state())
    live.apply(good, max_document_bytes=1 << 20)
    state = live.document.get_update()
    bad = client_update(replica, lambda d, f, m: f.update({"amount": 3}))
    with pytest.raises(SchemaViolation, match="unknown field 'amount'"):
        live.apply(bad, max_document_bytes=1 << 20)
    assert live.document.get_update() == state
    assert live.view["company"] == "Acme"
    fresh = document_from_state(state)
    records.patch(CONTACT, fresh, {"email": "ann@example.com"})
    checked = live.apply(fresh.get_update(live.document.get_state()), max_document_bytes=1 << 20)
    assert checked.changed_fields == ("email",)
    assert live.view["email"] == "ann@example.com" and "amount" not in live.document.get(
        "record", type=Map
    )


def test_a_live_record_refuses_an_update_with_unseen_dependencies_and_keeps_nothing() -> None:
    live, replica = live_record({"name": "Ann"})
    before = replica.get_state()
    records.patch(CONTACT, replica, {"company": "Acme"})
    middle = replica.get_state()
    records.patch(CONTACT, replica, {"company": "Globex"})
    state = live.document.get_update()
    with pytest.raises(InvalidUpdate, match="depends on changes this document has not seen"):
        live.apply(replica.get_update(middle), max_document_bytes=1 << 20)
    assert live.document.get_update() == state
    assert (
        live.apply(replica.get_update(before), max_document_bytes=1 << 20).view["company"]
        == "Globex"
    )


def test_a_live_record_over_the_size_limit_is_refused_and_unchanged() -> None:
    live, replica = live_record({"name": "Ann"})
    records.patch(CONTACT, replica, {"notes": "x" * 5000})
    state = live.document.get_update()
    with pytest.raises(LimitExceeded, match=r"^contacts/42: document would grow to \d+ bytes"):
        live.apply(replica.get_update(live.document.get_state()), max_document_bytes=4096)
    assert live.document.get_update() == state


def test_overwriting_a_field_many_times_stays_under_a_limit_the_live_state_respects() -> None:
    """The size is estimated from the updates, and measured before anything is refused."""
    live, replica = live_record({"name": "Ann"})
    for i in range(300):
        records.patch(CONTACT, replica, {"company": f"company number {i}"})
        live.apply(replica.get_update(live.document.get_state()), max_document_bytes=4096)
    assert live.view["company"] == "company number 299"
    assert len(live.document.get_update()) < 4096

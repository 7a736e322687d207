"""Outboxes and published updates: merged once per commit, merged again while a peer lags."""

from __future__ import annotations

from pycrdt import Doc, Map

from crdt_sync.fanout import Outbox, PendingUpdates, Published, Subscriber, group_by_document
from crdt_sync.ids import DocId, Origin, Seq
from crdt_sync.protocol.ysync import YjsUpdate, decode_yjs_message, encode_sync_update
from crdt_sync.store.base import Committed

CONTACT = DocId("contacts/1")
DEAL = DocId("deals/1")


def edits(count: int, doc: Doc | None = None) -> tuple[Doc, list[bytes]]:
    doc = doc if doc is not None else Doc()
    record = doc.get("record", type=Map)
    updates = []
    for i in range(count):
        before = doc.get_state()
        record["company"] = f"company {i}"
        updates.append(doc.get_update(before))
    return doc, updates


def committed(doc_id: DocId, updates: list[bytes], first_seq: int = 1) -> list[Committed]:
    return [Committed(Seq(first_seq + i), doc_id, u, Origin("t")) for i, u in enumerate(updates)]


def replay(frames: list[bytes]) -> Doc:
    doc = Doc()
    for frame in frames:
        message = decode_yjs_message(frame)
        assert isinstance(message, YjsUpdate)
        doc.apply_update(message.update)
    return doc


def test_a_commit_is_published_as_one_update_per_record_encoded_once() -> None:
    _, updates = edits(5)
    groups = group_by_document(committed(CONTACT, updates[:3]) + committed(DEAL, updates[3:], 4))
    assert [len(g) for g in groups.values()] == [3, 2]
    published = Published(CONTACT, groups[CONTACT])
    frame = published.frame(encode_sync_update)
    assert published.frame(encode_sync_update) is frame  # every peer gets the same bytes
    assert (
        replay([frame]).get_state()
        == replay([encode_sync_update(u) for u in updates[:3]]).get_state()
    )


async def test_updates_to_a_record_queued_back_to_back_are_sent_as_one_frame() -> None:
    source, updates = edits(50)
    outbox = Outbox(max_items=4, max_bytes=1 << 20)
    for i, update in enumerate(updates):
        assert outbox.put_published_nowait(Published(CONTACT, committed(CONTACT, [update], i + 1)))
    assert outbox.qsize() == 1  # 50 commits, one item: a burst does not overflow a lagging peer
    (item,) = await outbox.get_batch()
    assert isinstance(item, PendingUpdates)
    received = replay([item.frame(encode_sync_update)])
    assert received.get_state() == source.get_state()
    assert received.get("record", type=Map)["company"] == "company 49"


async def test_other_frames_keep_their_place_between_updates() -> None:
    _, updates = edits(3)
    outbox = Outbox(max_items=10, max_bytes=1 << 20)
    outbox.put_published_nowait(Published(CONTACT, committed(CONTACT, updates[:1])))
    outbox.put_nowait(b"awareness", 9)
    outbox.put_published_nowait(Published(CONTACT, committed(CONTACT, updates[1:], 2)))
    batch = await outbox.get_batch()
    assert [type(item) for item in batch] == [PendingUpdates, bytes, PendingUpdates]
    assert outbox.qsize() == 0 and outbox.nbytes == 0


def test_an_outbox_overflows_on_bytes_even_when_updates_merge() -> None:
    _, updates = edits(1)
    big = Committed(Seq(1), CONTACT, updates[0] + b"", Origin("t"))
    subscriber = Subscriber(
        "stuck", doc_id=CONTACT, max_queue=8, max_queue_bytes=10 * len(big.update)
    )
    for i in range(10):
        subscriber.offer_published(Published(CONTACT, [big]))
    assert not subscriber.overflowed.is_set()
    subscriber.offer_published(Published(CONTACT, [big]))
    assert subscriber.overflowed.is_set()
    assert subscriber.queue.qsize() == 1


def test_an_outbox_overflows_on_items_and_then_takes_nothing() -> None:
    subscriber = Subscriber("stuck", collections=None, max_queue=3)
    for i in range(3):
        subscriber.offer_frame(b"x")
    assert not subscriber.overflowed.is_set()
    subscriber.offer_frame(b"x")
    assert subscriber.overflowed.is_set()
    subscriber.offer_frame(b"x")
    assert subscriber.queue.qsize() == 3


def test_one_item_larger_than_the_byte_bound_fits_an_empty_outbox() -> None:
    outbox = Outbox(max_items=4, max_bytes=100)
    assert outbox.put_nowait(b"x" * 1000, 1000)  # a whole document's step 2 may be large
    assert not outbox.put_nowait(b"y", 1)

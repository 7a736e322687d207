"""A record's history: its stored updates replayed one by one through a `LiveRecord` (pure).

What an update touched is what `LiveRecord.apply` reports it changed, worked out against the
document as it was just before: the same check every write went through, at the cost of the
update rather than of the whole document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import RecordNotFound
from .ids import DocId, Origin, Seq
from .record import NO_SIZE_LIMIT, Records, View

if TYPE_CHECKING:  # the store's package opens SQLite connections; this module stays pure
    from .store.base import LogEntry


@dataclass(frozen=True, slots=True)
class Step:
    """One stored update and the record just after it."""

    seq: Seq
    at: float
    origin: Origin
    size: int
    is_snapshot: bool  # compaction folded several updates (all before `seq`) into this one
    touched: tuple[str, ...]  # fields whose value this update changed
    deletes: bool  # this update made the tombstone
    view: View
    is_deleted: bool


def replay(records: Records, doc_id: DocId, log: Sequence[LogEntry]) -> list[Step]:
    """Every update of `log` (one document's, in seq order) with what it did.

    Raises:
        UnknownCollection: the schema does not know the document's collection.
    """
    record = records.live_record(doc_id, None)
    steps: list[Step] = []
    was_deleted = False
    for entry in log:
        checked = record.apply(entry.update, max_document_bytes=NO_SIZE_LIMIT, stored=True)
        steps.append(
            Step(
                entry.seq,
                entry.at,
                entry.origin,
                len(entry.update),
                entry.is_snapshot,
                checked.changed_fields,
                checked.is_deleted and not was_deleted,
                checked.view,
                checked.is_deleted,
            )
        )
        was_deleted = checked.is_deleted
    record.close()
    return steps


def step_at(doc_id: DocId, steps: Sequence[Step], seq: int) -> Step:
    """The record as it was after update `seq`: the last step at or before it.

    Raises:
        RecordNotFound: the record had no update yet at `seq`, or compaction folded that
            part of its history away.
    """
    found = [step for step in steps if step.seq <= seq]
    if found:
        return found[-1]
    if steps and steps[0].is_snapshot:
        raise RecordNotFound(
            doc_id,
            f"history up to seq {steps[0].seq} was compacted into one snapshot; "
            f"the record can be shown as it was after seq {steps[0].seq} or later",
        )
    first = f" (its first update is seq {steps[0].seq})" if steps else ""
    raise RecordNotFound(doc_id, f"the record did not exist yet at seq {seq}{first}")

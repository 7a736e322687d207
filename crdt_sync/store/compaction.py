"""Compaction of one document: fold its log rows into one garbage-collected snapshot (I/O layer).

Rule: the snapshot replaces exactly the rows it folded, seq <= S, and takes their last seq S,
so a client whose cursor is below S receives it and one at or above S already had everything
in it. Rows appended after the read (seq > S) are never touched. If the folded rows changed
meanwhile (another compaction got there first), nothing is written and the caller retries.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import pycrdt

from ..ids import DocId, Origin, Seq
from . import chains
from .base import CompactionReport

COMPACTION_ORIGIN = Origin("compaction")
"""The origin of a snapshot row: it holds updates of many origins, so it is nobody's echo."""


@dataclass(frozen=True, slots=True)
class Fold:
    """A document's rows as read, and the snapshot that would replace them."""

    doc_id: DocId
    collection: str
    seqs: list[Seq]
    at: float  # commit time of the last folded row, kept by the snapshot
    bytes_before: int
    snapshot: bytes

    @property
    def last_seq(self) -> Seq:
        return self.seqs[-1]

    def report(self, *, is_compacted: bool) -> CompactionReport:
        if not is_compacted:
            return skipped(len(self.seqs), self.bytes_before)
        return CompactionReport(1, len(self.seqs), 1, self.bytes_before, len(self.snapshot))


def skipped(updates: int, size: int) -> CompactionReport:
    return CompactionReport(0, updates, updates, size, size)


def add(total: CompactionReport, part: CompactionReport) -> CompactionReport:
    return CompactionReport(
        total.documents + part.documents,
        total.updates_before + part.updates_before,
        total.updates_after + part.updates_after,
        total.bytes_before + part.bytes_before,
        total.bytes_after + part.bytes_after,
    )


# What follows runs on a connection's thread.


def read_and_fold(db: sqlite3.Connection, doc_id: DocId) -> Fold | CompactionReport:
    """The fold of `doc_id`'s rows, or a 'skipped' report when there is nothing to fold."""
    rows = chains.newest_first(db, doc_id, "seq, collection, data, at")[::-1]
    size = sum(len(data) for _, _, data, _ in rows)
    if len(rows) <= 1:
        return skipped(len(rows), size)
    document: pycrdt.Doc[Any] = (
        pycrdt.Doc()
    )  # collects garbage: deleted content leaves the encoding
    with document.transaction():
        for _, _, data, _ in rows:
            document.apply_update(data)
    snapshot = document.get_update()
    seqs = [Seq(seq) for seq, _, _, _ in rows]
    return Fold(doc_id, rows[-1][1], seqs, rows[-1][3], size, snapshot)


def replace_with_snapshot(db: sqlite3.Connection, fold: Fold) -> bool:
    """In the caller's transaction: swap the folded rows for the snapshot if they are all there."""
    current = [seq for (seq,) in chains.from_seq(db, fold.last_seq, fold.doc_id, "seq")]
    if current[::-1] != fold.seqs:
        return False
    db.executemany("DELETE FROM updates WHERE seq = ?", ((seq,) for seq in fold.seqs))
    # The snapshot starts the chain (prev_seq NULL); rows appended since the read still point
    # at its seq, the seq of the last row it folds.
    db.execute(
        "INSERT INTO updates (seq, doc_id, collection, data, origin, at, is_snapshot)"
        " VALUES (?, ?, ?, ?, ?, ?, 1)",
        (fold.last_seq, fold.doc_id, fold.collection, fold.snapshot, COMPACTION_ORIGIN, fold.at),
    )
    db.execute(
        "UPDATE records SET size = size - ? + ? WHERE doc_id = ?",
        (fold.bytes_before, len(fold.snapshot), fold.doc_id),
    )
    return True


def documents_to_compact(db: sqlite3.Connection) -> list[DocId]:
    """Documents with more than one log row (their head has a previous row), in doc_id order."""
    rows = db.execute(
        "SELECT records.doc_id FROM records CROSS JOIN updates ON updates.seq = records.last_seq"
        " WHERE updates.prev_seq IS NOT NULL ORDER BY records.doc_id"
    )
    return [DocId(doc_id) for (doc_id,) in rows]

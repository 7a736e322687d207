"""Compaction of one document: fold its log rows into one garbage-collected snapshot (I/O layer).

Rule 1: a snapshot replaces exactly the rows it folded, seq <= S, and takes their last seq S,
so a client whose cursor is below S receives it and one at or above S already had everything
in it. Rows appended after the read (seq > S) are never touched. If the folded rows changed
meanwhile (another compaction got there first), nothing is written and the caller retries.
Rule 2: a long chain is folded a prefix at a time (`Folding`): each step's snapshot replaces
the previous step's snapshot and the next STEP_ROWS rows, in a transaction of its own. The
chain is read and every fold computed outside the write transaction; the transaction only
checks the rows are still there and swaps them, so no step holds the write lock for longer
than a walk, a delete and an insert of a bounded number of rows, however long the backlog.
Between steps the store is a valid chain (a snapshot at S, then the rows after S), so a step
that fails leaves the record compacted up to the last step that committed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from ..ids import DocId, Origin, Seq
from . import chains
from .base import CompactionReport

COMPACTION_ORIGIN = Origin("compaction")
"""The origin of a snapshot row: it holds updates of many origins, so it is nobody's echo."""

STEP_ROWS = 1000  # log rows one step folds; what one write transaction deletes, at most
STEP_BYTES = 1 << 20  # ... or fewer rows, once theirs hold this many bytes


@dataclass(frozen=True, slots=True)
class Fold:
    """One step: the chain's rows it replaces (oldest first), and the snapshot that will."""

    doc_id: DocId
    collection: str
    seqs: list[Seq]
    at: float  # commit time of the last folded row, kept by the snapshot
    bytes_before: int
    snapshot: bytes

    @property
    def last_seq(self) -> Seq:
        return self.seqs[-1]


@dataclass(slots=True)
class Folding:
    """A document's chain as read once, folded a prefix at a time.

    Lives on the reading connection's thread (it holds a pycrdt Doc, which stays on the
    thread that made it): `next_fold` is run there, `committed` anywhere.
    """

    doc_id: DocId
    rows: list[tuple[Seq, str, bytes, float]]  # seq, collection, data, at; oldest first
    step_rows: int = STEP_ROWS
    step_bytes: int = STEP_BYTES
    folded: int = 0  # rows of `rows` that committed snapshots replaced
    steps: int = 0  # snapshots committed
    base: tuple[Seq, int] | None = None  # the last committed snapshot: its seq and size
    _document: pycrdt.Doc[Any] | None = field(default=None, repr=False)
    _applied: int = 0  # rows of `rows` applied to _document

    def next_fold(self) -> Fold | None:
        """The next step, or None once every row read is folded (or there was one row)."""
        if self.base is None and len(self.rows) <= 1:
            return None
        start = self.folded
        if start >= len(self.rows):
            return None
        if self._document is None:
            self._document = pycrdt.Doc()  # collects garbage: deleted content leaves it
        assert self._applied == start, "a fold is committed before the next is asked for"
        end, size = start, 0
        while end < len(self.rows) and end - start < self.step_rows and size < self.step_bytes:
            size += len(self.rows[end][2])
            end += 1
        if end < len(self.rows) and len(self.rows) - end == 1:
            end += 1  # never leave a lone row behind a snapshot: fold it in this step
            size += len(self.rows[-1][2])
        document = self._document
        with document.transaction():
            for _, _, data, _ in self.rows[start:end]:
                document.apply_update(data)
        self._applied = end
        seqs = [seq for seq, _, _, _ in self.rows[start:end]]
        if self.base is not None:
            base_seq, base_size = self.base
            seqs.insert(0, base_seq)
            size += base_size
        last = self.rows[end - 1]
        return Fold(self.doc_id, last[1], seqs, last[3], size, document.get_update())

    def committed(self, fold: Fold) -> None:
        self.folded = self._applied
        self.steps += 1
        self.base = (fold.last_seq, len(fold.snapshot))

    def abandoned(self) -> None:
        """The last fold did not commit: the document holds rows the store did not fold."""
        self._document = None

    def report(self) -> CompactionReport:
        rest = self.rows[self.folded :]
        rest_size = sum(len(data) for _, _, data, _ in rest)
        before = sum(len(data) for _, _, data, _ in self.rows)
        if self.base is None:
            return skipped(len(self.rows), before)
        return CompactionReport(
            1, len(self.rows), 1 + len(rest), before, self.base[1] + rest_size, self.steps
        )


def skipped(updates: int, size: int) -> CompactionReport:
    return CompactionReport(0, updates, updates, size, size)


def add(total: CompactionReport, part: CompactionReport) -> CompactionReport:
    return CompactionReport(
        total.documents + part.documents,
        total.updates_before + part.updates_before,
        total.updates_after + part.updates_after,
        total.bytes_before + part.bytes_before,
        total.bytes_after + part.bytes_after,
        total.steps + part.steps,
    )


# What follows runs on a connection's thread.


def read_chain(
    db: sqlite3.Connection,
    doc_id: DocId,
    step_rows: int = STEP_ROWS,
    step_bytes: int = STEP_BYTES,
) -> Folding | CompactionReport:
    """`doc_id`'s chain to fold, or a 'skipped' report when there is nothing to fold."""
    rows = [
        (Seq(seq), collection, data, at)
        for seq, collection, data, at in chains.newest_first(
            db, doc_id, "seq, collection, data, at"
        )[::-1]
    ]
    if len(rows) <= 1:
        return skipped(len(rows), sum(len(data) for _, _, data, _ in rows))
    return Folding(doc_id, rows, step_rows=step_rows, step_bytes=step_bytes)


def next_fold(db: sqlite3.Connection, folding: Folding) -> Fold | None:
    """`folding.next_fold()` on the connection's thread (`db` is not used: the rows are read)."""
    return folding.next_fold()


def replace_with_snapshot(db: sqlite3.Connection, fold: Fold) -> bool:
    """In the caller's transaction: swap the folded rows for the snapshot if they are all there.

    The walk back from the fold's last row ends at the chain's start, which is the previous
    step's snapshot (or the record's first row), so it reads at most a step's rows.
    """
    current = [seq for (seq,) in chains.from_seq(db, fold.last_seq, fold.doc_id, "seq")]
    if current[::-1] != fold.seqs:
        return False
    # One statement, not executemany: a statement per row would take the GIL back per row,
    # each time queued behind the event loop (transactions.py, CHUNK_SIZES).
    db.execute(
        "DELETE FROM updates WHERE seq IN (SELECT value FROM json_each(?))",
        (json.dumps(fold.seqs),),
    )
    # The snapshot starts the chain (prev_seq NULL); rows after it still point at its seq,
    # the seq of the last row it folds.
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

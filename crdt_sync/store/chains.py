"""A document's log rows form a chain: each row names the seq of the document's row before it.

Rule: `updates.prev_seq` is the seq of the same document's previous row, NULL for its first row
(or for a compaction snapshot, which folds everything before it), and always below the row's
own seq. `records.last_seq` is the head of the chain. A document's rows are read by walking
the chain back from the head, one primary-key lookup per row.

Why not an index on (doc_id, seq): every append inserts into the index at its document's place,
so a group commit of N documents dirtied up to N index pages. Those pages were 9 of every 10
pages a commit wrote to the WAL, and half the cost of an append. A chain costs one integer per
row and nothing at the head of the log, where appends already write.

Runs on a connection's thread; nothing here awaits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from ..ids import DocId, Seq

Query = tuple[str, tuple[Any, ...]]


def newest_first(db: sqlite3.Connection, doc_id: DocId, columns: str) -> list[tuple[Any, ...]]:
    """`columns` of every log row of `doc_id`, from the head back to the first."""
    return db.execute(*newest_first_query(doc_id, columns)).fetchall()


def from_seq(
    db: sqlite3.Connection, seq: Seq, doc_id: DocId, columns: str
) -> list[tuple[Any, ...]]:
    """`columns` of the row at `seq` if it belongs to `doc_id`, and of every row before it."""
    return db.execute(*_walk("seq = ? AND doc_id = ?", (seq, doc_id), columns)).fetchall()


def newest_first_query(doc_id: DocId, columns: str) -> Query:
    return _walk("seq = (SELECT last_seq FROM records WHERE doc_id = ?)", (doc_id,), columns)


def _walk(first: str, params: tuple[Any, ...], columns: str) -> Query:
    # `link_prev < link_seq` is the chain's invariant; checking it ends the walk even on a
    # damaged file. CROSS JOIN keeps SQLite from turning the walk into a scan of the log.
    sql = f"""
        WITH RECURSIVE chain (link_seq, link_prev, {columns}) AS (
            SELECT seq, prev_seq, {columns} FROM updates WHERE {first}
            UNION ALL
            SELECT updates.seq, updates.prev_seq, {_qualified(columns)}
            FROM chain CROSS JOIN updates
            ON updates.seq = chain.link_prev AND chain.link_prev < chain.link_seq
        )
        SELECT {columns} FROM chain
    """
    return sql, params


def _qualified(columns: str) -> str:
    return ", ".join(f"updates.{column.strip()}" for column in columns.split(","))


class Heads:
    """The head of the chain of documents written lately, as this process last saw it committed.

    An append names its row's predecessor from here, so that the common case (a document
    written again soon) costs no lookup; a document not here is looked up in SQL. Held by
    the store's one writer and touched only inside its transactions: an entry is set for
    every row another process committed (read back before this writer's own rows) and for
    every row of this writer, once committed. Compaction never moves a head (a snapshot takes
    the seq of the last row it folds). When full it is emptied: a miss is only a lookup.
    """

    def __init__(self, capacity: int = 16_384) -> None:
        self._capacity = capacity
        self._seqs: dict[DocId, Seq] = {}

    def get(self, doc_id: DocId) -> Seq | None:
        return self._seqs.get(doc_id)

    def advance(self, rows: Iterable[tuple[DocId, Seq]]) -> None:
        """Record committed rows; of two rows of one document, the later one must come later."""
        seqs = self._seqs
        for doc_id, seq in rows:
            seqs[doc_id] = seq
        if len(seqs) > self._capacity:
            seqs.clear()

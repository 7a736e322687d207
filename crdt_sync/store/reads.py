"""The store's reads, each one function run on the reading connection's thread (I/O layer).

Rule: every read that walks many rows does it through an index range (see MIGRATIONS) or a
document's chain (chains.py), so its cost follows the rows it returns, not the size of the store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import pycrdt

from ..ids import DocId, Origin, Seq
from . import chains
from .base import DocumentState, LogEntry, RecordRow, StoreStatistics, TokenRow

RECORD_COLUMNS = (
    "doc_id, collection, record_id, view, is_deleted, first_seq, last_seq, created_by, updated_at"
)
LOG_COLUMNS = "seq, doc_id, data, origin, at, is_snapshot, door, token"
TOKEN_COLUMNS = "name, role, created_at, revoked_at, last_used_at"

Query = tuple[str, tuple[Any, ...]]


def changes(
    db: sqlite3.Connection, cursor: Seq, collections: Sequence[str] | None, limit: int
) -> list[RecordRow]:
    """Records changed after `cursor` in `collections` (None: in every collection there is)."""
    if collections is None:
        collections = [name for (name,) in db.execute(COLLECTIONS)]
    return records(db, changes_query(cursor, collections, limit))


def changes_query(cursor: Seq, collections: Sequence[str], limit: int) -> Query:
    """Records changed after `cursor`, by last_seq: one range of records_by_collection per
    collection, merged."""
    select = f"SELECT {RECORD_COLUMNS} FROM records WHERE last_seq > ? AND collection = ?"
    return _merged(select, "last_seq", [(cursor, name) for name in collections], limit)


# The collections that have records, one index lookup each (a loose scan of records_by_collection)
COLLECTIONS = """
    WITH RECURSIVE names (name) AS (
        SELECT MIN(collection) FROM records
        UNION ALL
        SELECT (SELECT MIN(collection) FROM records WHERE collection > names.name)
        FROM names WHERE names.name IS NOT NULL
    )
    SELECT name FROM names WHERE name IS NOT NULL
"""


def log_query(cursor: Seq, collections: Sequence[str] | None, limit: int) -> Query:
    """Log entries after `cursor`, by seq: a range of the primary key.

    With collections, the range is filtered rather than served from a (collection, seq) index:
    that index made every append a quarter dearer, and a catch-up walks the log from its
    cursor once either way (a page costs the changes since the cursor, not the store's size).
    """
    select = f"SELECT {LOG_COLUMNS} FROM updates WHERE seq > ?"
    if collections is None:
        return f"{select} ORDER BY seq LIMIT ?", (cursor, limit)
    if not collections:
        return "SELECT 1 WHERE 0", ()  # no collection asked for: nothing
    marks = ", ".join("?" * len(collections))
    return (
        f"{select} AND collection IN ({marks}) ORDER BY seq LIMIT ?",
        (cursor, *collections, limit),
    )


def snapshot_query(
    collections: Sequence[str] | None, after: DocId | None, limit: int, include_deleted: bool
) -> Query:
    """Records after `after`, by doc_id: ranges of the doc_id key ("deals/" up to "deals0")."""
    select = f"SELECT {RECORD_COLUMNS} FROM records WHERE doc_id > ?"
    if not include_deleted:
        select += " AND is_deleted = 0"
    if collections is None:
        return f"{select} ORDER BY doc_id LIMIT ?", (after or "", limit)
    # Every doc_id of a collection sorts between "name/" and "name0" ("0" follows "/").
    each = [(max(after or "", f"{name}/"), f"{name}0") for name in collections]
    return _merged(f"{select} AND doc_id < ?", "doc_id", each, limit)


def _merged(select: str, order: str, each: list[tuple[Any, ...]], limit: int) -> Query:
    """One index range per parameter set, each cut at `limit`, merged in `order`.

    An `IN (...)` over collections would make SQLite sort every match since the cursor before
    cutting a page; this reads at most `limit` rows of each range.
    """
    if not each:
        return "SELECT 1 WHERE 0", ()  # no collection asked for: nothing
    if len(each) == 1:  # one range is in order already: no merge, no sort
        return f"{select} ORDER BY {order} LIMIT ?", (*each[0], limit)
    part = f"SELECT * FROM ({select} ORDER BY {order} LIMIT ?)"
    sql = " UNION ALL ".join([part] * len(each)) + f" ORDER BY {order} LIMIT ?"
    return sql, (*(value for params in each for value in (*params, limit)), limit)


def records(db: sqlite3.Connection, query: Query) -> list[RecordRow]:
    return [_record(row) for row in db.execute(*query)]


def log(db: sqlite3.Connection, query: Query) -> list[LogEntry]:
    return [_log_entry(row) for row in db.execute(*query)]


def load(db: sqlite3.Connection, doc_id: DocId) -> bytes | None:
    updates = [data for (data,) in reversed(chains.newest_first(db, doc_id, "data"))]
    if not updates:
        return None
    if len(updates) == 1:
        return bytes(updates[0])
    return pycrdt.merge_updates(*updates)


def history(db: sqlite3.Connection, doc_id: DocId) -> list[LogEntry]:
    return [_log_entry(row) for row in reversed(chains.newest_first(db, doc_id, LOG_COLUMNS))]


def get_record(db: sqlite3.Connection, doc_id: DocId) -> RecordRow | None:
    row = db.execute(f"SELECT {RECORD_COLUMNS} FROM records WHERE doc_id = ?", (doc_id,)).fetchone()
    return None if row is None else _record(row)


def cursor(db: sqlite3.Connection) -> Seq:
    (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM updates").fetchone()
    return Seq(seq)


def recall(db: sqlite3.Connection, key: str, not_before: float) -> bytes | None:
    row = db.execute(
        "SELECT answer FROM idempotency WHERE key = ? AND at >= ?", (key, not_before)
    ).fetchone()
    return None if row is None else bytes(row[0])


def statistics(db: sqlite3.Connection, file_bytes: int) -> StoreStatistics:
    """Every count from one read transaction, so they agree with each other."""
    db.execute("BEGIN")
    try:
        live: dict[str, int] = {}
        deleted: dict[str, int] = {}
        for collection, is_deleted, count in db.execute(
            "SELECT collection, is_deleted, COUNT(*) FROM records GROUP BY collection, is_deleted"
        ):
            (deleted if is_deleted else live)[collection] = count
        (entries, snapshots) = db.execute(
            "SELECT COUNT(*), CAST(TOTAL(is_snapshot) AS INTEGER) FROM updates"
        ).fetchone()
        (indebted,) = db.execute(
            "SELECT COUNT(*) FROM records CROSS JOIN updates ON updates.seq = records.last_seq"
            " WHERE updates.prev_seq IS NOT NULL"
        ).fetchone()  # a head with a row before it: more than one row
        return StoreStatistics(
            cursor=cursor(db),
            records=live,
            deleted=deleted,
            log_entries=entries,
            compaction_debt=entries - sum(live.values()) - sum(deleted.values()),
            file_bytes=file_bytes,
            # Records whose log starts at a compaction snapshot, and records compaction would
            # fold (more than one row).
            extra={"snapshots": snapshots, "records_with_debt": indebted},
        )
    finally:
        db.execute("COMMIT")


def find_token(db: sqlite3.Connection, token_hash: str) -> TokenRow | None:
    row = db.execute(
        f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = ? AND revoked_at IS NULL",
        (token_hash,),
    ).fetchone()
    return None if row is None else TokenRow(*row)


def list_tokens(db: sqlite3.Connection) -> list[TokenRow]:
    return [
        TokenRow(*row) for row in db.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name")
    ]


def _record(row: tuple[Any, ...]) -> RecordRow:
    doc_id, collection, record_id, view, is_deleted, first_seq, last_seq, created_by, at = row
    return RecordRow(
        DocId(doc_id),
        collection,
        record_id,
        json.loads(view),
        bool(is_deleted),
        Seq(first_seq),
        Seq(last_seq),
        Origin(created_by),
        at,
    )


def _log_entry(row: tuple[Any, ...]) -> LogEntry:
    seq, doc_id, data, origin, at, is_snapshot, door, token = row
    return LogEntry(
        Seq(seq), DocId(doc_id), bytes(data), Origin(origin, door, token), at, bool(is_snapshot)
    )


def documents(db: sqlite3.Connection, after: DocId | None, limit: int) -> list[DocumentState]:
    """A page of records with their merged states, in one read transaction so each state holds
    exactly the updates its view was computed from; short, so a writer's checkpoint is not held."""
    db.execute("BEGIN")
    try:
        rows = db.execute(
            f"SELECT {RECORD_COLUMNS}, size FROM records WHERE doc_id > ? ORDER BY doc_id LIMIT ?",
            (after or "", limit),
        ).fetchall()
        page = []
        for row in rows:
            record = _record(row[:-1])
            page.append(DocumentState(record, load(db, record.doc_id) or b"", row[-1]))
        return page
    finally:
        db.execute("COMMIT")


def record_sizes(db: sqlite3.Connection, doc_ids: Sequence[DocId]) -> dict[DocId, int]:
    sizes: dict[DocId, int] = {}
    for start in range(0, len(doc_ids), 500):  # under SQLite's limit on bound parameters
        part = doc_ids[start : start + 500]
        marks = ", ".join("?" * len(part))
        for doc_id, size in db.execute(
            f"SELECT doc_id, size FROM records WHERE doc_id IN ({marks})", tuple(part)
        ):
            sizes[DocId(doc_id)] = size
    return sizes


def meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM store_meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])

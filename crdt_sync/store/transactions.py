"""The store's write transactions, each run whole on the writing connection's thread (I/O layer).

The group-commit writer (writer.py) hands them jobs in order; nothing here awaits.

Rule: seqs are MAX(seq) + 1 ... read inside the write transaction (BEGIN IMMEDIATE), so another
process writing the same file, such as the CLI, never hands out the same seq. Whatever another
process committed since the writer last looked is read in the same transaction and reported
(as `Committed(..., foreign=True)`), so listeners see every update of the log, in seq order,
whoever wrote it.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from ..errors import KeyAlreadyUsed, NameTaken, StoreError
from ..ids import DocId, Origin, Seq
from .base import Committed
from .chains import Heads
from .connection import write_transaction

Outcome = list[Seq] | BaseException
"""What one job of a batch came to: its seqs, or the error its caller gets."""


@dataclass(slots=True)
class Row:
    """One update for the log: checked and encoded on the event loop, written on the thread."""

    doc_id: DocId
    collection: str
    record_id: str
    update: bytes
    view: str  # JSON
    is_deleted: int  # 0 or 1: sqlite3 binds an int for a quarter of what a bool costs
    origin: Origin


@dataclass(eq=False, slots=True)
class AppendJob:
    """Rows that commit together or not at all, with their optional idempotency key."""

    rows: list[Row]
    future: asyncio.Future[list[Seq]]
    idempotency_key: str | None = None
    answer: Callable[[list[Seq]], bytes] | None = None


@dataclass(eq=False, slots=True)
class FollowJob:
    """No write: only report what other processes committed since the writer last looked."""

    future: asyncio.Future[int]


@dataclass(eq=False, slots=True)
class ExclusiveJob:
    """Any other write (compaction, tokens): `work(db)` alone in its own transaction."""

    work: Callable[[sqlite3.Connection], object]
    future: asyncio.Future[object]


# A row template names its own parameters, {name}, each bound once per row however often it
# appears; ?1 is the commit time, bound once per statement. Fewer bindings: each costs the
# writing thread 0.1-0.5 us with the GIL held.
INSERT_UPDATES = (
    "INSERT INTO updates"
    " (seq, doc_id, collection, data, origin, door, token, at, is_snapshot, prev_seq) VALUES "
)
UPDATE_ROW = (
    "({seq}, {doc_id}, {collection}, {data}, {origin}, {door}, {token}, ?1, 0,"
    " COALESCE({prev_seq}, (SELECT last_seq FROM records WHERE doc_id = {doc_id})))"
)  # a prev_seq the writer does not know is the head of the chain as committed (chains.py)
UPDATE_PARAMS = ("seq", "doc_id", "collection", "data", "origin", "door", "token", "prev_seq")
UPSERT_RECORDS = (
    "INSERT INTO records (doc_id, collection, record_id, view, is_deleted,"
    " first_seq, last_seq, created_by, updated_at, size) VALUES "
)
RECORD_ROW = (
    "({doc_id}, {collection}, {record_id}, {view}, {is_deleted},"
    " {seq}, {seq}, {origin}, ?1, {size})"
)
RECORD_PARAMS = ("doc_id", "collection", "record_id", "view", "is_deleted", "seq", "origin", "size")
ON_CONFLICT = """
    ON CONFLICT (doc_id) DO UPDATE SET
        view = excluded.view,
        is_deleted = excluded.is_deleted,
        last_seq = excluded.last_seq,
        updated_at = excluded.updated_at,
        size = records.size + excluded.size
"""
# Rows per INSERT statement. One multi-row statement is one sqlite3_step, so the writing thread
# takes the GIL back once per chunk instead of once per row: with executemany() it queued
# behind the event loop for every row (the loop keeps the GIL for up to the 5 ms switch
# interval), which made a commit of 100 appends take ~5 ms instead of ~1.5 ms. Chunk sizes are
# powers of two so that SQLite's statement cache holds a handful of shapes, not one per size.
CHUNK_SIZES = (128, 32, 8, 2, 1)


def run_exclusive(
    db: sqlite3.Connection, work: Callable[[sqlite3.Connection], object], schema_version: int
) -> object:
    with write_transaction(db):
        still_at(db, schema_version)
        return work(db)


def commit_appends(
    db: sqlite3.Connection,
    batch: list[AppendJob],
    now: float,
    expired_before: float,
    known: Seq,
    heads: Heads,
    schema_version: int,
) -> tuple[list[Outcome], list[Committed]]:
    """Write the whole batch in one transaction; one outcome per job (its seqs, or its error).

    Also returns what other processes committed after seq `known` (all of it below this
    batch's seqs). A job with an idempotency key runs inside a savepoint, so a used key fails
    that job alone. Any other failure rolls the whole transaction back and raises. `heads`
    learns the foreign rows at once (they are committed whatever becomes of this
    transaction) and this batch's rows once they are committed.
    """
    written: dict[DocId, Seq] = {}
    with write_transaction(db):
        still_at(db, schema_version)
        foreign = read_foreign(db, known, heads)
        last_seq = foreign[-1].seq if foreign else known
        outcomes = _write(db, batch, now, expired_before, last_seq, heads, written)
    heads.advance(written.items())  # one entry per document: order does not matter
    return outcomes, foreign


def read_foreign(db: sqlite3.Connection, known: Seq, heads: Heads) -> list[Committed]:
    """The log after seq `known`: what other processes committed (a range of the primary key)."""
    rows = db.execute(
        "SELECT seq, doc_id, data, origin FROM updates WHERE seq > ? ORDER BY seq", (known,)
    )
    foreign = [
        Committed(Seq(seq), DocId(doc_id), data, Origin(origin), foreign=True)
        for seq, doc_id, data, origin in rows
    ]
    heads.advance((row.doc_id, row.seq) for row in foreign)
    return foreign


def still_at(db: sqlite3.Connection, schema_version: int) -> None:
    """Refuse to write a file that a newer crdt-sync migrated since this process opened it.

    Its rows would miss what the new schema needs (the prev_seq of migration 3, say); a
    restart runs this version's checks again, or refuses the newer file with a clear message.
    """
    (version,) = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    if version != schema_version:
        raise StoreError(
            f"the store was migrated from schema version {schema_version} to {version} by"
            " another crdt-sync process; restart this one (nothing of this write was stored)"
        )


def _write(
    db: sqlite3.Connection,
    batch: list[AppendJob],
    now: float,
    expired_before: float,
    last_seq: Seq,
    heads: Heads,
    written: dict[DocId, Seq],
) -> list[Outcome]:
    """`written` collects the newest row of each document this transaction wrote."""
    if any(job.idempotency_key is not None for job in batch):
        db.execute("DELETE FROM idempotency WHERE at < ?", (expired_before,))
    next_seq = last_seq + 1
    outcomes: list[Outcome] = []
    plain: list[tuple[Seq, Row]] = []  # consecutive jobs without a key, written in one go
    for job in batch:
        seqs = cast(list[Seq], list(range(next_seq, next_seq + len(job.rows))))
        if job.idempotency_key is None:
            plain.extend(zip(seqs, job.rows))
            outcomes.append(seqs)
            next_seq += len(seqs)
            continue
        _insert(db, plain, now, heads, written)
        plain = []
        outcome = _write_with_key(db, job, job.idempotency_key, seqs, now, heads, written)
        outcomes.append(outcome)
        if not isinstance(outcome, BaseException):
            next_seq += len(seqs)
    _insert(db, plain, now, heads, written)
    return outcomes


def _write_with_key(
    db: sqlite3.Connection,
    job: AppendJob,
    key: str,
    seqs: list[Seq],
    now: float,
    heads: Heads,
    written: dict[DocId, Seq],
) -> Outcome:
    db.execute("SAVEPOINT job")
    before = dict(written)
    try:
        _insert(db, list(zip(seqs, job.rows)), now, heads, written)
        answer = job.answer(seqs) if job.answer is not None else b""
    except sqlite3.Error:
        raise  # not this job's fault: the whole batch fails
    except Exception as exc:
        _undo(db, written, before)
        return exc
    try:
        db.execute("INSERT INTO idempotency (key, answer, at) VALUES (?, ?, ?)", (key, answer, now))
    except sqlite3.IntegrityError as exc:
        _undo(db, written, before)
        error = KeyAlreadyUsed(f"idempotency key {key!r} was already used")
        error.__cause__ = exc
        return error
    db.execute("RELEASE job")
    return seqs


def _undo(db: sqlite3.Connection, written: dict[DocId, Seq], before: dict[DocId, Seq]) -> None:
    db.execute("ROLLBACK TO job")
    db.execute("RELEASE job")
    written.clear()
    written.update(before)


def _insert(
    db: sqlite3.Connection,
    entries: list[tuple[Seq, Row]],
    now: float,
    heads: Heads,
    written: dict[DocId, Seq],
) -> None:
    """Log rows, each chained to its document's previous row, and record upserts, in order:
    a later row of the same record wins its view."""
    start = 0
    while start < len(entries):
        size = next(size for size in CHUNK_SIZES if size <= len(entries) - start)
        chunk = entries[start : start + size]
        start += size
        update_values: list[object] = [now]
        record_values: list[object] = [now]
        for seq, r in chunk:
            prev_seq = written.get(r.doc_id)
            if prev_seq is None:
                prev_seq = heads.get(r.doc_id)  # None: left to SQL (UPDATE_ROW)
            written[r.doc_id] = seq
            origin = r.origin
            update_values += (
                seq, r.doc_id, r.collection, r.update, origin, origin.door, origin.token, prev_seq
            )  # fmt: skip
            record_values += (
                r.doc_id, r.collection, r.record_id, r.view, r.is_deleted, seq, r.origin,
                len(r.update),
            )  # fmt: skip
        db.execute(_statement(INSERT_UPDATES, UPDATE_ROW, UPDATE_PARAMS, size), update_values)
        db.execute(
            _statement(UPSERT_RECORDS, RECORD_ROW, RECORD_PARAMS, size, ON_CONFLICT), record_values
        )


@functools.cache
def _statement(head: str, row: str, params: tuple[str, ...], rows: int, tail: str = "") -> str:
    """`head`, then `rows` copies of `row` with each {name} numbered (?2 up), then `tail`."""
    copies = []
    for n in range(rows):
        first = 2 + n * len(params)
        copies.append(row.format(**{name: f"?{first + i}" for i, name in enumerate(params)}))
    return head + ", ".join(copies) + tail


def insert_token(name: str, role: str, token_hash: str, now: float, db: sqlite3.Connection) -> None:
    try:
        db.execute(
            "INSERT INTO tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)",
            (name, role, token_hash, now),
        )
    except sqlite3.IntegrityError as exc:
        taken = "hash" if "token_hash" in str(exc) else "name"
        raise NameTaken(f"a token with this {taken} already exists (name {name!r})") from exc


def set_meta(key: str, value: str, db: sqlite3.Connection) -> None:
    db.execute(
        "INSERT INTO store_meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def touch_token(token_hash: str, now: float, db: sqlite3.Connection) -> None:
    db.execute("UPDATE tokens SET last_used_at = ? WHERE token_hash = ?", (now, token_hash))


def revoke_token(name: str, now: float, db: sqlite3.Connection) -> bool:
    cursor = db.execute(
        "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now, name)
    )
    return cursor.rowcount > 0

"""The PostgreSQL store's reads: one query (or one read-only transaction) each (I/O layer).

Rule: as in SQLite, every read that walks many rows follows an index (`updates` by seq and by
(doc_id, seq); `records` by doc_id and by last_seq), so it costs what it returns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pycrdt

from ...ids import DocId, Origin, Seq
from ..base import DocumentState, LogEntry, RecordRow, TokenRow
from ..checks import CheckReport, Finding
from ..listing import ID_SORT, RecordQuery
from .schema import DB

RECORD_COLUMNS = (
    "doc_id, collection, record_id, view, is_deleted, first_seq, last_seq, created_by, updated_at"
)
LOG_COLUMNS = "seq, doc_id, data, origin, at, is_snapshot, door, token"
TOKEN_COLUMNS = "name, role, created_at, revoked_at, last_used_at"

Query = tuple[str, tuple[Any, ...]]


async def fetch(db: DB, query: Query) -> list[tuple[Any, ...]]:
    cursor = await db.execute(query[0], query[1])
    return await cursor.fetchall()


async def fetch_one(db: DB, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    cursor = await db.execute(sql, params)
    return await cursor.fetchone()


def changes_query(cursor: Seq, collections: Sequence[str] | None, limit: int) -> Query:
    select = f"SELECT {RECORD_COLUMNS} FROM records WHERE last_seq > %s"
    if collections is None:
        return f"{select} ORDER BY last_seq LIMIT %s", (cursor, limit)
    return (
        f"{select} AND collection = ANY(%s) ORDER BY last_seq LIMIT %s",
        (cursor, list(collections), limit),
    )


def log_query(cursor: Seq, collections: Sequence[str] | None, limit: int) -> Query:
    select = f"SELECT {LOG_COLUMNS} FROM updates WHERE seq > %s"
    if collections is None:
        return f"{select} ORDER BY seq LIMIT %s", (cursor, limit)
    return (
        f"{select} AND collection = ANY(%s) ORDER BY seq LIMIT %s",
        (cursor, list(collections), limit),
    )


def snapshot_query(
    collections: Sequence[str] | None, after: DocId | None, limit: int, include_deleted: bool
) -> Query:
    select = f"SELECT {RECORD_COLUMNS} FROM records WHERE doc_id > %s"
    params: list[Any] = [after or ""]
    if not include_deleted:
        select += " AND NOT is_deleted"
    if collections is not None:
        select += " AND collection = ANY(%s)"
        params.append(list(collections))
    return f"{select} ORDER BY doc_id LIMIT %s", (*params, limit)


def list_query(query: RecordQuery) -> Query:
    """listing.list_query in PostgreSQL: JSON fields as `jsonb`, a JSON null as SQL NULL."""
    where = ["doc_id > %s", "doc_id < %s"]
    params: list[Any] = [f"{query.collection}/", f"{query.collection}0"]
    if not query.include_deleted:
        where.append("NOT is_deleted")
    for name, value in query.equals:
        if value is None:
            where.append(f"{_field()} IS NULL")
            params.append(name)
        else:
            where.append(f"{_field()} = %s::jsonb")
            params += [name, json.dumps(value)]
    if query.search and query.search_fields:
        pattern = "%" + query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern += "%"
        where.append("(" + " OR ".join("(view ->> %s) ILIKE %s" for _ in query.search_fields) + ")")
        for name in query.search_fields:
            params += [name, pattern]
    direction, beyond = ("DESC", "<") if query.is_descending else ("ASC", ">")
    if query.sort == ID_SORT:
        if query.after is not None:
            where.append(f"doc_id {beyond} %s")
            params.append(f"{query.collection}/{query.after[1]}")
        order, order_params = f"doc_id {direction}", []
    else:
        key = _field()
        if query.after is not None:
            value, record_id = query.after
            after_doc = f"{query.collection}/{record_id}"
            if value is None:
                where.append(f"{key} IS NULL AND doc_id {beyond} %s")
                params += [query.sort, after_doc]
            else:
                where.append(
                    f"(({key} IS NOT NULL AND ({key} {beyond} %s::jsonb"
                    f" OR ({key} = %s::jsonb AND doc_id {beyond} %s))) OR {key} IS NULL)"
                )
                encoded = json.dumps(value)
                params += [query.sort, query.sort, encoded, query.sort, encoded, after_doc]
                params.append(query.sort)
        order = f"{key} IS NULL, {key} {direction}, doc_id {direction}"
        order_params = [query.sort, query.sort]
    sql = (
        f"SELECT {RECORD_COLUMNS} FROM records WHERE {' AND '.join(where)}"
        f" ORDER BY {order} LIMIT %s"
    )
    return sql, (*params, *order_params, query.limit)


def _field() -> str:
    # A missing field and a JSON null both read as SQL NULL, as SQLite's json_extract does.
    return "NULLIF((view -> %s)::jsonb, 'null'::jsonb)"


def record(row: tuple[Any, ...]) -> RecordRow:
    doc_id, collection, record_id, view, is_deleted, first_seq, last_seq, created_by, at = row
    return RecordRow(
        DocId(doc_id),
        collection,
        record_id,
        view,  # psycopg decodes json columns
        bool(is_deleted),
        Seq(first_seq),
        Seq(last_seq),
        Origin(created_by),
        at,
    )


def log_entry(row: tuple[Any, ...]) -> LogEntry:
    seq, doc_id, data, origin, at, is_snapshot, door, token = row
    return LogEntry(
        Seq(seq), DocId(doc_id), bytes(data), Origin(origin, door, token), at, bool(is_snapshot)
    )


def token(row: tuple[Any, ...]) -> TokenRow:
    return TokenRow(*row)


async def load(db: DB, doc_id: DocId) -> bytes | None:
    rows = await fetch(db, ("SELECT data FROM updates WHERE doc_id = %s ORDER BY seq", (doc_id,)))
    if not rows:
        return None
    if len(rows) == 1:
        return bytes(rows[0][0])
    return pycrdt.merge_updates(*(bytes(data) for (data,) in rows))


async def documents(db: DB, after: DocId | None, limit: int) -> list[DocumentState]:
    """A page of records with their states; the caller runs it in one repeatable-read
    transaction, so each state holds exactly the updates its view was computed from."""
    rows = await fetch(
        db,
        (
            (
                f"SELECT {RECORD_COLUMNS}, size FROM records WHERE doc_id > %s"
                " ORDER BY doc_id LIMIT %s"
            ),
            (after or "", limit),
        ),
    )
    page = []
    for row in rows:
        found = record(row[:-1])
        page.append(DocumentState(found, await load(db, found.doc_id) or b"", row[-1]))
    return page


async def check(db: DB) -> CheckReport:
    """The PostgreSQL half of checks.check: log rows no record owns, heads that are not rows.

    There are no chains to break or fork here (rows are found by the (doc_id, seq) index).
    """
    (records,) = await fetch_one(db, "SELECT COUNT(*) FROM records") or (0,)
    (log_rows,) = await fetch_one(db, "SELECT COUNT(*) FROM updates") or (0,)
    report = CheckReport(records, log_rows, [], Finding(), Finding(), Finding(), Finding())
    bad_heads = await fetch(
        db,
        (
            (
                "SELECT records.doc_id, records.last_seq FROM records"
                " LEFT JOIN updates ON updates.seq = records.last_seq"
                " WHERE updates.seq IS NULL OR updates.doc_id <> records.doc_id"
            ),
            (),
        ),
    )
    for doc_id, last_seq in bad_heads:
        report.bad_heads.add(f"{doc_id} ends at seq {last_seq}, which is not one of its rows")
    orphans = await fetch(
        db,
        (
            (
                "SELECT updates.seq FROM updates LEFT JOIN records USING (doc_id)"
                " WHERE records.doc_id IS NULL OR updates.seq > records.last_seq"
            ),
            (),
        ),
    )
    for (seq,) in orphans:
        report.orphans.add(f"seq {seq} is in no record's history")
    return report

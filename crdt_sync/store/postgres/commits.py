"""The PostgreSQL store's write transactions: group commits under the seq lock (I/O layer).

Rule (the prefix rule, proven in docs/ARCHITECTURE.md "Many nodes"): a commit takes the seq
lock (the row lock of `seq_head`) as its last step before writing the log, allocates its seqs
as one block under it, and holds it until COMMIT returns. PostgreSQL makes a commit visible
before it releases the commit's locks, so the next holder starts after every smaller seq is
visible: whatever any reader sees of the log is a prefix of it.

Everything that may wait on another transaction (idempotency keys, which block on a
concurrent insert of the same key) happens before the seq lock; the holder waits on nobody.

A batch without idempotency keys (every /ws and /yjs write) is one statement in autocommit
(ONE_STATEMENT): it takes the lock (UPDATE seq_head), writes the rows and records with seqs
counted from the head it read, and commits, so the lock is held only while the server runs
it and flushes the commit, never across a round trip to this node. Other nodes' rows below
the batch are read after it: they were visible once the lock was granted, and stay so. A
batch with keys needs its seqs in Python (a push's answer holds them) before its rows are
written, so it runs as a transaction: key inserts, `SELECT ... FOR UPDATE`, the answers,
the rows, COMMIT, holding the lock for a few round trips.

A holder that stops (a node frozen, its host paused) is ended by PostgreSQL once its
transaction idles `idle_in_transaction_session_timeout`, which releases the lock; the other
nodes' commits wait for it up to `lock_timeout`, set longer (store.py). The stopped node's
batch fails unacknowledged, and its writer opens a new connection for the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import cast

from ...errors import KeyAlreadyUsed
from ...ids import DocId, Origin, Seq
from ..base import Committed
from ..transactions import ON_CONFLICT, AppendJob, ExclusiveJob, Outcome, Row
from .connection import connection_errors
from .schema import DB

INSERT_UPDATES = """
    INSERT INTO updates (seq, doc_id, collection, data, origin, door, token, at)
    SELECT seq, doc_id, collection, data, origin, door, token, %s
    FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::text[],
                %s::text[])
        AS t (seq, doc_id, collection, data, origin, door, token)
"""
# One row per record of the batch (ON CONFLICT may touch a row once per statement): its first
# seq, last seq, last view and the bytes its rows add.
UPSERT_RECORDS = (
    """
    INSERT INTO records (doc_id, collection, record_id, view, is_deleted,
                         first_seq, last_seq, created_by, updated_at, size)
    SELECT doc_id, collection, record_id, view::json, is_deleted,
           first_seq, last_seq, created_by, %s, size
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::boolean[],
                %s::bigint[], %s::bigint[], %s::text[], %s::bigint[])
        AS t (doc_id, collection, record_id, view, is_deleted,
              first_seq, last_seq, created_by, size)
"""
    + ON_CONFLICT
)  # the same upsert as SQLite's (store/transactions.py)
# The lock, the rows and the records in one statement (see above): seqs are the head plus
# each row's ordinal; one row per record, with the ordinals of its first and last rows.
ONE_STATEMENT = f"""
    WITH head AS (
        UPDATE seq_head SET seq = seq + %(count)s RETURNING seq - %(count)s AS base
    ), logged AS (
        INSERT INTO updates (seq, doc_id, collection, data, origin, door, token, at)
        SELECT head.base + t.ord, t.doc_id, t.collection, t.data, t.origin, t.door, t.token,
               %(at)s
        FROM head, unnest(%(doc_ids)s::text[], %(collections)s::text[], %(data)s::bytea[],
                          %(origins)s::text[], %(doors)s::text[], %(tokens)s::text[])
            WITH ORDINALITY AS t (doc_id, collection, data, origin, door, token, ord)
    ), recorded AS (
        INSERT INTO records (doc_id, collection, record_id, view, is_deleted,
                             first_seq, last_seq, created_by, updated_at, size)
        SELECT r.doc_id, r.collection, r.record_id, r.view::json, r.is_deleted,
               head.base + r.first_ord, head.base + r.last_ord, r.created_by, %(at)s, r.size
        FROM head, unnest(%(r_doc_ids)s::text[], %(r_collections)s::text[],
                          %(r_record_ids)s::text[], %(r_views)s::text[],
                          %(r_deleted)s::boolean[], %(r_first)s::bigint[],
                          %(r_last)s::bigint[], %(r_created_by)s::text[], %(r_sizes)s::bigint[])
            AS r (doc_id, collection, record_id, view, is_deleted, first_ord, last_ord,
                  created_by, size)
        {ON_CONFLICT}
    )
    SELECT base FROM head
"""
FOREIGN = (
    "SELECT seq, doc_id, data, origin FROM updates WHERE seq > %s AND seq <= %s"
    " ORDER BY seq LIMIT %s"
)
EVERY_SEQ = 2**63 - 1  # no upper bound (bigint's largest): everything visible
FOREIGN_PAGE = 5000


class PostgresCommits:
    """The group-commit writer's transactions (writer.CommitBackend) on one connection, and
    another one, from `connect`, whenever the server ended the last (see above)."""

    def __init__(self, db: DB, name: str, connect: Callable[[], Awaitable[DB]]) -> None:
        self._db = db
        self._name = name
        self._connect = connect

    @property
    def name(self) -> str:
        return self._name

    async def close(self) -> None:
        await self._db.close()

    async def _connection(self) -> DB:
        if self._db.closed:  # ended by the server (a timeout, a restart) or the network
            self._db = await self._connect()
        return self._db

    async def last_seq(self) -> Seq:
        async with connection_errors(self._name):
            cursor = await (await self._connection()).execute("SELECT seq FROM seq_head")
            row = await cursor.fetchone()
        return Seq(row[0] if row is not None else 0)

    async def read_foreign(self, known: Seq) -> list[Committed]:
        """Every update after `known` (a prefix of the log: see the rule above), in seq order."""
        async with connection_errors(self._name):
            return await _read_foreign(await self._connection(), known)

    async def run_exclusive(self, job: ExclusiveJob) -> object:
        raise TypeError("PostgresStore runs its other writes on pooled connections")

    async def commit_appends(
        self, batch: list[AppendJob], now: float, expired_before: float, known: Seq
    ) -> tuple[list[Outcome], list[Committed]]:
        """The batch in one transaction; a used idempotency key or a failing `answer` fails
        its job alone. Also the foreign updates committed after `known`, below the batch."""
        db = await self._connection()
        async with connection_errors(self._name):
            if not any(job.idempotency_key for job in batch):
                return await _commit_in_one_statement(db, batch, now, known)
            async with db.transaction():
                return await _commit(db, batch, now, expired_before, known)


async def _commit_in_one_statement(
    db: DB, batch: list[AppendJob], now: float, known: Seq
) -> tuple[list[Outcome], list[Committed]]:
    rows = [row for job in batch for row in job.rows]
    columns = _record_columns(enumerate(rows, start=1))
    names = ("r_doc_ids", "r_collections", "r_record_ids", "r_views", "r_deleted",
             "r_first", "r_last", "r_created_by", "r_sizes")  # fmt: skip
    cursor = await db.execute(
        ONE_STATEMENT,
        {
            "count": len(rows),
            "at": now,
            "doc_ids": [row.doc_id for row in rows],
            "collections": [row.collection for row in rows],
            "data": [row.update for row in rows],
            "origins": [row.origin for row in rows],
            "doors": [row.origin.door for row in rows],
            "tokens": [row.origin.token for row in rows],
            **dict(zip(names, columns)),
        },
    )
    head = await cursor.fetchone()
    base = Seq(head[0] if head is not None else 0)
    outcomes: list[Outcome] = []
    next_seq = base + 1
    for job in batch:
        outcomes.append(cast(list[Seq], list(range(next_seq, next_seq + len(job.rows)))))
        next_seq += len(job.rows)
    # Committed: if this read fails, the batch is reported failed (its outcome unknown to its
    # callers) and the writer, not having moved on, reads its rows back later as foreign.
    foreign = await _read_foreign(db, known, upto=base) if base > known else []
    return outcomes, foreign


async def _commit(
    db: DB, batch: list[AppendJob], now: float, expired_before: float, known: Seq
) -> tuple[list[Outcome], list[Committed]]:
    outcomes: list[Outcome | None] = [None] * len(batch)
    keyed = sorted(
        (stored_key(job.idempotency_key), index)
        for index, job in enumerate(batch)
        if job.idempotency_key
    )  # in key order, so two nodes' batches never wait on each other's keys in a cycle
    if keyed:
        await db.execute("DELETE FROM idempotency WHERE at < %s", (expired_before,))
    for key, index in keyed:
        # Waits if another transaction holds this key uncommitted, then sees its outcome.
        cursor = await db.execute(
            "INSERT INTO idempotency (key, answer, at) VALUES (%s, ''::bytea, %s)"
            " ON CONFLICT (key) DO NOTHING RETURNING key",
            (key, now),
        )
        if await cursor.fetchone() is None:
            used = batch[index].idempotency_key
            outcomes[index] = KeyAlreadyUsed(f"idempotency key {used!r} was already used")
    # The seq lock, as late as possible: held from here until COMMIT has made this visible.
    cursor = await db.execute("SELECT seq FROM seq_head FOR UPDATE")
    head = await cursor.fetchone()
    base = Seq(head[0] if head is not None else 0)
    foreign = await _read_foreign(db, known) if base > known else []
    next_seq = base + 1
    entries: list[tuple[Seq, Row]] = []
    for index, job in enumerate(batch):
        if outcomes[index] is not None:
            continue
        seqs = cast(list[Seq], list(range(next_seq, next_seq + len(job.rows))))
        if job.idempotency_key is not None:
            try:
                answer = job.answer(seqs) if job.answer is not None else b""
            except Exception as exc:
                outcomes[index] = exc
                await db.execute(
                    "DELETE FROM idempotency WHERE key = %s", (stored_key(job.idempotency_key),)
                )
                continue
            await db.execute(
                "UPDATE idempotency SET answer = %s WHERE key = %s",
                (answer, stored_key(job.idempotency_key)),
            )
        outcomes[index] = seqs
        entries.extend(zip(seqs, job.rows))
        next_seq += len(seqs)
    if entries:
        await _insert(db, entries, now)
        await db.execute("UPDATE seq_head SET seq = %s", (next_seq - 1,))
    return cast(list[Outcome], outcomes), foreign


async def _insert(db: DB, entries: Sequence[tuple[Seq, Row]], now: float) -> None:
    await db.execute(
        INSERT_UPDATES,
        (
            now,
            [seq for seq, _ in entries],
            [row.doc_id for _, row in entries],
            [row.collection for _, row in entries],
            [row.update for _, row in entries],
            [row.origin for _, row in entries],
            [row.origin.door for _, row in entries],
            [row.origin.token for _, row in entries],
        ),
    )
    await db.execute(UPSERT_RECORDS, (now, *_record_columns(entries)))


def _record_columns(rows: Iterable[tuple[int, Row]]) -> list[list[object]]:
    """The records upsert's columns, one row per record (ON CONFLICT may touch a row once per
    statement): its first and last positions (seqs, or ordinals), last view, bytes added."""
    records: dict[DocId, list[object]] = {}
    for position, row in rows:
        record = records.get(row.doc_id)
        if record is None:
            records[row.doc_id] = [
                row.doc_id, row.collection, row.record_id, row.view, bool(row.is_deleted),
                position, position, row.origin, len(row.update),
            ]  # fmt: skip
        else:  # a later row of the same record wins its view
            record[3], record[4], record[6] = row.view, bool(row.is_deleted), position
            record[8] = cast(int, record[8]) + len(row.update)
    return [list(column) for column in zip(*records.values())]


async def _read_foreign(db: DB, known: Seq, *, upto: int = EVERY_SEQ) -> list[Committed]:
    foreign: list[Committed] = []
    while True:
        cursor = await db.execute(FOREIGN, (known, upto, FOREIGN_PAGE))
        rows = await cursor.fetchall()
        foreign += (
            Committed(Seq(seq), DocId(doc_id), bytes(data), Origin(origin), foreign=True)
            for seq, doc_id, data, origin in rows
        )
        if len(rows) < FOREIGN_PAGE:
            return foreign
        known = foreign[-1].seq


def stored_key(key: str) -> str:
    """An idempotency key as a text column holds it: PostgreSQL text cannot hold NUL (the
    server scopes keys as "token\x00key"), so backslash and NUL are escaped, one to one."""
    return key.replace("\\", "\\\\").replace("\x00", "\\0")

"""PostgresStore: the Store on a PostgreSQL schema, shared by any number of nodes (I/O layer).

Writes go through one connection and the same group-commit writer as SQLite (writer.py), under
the seq lock (commits.py); reads, compaction and tokens use a small pool of other connections.
Several stores (nodes) may use one database at once: each learns the others' commits as
foreign updates, exactly as an SQLite store learns those of another process on its file.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import psycopg
import psycopg_pool
import pycrdt
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from ...errors import ConfigError, NameTaken, StoreError
from ...ids import DocId, Origin, Seq
from .. import compaction
from ..base import (
    Append,
    CommitListener,
    CompactionReport,
    DocumentState,
    JSONObject,
    LogEntry,
    NodeRow,
    Progress,
    RecordRow,
    StoreStatistics,
    TokenRow,
)
from ..checks import CheckReport
from ..listing import RecordQuery
from ..opening import redacted
from ..sqlite import _row as encode_row  # the row as both stores write it: checked, encoded
from ..transactions import AppendJob, FollowJob, Row
from ..writer import CommitWriter
from . import reads
from .commits import PostgresCommits, stored_key
from .connection import connection_errors, first_line
from .schema import DB, LOCK_CLASS, prepare

COMPACTION_LOCK_CLASS = LOCK_CLASS + 1  # with hashtext(doc_id): one compaction per record
FORGET_NODES_AFTER = 3600.0  # seconds: a node silent this long leaves /api/sync/status


class PostgresStore:
    """The durable store on PostgreSQL; use as `async with PostgresStore(url) as store:`.

    Args:
        url: a libpq URL, `postgresql://user@host:port/database`; its tables live in the first
            schema of the connection's `search_path` (`?options=-csearch_path%3Dname` picks one).
        idempotency_ttl: seconds an idempotency key's answer is kept and recalled.
        max_batch: most updates in one group commit.
        lock_timeout_ms: how long a commit waits for the seq lock before failing; longer than
            `idle_timeout_ms`, so a stopped node's lock is taken back before others give up.
        idle_timeout_ms: PostgreSQL ends this node's session if a transaction of it idles this
            long (a node stopped while holding the seq lock), releasing its locks.
        readers: most pooled connections for reads, compaction and tokens.
        clock: unix seconds, for `at` and `updated_at` and idempotency expiry.

    Raises (on entering):
        StoreError: the database cannot be reached, the schema is not a crdt-sync store or is
            newer than this crdt-sync.
    """

    def __init__(
        self,
        url: str,
        *,
        idempotency_ttl: float = 86400.0,
        max_batch: int = 1000,
        lock_timeout_ms: int = 15_000,
        idle_timeout_ms: int = 5_000,
        readers: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        if readers < 1:
            raise ConfigError(f"readers must be at least 1, got {readers}")
        if idle_timeout_ms < 1 or lock_timeout_ms <= idle_timeout_ms:
            raise ConfigError(
                "the lock timeout must be longer than the idle timeout, which must be positive"
                f" (a stopped node's seq lock is freed after the idle timeout), got"
                f" {lock_timeout_ms} ms and {idle_timeout_ms} ms"
            )
        self.url = url
        self.name = redacted(url)
        self.schema_version = 0
        self.identity = ""  # a uuid made with the schema: the same for every node
        self._idempotency_ttl = idempotency_ttl
        self._max_batch = max_batch
        self._lock_timeout_ms = lock_timeout_ms
        self._idle_timeout_ms = idle_timeout_ms
        self._readers = readers
        self._clock = clock
        self._listeners: list[CommitListener] = []
        self._stack: AsyncExitStack | None = None
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] | None = None
        self._writer: CommitWriter | None = None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            db = await self._connect()
            commits = PostgresCommits(db, self.name, self._connect)
            stack.push_async_callback(commits.close)
            async with connection_errors(self.name):
                self.schema_version = await prepare(db, self.name)
                row = await reads.fetch_one(db, "SELECT id FROM store_identity")
                self.identity = str(row[0]) if row is not None else ""
            pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self._readers,
                kwargs={"autocommit": True, "application_name": self._application("reader")},
                configure=self._configure,
                open=False,
                name=f"crdt-sync readers {self.name}",
            )
            try:
                await pool.open(wait=True, timeout=10.0)
            except psycopg.Error as exc:
                raise StoreError(f"{self.name}: {first_line(exc)}") from exc
            except psycopg_pool.PoolTimeout as exc:
                raise StoreError(f"{self.name}: could not open reading connections") from exc
            stack.push_async_callback(pool.close)
            self._pool = pool
            writer = CommitWriter(
                commits,
                max_batch=self._max_batch,
                idempotency_ttl=self._idempotency_ttl,
                clock=self._clock,
            )
            writer.listeners = self._listeners
            self._writer = await stack.enter_async_context(writer)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit what was already submitted, then close every connection."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _connect(self) -> DB:
        try:
            db = await psycopg.AsyncConnection.connect(
                self.url,
                autocommit=True,
                connect_timeout=10,
                application_name=self._application("writer"),
            )
        except psycopg.Error as exc:
            raise StoreError(f"{self.name}: cannot connect: {first_line(exc)}") from exc
        async with connection_errors(self.name):
            await self._configure(db)
        return db

    @staticmethod
    def _application(role: str) -> str:
        # pg_stat_activity tells nodes and their connections apart by it (and so do tests).
        return f"crdt-sync {role} {os.getpid()}"

    async def _configure(self, db: DB) -> None:
        await db.execute(
            sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{self._lock_timeout_ms}ms"))
        )
        await db.execute(
            sql.SQL("SET idle_in_transaction_session_timeout = {}").format(
                sql.Literal(f"{self._idle_timeout_ms}ms")
            )
        )

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call `listener(committed)` after every commit, in seq order, on the event loop."""
        self._listeners.append(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.remove(listener)

    # Writes: queued before the first await, so the order of calls is the order of seqs.

    async def append(
        self, doc_id: DocId, update: bytes, *, view: JSONObject, is_deleted: bool, origin: Origin
    ) -> Seq:
        (seq,) = await self._submit([encode_row(doc_id, update, view, is_deleted, origin)])
        return seq

    def append_nowait(
        self, doc_id: DocId, update: bytes, *, view: JSONObject, is_deleted: bool, origin: Origin
    ) -> asyncio.Future[list[Seq]]:
        return self._submit([encode_row(doc_id, update, view, is_deleted, origin)])

    async def append_many(
        self,
        appends: Sequence[Append],
        *,
        idempotency_key: str | None = None,
        answer: Callable[[list[Seq]], bytes] | None = None,
    ) -> list[Seq]:
        """All of `appends` in one transaction, or none; with a key, `answer(seqs)` is kept.

        A key is unique across every node: a retry that reaches another node while the first
        try commits waits for it, then fails with StoreError ("already used").
        """
        rows = [encode_row(a.doc_id, a.update, a.view, a.is_deleted, a.origin) for a in appends]
        if not rows and idempotency_key is None:
            return []
        return await self._submit(rows, idempotency_key, answer)

    def _submit(
        self,
        rows: list[Row],
        idempotency_key: str | None = None,
        answer: Callable[[list[Seq]], bytes] | None = None,
    ) -> asyncio.Future[list[Seq]]:
        writer = self._open_writer()
        future: asyncio.Future[list[Seq]] = self._loop.create_future()
        writer.submit(AppendJob(rows, future, idempotency_key, answer))
        return future

    async def follow(self) -> int:
        """Hand listeners what other nodes committed since this store last looked."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._open_writer().submit(FollowJob(future))
        return await future

    def _open_writer(self) -> CommitWriter:
        if self._writer is None or self._stack is None:
            raise StoreError(f"{self.name}: the store is closed")
        return self._writer

    def _open_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]:
        if self._pool is None or self._stack is None:
            raise StoreError(f"{self.name}: the store is closed")
        return self._pool

    async def _fetch(self, query: reads.Query) -> list[tuple[Any, ...]]:
        async with connection_errors(self.name), self._open_pool().connection() as db:
            return await reads.fetch(db, query)

    # Reads, on pooled connections.

    async def recall(self, idempotency_key: str) -> bytes | None:
        rows = await self._fetch(
            (
                "SELECT answer FROM idempotency WHERE key = %s AND at >= %s",
                (stored_key(idempotency_key), self._clock() - self._idempotency_ttl),
            )
        )
        return bytes(rows[0][0]) if rows else None

    async def load(self, doc_id: DocId) -> bytes | None:
        async with connection_errors(self.name), self._open_pool().connection() as db:
            return await reads.load(db, doc_id)

    async def history(self, doc_id: DocId) -> list[LogEntry]:
        rows = await self._fetch(
            (f"SELECT {reads.LOG_COLUMNS} FROM updates WHERE doc_id = %s ORDER BY seq", (doc_id,))
        )
        return [reads.log_entry(row) for row in rows]

    async def get_record(self, doc_id: DocId) -> RecordRow | None:
        rows = await self._fetch(
            (f"SELECT {reads.RECORD_COLUMNS} FROM records WHERE doc_id = %s", (doc_id,))
        )
        return reads.record(rows[0]) if rows else None

    async def cursor(self) -> Seq:
        # seq_head moves in the same transaction as the rows: what is visible of it is the
        # last seq of the visible prefix.
        rows = await self._fetch(("SELECT seq FROM seq_head", ()))
        return Seq(rows[0][0])

    async def changes_since(
        self, cursor: Seq, *, collections: Sequence[str] | None = None, limit: int = 1000
    ) -> list[RecordRow]:
        rows = await self._fetch(reads.changes_query(cursor, collections, limit))
        return [reads.record(row) for row in rows]

    async def log_since(
        self, cursor: Seq, *, collections: Sequence[str] | None = None, limit: int = 1000
    ) -> list[LogEntry]:
        rows = await self._fetch(reads.log_query(cursor, collections, limit))
        return [reads.log_entry(row) for row in rows]

    async def snapshot(
        self,
        *,
        collections: Sequence[str] | None = None,
        after: DocId | None = None,
        limit: int = 1000,
        include_deleted: bool = False,
    ) -> list[RecordRow]:
        rows = await self._fetch(reads.snapshot_query(collections, after, limit, include_deleted))
        return [reads.record(row) for row in rows]

    async def scan_snapshot(
        self,
        *,
        collections: Sequence[str] | None = None,
        after: DocId | None = None,
        limit: int = 1000,
    ) -> list[RecordRow]:
        return await self.snapshot(collections=collections, after=after, limit=limit)

    async def list_records(self, query: RecordQuery) -> list[RecordRow]:
        rows = await self._fetch(reads.list_query(query))
        return [reads.record(row) for row in rows]

    async def check(self) -> CheckReport:
        """Every log row belongs to its record and every record ends at one of its rows."""
        async with (
            connection_errors(self.name),
            self._open_pool().connection() as db,
            db.transaction(),
        ):
            await db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return await reads.check(db)

    async def statistics(self) -> StoreStatistics:
        async with (
            connection_errors(self.name),
            self._open_pool().connection() as db,
            db.transaction(),
        ):
            await db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            live: dict[str, int] = {}
            deleted: dict[str, int] = {}
            counts = await reads.fetch(
                db,
                (
                    (
                        "SELECT collection, is_deleted, COUNT(*) FROM records"
                        " GROUP BY collection, is_deleted"
                    ),
                    (),
                ),
            )
            for collection, is_deleted, count in counts:
                (deleted if is_deleted else live)[collection] = count
            (entries, snapshots) = await reads.fetch_one(
                db, "SELECT COUNT(*), COUNT(*) FILTER (WHERE is_snapshot) FROM updates"
            ) or (0, 0)
            # A record with a row before its last one: one probe of updates_by_doc per record.
            (indebted,) = await reads.fetch_one(
                db,
                "SELECT COUNT(*) FROM records WHERE EXISTS (SELECT 1 FROM updates"
                " WHERE updates.doc_id = records.doc_id AND updates.seq < records.last_seq)",
            ) or (0,)
            (cursor,) = await reads.fetch_one(db, "SELECT seq FROM seq_head") or (0,)
            (size,) = await reads.fetch_one(
                db,
                "SELECT SUM(pg_total_relation_size(c.oid))::bigint FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind = 'r'",
            ) or (0,)
        writer = self._open_writer().statistics
        return StoreStatistics(
            cursor=Seq(cursor),
            records=live,
            deleted=deleted,
            log_entries=entries,
            compaction_debt=entries - sum(live.values()) - sum(deleted.values()),
            file_bytes=int(size or 0),
            extra={
                "commits": writer.commits,
                "appends": writer.appends,
                "largest_batch": writer.largest_batch,
                "foreign": writer.foreign,
                "schema_version": self.schema_version,
                "backend": "postgresql",
                "snapshots": snapshots,
                "records_with_debt": indebted,
            },
        )

    # Compaction: an operation of its own, never a side effect of append.

    async def compact(self, doc_id: DocId, *, progress: Progress | None = None) -> CompactionReport:
        """Fold `doc_id`'s log into one garbage-collected snapshot at its last seq S.

        One transaction, under a lock of this record's compaction only: appends never wait
        for it (theirs have seqs > S and are not touched; MVCC, no store-wide write lock), a
        second compaction of the record waits and then folds what the first left. So one
        step, `progress(rows, rows)` once it committed.
        """
        async with (
            connection_errors(self.name),
            self._open_pool().connection() as db,
            db.transaction(),
        ):
            await db.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (COMPACTION_LOCK_CLASS, doc_id),
            )
            rows = await reads.fetch(
                db,
                (
                    (
                        "SELECT seq, collection, data, at FROM updates WHERE doc_id = %s"
                        " ORDER BY seq"
                    ),
                    (doc_id,),
                ),
            )
            size = sum(len(data) for _, _, data, _ in rows)
            if len(rows) <= 1:
                return compaction.skipped(len(rows), size)
            snapshot = _fold([bytes(data) for _, _, data, _ in rows])
            last_seq, collection, _, at = rows[-1]
            await db.execute(
                "DELETE FROM updates WHERE doc_id = %s AND seq <= %s", (doc_id, last_seq)
            )
            await db.execute(
                (
                    "INSERT INTO updates (seq, doc_id, collection, data, origin, at, is_snapshot)"
                    " VALUES (%s, %s, %s, %s, %s, %s, true)"
                ),
                (last_seq, doc_id, collection, snapshot, compaction.COMPACTION_ORIGIN, at),
            )
            await db.execute(
                "UPDATE records SET size = size - %s + %s WHERE doc_id = %s",
                (size, len(snapshot), doc_id),
            )
        if progress is not None:
            progress(len(rows), len(rows))
        return CompactionReport(1, len(rows), 1, size, len(snapshot), steps=1)

    async def compact_all(self, *, progress: Progress | None = None) -> CompactionReport:
        """Compact every document with more than one log row; `progress(done, total)` after each."""
        rows = await self._fetch(
            (
                "SELECT doc_id FROM updates GROUP BY doc_id HAVING COUNT(*) > 1 ORDER BY doc_id",
                (),
            )
        )
        total = compaction.skipped(0, 0)
        for done, (doc_id,) in enumerate(rows, start=1):
            total = compaction.add(total, await self.compact(DocId(doc_id)))
            if progress is not None:
                progress(done, len(rows))
        return total

    # Tokens: shared by every node; revocation is seen by each node's sweep.

    async def add_token(self, name: str, role: str, token_hash: str) -> None:
        """Raises StoreError if a token already has this name or this hash."""
        try:
            async with self._open_pool().connection() as db:
                await db.execute(
                    (
                        "INSERT INTO tokens (name, role, token_hash, created_at)"
                        " VALUES (%s, %s, %s, %s)"
                    ),
                    (name, role, token_hash, self._clock()),
                )
        except psycopg.errors.UniqueViolation as exc:
            taken = "hash" if "token_hash" in str(exc) else "name"
            raise NameTaken(f"a token with this {taken} already exists (name {name!r})") from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self.name}: {first_line(exc)}") from exc

    async def find_token(self, token_hash: str) -> TokenRow | None:
        rows = await self._fetch(
            (
                (
                    f"SELECT {reads.TOKEN_COLUMNS} FROM tokens"
                    " WHERE token_hash = %s AND revoked_at IS NULL"
                ),
                (token_hash,),
            )
        )
        return reads.token(rows[0]) if rows else None

    async def list_tokens(self) -> list[TokenRow]:
        rows = await self._fetch((f"SELECT {reads.TOKEN_COLUMNS} FROM tokens ORDER BY name", ()))
        return [reads.token(row) for row in rows]

    async def touch_token(self, token_hash: str) -> None:
        async with connection_errors(self.name), self._open_pool().connection() as db:
            await db.execute(
                "UPDATE tokens SET last_used_at = %s WHERE token_hash = %s",
                (self._clock(), token_hash),
            )

    async def served_schema(self) -> str | None:
        rows = await self._fetch(("SELECT value FROM store_meta WHERE key = 'schema'", ()))
        return str(rows[0][0]) if rows else None

    async def record_served_schema(self, schema_json: str) -> None:
        async with connection_errors(self.name), self._open_pool().connection() as db:
            await db.execute(
                "INSERT INTO store_meta (key, value) VALUES ('schema', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (schema_json,),
            )

    async def revoke_token(self, name: str) -> bool:
        """True if a live token of that name was revoked now."""
        async with connection_errors(self.name), self._open_pool().connection() as db:
            cursor = await db.execute(
                "UPDATE tokens SET revoked_at = %s WHERE name = %s AND revoked_at IS NULL",
                (self._clock(), name),
            )
            return cursor.rowcount > 0

    # The nodes serving this store (NodeRoster): a heartbeat row each, on the database's clock.

    async def beat_node(
        self, node_id: str, address: str, started_at: float, connections: int
    ) -> None:
        async with connection_errors(self.name), self._open_pool().connection() as db:
            await db.execute(
                "INSERT INTO nodes (id, address, started_at, last_seen, connections)"
                " VALUES (%s, %s, %s, extract(epoch FROM clock_timestamp()), %s)"
                " ON CONFLICT (id) DO UPDATE SET address = excluded.address,"
                " last_seen = excluded.last_seen, connections = excluded.connections",
                (node_id, address, started_at, connections),
            )
            await db.execute(
                "DELETE FROM nodes WHERE last_seen < extract(epoch FROM clock_timestamp()) - %s",
                (FORGET_NODES_AFTER,),
            )

    async def list_nodes(self) -> list[NodeRow]:
        rows = await self._fetch(
            (
                (
                    "SELECT id, address, started_at, last_seen, connections,"
                    " extract(epoch FROM clock_timestamp())::double precision - last_seen"
                    " FROM nodes ORDER BY started_at, id"
                ),
                (),
            )
        )
        return [NodeRow(*row) for row in rows]

    async def leave_node(self, node_id: str) -> None:
        async with connection_errors(self.name), self._open_pool().connection() as db:
            await db.execute("DELETE FROM nodes WHERE id = %s", (node_id,))

    # Export and inspection.

    async def documents(
        self, *, after: DocId | None = None, limit: int = 100
    ) -> list[DocumentState]:
        async with (
            connection_errors(self.name),
            self._open_pool().connection() as db,
            db.transaction(),
        ):
            await db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return await reads.documents(db, after, limit)

    async def record_sizes(self, doc_ids: Sequence[DocId]) -> dict[DocId, int]:
        rows = await self._fetch(
            ("SELECT doc_id, size FROM records WHERE doc_id = ANY(%s)", (list(doc_ids),))
        )
        return {DocId(doc_id): size for doc_id, size in rows}


def _fold(updates: list[bytes]) -> bytes:
    document: pycrdt.Doc[Any] = pycrdt.Doc()  # collects garbage: deleted content leaves it
    with document.transaction():
        for update in updates:
            document.apply_update(update)
    return document.get_update()

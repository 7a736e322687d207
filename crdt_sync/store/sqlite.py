"""SQLiteStore: the Store on one SQLite file in WAL mode, through aiosqlite (I/O layer).

The file is the only state. Writes go through one connection and its group-commit writer;
reads go through a second connection so they never queue behind a commit, and any other
process may read (or write, as the CLI does) the same file meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import json
import json.encoder as json_encoder
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar, cast

from ..errors import ConfigError, StoreError
from ..ids import DocId, Origin, Seq, split_doc_id
from . import backup, checks, compaction, listing, reads
from .base import (
    Append,
    CommitListener,
    CompactionReport,
    DocumentState,
    JSONObject,
    LogEntry,
    Progress,
    RecordRow,
    StoreStatistics,
    TokenRow,
)
from .connection import Connection
from .inline import InlineReads, Interrupted
from .migrations import prepare
from .transactions import (
    AppendJob,
    ExclusiveJob,
    FollowJob,
    Row,
    insert_token,
    revoke_token,
    set_meta,
    touch_token,
)
from .writer import CommitWriter, SQLiteCommits

T = TypeVar("T")

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
COMPACTION_ATTEMPTS = 3
# Seconds the writer waits before a commit when the last one held several jobs, for more to
# come (writer.CommitWriter._wait_for_company); a lone writer never waits.
COMMIT_WINDOW = 0.0005
READ_CACHE_KIB = 64 * 1024  # page cache of the reading connection
SCAN_CACHE_KIB = 4 * 1024  # page cache of the connection that streams whole-store scans


class SQLiteStore:
    """The durable store; use as `async with SQLiteStore(path) as store:`.

    Args:
        path: the database file; created and initialised if new or empty.
        synchronous: SQLite's `PRAGMA synchronous` for commits; FULL syncs the WAL every commit.
        idempotency_ttl: seconds an idempotency key's answer is kept and recalled.
        busy_timeout_ms: how long to wait for another process's write lock before failing.
        max_batch: most updates in one group commit (1 gives one commit per append).
        compaction_step: most log rows one compaction transaction folds (compaction.py).
        compaction_step_bytes: ... or fewer, once those rows hold this many bytes.
        clock: unix seconds, for `at` and `updated_at` and idempotency expiry.

    Raises (on entering):
        StoreError: not an SQLite file, not a crdt-sync store, a newer schema, or I/O trouble.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        idempotency_ttl: float = 86400.0,
        busy_timeout_ms: int = 5000,
        max_batch: int = 1000,
        compaction_step: int = compaction.STEP_ROWS,
        compaction_step_bytes: int = compaction.STEP_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise ConfigError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {synchronous!r}"
            )
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        if compaction_step < 1 or compaction_step_bytes < 1:
            raise ConfigError(
                "compaction_step and compaction_step_bytes must be at least 1,"
                f" got {compaction_step} and {compaction_step_bytes}"
            )
        self.path = Path(path)
        self.schema_version = 0
        self._synchronous = synchronous.upper()
        self._idempotency_ttl = idempotency_ttl
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._compaction_step = (compaction_step, compaction_step_bytes)
        self._clock = clock
        self._listeners: list[CommitListener] = []
        self._stack: AsyncExitStack | None = None
        self._reader: Connection | None = None
        self._writer: CommitWriter | None = None
        self._scanner: Connection | None = None
        self._scanner_opening = asyncio.Lock()
        self.inline = InlineReads(self.path)  # a join's small reads (inline.py)

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            connection = await stack.enter_async_context(self._connection())
            self.schema_version = await connection.run(prepare, str(self.path))
            self._reader = await stack.enter_async_context(self._connection())
            await self._reader.run(_read_only)
            writer = CommitWriter(
                SQLiteCommits(connection, self.schema_version),
                max_batch=self._max_batch,
                idempotency_ttl=self._idempotency_ttl,
                clock=self._clock,
                commit_window=COMMIT_WINDOW,
            )
            writer.listeners = self._listeners
            self._writer = await stack.enter_async_context(writer)
            self.inline.open()  # after `prepare`: the file exists and is in WAL mode
            stack.callback(self.inline.close)
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
        """Commit what was already submitted, then close its connections."""
        stack, self._stack = self._stack, None
        self._scanner = None
        if stack is not None:
            await stack.aclose()

    def _connection(self) -> Connection:
        return Connection(
            self.path, busy_timeout_ms=self._busy_timeout_ms, synchronous=self._synchronous
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
        """Append one update with the record's view after it; returns its seq once committed.

        Raises:
            SchemaViolation: `doc_id` is not "collection/record_id"; nothing was queued.
            TypeError: `view` is not JSON-serialisable; nothing was queued.
            StoreError: the store is closed or the transaction failed; nothing was stored.
        """
        (seq,) = await self._submit([_row(doc_id, update, view, is_deleted, origin)])
        return seq

    def append_nowait(
        self, doc_id: DocId, update: bytes, *, view: JSONObject, is_deleted: bool, origin: Origin
    ) -> asyncio.Future[list[Seq]]:
        """`append` without awaiting: queued now, so appends started in order commit in order.

        The future resolves with `[seq]` once committed, or fails with StoreError. Raises as
        `append` does for arguments refused before anything is queued.
        """
        return self._submit([_row(doc_id, update, view, is_deleted, origin)])

    async def append_many(
        self,
        appends: Sequence[Append],
        *,
        idempotency_key: str | None = None,
        answer: Callable[[list[Seq]], bytes] | None = None,
    ) -> list[Seq]:
        """All of `appends` in one transaction, or none; with a key, `answer(seqs)` is kept.

        `answer` runs inside the transaction, on the store's thread: keep it quick and pure. If
        it raises, nothing is stored and this call raises that exception. `recall(key)` returns
        the answer for `idempotency_ttl` seconds.

        Raises:
            StoreError: as `append`, or the key was already used; nothing was stored.
        """
        rows = [_row(a.doc_id, a.update, a.view, a.is_deleted, a.origin) for a in appends]
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
        # The writer's loop: asyncio.get_running_loop() costs a getpid() system call, which
        # is dear in some sandboxes (18% of the server's time per update in one).
        future: asyncio.Future[list[Seq]] = self._loop.create_future()
        writer.submit(AppendJob(rows, future, idempotency_key, answer))
        return future

    async def follow(self) -> int:
        """Hand listeners what other processes committed since this store last looked.

        Every append does this within its transaction; a server calls it while idle, so that
        writes made by another process (`crdt-sync import`) reach its live documents and peers
        promptly. Returns how many foreign updates it found.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._open_writer().submit(FollowJob(future))
        return await future

    async def _exclusive(self, work: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._open_writer().submit(ExclusiveJob(work, future))
        return cast(T, await future)

    def _open_writer(self) -> CommitWriter:
        if self._writer is None or self._stack is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._writer

    async def _read(self, function: Callable[..., T], *args: object) -> T:
        if self._reader is None or self._stack is None:
            raise StoreError(f"{self.path}: the store is closed")
        return await self._reader.run(function, *args)

    async def _read_small(self, function: Callable[..., T], *args: object) -> T:
        """A read a join makes: on the loop's thread if it fits its budget (inline.py)."""
        result = self.inline.run(function, *args)
        if result is Interrupted.INTERRUPTED:
            return await self._read(function, *args)
        return result

    # Reads, on the reading connection.

    async def recall(self, idempotency_key: str) -> bytes | None:
        return await self._read(
            reads.recall, idempotency_key, self._clock() - self._idempotency_ttl
        )

    async def load(self, doc_id: DocId) -> bytes | None:
        return await self._read_small(reads.load, doc_id)

    async def history(self, doc_id: DocId) -> list[LogEntry]:
        return await self._read(reads.history, doc_id)

    async def get_record(self, doc_id: DocId) -> RecordRow | None:
        return await self._read(reads.get_record, doc_id)

    async def cursor(self) -> Seq:
        return await self._read(reads.cursor)

    async def changes_since(
        self, cursor: Seq, *, collections: Sequence[str] | None = None, limit: int = 1000
    ) -> list[RecordRow]:
        return await self._read(reads.changes, cursor, collections, limit)

    async def log_since(
        self, cursor: Seq, *, collections: Sequence[str] | None = None, limit: int = 1000
    ) -> list[LogEntry]:
        return await self._read(reads.log, reads.log_query(cursor, collections, limit))

    async def snapshot(
        self,
        *,
        collections: Sequence[str] | None = None,
        after: DocId | None = None,
        limit: int = 1000,
        include_deleted: bool = False,
    ) -> list[RecordRow]:
        query = reads.snapshot_query(collections, after, limit, include_deleted)
        return await self._read(reads.records, query)

    async def scan_snapshot(
        self,
        *,
        collections: Sequence[str] | None = None,
        after: DocId | None = None,
        limit: int = 1000,
    ) -> list[RecordRow]:
        """As `snapshot` (live records), on a connection of its own with a small page cache.

        An initial sync streams through every record; on the reading connection it would fill
        that connection's cache and push out the pages incremental pulls and catch-up need.
        """
        scanner = await self._open_scanner()
        return await scanner.run(
            reads.records, reads.snapshot_query(collections, after, limit, False)
        )

    async def _open_scanner(self) -> Connection:
        async with self._scanner_opening:
            if self._stack is None:
                raise StoreError(f"{self.path}: the store is closed")
            if self._scanner is None:
                scanner = await self._stack.enter_async_context(self._connection())
                await scanner.run(_scanning)
                self._scanner = scanner
            return self._scanner

    async def check(self) -> checks.CheckReport:
        """SQLite's quick_check, and that every log row is in its record's chain (checks.py).

        Reads the whole file, on the scanning connection so the reading one keeps its cache.
        """
        scanner = await self._open_scanner()
        return await scanner.run(checks.check)

    async def backup(
        self,
        dest: Path,
        *,
        replace: bool = False,
        progress: Progress | None = None,
        step_pages: int = backup.STEP_PAGES,
    ) -> backup.BackupReport:
        """A consistent, checked copy of the store at `dest`, taken while writers go on.

        The copy holds every write committed before it began (backup.py says how and what it
        costs). `progress(pages_done, pages_total)` is called on the event loop after each step
        of `step_pages` pages.

        Raises:
            StoreError: `dest` may not be written (see `backup.check_destination`), or reading
                or writing failed; `dest` is untouched.
            backup.BackupDamaged: the copy failed the store check; it was removed.
        """
        if self._stack is None:
            raise StoreError(f"{self.path}: the store is closed")
        backup.check_destination(self.path, dest, replace=replace)
        loop = asyncio.get_running_loop()

        def report(done: int, total: int) -> None:  # on the copying thread
            if progress is not None:
                loop.call_soon_threadsafe(progress, done, total)

        async with self._connection() as source:  # its own thread: reads go on meanwhile
            await source.run(_scanning)  # a small cache: the copy reads every page once
            return await source.run(backup.copy_and_check, dest, report, step_pages)

    async def list_records(self, query: listing.RecordQuery) -> list[RecordRow]:
        """One page of a collection's records, filtered, searched and sorted (admin listing)."""
        return await self._read(reads.records, listing.list_query(query))

    async def statistics(self) -> StoreStatistics:
        """Every count, on the scanning connection: they read every record and log row, which
        on the reading one would hold up the joins and pulls queued behind them (the
        compactor asks at every start: ~3-9 ms at 5,000 records, seconds at millions)."""
        scanner = await self._open_scanner()
        result = await scanner.run(reads.statistics, self._file_bytes())
        writer = self._open_writer().statistics
        result.extra.update(
            commits=writer.commits,
            appends=writer.appends,
            largest_batch=writer.largest_batch,
            foreign=writer.foreign,
            schema_version=self.schema_version,
        )
        return result

    def _file_bytes(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        return sum(p.stat().st_size for p in (self.path, wal) if p.exists())

    # Compaction: an operation of its own, never a side effect of append.

    async def compact(self, doc_id: DocId, *, progress: Progress | None = None) -> CompactionReport:
        """Fold `doc_id`'s log into one garbage-collected snapshot; racing appends are kept.

        The chain is read and folded on the reading connection, a prefix of STEP_ROWS rows at
        a time (compaction.py, rule 2); each step takes the write lock only to check its rows
        and swap them, queued between group commits like any write, so appends commit between
        steps. `progress(rows_folded, rows)` after each step. Returns a report with
        documents=0 when there was nothing to fold (one row or none), or when other
        compactions kept changing the rows under it (it is then left for next time).
        """
        for attempt in range(1, COMPACTION_ATTEMPTS + 1):
            folding = await self._read(compaction.read_chain, doc_id, *self._compaction_step)
            if isinstance(folding, CompactionReport):
                return folding
            while (fold := await self._read(compaction.next_fold, folding)) is not None:
                if not await self._exclusive(partial(compaction.replace_with_snapshot, fold=fold)):
                    folding.abandoned()
                    break
                folding.committed(fold)
                if progress is not None:
                    progress(folding.folded, len(folding.rows))
            if folding.steps or attempt == COMPACTION_ATTEMPTS:
                return folding.report()
        raise AssertionError("unreachable: the last attempt returns")

    async def compact_all(self, *, progress: Progress | None = None) -> CompactionReport:
        """Compact every document with more than one log row; `progress(done, total)` after each."""
        documents = await self._read(compaction.documents_to_compact)
        total = compaction.skipped(0, 0)
        for done, doc_id in enumerate(documents, start=1):
            total = compaction.add(total, await self.compact(doc_id))
            if progress is not None:
                progress(done, len(documents))
        return total

    # Tokens: rare writes, each its own transaction on the writing connection.

    async def add_token(self, name: str, role: str, token_hash: str) -> None:
        """Raises NameTaken if a token already has this name or this hash."""
        await self._exclusive(partial(insert_token, name, role, token_hash, self._clock()))

    async def find_token(self, token_hash: str) -> TokenRow | None:
        return await self._read_small(reads.find_token, token_hash)

    async def list_tokens(self) -> list[TokenRow]:
        return await self._read(reads.list_tokens)

    async def served_schema(self) -> str | None:
        return await self._read(reads.meta, "schema")

    async def record_served_schema(self, schema_json: str) -> None:
        await self._exclusive(partial(set_meta, "schema", schema_json))

    async def touch_token(self, token_hash: str) -> None:
        await self._exclusive(partial(touch_token, token_hash, self._clock()))

    async def revoke_token(self, name: str) -> bool:
        """True if a live token of that name was revoked now."""
        return await self._exclusive(partial(revoke_token, name, self._clock()))

    # Export and inspection (the CLI): reads, on the reading connection.

    async def documents(
        self, *, after: DocId | None = None, limit: int = 100
    ) -> list[DocumentState]:
        return await self._read(reads.documents, after, limit)

    async def record_sizes(self, doc_ids: Sequence[DocId]) -> dict[DocId, int]:
        return await self._read(reads.record_sizes, list(doc_ids))


def _row(doc_id: DocId, update: bytes, view: JSONObject, is_deleted: bool, origin: Origin) -> Row:
    collection, record_id = _split(doc_id)
    encoded = _encode_view(view)
    update = update if type(update) is bytes else bytes(update)  # a copy only of a mutable view
    if type(origin) is not Origin:
        origin = Origin(origin)  # a plain str from a caller: its door and token are not known
    return Row(doc_id, collection, record_id, update, encoded, 1 if is_deleted else 0, origin)


def _view_encoder() -> Callable[[JSONObject], str]:
    """Compact JSON text of a view, non-ASCII kept as is.

    `JSONEncoder.encode` builds a new C encoder on every call, a third of the cost of encoding
    a contact's view; this builds it once, without the circular check (a view is a tree of
    JSON values). Where json has no C encoder, the plain one.
    """
    make: Callable[..., Callable[[object, int], list[str]]] | None
    make = getattr(json_encoder, "c_make_encoder", None)  # CPython's _json, not in typeshed
    if make is None:
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    encode = make(
        None, _not_json, json_encoder.encode_basestring, None, ":", ",", False, False, True
    )

    def encode_view(view: JSONObject) -> str:
        return "".join(encode(view, 0))

    return encode_view


def _not_json(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encode_view = _view_encoder()
_split = functools.lru_cache(maxsize=4096)(split_doc_id)  # a hot path: the same few ids


# What follows runs on a connection's thread.


def _read_only(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA query_only = ON")
    # Reads jump to wherever the records that changed live; keep more of the file at hand
    # than SQLite's default 2 MiB so a big store's hot pages stay in memory.
    db.execute(f"PRAGMA cache_size = -{READ_CACHE_KIB}")


def _scanning(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA query_only = ON")
    db.execute(f"PRAGMA cache_size = -{SCAN_CACHE_KIB}")

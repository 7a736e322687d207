"""The replica's local SQLite file: record documents, the offline queue, the cursor (I/O layer).

Rule: every unit of work is one transaction run on the connection's thread (BEGIN IMMEDIATE,
so another process on the same file, such as `crdt-sync client add` beside a running `watch`,
waits its turn). A local change writes the document and its queue entry in the same transaction;
remote updates are written with the cursor that covers them. A crash separates nothing.

The file has its own versioned layout (`replica_version`), separate from the server store's.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from pycrdt import Doc, get_state, merge_updates

from ..errors import DocumentError, ProtocolError
from ..ids import DocId
from ..record import EMPTY_UPDATE, Records, View, has_content, is_deleted, view
from ..store.connection import Connection, write_transaction
from .intent import Intent, perform
from .layout import prepare

T = TypeVar("T")

# Ids per `IN (...)` query: well under SQLite's limit on bound parameters (999 before 3.32).
STATE_VECTOR_CHUNK = 500

__all__ = ["LocalChange", "LocalStore", "LocalSummary", "Outgoing", "QueuedChange"]


@dataclass(frozen=True, slots=True)
class LocalChange:
    view: View
    cseq: int | None  # None: the change changed nothing, so nothing was queued


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Every pending change to one document, merged into one write; `cseq` is the newest."""

    doc_id: DocId
    cseq: int
    update: bytes
    changes: int


@dataclass(frozen=True, slots=True)
class QueuedChange:
    cseq: int
    doc_id: DocId
    intent: Intent
    status: str  # pending or rejected
    code: str | None
    reason: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class LocalSummary:
    """What the sync status shows of the file, read in one statement (one snapshot)."""

    pending: int
    rejected: int
    cursor: int


class LocalStore:
    """The replica's file; use as ``async with LocalStore(path, records, client_id) as local:``.

    Args:
        path: the SQLite file; created if missing.
        records: the schema's record operations (the same code the server runs).
        client_id: the Yjs client id this process writes with; each open gets a fresh one, so
            two processes on one file never write structs under the same id.
        synchronous: SQLite's ``PRAGMA synchronous``; FULL survives power loss.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        records: Records,
        client_id: int,
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.records = records
        self.client_id = client_id
        self._clock = clock
        self._connection = Connection(self.path, busy_timeout_ms=10_000, synchronous=synchronous)

    async def __aenter__(self) -> Self:
        await self._connection.__aenter__()
        try:
            await self._connection.run(prepare, str(self.path))
        except BaseException:
            await self._connection.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._connection.aclose()

    async def _transaction(self, work: Callable[..., T], *args: Any) -> T:
        return await self._connection.run(_in_transaction, work, *args)

    # -- local changes ----------------------------------------------------------------------

    async def change(self, doc_id: DocId, intent: Intent) -> LocalChange:
        """Make `intent` on the local document and queue its update, in one transaction.

        Raises the intent's errors (RecordNotFound, SchemaViolation, ...) with nothing written.
        """
        return await self._transaction(self._change, doc_id, intent)

    def _change(self, db: sqlite3.Connection, doc_id: DocId, intent: Intent) -> LocalChange:
        document = self._load(db, doc_id)
        update = perform(self.records, doc_id, document, intent)
        if update == EMPTY_UPDATE:
            return LocalChange(self.records.view(doc_id, document), None)
        record_view = self._save(db, doc_id, document)
        cursor = db.execute(
            "INSERT INTO queue (doc_id, data, intent, status, created_at)"
            " VALUES (?, ?, ?, 'pending', ?)",
            (doc_id, update, intent.to_json(), self._clock()),
        )
        return LocalChange(record_view, int(cursor.lastrowid or 0))

    # -- what the server sends ----------------------------------------------------------------

    async def apply_remote(
        self, updates: Sequence[tuple[DocId, bytes]], cursor: int | None
    ) -> None:
        """Apply the server's updates and store the cursor that covers them, in one transaction.

        Raises:
            ProtocolError: an update does not decode or names a collection this schema lacks
                (the server broke its promise; nothing of the batch is written).
        """
        await self._transaction(self._apply_remote, updates, cursor)

    def _apply_remote(
        self, db: sqlite3.Connection, updates: Sequence[tuple[DocId, bytes]], cursor: int | None
    ) -> None:
        documents: dict[DocId, Doc[Any]] = {}
        for doc_id, update in updates:
            try:
                self.records.collection_of(doc_id)
            except DocumentError as exc:
                raise ProtocolError(f"the server sent {doc_id}: {exc.reason}") from None
            document = documents.get(doc_id)
            if document is None:
                document = documents[doc_id] = self._load(db, doc_id)
            try:
                document.apply_update(update)
            except ValueError as exc:
                raise ProtocolError(
                    f"the server sent {doc_id} an update that does not decode: {exc}"
                ) from None
        for doc_id, document in documents.items():
            self._save(db, doc_id, document)
        if cursor is not None:
            _advance_cursor(db, cursor)

    async def settle(self, acks: Sequence[tuple[DocId, int]]) -> int:
        """Drop acknowledged writes (each settles its document's changes up to its cseq)."""
        return await self._transaction(self._settle, acks)

    def _settle(self, db: sqlite3.Connection, acks: Sequence[tuple[DocId, int]]) -> int:
        dropped = 0
        for doc_id, cseq in acks:
            dropped += db.execute(
                "DELETE FROM queue WHERE doc_id = ? AND cseq <= ? AND status = 'pending'",
                (doc_id, cseq),
            ).rowcount
        return dropped

    async def reject(self, doc_id: DocId, cseq: int, code: str, reason: str) -> int:
        """Mark the refused write's changes rejected with the server's reason; never resent."""
        return await self._transaction(self._reject, doc_id, cseq, code, reason)

    def _reject(
        self, db: sqlite3.Connection, doc_id: DocId, cseq: int, code: str, reason: str
    ) -> int:
        return db.execute(
            "UPDATE queue SET status = 'rejected', code = ?, reason = ?, settled_at = ?"
            " WHERE doc_id = ? AND cseq <= ? AND status = 'pending'",
            (code, reason, self._clock(), doc_id, cseq),
        ).rowcount

    async def rebuild(self, doc_id: DocId, server_state: bytes) -> None:
        """Start `doc_id` over from the server's state and make its pending changes again.

        After a refusal the local document holds a change the server will never have, and the
        pending changes made after it depend on it. So the document becomes the server's, and
        each pending intent is performed anew (a new update replaces the queued one); one that
        no longer applies is rejected with the local reason.
        """
        await self._transaction(self._rebuild, doc_id, server_state)

    def _rebuild(self, db: sqlite3.Connection, doc_id: DocId, server_state: bytes) -> None:
        document: Doc[Any] = Doc(client_id=self.client_id)
        try:
            document.apply_update(server_state)
        except ValueError as exc:
            raise ProtocolError(
                f"the server sent {doc_id} a state that does not decode: {exc}"
            ) from None
        pending = db.execute(
            "SELECT cseq, intent FROM queue WHERE doc_id = ? AND status = 'pending' ORDER BY cseq",
            (doc_id,),
        ).fetchall()
        for cseq, intent in pending:
            try:
                update = perform(self.records, doc_id, document, Intent.from_json(intent))
            except DocumentError as exc:
                db.execute(
                    "UPDATE queue SET status = 'rejected', code = ?, reason = ?, settled_at = ?"
                    " WHERE cseq = ?",
                    (
                        exc.code,
                        f"{exc.message} (after an earlier change was refused)",
                        self._clock(),
                        cseq,
                    ),
                )
                continue
            if update == EMPTY_UPDATE:
                db.execute("DELETE FROM queue WHERE cseq = ?", (cseq,))
            else:
                db.execute("UPDATE queue SET data = ? WHERE cseq = ?", (update, cseq))
        self._save(db, doc_id, document)

    async def reset_cursor(self) -> None:
        """The server's log is not the one this replica followed: catch up from 0 again."""
        await self._transaction(lambda db: _set_meta(db, "cursor", "0"))

    async def mark_synced(self, at: float) -> None:
        await self._transaction(lambda db: _set_meta(db, "last_sync_at", repr(at)))

    # -- what goes to the server --------------------------------------------------------------

    async def outgoing(
        self, *, exclude: frozenset[DocId], singles: frozenset[DocId], limit: int
    ) -> list[Outgoing]:
        """Up to `limit` documents' pending changes, oldest first, each merged into one write.

        For the documents in `singles` only the oldest change is taken: after a refused merged
        write, its changes go one by one so that only the bad one is rejected.
        """
        return await self._connection.run(_outgoing, exclude, singles, limit)

    # -- reads --------------------------------------------------------------------------------

    async def get(self, doc_id: DocId) -> tuple[View, bool] | None:
        """The record's view and whether it is deleted; None if this replica does not hold it."""
        row = await self._connection.run(
            lambda db: db.execute(
                "SELECT view, is_deleted FROM documents WHERE doc_id = ?", (doc_id,)
            ).fetchone()
        )
        return None if row is None else (json.loads(row[0]), bool(row[1]))

    async def query(
        self,
        collection: str,
        where: Mapping[str, Any],
        *,
        include_deleted: bool,
        limit: int | None,
    ) -> list[View]:
        sql = "SELECT view FROM documents WHERE collection = ?"
        parameters: list[Any] = [collection]
        if not include_deleted:
            sql += " AND is_deleted = 0"
        for name, value in where.items():
            if value is None:
                sql += " AND json_extract(view, ?) IS NULL"
                parameters.append(f"$.{name}")
            else:
                sql += " AND json_extract(view, ?) = ?"
                parameters += [f"$.{name}", value]
        sql += " ORDER BY record_id"
        if limit is not None:
            sql += " LIMIT ?"
            parameters.append(limit)
        rows = await self._connection.run(lambda db: db.execute(sql, parameters).fetchall())
        return [json.loads(text) for (text,) in rows]

    async def state_vectors(self, doc_ids: Sequence[DocId]) -> dict[DocId, bytes]:
        """The state vector of each document held here (absent: not held)."""
        return await self._connection.run(_state_vectors, doc_ids)

    async def summary(self) -> LocalSummary:
        pending, rejected, cursor = await self._connection.run(
            lambda db: db.execute(
                "SELECT (SELECT COUNT(*) FROM queue WHERE status = 'pending'),"
                " (SELECT COUNT(*) FROM queue WHERE status = 'rejected'),"
                " (SELECT value FROM replica_meta WHERE key = 'cursor')"
            ).fetchone()
        )
        return LocalSummary(pending, rejected, int(cursor or 0))

    async def cursor(self) -> int:
        row = await self._connection.run(
            lambda db: db.execute("SELECT value FROM replica_meta WHERE key = 'cursor'").fetchone()
        )
        return 0 if row is None else int(row[0])

    async def queued(self, status: str, *, limit: int = 1000) -> list[QueuedChange]:
        """Queue entries with `status` (pending or rejected), oldest first."""
        rows = await self._connection.run(
            lambda db: db.execute(
                "SELECT cseq, doc_id, intent, status, code, reason, created_at FROM queue"
                " WHERE status = ? ORDER BY cseq LIMIT ?",
                (status, limit),
            ).fetchall()
        )
        return [
            QueuedChange(cseq, DocId(doc_id), Intent.from_json(intent), state, code, reason, at)
            for cseq, doc_id, intent, state, code, reason, at in rows
        ]

    async def forget_rejected(self) -> int:
        """Drop every rejected entry (the user has seen them); returns how many."""
        return await self._transaction(
            lambda db: db.execute("DELETE FROM queue WHERE status = 'rejected'").rowcount
        )

    async def meta(self) -> dict[str, str]:
        rows = await self._connection.run(
            lambda db: db.execute("SELECT key, value FROM replica_meta").fetchall()
        )
        return dict(rows)

    # -- documents on the connection's thread ---------------------------------------------------

    def _load(self, db: sqlite3.Connection, doc_id: DocId) -> Doc[Any]:
        document: Doc[Any] = Doc(client_id=self.client_id)
        row = db.execute("SELECT state FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is not None:
            document.apply_update(row[0])
        return document

    def _save(self, db: sqlite3.Connection, doc_id: DocId, document: Doc[Any]) -> View:
        """Store the document with its view (a document that holds nothing is dropped)."""
        collection, record_id = self.records.collection_of(doc_id)
        record_view = view(document, collection, record_id)
        deleted = is_deleted(document)
        if not deleted and not has_content(document):
            db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
            return record_view
        db.execute(
            "INSERT INTO documents"
            " (doc_id, collection, record_id, state, view, is_deleted, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (doc_id) DO UPDATE SET"
            " state = excluded.state, view = excluded.view, is_deleted = excluded.is_deleted,"
            " updated_at = excluded.updated_at",
            (
                doc_id,
                collection.name,
                record_id,
                document.get_update(),
                json.dumps(record_view),
                int(deleted),
                self._clock(),
            ),
        )
        return record_view


def _in_transaction(db: sqlite3.Connection, work: Callable[..., T], *args: Any) -> T:
    with write_transaction(db):
        return work(db, *args)


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO replica_meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _advance_cursor(db: sqlite3.Connection, cursor: int) -> None:
    row = db.execute("SELECT value FROM replica_meta WHERE key = 'cursor'").fetchone()
    if row is None or int(row[0]) < cursor:
        _set_meta(db, "cursor", str(cursor))


def _state_vectors(db: sqlite3.Connection, doc_ids: Sequence[DocId]) -> dict[DocId, bytes]:
    # Read from the stored update itself (as server/yjs.py does): no document is built.
    out: dict[DocId, bytes] = {}
    for start in range(0, len(doc_ids), STATE_VECTOR_CHUNK):
        chunk = doc_ids[start : start + STATE_VECTOR_CHUNK]
        rows = db.execute(
            f"SELECT doc_id, state FROM documents WHERE doc_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
        out.update((DocId(doc_id), get_state(state)) for doc_id, state in rows)
    return out


def _outgoing(
    db: sqlite3.Connection, exclude: frozenset[DocId], singles: frozenset[DocId], limit: int
) -> list[Outgoing]:
    if limit <= 0:
        return []
    heads = db.execute(
        "SELECT doc_id, MAX(cseq) FROM queue WHERE status = 'pending'"
        " GROUP BY doc_id ORDER BY MIN(cseq) LIMIT ?",
        (limit + len(exclude),),
    ).fetchall()
    out: list[Outgoing] = []
    for doc_id, cseq in heads:
        if doc_id in exclude:
            continue
        rows = db.execute(
            "SELECT cseq, data FROM queue WHERE doc_id = ? AND cseq <= ? AND status = 'pending'"
            " ORDER BY cseq",
            (doc_id, cseq),
        ).fetchall()
        if doc_id in singles:
            rows = rows[:1]
        update = rows[0][1] if len(rows) == 1 else merge_updates(*(data for _, data in rows))
        out.append(Outgoing(DocId(doc_id), rows[-1][0], update, len(rows)))
        if len(out) == limit:
            break
    return out

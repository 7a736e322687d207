"""The Store interface: a durable, append-only log of CRDT updates with per-record views.

The store knows nothing of schemas, sockets or HTTP: the engine hands it already-checked
updates together with the JSON view they produce, and it keeps both in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..ids import DocId, Origin, Seq

if TYPE_CHECKING:
    from .listing import RecordQuery

JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Append:
    """One update to append, with the record's JSON view *after* it (computed by the engine)."""

    doc_id: DocId
    update: bytes
    view: JSONObject
    is_deleted: bool
    origin: Origin


@dataclass(frozen=True, slots=True)
class Committed:
    """An update that is durably in the log; handed to commit listeners in seq order."""

    seq: Seq
    doc_id: DocId
    update: bytes
    origin: Origin
    # Committed by another process on the same file (the CLI importing, say): this process's
    # live copies of the document have not seen it. Listeners get such updates before the
    # writer's own updates of the same commit, since their seqs are lower.
    foreign: bool = False


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: Seq
    doc_id: DocId
    update: bytes
    origin: Origin
    at: float  # unix seconds of the commit
    is_snapshot: bool  # True for a row that compaction folded several updates into


@dataclass(frozen=True, slots=True)
class RecordRow:
    """A record's materialized state: what REST views serve without loading a CRDT."""

    doc_id: DocId
    collection: str
    record_id: str
    view: JSONObject
    is_deleted: bool
    first_seq: Seq
    last_seq: Seq
    created_by: Origin
    updated_at: float


@dataclass(frozen=True, slots=True)
class CompactionReport:
    documents: int
    updates_before: int
    updates_after: int
    bytes_before: int
    bytes_after: int
    steps: int = 0  # snapshots committed: a long log is folded a bounded prefix at a time


@dataclass(frozen=True, slots=True)
class TokenRow:
    name: str
    role: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None = None  # to the minute: see `Store.touch_token`


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One server node of a deployment on a shared store, as its last heartbeat left it."""

    id: str  # server/nodes.py node_name(): host, process, a random part
    address: str  # where it serves (http://host:port), as it was told; "" if it was not
    started_at: float  # unix seconds, the node's clock
    last_seen: float  # unix seconds of its last heartbeat, the database's clock
    connections: int  # open websocket connections at that heartbeat
    age: float  # seconds since last_seen when read, the database's clock (no clock skew)


@runtime_checkable
class NodeRoster(Protocol):
    """A store that several nodes share keeps a row per node (PostgresStore, not SQLite)."""

    async def beat_node(
        self, node_id: str, address: str, started_at: float, connections: int
    ) -> None:
        """Record that this node is alive now; forget nodes silent for an hour."""
        ...

    async def list_nodes(self) -> list[NodeRow]:
        """Every node remembered, alive or not, the oldest first."""
        ...

    async def leave_node(self, node_id: str) -> None:
        """Forget this node (it is shutting down)."""
        ...


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    cursor: Seq
    records: dict[str, int]  # live records per collection
    deleted: dict[str, int]  # tombstoned records per collection
    log_entries: int
    compaction_debt: int  # log entries that compaction would fold away
    file_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DocumentState:
    """A record with its whole CRDT state, read in one transaction so the two agree (export)."""

    record: RecordRow
    state: bytes  # every update of the document merged into one
    size: int  # bytes its log rows take in the store


CommitListener = Callable[[Sequence[Committed]], None]
Progress = Callable[[int, int], None]  # (done, total)


class Store(Protocol):
    """What the engine, the REST views and the CLI need from durable storage.

    Every append returns only once its transaction has committed; concurrent appends share
    one transaction (group commit). Commit listeners are called after each commit, with the
    committed updates in strictly increasing seq order.
    """

    def add_commit_listener(self, listener: CommitListener) -> None: ...

    def remove_commit_listener(self, listener: CommitListener) -> None:
        """Stop calling a listener `add_commit_listener` gave; ValueError if it did not."""

    async def follow(self) -> int:
        """Hand listeners what other processes committed since this store last looked.

        Appends do this as a matter of course (within their transaction); call it while idle so
        that foreign commits are seen promptly too. Returns how many foreign updates it found.
        """
        ...

    async def append(
        self, doc_id: DocId, update: bytes, *, view: JSONObject, is_deleted: bool, origin: Origin
    ) -> Seq: ...

    def append_nowait(
        self, doc_id: DocId, update: bytes, *, view: JSONObject, is_deleted: bool, origin: Origin
    ) -> asyncio.Future[list[Seq]]:
        """`append` without awaiting: queued at once; the future gives `[seq]` after commit."""
        ...

    async def append_many(
        self,
        appends: Sequence[Append],
        *,
        idempotency_key: str | None = None,
        answer: Callable[[list[Seq]], bytes] | None = None,
    ) -> list[Seq]:
        """All of `appends` in one transaction; with a key, `answer(seqs)` is kept with them."""
        ...

    async def recall(self, idempotency_key: str) -> bytes | None:
        """The answer kept for a key that already applied, or None."""
        ...

    async def load(self, doc_id: DocId) -> bytes | None:
        """The whole CRDT state of a document as one update, or None if it has no updates."""
        ...

    async def history(self, doc_id: DocId) -> list[LogEntry]: ...

    async def get_record(self, doc_id: DocId) -> RecordRow | None: ...

    async def cursor(self) -> Seq: ...

    async def changes_since(
        self, cursor: Seq, *, collections: Sequence[str] | None = None, limit: int = 1000
    ) -> list[RecordRow]:
        """Records whose last_seq > cursor, by last_seq ascending; served from an index."""
        ...

    async def log_since(
        self, cursor: Seq, *, collections: Sequence[str] | None = None, limit: int = 1000
    ) -> list[LogEntry]:
        """Log entries with seq > cursor, by seq ascending (catch-up for live clients)."""
        ...

    async def snapshot(
        self,
        *,
        collections: Sequence[str] | None = None,
        after: DocId | None = None,
        limit: int = 1000,
        include_deleted: bool = False,
    ) -> list[RecordRow]:
        """Records ordered by doc_id, starting after `after` (keyset paging for initial sync)."""
        ...

    async def scan_snapshot(
        self,
        *,
        collections: Sequence[str] | None = None,
        after: DocId | None = None,
        limit: int = 1000,
    ) -> list[RecordRow]:
        """As `snapshot` of live records, for long scans: without evicting what reads keep hot."""
        ...

    async def list_records(self, query: RecordQuery) -> list[RecordRow]:
        """One page of a collection's records, filtered, searched and sorted (see listing.py)."""
        ...

    async def compact(self, doc_id: DocId, *, progress: Progress | None = None) -> CompactionReport:
        """Fold `doc_id`'s log into one snapshot; `progress(rows_folded, rows)` after each step.

        Never holds the write lock for long: a long log is folded a bounded prefix at a time.
        """
        ...

    async def compact_all(self, *, progress: Progress | None = None) -> CompactionReport: ...

    async def statistics(self) -> StoreStatistics: ...

    async def add_token(self, name: str, role: str, token_hash: str) -> None: ...

    async def find_token(self, token_hash: str) -> TokenRow | None:
        """The live (not revoked) token with this hash, or None."""
        ...

    async def list_tokens(self) -> list[TokenRow]: ...

    async def revoke_token(self, name: str) -> bool: ...

    async def served_schema(self) -> str | None:
        """The schema (canonical JSON) the store is served with; None until a server recorded one."""
        ...

    async def record_served_schema(self, schema_json: str) -> None: ...

    async def touch_token(self, token_hash: str) -> None:
        """Record that the token was used now (`last_used_at`)."""
        ...

    async def documents(
        self, *, after: DocId | None = None, limit: int = 100
    ) -> list[DocumentState]:
        """Every record (deleted ones too) with its state, by doc_id, after `after` (export)."""
        ...

    async def record_sizes(self, doc_ids: Sequence[DocId]) -> dict[DocId, int]:
        """Bytes each record's log rows take in the store; records not found are left out."""
        ...

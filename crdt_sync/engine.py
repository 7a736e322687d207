"""The hub: live documents, the one write path (check -> append -> apply -> fan out), subscribers.

Websocket, REST and CLI writes all come through `Engine.write` / `Engine.patch`. The live
documents here are a bounded cache used to check updates and compute views; what peers are
served on join comes from the store, so nobody ever sees an update a crash could take back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc

from .errors import CrdtSyncError, DocumentError, LimitExceeded, RecordNotFound, StoreError
from .ids import DocId, Origin, Seq, split_doc_id
from .record import EMPTY_UPDATE, CheckedUpdate, Records, View, document_from_state, is_deleted
from .schema import Schema
from .store.base import Append, Committed, Store


LOG = logging.getLogger(__name__)
VIEW_REPAIR = Origin("view-repair")  # the origin of the empty updates that rewrite a view


@dataclass(frozen=True, slots=True)
class Limits:
    max_update_bytes: int = 1 << 20
    max_document_bytes: int = 8 << 20
    subscriber_queue: int = 2048


@dataclass(frozen=True, slots=True)
class WriteResult:
    doc_id: DocId
    seq: Seq | None  # None: the update changed nothing, so nothing was stored
    view: View
    is_deleted: bool
    changed_fields: tuple[str, ...]


class Subscriber:
    """A consumer of committed updates with a bounded queue: a slow one overflows alone.

    Give `doc_id` for one record (a y-websocket peer) or `collections` (None = all) for a
    multiplexed peer. After an overflow it gets nothing more and `overflowed` is set: its
    transport closes it, and the peer catches up from its cursor on reconnect.
    """

    def __init__(
        self,
        name: str,
        *,
        doc_id: DocId | None = None,
        collections: Sequence[str] | None = None,
        echo_own: bool = False,
        max_queue: int = 2048,
    ) -> None:
        self.name = name
        self.doc_id = doc_id
        self.collections = frozenset(collections) if collections is not None else None
        self.echo_own = echo_own
        # Committed updates from the fan-out, or frames a transport queued for this peer.
        self.queue: asyncio.Queue[object] = asyncio.Queue(max_queue)
        self.overflowed = asyncio.Event()

    def wants(self, committed: Committed) -> bool:
        if self.doc_id is not None:
            return committed.doc_id == self.doc_id
        return self.collections is None or committed.doc_id.partition("/")[0] in self.collections

    def offer(self, committed: Committed) -> None:
        self.offer_frame(committed)

    def offer_frame(self, item: object) -> None:
        if self.overflowed.is_set():
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed.set()


class LiveDocuments:
    """A bounded LRU of live record documents; a document in use is never evicted."""

    def __init__(self, store: Store, capacity: int) -> None:
        self._store = store
        self._capacity = capacity
        self._documents: OrderedDict[DocId, Doc] = OrderedDict()
        self._users: Counter[DocId] = Counter()
        self._loading: dict[DocId, asyncio.Future[Doc]] = {}

    def __len__(self) -> int:
        return len(self._documents)

    @asynccontextmanager
    async def using(self, doc_id: DocId) -> AsyncIterator[Doc]:
        self._users[doc_id] += 1
        try:
            yield await self._get(doc_id)
        finally:
            self._users[doc_id] -= 1
            if not self._users[doc_id]:
                del self._users[doc_id]
            self._evict()

    def discard(self, doc_id: DocId) -> None:
        """Forget a document whose live state may be ahead of the store (a failed commit)."""
        self._documents.pop(doc_id, None)

    def peek(self, doc_id: DocId) -> Doc | None:
        """The live document if it is cached, without loading it or counting as a use."""
        return self._documents.get(doc_id)

    async def _get(self, doc_id: DocId) -> Doc:
        document = self._documents.get(doc_id)
        if document is not None:
            self._documents.move_to_end(doc_id)
            return document
        loading = self._loading.get(doc_id)
        if loading is not None:  # another writer is loading it: share, never load twice
            return await asyncio.shield(loading)
        future: asyncio.Future[Doc] = asyncio.get_running_loop().create_future()
        self._loading[doc_id] = future
        try:
            document = document_from_state(await self._store.load(doc_id))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters get it through shield
            raise
        finally:
            del self._loading[doc_id]
        self._documents[doc_id] = document
        future.set_result(document)
        return document

    def _evict(self) -> None:
        while len(self._documents) > self._capacity:
            for doc_id in self._documents:
                if doc_id not in self._users:
                    del self._documents[doc_id]
                    break
            else:
                return  # every cached document is in use: over capacity until released


class Engine:
    """The one place records change. Use as an async context manager around a started store."""

    def __init__(
        self, store: Store, schema: Schema, *, cache_size: int = 2048, limits: Limits = Limits()
    ) -> None:
        self.store = store
        self.records = Records(schema)
        self.schema = schema
        self.limits = limits
        self.live = LiveDocuments(store, cache_size)
        self._subscribers: set[Subscriber] = set()
        self._by_doc: dict[DocId, set[Subscriber]] = {}
        self._senders: dict[tuple[DocId, bytes], Subscriber] = {}
        self.counters: Counter[str] = Counter()
        self._repairs: set[asyncio.Task[None]] = set()
        store.add_commit_listener(self._fan_out)

    async def write(
        self, doc_id: DocId, update: bytes, *, origin: Origin, sender: Subscriber | None = None
    ) -> WriteResult:
        """The path every CRDT update takes, whichever door it came in by.

        Returns once the update is committed (or found to change nothing). Raises
        InvalidUpdate / SchemaViolation / UnknownCollection (nothing stored), LimitExceeded,
        StoreError (the commit failed: nothing acknowledged).
        """
        try:
            if len(update) > self.limits.max_update_bytes:
                raise LimitExceeded(
                    f"{doc_id}: update of {len(update)} bytes is over the limit of "
                    f"{self.limits.max_update_bytes}"
                )
            async with self.live.using(doc_id) as document:
                checked = self.records.check_update(doc_id, document, update)
                if checked.is_noop:
                    return _result(doc_id, None, checked)
                self._check_size(doc_id, checked)
                document.apply_update(update)
                return _result(doc_id, await self._append(doc_id, update, checked, origin, sender),
                               checked)
        except Exception as exc:
            self.counters[f"refused:{type(exc).__name__}"] += 1
            raise

    async def patch(
        self,
        doc_id: DocId,
        patch: Mapping[str, Any],
        *,
        origin: Origin,
        creating: bool = False,
        sender: Subscriber | None = None,
    ) -> WriteResult:
        """A field patch (REST, CLI, a non-CRDT client) made into one update and written.

        Raises SchemaViolation / UnknownCollection before anything changes; RecordNotFound
        for a deleted record.
        """
        async with self.live.using(doc_id) as document:
            if is_deleted(document):
                raise RecordNotFound(doc_id, "record is deleted")
            update = self.records.patch(doc_id, document, patch, creating=creating)
            return await self._commit_local(doc_id, document, update, tuple(patch), origin, sender)

    async def delete(self, doc_id: DocId, *, origin: Origin) -> WriteResult:
        async with self.live.using(doc_id) as document:
            update = self.records.delete(doc_id, document)
            return await self._commit_local(doc_id, document, update, (), origin, None)

    async def committed_state(self, doc_id: DocId) -> Doc:
        """The document as the store holds it: what a joining peer may be shown."""
        split_doc_id(doc_id)
        return document_from_state(await self.store.load(doc_id))

    async def view(self, doc_id: DocId) -> tuple[View, bool]:
        async with self.live.using(doc_id) as document:
            return self.records.view(doc_id, document), is_deleted(document)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)
        if subscriber.doc_id is not None:
            self._by_doc.setdefault(subscriber.doc_id, set()).add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if subscriber.doc_id is not None:
            peers = self._by_doc.get(subscriber.doc_id)
            if peers is not None:
                peers.discard(subscriber)
                if not peers:
                    del self._by_doc[subscriber.doc_id]

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        return frozenset(self._subscribers)

    def peers_of(self, doc_id: DocId) -> frozenset[Subscriber]:
        return frozenset(self._by_doc.get(doc_id, ()))

    async def _commit_local(
        self,
        doc_id: DocId,
        document: Doc,
        update: bytes,
        changed: tuple[str, ...],
        origin: Origin,
        sender: Subscriber | None,
    ) -> WriteResult:
        """Append an update already applied to the live document by a local patch."""
        view = self.records.view(doc_id, document)
        if update == EMPTY_UPDATE:
            return WriteResult(doc_id, None, view, is_deleted(document), ())
        checked = CheckedUpdate(view, is_deleted(document), changed, False, len(update))
        return _result(doc_id, await self._append(doc_id, update, checked, origin, sender), checked)

    async def _append(
        self,
        doc_id: DocId,
        update: bytes,
        checked: CheckedUpdate,
        origin: Origin,
        sender: Subscriber | None,
    ) -> Seq:
        if sender is not None and not sender.echo_own:
            self._senders[(doc_id, update)] = sender
        try:
            seq = await self.store.append(
                doc_id, update, view=checked.view, is_deleted=checked.is_deleted, origin=origin
            )
        except StoreError:
            # The live document already holds an update the store does not: reload next time.
            self.live.discard(doc_id)
            raise
        finally:
            self._senders.pop((doc_id, update), None)
        self.counters["writes"] += 1
        return seq

    def _check_size(self, doc_id: DocId, checked: CheckedUpdate) -> None:
        if checked.state_bytes > self.limits.max_document_bytes:
            raise LimitExceeded(
                f"{doc_id}: document would grow to {checked.state_bytes} bytes, over the limit "
                f"of {self.limits.max_document_bytes}"
            )

    async def settle(self) -> None:
        """Wait for the view repairs that foreign commits started (before closing the store)."""
        while self._repairs:
            await asyncio.gather(*self._repairs, return_exceptions=True)

    def _follow_foreign(self, batch: Sequence[Committed]) -> None:
        """Updates another process committed: bring the live copies that lack them up to date.

        A record not in the cache loads them from the store when next used. One that is may
        have had views computed without them (writes in flight, or in this very commit), so
        its view is repaired by an empty update queued behind those writes.
        """
        stale: set[DocId] = set()
        for committed in batch:
            if not committed.foreign:
                continue
            document = self.live.peek(committed.doc_id)
            if document is None:
                continue
            before = document.get_state()
            document.apply_update(committed.update)
            # Only news makes views stale: not an update loaded with the document already, nor
            # another process's view repair (empty), which would otherwise repair back forever.
            if document.get_state() != before:
                stale.add(committed.doc_id)
        for doc_id in stale:
            task = asyncio.get_running_loop().create_task(self._repair_view(doc_id))
            self._repairs.add(task)
            task.add_done_callback(self._repairs.discard)

    async def _repair_view(self, doc_id: DocId) -> None:
        try:
            async with self.live.using(doc_id) as document:
                # No await between reading the view and queuing the append: it lands behind
                # every write already applied to this document, so it is the last word.
                await self.store.append(
                    doc_id, EMPTY_UPDATE, view=self.records.view(doc_id, document),
                    is_deleted=is_deleted(document), origin=VIEW_REPAIR,
                )
        except CrdtSyncError:  # the next write of the record writes its view again
            LOG.exception("%s: could not repair its view after another process wrote it", doc_id)

    def _fan_out(self, batch: Sequence[Committed]) -> None:
        """Called by the store after each commit, in seq order: only committed updates go out."""
        if batch and batch[0].foreign:  # a commit's foreign updates come first
            self._follow_foreign(batch)
        for committed in batch:
            skip = self._senders.get((committed.doc_id, committed.update))
            for subscriber in self._by_doc.get(committed.doc_id, ()):
                if subscriber is not skip:
                    subscriber.offer(committed)
            for subscriber in self._subscribers:
                if subscriber.doc_id is None and subscriber is not skip and subscriber.wants(committed):
                    subscriber.offer(committed)

    async def write_many(
        self,
        writes: Sequence[BatchWrite],
        *,
        origin: Origin,
        idempotency_key: str | None = None,
        answer: Callable[[list[BatchOutcome]], bytes] | None = None,
    ) -> list[BatchOutcome]:
        """Many writes in one transaction; a write that breaks the schema is refused alone.

        Each write is checked in order against the live documents (earlier writes of the batch
        included); the refused ones come back with their error and leave nothing behind, the
        rest commit together or not at all. With `idempotency_key`, `answer(outcomes)` (seqs
        filled in) is stored in the same transaction, for `Store.recall`.

        Raises:
            StoreError: the commit failed or the key was already used; nothing was stored.
        """
        async with AsyncExitStack() as stack:
            documents: dict[DocId, Doc] = {}
            refused: dict[int, CrdtSyncError] = {}
            for index, write in enumerate(writes):
                try:
                    self.records.collection_of(write.doc_id)
                except DocumentError as exc:
                    self.counters[f"refused:{type(exc).__name__}"] += 1
                    refused[index] = exc
                    continue
                if write.doc_id not in documents:
                    documents[write.doc_id] = await stack.enter_async_context(
                        self.live.using(write.doc_id)
                    )
            # No await from the first change to a live document until the batch is submitted,
            # so live documents and the log see writes in the same order.
            prepared = [
                refused[index] if index in refused else self._prepare(write, documents[write.doc_id])
                for index, write in enumerate(writes)
            ]
            return await self._commit_many(writes, prepared, origin, idempotency_key, answer)

    def _prepare(self, write: BatchWrite, document: Doc) -> _Prepared | CrdtSyncError:
        """The update one write makes, applied to the live document; or why it is refused."""
        doc_id = write.doc_id
        try:
            is_new = document.get_state() == EMPTY_STATE_VECTOR
            if write.update is not None:
                return self._prepare_update(write, document, is_new)
            if is_deleted(document):
                return _Prepared(None, self.records.view(doc_id, document), True, (), is_new)
            before = self.records.view(doc_id, document)
            if write.is_delete:
                if is_new:
                    return _Prepared(None, before, False, (), is_new)  # nothing to delete
                update = self.records.delete(doc_id, document)
            else:
                patch = write.patch or {}
                update = self.records.patch(doc_id, document, patch, creating=write.creating)
            after = self.records.view(doc_id, document)
            changed = tuple(name for name in after if after[name] != before.get(name))
            if update == EMPTY_UPDATE:
                return _Prepared(None, after, is_deleted(document), (), is_new)
            return _Prepared(update, after, is_deleted(document), changed, is_new)
        except CrdtSyncError as exc:
            self.counters[f"refused:{type(exc).__name__}"] += 1
            return exc

    def _prepare_update(self, write: BatchWrite, document: Doc, is_new: bool) -> _Prepared:
        update = write.update or b""
        if len(update) > self.limits.max_update_bytes:
            raise LimitExceeded(
                f"{write.doc_id}: update of {len(update)} bytes is over the limit of "
                f"{self.limits.max_update_bytes}"
            )
        checked = self.records.check_update(write.doc_id, document, update)
        if checked.is_noop:
            return _Prepared(None, checked.view, checked.is_deleted, (), is_new)
        self._check_size(write.doc_id, checked)
        document.apply_update(update)
        return _Prepared(update, checked.view, checked.is_deleted, checked.changed_fields, is_new)

    async def _commit_many(
        self,
        writes: Sequence[BatchWrite],
        prepared: list[_Prepared | CrdtSyncError],
        origin: Origin,
        idempotency_key: str | None,
        answer: Callable[[list[BatchOutcome]], bytes] | None,
    ) -> list[BatchOutcome]:
        appends = [
            Append(write.doc_id, p.update, p.view, p.is_deleted, origin)
            for write, p in zip(writes, prepared)
            if isinstance(p, _Prepared) and p.update is not None
        ]

        def outcomes_at(seqs: Sequence[Seq]) -> list[BatchOutcome]:
            given = iter(seqs)
            return [
                BatchOutcome(write, None, p)
                if isinstance(p, CrdtSyncError)
                else BatchOutcome(write, p.result(next(given) if p.update is not None else None), None)
                for write, p in zip(writes, prepared)
            ]

        def store_answer(seqs: list[Seq]) -> bytes:
            return answer(outcomes_at(seqs)) if answer is not None else b""

        try:
            seqs = await self.store.append_many(
                appends, idempotency_key=idempotency_key, answer=store_answer
            )
        except BaseException:
            # Live documents already hold updates the store refused: reload them next time.
            for append in appends:
                self.live.discard(append.doc_id)
            raise
        self.counters["writes"] += len(seqs)
        return outcomes_at(seqs)


def _result(doc_id: DocId, seq: Seq | None, checked: CheckedUpdate) -> WriteResult:
    return WriteResult(doc_id, seq, checked.view, checked.is_deleted, checked.changed_fields)


EMPTY_STATE_VECTOR = b"\x00"  # the state vector of a document that has never been written


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """One write of `Engine.write_many`: a field patch, a CRDT update, or a delete."""

    doc_id: DocId
    patch: Mapping[str, Any] | None = None
    update: bytes | None = None
    is_delete: bool = False
    creating: bool = False  # the record's required fields must be set after the patch


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one accepted write of a batch did."""

    seq: Seq | None  # None: it changed nothing, so nothing was stored
    view: View
    is_deleted: bool
    changed_fields: tuple[str, ...]
    is_new: bool  # the record had never been written before this batch
    is_ignored: bool  # a change to a deleted record: the delete is final, so it is dropped


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    write: BatchWrite
    result: BatchResult | None  # None when refused
    error: CrdtSyncError | None


@dataclass(frozen=True, slots=True)
class _Prepared:
    update: bytes | None  # None: nothing to store
    view: View
    is_deleted: bool
    changed_fields: tuple[str, ...]
    is_new: bool

    def result(self, seq: Seq | None) -> BatchResult:
        is_ignored = self.update is None and self.is_deleted and not self.is_new
        return BatchResult(
            seq,
            self.view,
            self.is_deleted,
            self.changed_fields,
            self.is_new,
            is_ignored,
        )

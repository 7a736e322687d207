"""The hub: live documents, the one write path (check -> append -> apply -> fan out), subscribers.

Websocket, REST and CLI writes all come through `Engine.write` / `Engine.patch`. The live
documents here are a bounded cache used to check updates and compute views; what peers are
served on join comes from the store, so nobody ever sees an update a crash could take back.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc

from .errors import LimitExceeded, ProtocolError, RecordNotFound, StoreError
from .fanout import Published, Subscriber, group_by_document
from .ids import DocId, Origin, Seq, split_doc_id
from .record import EMPTY_UPDATE, CheckedUpdate, LiveRecord, Records, View, document_from_state
from .schema import Schema
from .store.base import Committed, Store


@dataclass(frozen=True, slots=True)
class Limits:
    max_update_bytes: int = 1 << 20
    max_document_bytes: int = 8 << 20
    subscriber_queue: int = 2048  # items in a subscriber's outbox ...
    subscriber_queue_bytes: int = 8 << 20  # ... and bytes: whichever overflows first closes it


@dataclass(frozen=True, slots=True)
class WriteResult:
    doc_id: DocId
    seq: Seq | None  # None: the update changed nothing, so nothing was stored
    view: View
    is_deleted: bool
    changed_fields: tuple[str, ...]


class LiveDocuments:
    """A bounded LRU of live records; a record in use is never evicted."""

    def __init__(self, store: Store, records: Records, capacity: int) -> None:
        self._store = store
        self._records = records
        self._capacity = capacity
        self._documents: OrderedDict[DocId, LiveRecord] = OrderedDict()
        self._users: Counter[DocId] = Counter()
        self._gates: dict[DocId, asyncio.Lock] = {}  # records being loaded, and their queue
        self._gate_users: Counter[DocId] = Counter()

    def __len__(self) -> int:
        return len(self._documents)

    @asynccontextmanager
    async def using(self, doc_id: DocId) -> AsyncIterator[LiveRecord]:
        self._users[doc_id] += 1
        record: LiveRecord | None = None
        try:
            record = await self._get(doc_id)
            yield record
        finally:
            self._users[doc_id] -= 1
            if not self._users[doc_id]:
                del self._users[doc_id]
                if record is not None and self._documents.get(doc_id) is not record:
                    record.close()  # discarded while in use: its last user lets it go
            self._evict()

    def discard(self, doc_id: DocId) -> None:
        """Forget a record whose live state may be ahead of the store (a failed commit)."""
        record = self._documents.pop(doc_id, None)
        if record is not None and doc_id not in self._users:
            record.close()

    async def _get(self, doc_id: DocId) -> LiveRecord:
        """The cached record, or load it. Callers get it in the order they asked for it.

        Writes to one record are checked and applied in arrival order, each one synchronously
        after `_get` returns. So while a record loads, later callers queue behind a FIFO lock
        instead of finding it cached a moment later and overtaking the ones woken before
        them (an overtaking update would look like one depending on changes not seen).
        """
        record = self._documents.get(doc_id)
        if record is not None and doc_id not in self._gates:
            self._documents.move_to_end(doc_id)
            return record
        gate = self._gates.get(doc_id)
        if gate is None:
            gate = self._gates[doc_id] = asyncio.Lock()
        self._gate_users[doc_id] += 1
        try:
            async with gate:
                record = self._documents.get(doc_id)
                if record is None:
                    record = self._records.live_record(doc_id, await self._store.load(doc_id))
                    self._documents[doc_id] = record
                self._documents.move_to_end(doc_id)
                return record
        finally:
            self._gate_users[doc_id] -= 1
            if not self._gate_users[doc_id]:
                del self._gate_users[doc_id], self._gates[doc_id]

    def _evict(self) -> None:
        while len(self._documents) > self._capacity:
            for doc_id in self._documents:
                if doc_id not in self._users:
                    self._documents.pop(doc_id).close()
                    break
            else:
                return  # every cached record is in use: over capacity until released


class Engine:
    """The one place records change. Use as an async context manager around a started store."""

    def __init__(
        self, store: Store, schema: Schema, *, cache_size: int = 2048, limits: Limits = Limits()
    ) -> None:
        self.store = store
        self.records = Records(schema)
        self.schema = schema
        self.limits = limits
        self.live = LiveDocuments(store, self.records, cache_size)
        self._subscribers: set[Subscriber] = set()
        self._by_doc: dict[DocId, set[Subscriber]] = {}
        self._by_collections: set[Subscriber] = set()  # multiplexed peers: every doc_id is None
        self._senders: dict[tuple[DocId, bytes], Subscriber] = {}
        self.counters: Counter[str] = Counter()
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
            async with self.live.using(doc_id) as record:
                # Checked and applied in one step, with no await in between: writes to one
                # record are checked in the order they started, each against all before it.
                checked = record.apply(update, max_document_bytes=self.limits.max_document_bytes)
                if checked.is_noop:
                    return _result(doc_id, None, checked)
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
        async with self.live.using(doc_id) as record:
            if record.is_deleted:
                raise RecordNotFound(doc_id, "record is deleted")
            update = self.records.patch(doc_id, record.document, patch, creating=creating)
            return await self._commit_local(doc_id, record, update, tuple(patch), origin, sender)

    async def delete(self, doc_id: DocId, *, origin: Origin) -> WriteResult:
        async with self.live.using(doc_id) as record:
            update = self.records.delete(doc_id, record.document)
            return await self._commit_local(doc_id, record, update, (), origin, None)

    async def committed_state(self, doc_id: DocId) -> Doc:
        """The document as the store holds it: what a joining peer may be shown."""
        split_doc_id(doc_id)
        return document_from_state(await self.store.load(doc_id))

    async def committed_update(self, doc_id: DocId) -> bytes:
        """The document as the store holds it, as one update (empty-effect if none): what a
        joining peer may be shown, without building a document."""
        split_doc_id(doc_id)
        return await self.store.load(doc_id) or EMPTY_UPDATE

    async def committed_diff(self, doc_id: DocId, state_vector: bytes) -> bytes:
        """What the store holds that a peer with `state_vector` lacks (the answer to its step 1).

        Raises ProtocolError for a state vector that does not decode.
        """
        document = await self.committed_state(doc_id)  # dropped on return, garbage collected
        try:
            return document.get_update(state_vector)
        except ValueError as exc:
            raise ProtocolError(f"{doc_id}: sync step 1 holds no state vector: {exc}") from None

    async def view(self, doc_id: DocId) -> tuple[View, bool]:
        async with self.live.using(doc_id) as record:
            return record.view, record.is_deleted

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)
        if subscriber.doc_id is not None:
            self._by_doc.setdefault(subscriber.doc_id, set()).add(subscriber)
        else:
            self._by_collections.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self._by_collections.discard(subscriber)
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
        record: LiveRecord,
        update: bytes,
        changed: tuple[str, ...],
        origin: Origin,
        sender: Subscriber | None,
    ) -> WriteResult:
        """Append an update already applied to the live document by a local patch."""
        if update == EMPTY_UPDATE:
            return WriteResult(doc_id, None, record.view, record.is_deleted, ())
        record.adopt(update)
        checked = CheckedUpdate(record.view, record.is_deleted, changed, False, len(update))
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

    def _fan_out(self, batch: Sequence[Committed]) -> None:
        """Called by the store after each commit, in seq order: only committed updates go out.

        A record's peers get one `Published` per commit (merged and encoded once for all of
        them); multiplexed peers get each update with its seq, in seq order.
        """
        senders = self._senders
        for doc_id, entries in group_by_document(batch).items():
            peers = self._by_doc.get(doc_id)
            if not peers:
                continue
            published = Published(doc_id, entries)
            skipped = {senders.get((doc_id, entry.update)) for entry in entries} if senders else ()
            for subscriber in peers:
                if subscriber in skipped:  # only peers that asked not to get their own echo
                    others = [e for e in entries if senders.get((doc_id, e.update)) is not subscriber]
                    if others:
                        subscriber.offer_published(Published(doc_id, others))
                else:
                    subscriber.offer_published(published)
        for subscriber in self._by_collections:
            for committed in batch:
                if subscriber.wants(committed) and senders.get(
                    (committed.doc_id, committed.update)
                ) is not subscriber:
                    subscriber.offer(committed)


def _result(doc_id: DocId, seq: Seq | None, checked: CheckedUpdate) -> WriteResult:
    return WriteResult(doc_id, seq, checked.view, checked.is_deleted, checked.changed_fields)

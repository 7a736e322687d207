"""The hub: live documents, the one write path (check -> append -> apply -> fan out), subscribers.

Websocket, REST and CLI writes all come through `Engine.write` / `Engine.patch`. The live
documents here are a bounded cache used to check updates and compute views; what peers are
served on join comes from the store, so nobody ever sees an update a crash could take back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any

from pycrdt import Doc, get_update, merge_updates

from .batches import BatchOutcome, BatchWrite, PreparedWrite
from .errors import (
    CrdtSyncError,
    DocumentError,
    InvalidUpdate,
    LimitExceeded,
    ProtocolError,
    RecordExists,
    RecordNotFound,
    StoreError,
)
from .fanout import Published, Subscriber, group_by_document
from .ids import DocId, Origin, Seq, split_doc_id
from .live_records import LiveDocuments
from .record import (
    EMPTY_UPDATE,
    NO_SIZE_LIMIT,
    CheckedUpdate,
    LiveRecord,
    Records,
    View,
    document_from_state,
)
from .refusals import RefusalLog
from .schema import Schema
from .store.base import Append, Committed, Store
from .yupdate import MalformedUpdate, check_update, read_state_vector

LOG = logging.getLogger(__name__)
VIEW_REPAIR = Origin("view-repair")  # the origin of the empty updates that rewrite a view


@dataclass(frozen=True, slots=True)
class Limits:
    max_update_bytes: int = 1 << 20
    max_document_bytes: int = 8 << 20
    subscriber_queue: int = 2048  # items in a subscriber's outbox ...
    subscriber_queue_bytes: int = 8 << 20  # ... and bytes: whichever overflows first closes it
    # A live connection's refused writes: `refusal_burst` at once, then this many a second
    # (server/refusals.py); past that its reader waits.
    refusals_per_second: float = 10.0
    refusal_burst: int = 20


@dataclass(frozen=True, slots=True)
class WriteResult:
    doc_id: DocId
    seq: Seq | None  # None: the update changed nothing, so nothing was stored
    view: View
    is_deleted: bool
    changed_fields: tuple[str, ...]


_Waiting = tuple[bytes, Origin, "Subscriber | None", bool, "asyncio.Future[WriteResult]"]


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
        self._by_doc: dict[DocId, set[Subscriber]] = {}
        self._by_collections: set[Subscriber] = set()  # multiplexed peers: every doc_id is None
        self._senders: dict[tuple[DocId, bytes], Subscriber] = {}
        self.counters: Counter[str] = Counter()
        self.refusals = RefusalLog()  # the last refused writes, with why and what they tried
        self._running_loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[DocId, list[_Waiting]] = {}  # writes that wait for a record to load
        self._loaders: set[asyncio.Task[None]] = set()
        self._repairs: set[asyncio.Task[None]] = set()  # view repairs after foreign commits
        store.add_commit_listener(self._fan_out)

    async def write(
        self,
        doc_id: DocId,
        update: bytes,
        *,
        origin: Origin,
        sender: Subscriber | None = None,
        compensate: bool = False,
    ) -> WriteResult:
        """The path every CRDT update takes, whichever door it came in by.

        Returns once the update is committed (or found to change nothing). Raises
        InvalidUpdate / SchemaViolation / UnknownCollection (nothing stored), LimitExceeded,
        StoreError (the commit failed: nothing acknowledged).

        With `compensate` (the live doors, whose stock clients keep what they wrote), an
        update that breaks the schema in values that can be restored is stored and fanned
        out with its compensation, as one update, to every peer (its sender included, since
        it is not the sender's own update any more); once that is committed, this raises
        the SchemaViolation, its `compensated_seq` set (see `LiveRecord.apply`).
        """
        async with self.live.using(doc_id) as record:
            return await self._start_write(doc_id, record, update, origin, sender, compensate)

    def write_nowait(
        self,
        doc_id: DocId,
        update: bytes,
        *,
        origin: Origin,
        sender: Subscriber | None = None,
        compensate: bool = False,
    ) -> asyncio.Future[WriteResult]:
        """`write`, started now: for a connection's reader, which must not wait for commits.

        If the record is live, the update is checked, applied and queued for commit before
        this returns, without a task of its own (the hot path). Otherwise it waits, with
        every other write that comes meanwhile, for one task to load the record. Either way
        writes started in order are checked in order. The future gives what `write` returns,
        or raises what it raises.
        """
        waiting = self._waiting.get(doc_id)
        if waiting is None:
            record = self.live.acquire_nowait(doc_id)
            if record is not None:
                return self._write_held(doc_id, record, update, origin, sender, compensate)
            waiting = self._waiting[doc_id] = []
            loader = asyncio.ensure_future(self._write_when_loaded(doc_id, waiting))
            self._loaders.add(loader)
            loader.add_done_callback(self._loaders.discard)
        done: asyncio.Future[WriteResult] = self._loop().create_future()
        waiting.append((update, origin, sender, compensate, done))
        return done

    def write_merged_nowait(
        self,
        doc_id: DocId,
        updates: Sequence[bytes],
        *,
        origin: Origin,
        sender: Subscriber | None = None,
        compensate: bool = False,
    ) -> list[asyncio.Future[WriteResult]]:
        """Updates one peer pipelined to one record, started now, as one write if possible.

        When the record is live they are merged and written as one update: one check, one
        log entry, one fan-out (a stock client sends each keystroke as an update of its own).
        If the merged update is refused, it left nothing behind, and each is written on its
        own, in order, so that only the refused ones fail (and, with `compensate`, only they
        are compensated: a bad update does not drag its valid neighbours down). Returns one future per write made;
        each gives what `write` returns, or raises what it raises.
        """
        if len(updates) > 1 and doc_id not in self._waiting and _all_decode(updates):
            record = self.live.acquire_nowait(doc_id)
            if record is not None:
                try:
                    merged = merge_updates(*updates)
                    return [
                        self._start_write(
                            doc_id,
                            record,
                            merged,
                            origin,
                            sender,
                            False,
                            release=True,
                            counted=False,
                            reencode=True,
                        )
                    ]
                except (ValueError, DocumentError, LimitExceeded):
                    self.live.release(doc_id)  # refused as a whole: write them one by one
                except BaseException:
                    self.live.release(doc_id)
                    raise
        return [
            self.write_nowait(doc_id, u, origin=origin, sender=sender, compensate=compensate)
            for u in updates
        ]

    def _write_held(
        self,
        doc_id: DocId,
        record: LiveRecord,
        update: bytes,
        origin: Origin,
        sender: Subscriber | None,
        compensate: bool,
        done: asyncio.Future[WriteResult] | None = None,
    ) -> asyncio.Future[WriteResult]:
        """Start a write on a record held for it (released once the write is done)."""
        try:
            return self._start_write(
                doc_id, record, update, origin, sender, compensate, release=True, done=done
            )
        except Exception as exc:
            self.live.release(doc_id)
            failed = done if done is not None else self._loop().create_future()
            failed.set_exception(exc)
            return failed

    async def _write_when_loaded(self, doc_id: DocId, waiting: list[_Waiting]) -> None:
        """Load a record for the writes that came while it was not live; start them in order."""
        try:
            async with self.live.using(doc_id) as record:
                del self._waiting[doc_id]  # from here on, new writes find the record live
                for update, origin, sender, compensate, done in waiting:
                    self.live.hold(doc_id)
                    self._write_held(doc_id, record, update, origin, sender, compensate, done)
        except BaseException as exc:  # the load failed: so does every write that waited for it
            if self._waiting.get(doc_id) is waiting:
                del self._waiting[doc_id]
            for *_, done in waiting:
                if not done.done():
                    done.set_exception(
                        exc
                        if isinstance(exc, Exception)
                        else StoreError(f"{doc_id}: the server is stopping; nothing stored")
                    )
            if not isinstance(exc, Exception):
                raise

    def _loop(self) -> asyncio.AbstractEventLoop:
        """The engine's loop, asked once: asyncio.get_running_loop() costs a getpid() call."""
        if self._running_loop is None:
            self._running_loop = asyncio.get_running_loop()
        return self._running_loop

    def _start_write(
        self,
        doc_id: DocId,
        record: LiveRecord,
        update: bytes,
        origin: Origin,
        sender: Subscriber | None,
        compensate: bool = False,
        *,
        release: bool = False,
        done: asyncio.Future[WriteResult] | None = None,
        counted: bool = True,
        reencode: bool = False,
    ) -> asyncio.Future[WriteResult]:
        """Check and apply `update` now, queue it for commit now; the future resolves after.

        No await between the check and the queueing: writes to one record are checked in
        the order they started, each against all before it, and committed in that order.
        With `release`, the record is released once the write is done (not if this raises).
        The outcome goes to `done` if given (a future made when the write was queued).
        """
        if done is None:
            done = self._loop().create_future()
        try:
            checked = self._apply_within_limits(doc_id, record, update, compensate, reencode)
            if checked.is_noop:
                done.set_result(_result(doc_id, None, checked))
                if release:
                    self.live.release(doc_id)
                return done
            if checked.stored is not None:
                update = checked.stored
            if (refusal := checked.refusal) is not None:
                # Not the sender's update any more: it must get the compensation too.
                sender = None
                if not record.has_content and not checked.is_deleted:
                    # A refused create: its bytes must be kept (the writer holds them), but
                    # no view may serve a record that was never created (see ARCHITECTURE).
                    checked = replace(checked, is_deleted=True)
                self._refused(refusal, doc_id, origin, values=refusal.tried_values)
                self.counters["compensated"] += 1
            committed = self._submit(doc_id, update, checked, origin, sender)
        except Exception as exc:
            if counted:
                self._refused(exc, doc_id, origin, update=update, record=record)
            raise
        committed.add_done_callback(
            lambda f: self._finish_write(f, done, doc_id, update, checked, release)
        )
        return done

    def _finish_write(
        self,
        committed: asyncio.Future[list[Seq]],
        done: asyncio.Future[WriteResult],
        doc_id: DocId,
        update: bytes,
        checked: CheckedUpdate,
        release: bool,
    ) -> None:
        """Once the commit is settled: bookkeeping first, then the outcome to `done`.

        The bookkeeping holds even if the caller gave up (`done` cancelled): the write was
        submitted, so it commits or fails all the same.
        """
        self._senders.pop((doc_id, update), None)
        if release:
            self.live.release(doc_id)
        exc = (
            committed.exception()
            if not committed.cancelled()
            else StoreError(f"{doc_id}: the commit was cancelled; the outcome is unknown")
        )
        if exc is not None:
            if isinstance(exc, StoreError):
                # The live document already holds an update the store does not: reload next time.
                self.live.discard(doc_id)
            self.counters[f"refused:{type(exc).__name__}"] += 1
            if not done.cancelled():
                done.set_exception(exc)
        elif checked.refusal is not None:  # compensated, and the compensation is committed
            checked.refusal.compensated_seq = committed.result()[0]
            if not done.cancelled():
                done.set_exception(checked.refusal)
        else:
            self.counters["writes"] += 1
            if not done.cancelled():
                done.set_result(_result(doc_id, committed.result()[0], checked))

    async def patch(
        self,
        doc_id: DocId,
        patch: Mapping[str, Any],
        *,
        origin: Origin,
        creating: bool | None = None,
        sender: Subscriber | None = None,
    ) -> WriteResult:
        """A field patch (REST, CLI, a non-CRDT client) made into one update and written.

        With `creating=True` the record must be new (and the patch carry its required fields);
        with `creating=False` it must exist; with None (the default) either will do. The check
        is made under the record's lock, so two creates of one id cannot both succeed.
        A refusal is counted in `counters` as `refused:{error class}`, as on the other paths.

        Raises:
            RecordExists: `creating`, and the record exists or existed (deletes are final).
            RecordNotFound: the record is deleted, or never existed and `creating` is False.
            SchemaViolation / UnknownCollection / LimitExceeded: before anything changes.
        """
        try:
            async with self.live.using(doc_id) as record:
                is_new = not record.exists
                if creating and not is_new:
                    raise RecordExists(
                        doc_id, "a record with this id exists (or existed: deletes are final)"
                    )
                if record.is_deleted:
                    raise RecordNotFound(doc_id, "record is deleted")
                if creating is False and is_new:
                    raise RecordNotFound(doc_id, "no such record")
                write = BatchWrite(doc_id, patch=patch, creating=creating is True)
                return await self._write_prepared(
                    doc_id, self._prepare(write, record), origin, sender
                )
        except (DocumentError, LimitExceeded) as exc:
            self._refused(exc, doc_id, origin, patch=patch)
            raise

    async def delete(self, doc_id: DocId, *, origin: Origin) -> WriteResult:
        """Tombstone the record; a record deleted already, or never written, is left as it is."""
        async with self.live.using(doc_id) as record:
            write = BatchWrite(doc_id, is_delete=True)
            return await self._write_prepared(doc_id, self._prepare(write, record), origin, None)

    async def committed_state(self, doc_id: DocId) -> Doc[Any]:
        """The document as the store holds it: what a joining peer may be shown."""
        split_doc_id(doc_id)
        return document_from_state(await self.store.load(doc_id))

    async def committed_update(self, doc_id: DocId) -> bytes:
        """The document as the store holds it, as one update (empty-effect if none): what a
        joining peer may be shown, without building a document."""
        split_doc_id(doc_id)
        record = self.live.idle(doc_id)
        if record is not None:  # in memory, nothing in flight: no store read
            return record.document.get_update()
        return await self.store.load(doc_id) or EMPTY_UPDATE

    async def committed_diff(
        self, doc_id: DocId, state_vector: bytes, *, known: bytes | None = None
    ) -> bytes:
        """What the store holds that a peer with `state_vector` lacks (the answer to its step 1).

        `known`: a `committed_update` of this record read since the peer subscribed to it
        (what it was shown on joining); the commits after it reach the peer through the
        fan-out, so the answer may come from it instead of another read of the store.

        Raises ProtocolError for a state vector that does not decode, or that names a client
        id or clock JavaScript peers cannot hold (2**53 or more).
        """
        try:
            read_state_vector(state_vector)
        except MalformedUpdate as exc:
            raise ProtocolError(
                f"{doc_id}: sync step 1 holds no usable state vector: {exc}"
            ) from None
        record = self.live.idle(doc_id)
        try:
            if record is not None:  # in memory, nothing in flight: what the store holds
                return record.document.get_update(state_vector)
            if known is None:
                known = await self.committed_update(doc_id)
            return get_update(known, state_vector)
        except ValueError as exc:
            raise ProtocolError(f"{doc_id}: sync step 1 holds no state vector: {exc}") from None

    async def view(self, doc_id: DocId) -> tuple[View, bool]:
        async with self.live.using(doc_id) as record:
            return record.view, record.is_deleted

    def subscribe(self, subscriber: Subscriber) -> None:
        if subscriber.doc_id is not None:
            self._by_doc.setdefault(subscriber.doc_id, set()).add(subscriber)
        else:
            self._by_collections.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._by_collections.discard(subscriber)
        if subscriber.doc_id is not None:
            peers = self._by_doc.get(subscriber.doc_id)
            if peers is not None:
                peers.discard(subscriber)
                if not peers:
                    del self._by_doc[subscriber.doc_id]

    def peers_of(self, doc_id: DocId) -> frozenset[Subscriber]:
        return frozenset(self._by_doc.get(doc_id, ()))

    async def _write_prepared(
        self, doc_id: DocId, prepared: PreparedWrite, origin: Origin, sender: Subscriber | None
    ) -> WriteResult:
        """Commit one write `_prepare` made; one that changed nothing is not stored."""
        if prepared.update is None:
            return _result(doc_id, None, prepared.checked)
        return await self._append(doc_id, prepared.update, prepared.checked, origin, sender)

    def _append(
        self,
        doc_id: DocId,
        update: bytes,
        checked: CheckedUpdate,
        origin: Origin,
        sender: Subscriber | None,
    ) -> asyncio.Future[WriteResult]:
        """Queue an update already applied to the live document; settled by `_finish_write`."""
        done: asyncio.Future[WriteResult] = self._loop().create_future()
        try:
            committed = self._submit(doc_id, update, checked, origin, sender)
        except StoreError as exc:  # not queued (the store is closed): fails like a commit
            committed = self._loop().create_future()
            committed.set_exception(exc)
        committed.add_done_callback(
            lambda f: self._finish_write(f, done, doc_id, update, checked, False)
        )
        return done

    def _submit(
        self,
        doc_id: DocId,
        update: bytes,
        checked: CheckedUpdate,
        origin: Origin,
        sender: Subscriber | None,
    ) -> asyncio.Future[list[Seq]]:
        """Queue the append; the sender is noted so the fan-out can skip its own update."""
        committed = self.store.append_nowait(
            doc_id, update, view=checked.view, is_deleted=checked.is_deleted, origin=origin
        )
        if sender is not None and not sender.echo_own:
            self._senders[(doc_id, update)] = sender
        return committed

    async def settle(self) -> None:
        """Wait for the view repairs that foreign commits started (before closing the store)."""
        while self._repairs:
            await asyncio.gather(*self._repairs, return_exceptions=True)

    def detach(self) -> None:
        """Stop following the store's commits: an engine made for one job (seeding a demo)
        on a store that another engine, the server's, serves from next."""
        self.store.remove_commit_listener(self._fan_out)

    def _follow_foreign(self, batch: Sequence[Committed]) -> None:
        """Updates another process committed: bring the live records that lack them up to date.

        A record not in the cache loads them from the store when next used. One that is held
        (writes in flight, or in this very commit: a write holds its record until its commit
        is settled) may have had views computed without them, so its view is repaired by an
        empty update queued behind those writes. One that is idle needs none: the last view
        stored is the other process's, and that one repairs its own views the same way (its
        commit reads back everything committed before it). One that is being loaded may have
        been read before them: it gets them once loaded.
        """
        stale: set[DocId] = set()
        late: dict[DocId, list[bytes]] = {}
        for committed in batch:
            if not committed.foreign:
                continue
            record = self.live.peek(committed.doc_id)
            if record is None:
                if self.live.is_loading(committed.doc_id):
                    late.setdefault(committed.doc_id, []).append(committed.update)
                continue
            try:
                checked = record.apply(
                    committed.update, max_document_bytes=NO_SIZE_LIMIT, stored=True
                )
            except CrdtSyncError:  # its schema differs from ours: start again from the store
                self.live.discard(committed.doc_id)
                stale.add(committed.doc_id)
                continue
            # Only news makes views stale: not an update loaded with the record already, nor
            # another process's view repair (empty), which would otherwise repair back forever;
            # and only views this process computed without it, by writes that hold the record.
            # (With N nodes holding a record live, each write would otherwise cost N-1 more.)
            if not checked.is_noop and self.live.idle(committed.doc_id) is None:
                stale.add(committed.doc_id)
        for doc_id in stale | late.keys():
            task = self._loop().create_task(self._repair_view(doc_id, late.get(doc_id, [])))
            self._repairs.add(task)
            task.add_done_callback(self._repairs.discard)

    async def _repair_view(self, doc_id: DocId, late: list[bytes]) -> None:
        try:
            async with self.live.using(doc_id) as record:
                applied = [
                    record.apply(u, max_document_bytes=NO_SIZE_LIMIT, stored=True) for u in late
                ]
                if applied and all(checked.is_noop for checked in applied):
                    return  # it was loaded with them: nothing was viewed without them
                # Queued at once from the record's view: it lands behind every write already
                # applied to this record, so it is the record's last word.
                await self.store.append_nowait(
                    doc_id,
                    EMPTY_UPDATE,
                    view=record.view,
                    is_deleted=record.is_deleted,
                    origin=VIEW_REPAIR,
                )
        except CrdtSyncError:  # the next write of the record writes its view again
            LOG.exception("%s: could not repair its view after another process wrote it", doc_id)

    def _fan_out(self, batch: Sequence[Committed]) -> None:
        """Called by the store after each commit, in seq order: only committed updates go out.

        A record's peers get one `Published` per commit (merged and encoded once for all of
        them); multiplexed peers get each update with its seq, in seq order.
        """
        if batch and batch[0].foreign:  # a commit's foreign updates come first
            self._follow_foreign(batch)
        senders = self._senders
        for doc_id, entries in group_by_document(batch).items():
            peers = self._by_doc.get(doc_id)
            if not peers:
                continue
            published = Published(doc_id, entries)
            skipped = {senders.get((doc_id, entry.update)) for entry in entries} if senders else ()
            for subscriber in peers:
                if subscriber in skipped:  # only peers that asked not to get their own echo
                    others = [
                        e for e in entries if senders.get((doc_id, e.update)) is not subscriber
                    ]
                    if others:
                        subscriber.offer_published(Published(doc_id, others))
                else:
                    subscriber.offer_published(published)
        if not self._by_collections:
            return
        collections = [committed.doc_id.partition("/")[0] for committed in batch]
        for subscriber in self._by_collections:
            for committed, collection in zip(batch, collections):
                if (
                    subscriber.wants(collection)
                    and senders.get((committed.doc_id, committed.update)) is not subscriber
                ):
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
            documents: dict[DocId, LiveRecord] = {}
            refused: dict[int, CrdtSyncError] = {}
            for index, write in enumerate(writes):
                try:
                    self.records.collection_of(write.doc_id)
                except DocumentError as exc:
                    refused[index] = exc
                    continue
                if write.doc_id not in documents:
                    documents[write.doc_id] = await stack.enter_async_context(
                        self.live.using(write.doc_id)
                    )
            # No await from the first change to a live document until the batch is submitted,
            # so live documents and the log see writes in the same order.
            prepared = [
                refused[index]
                if index in refused
                else self._prepare_or_refuse(write, documents[write.doc_id])
                for index, write in enumerate(writes)
            ]
            for write, outcome in zip(writes, prepared):
                if isinstance(outcome, CrdtSyncError):
                    self._refused(
                        outcome,
                        write.doc_id,
                        origin,
                        patch=write.patch,
                        update=write.update,
                        record=documents.get(write.doc_id),
                    )
            return await self._commit_many(writes, prepared, origin, idempotency_key, answer)

    def _prepare_or_refuse(
        self, write: BatchWrite, record: LiveRecord
    ) -> PreparedWrite | CrdtSyncError:
        """`_prepare` for a batch, where a refused write is answered alone: its error (counted
        and noted by `write_many`)."""
        try:
            return self._prepare(write, record)
        except CrdtSyncError as exc:
            return exc

    def _prepare(self, write: BatchWrite, record: LiveRecord) -> PreparedWrite:
        """The update one write makes, checked and applied to the live record; not committed.

        Every kind of write ends in the same check (`LiveRecord.apply` for a CRDT update,
        `LiveRecord.adopt` for the update a field patch or delete made), so a write answers
        the same view and changed fields whichever door it came by, and one that changes
        nothing stores nothing. A field patch or delete of a deleted record is dropped
        (a delete is final); deleting a record never written does nothing.

        Raises (and then the record holds none of it): InvalidUpdate, SchemaViolation,
        UnknownCollection, LimitExceeded.
        """
        doc_id = write.doc_id
        is_new = not record.exists
        if write.update is not None:
            checked = self._apply_within_limits(doc_id, record, write.update)
            update = write.update
        elif record.is_deleted or (write.is_delete and is_new):
            return PreparedWrite(None, record.unchanged(), is_new)
        else:
            if write.is_delete:
                update = self.records.delete(doc_id, record.document)
            else:
                patch = write.patch or {}
                update = self.records.patch(doc_id, record.document, patch, creating=write.creating)
            checked = record.adopt(update, max_document_bytes=self.limits.max_document_bytes)
        return PreparedWrite(None if checked.is_noop else update, checked, is_new)

    def _refused(
        self,
        error: Exception,
        doc_id: DocId,
        origin: Origin,
        *,
        patch: Mapping[str, Any] | None = None,
        update: bytes | None = None,
        record: LiveRecord | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """Count a refused write as `refused:{error class}`; keep it in `refusals` to show."""
        self.counters[f"refused:{type(error).__name__}"] += 1
        if isinstance(error, CrdtSyncError):
            document = record.document if record is not None else None
            self.refusals.note(
                error, doc_id, origin, patch=patch, update=update, document=document, values=values
            )

    def _apply_within_limits(
        self,
        doc_id: DocId,
        record: LiveRecord,
        update: bytes,
        compensate: bool = False,
        reencode: bool = False,
    ) -> CheckedUpdate:
        """`record.apply` for an update from outside; LimitExceeded for one over the size limits.

        Every door's updates pass here (websockets, REST CRDT pushes, import): an update that
        a JavaScript peer could not decode exactly is refused before yrs sees it.
        """
        if len(update) > self.limits.max_update_bytes:
            raise LimitExceeded(
                f"{doc_id}: update of {len(update)} bytes is over the limit of "
                f"{self.limits.max_update_bytes}"
            )
        check_update_decodes(doc_id, update)
        return record.apply(
            update,
            max_document_bytes=self.limits.max_document_bytes,
            compensate=compensate,
            reencode=reencode,
        )

    async def _commit_many(
        self,
        writes: Sequence[BatchWrite],
        prepared: list[PreparedWrite | CrdtSyncError],
        origin: Origin,
        idempotency_key: str | None,
        answer: Callable[[list[BatchOutcome]], bytes] | None,
    ) -> list[BatchOutcome]:
        appends = [
            Append(write.doc_id, p.update, p.checked.view, p.checked.is_deleted, origin)
            for write, p in zip(writes, prepared)
            if isinstance(p, PreparedWrite) and p.update is not None
        ]

        def outcomes_at(seqs: Sequence[Seq]) -> list[BatchOutcome]:
            given = iter(seqs)
            return [
                BatchOutcome(write, None, p)
                if isinstance(p, CrdtSyncError)
                else BatchOutcome(
                    write, p.result(next(given) if p.update is not None else None), None
                )
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


def check_update_decodes(doc_id: DocId, update: bytes) -> None:
    """InvalidUpdate unless every Yjs peer decodes `update` as pycrdt does (see yupdate.py).

    yrs keeps a client id past 2**53 modulo 2**53 where JavaScript rounds it or throws, so
    such an update would fork the record between the server and JavaScript replicas.
    """
    try:
        check_update(update)
    except MalformedUpdate as exc:
        raise InvalidUpdate(doc_id, f"not a Yjs update every peer can decode: {exc}") from None


def _all_decode(updates: Sequence[bytes]) -> bool:
    """Merging (yrs) would hide a bad client id: such updates are written one by one."""
    try:
        for update in updates:
            check_update(update)
    except MalformedUpdate:
        return False
    return True


def _result(doc_id: DocId, seq: Seq | None, checked: CheckedUpdate) -> WriteResult:
    return WriteResult(doc_id, seq, checked.view, checked.is_deleted, checked.changed_fields)

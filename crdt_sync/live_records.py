"""The engine's bounded cache of live records (I/O: it loads them from the store).

A record in use is never evicted; loads of one record are shared and its callers served in the
order they asked, so writes to a record that is still loading keep their arrival order.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .ids import DocId
from .record import LiveRecord, Records, server_client_id
from .store.base import Store


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
        self._discarded: dict[DocId, list[LiveRecord]] = {}
        self.client_id = server_client_id()  # every live record writes as this

    def __len__(self) -> int:
        return len(self._documents)

    @asynccontextmanager
    async def using(self, doc_id: DocId) -> AsyncIterator[LiveRecord]:
        self._users[doc_id] += 1
        try:
            yield await self._get(doc_id)
        finally:
            self.release(doc_id)

    def acquire_nowait(self, doc_id: DocId) -> LiveRecord | None:
        """The record, held until `release(doc_id)`, if it is cached and nobody queues for it."""
        record = self._documents.get(doc_id)
        if record is None or doc_id in self._gates:
            return None
        self._documents.move_to_end(doc_id)
        self._users[doc_id] += 1
        return record

    def hold(self, doc_id: DocId) -> None:
        """Hold a record once more (it is cached and held already): release it once more."""
        self._users[doc_id] += 1

    def release(self, doc_id: DocId) -> None:
        """Let go of a record held by `acquire_nowait` (or `using`)."""
        self._users[doc_id] -= 1
        if not self._users[doc_id]:
            del self._users[doc_id]
            for record in self._discarded.pop(doc_id, ()):
                record.close()  # discarded while in use: its last user lets it go
        self._evict()

    def discard(self, doc_id: DocId) -> None:
        """Forget a record whose live state may be ahead of the store (a failed commit)."""
        record = self._documents.pop(doc_id, None)
        if record is None:
            return
        if doc_id in self._users:
            self._discarded.setdefault(doc_id, []).append(record)
        else:
            record.close()

    def peek(self, doc_id: DocId) -> LiveRecord | None:
        """The live record if it is cached and loaded, without loading it or counting a use."""
        return None if doc_id in self._gates else self._documents.get(doc_id)

    def idle(self, doc_id: DocId) -> LiveRecord | None:
        """The live record if it is cached, loaded and held by nobody, else None.

        Every write holds its record until its commit is settled, so an idle record's
        document is what the store holds (but for another process's commits not yet
        followed, which reach every peer through the fan-out anyway).
        """
        if doc_id in self._users or doc_id in self._gates:
            return None
        return self._documents.get(doc_id)

    def is_loading(self, doc_id: DocId) -> bool:
        return doc_id in self._gates

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
                    record = self._records.live_record(
                        doc_id, await self._store.load(doc_id), client_id=self.client_id
                    )
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

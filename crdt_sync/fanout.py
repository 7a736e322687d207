"""Subscribers and their outboxes: committed updates, published once per commit and record (hub).

A commit may carry many updates to one record (group commit). They are published to that
record's peers as one `Published`: merged once, and encoded once per wire format however many
peers receive it. A peer that falls behind does not queue one frame per update either: updates
to its record that wait back to back in its outbox are merged into one before they are sent.
So a burst on a shared record costs a slow reader bytes, not frames; an outbox is bounded in
items *and* bytes, and a consumer that stops reading overflows it on one or the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from pycrdt import merge_updates

from .ids import DocId
from .store.base import Committed

MESSAGE_BYTES = 64  # what an ack, an error or another small message counts for in the byte bound


class Published:
    """The updates one commit made to one record, as one update; frames cached per encoder."""

    __slots__ = ("_frames", "_runs", "_update", "doc_id", "entries", "nbytes")

    def __init__(self, doc_id: DocId, entries: Sequence[Committed]) -> None:
        self.doc_id = doc_id
        self.entries = entries
        self.nbytes = sum(len(entry.update) for entry in entries)
        self._update: bytes | None = None
        self._frames: dict[Callable[[bytes], bytes], bytes] = {}
        # Frames of runs of updates starting with this one, merged for one lagging peer and
        # found again by its fellow peers, which lag the same way (the same run, by identity).
        self._runs: dict[tuple[Callable[[bytes], bytes], tuple[Published, ...]], bytes] | None = (
            None
        )

    @property
    def update(self) -> bytes:
        if self._update is None:
            updates = [entry.update for entry in self.entries]
            self._update = updates[0] if len(updates) == 1 else merge_updates(*updates)
        return self._update

    def frame(self, encode: Callable[[bytes], bytes]) -> bytes:
        """`encode(self.update)`, computed once whatever the number of peers that ask."""
        frame = self._frames.get(encode)
        if frame is None:
            frame = self._frames[encode] = encode(self.update)
        return frame


class PendingUpdates:
    """Published updates to one record that wait back to back in one outbox: sent as one."""

    __slots__ = ("doc_id", "parts")

    def __init__(self, first: Published) -> None:
        self.doc_id = first.doc_id
        self.parts = [first]

    def frame(self, encode: Callable[[bytes], bytes]) -> bytes:
        first = self.parts[0]
        if len(self.parts) == 1:
            return first.frame(encode)  # shared with every other peer of this commit
        if first._runs is None:
            first._runs = {}
        key = (encode, tuple(self.parts))
        frame = first._runs.get(key)
        if frame is None:
            frame = first._runs[key] = encode(merge_updates(*(part.update for part in self.parts)))
        return frame


class Outbox:
    """A subscriber's bounded outgoing queue, drained in batches by one writer task.

    `put_nowait` never blocks: past `max_items` queued items or `max_bytes` queued bytes
    it returns False and the outbox takes nothing more (the owner closes the connection).
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: list[tuple[object, int]] = []  # a deque costs ~600 bytes even when empty
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def qsize(self) -> int:
        return len(self._items)

    def is_idle(self) -> bool:
        """Nothing queued and the writer parked for more: an item may be sent at once."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put_nowait(self, item: object, nbytes: int) -> bool:
        # One item of any size fits an empty outbox: a whole document's step 2 may be large.
        if len(self._items) >= self.max_items or (
            self._items and self._bytes + nbytes > self.max_bytes
        ):
            return False
        self._items.append((item, nbytes))
        self._bytes += nbytes
        self._wake()
        return True

    def put_published_nowait(self, published: Published) -> bool:
        """Queue `published`, merged into the queue's last item if that holds the same record."""
        if self._items:
            last, size = self._items[-1]
            if isinstance(last, PendingUpdates) and last.doc_id == published.doc_id:
                if self._bytes + published.nbytes > self.max_bytes:
                    return False
                last.parts.append(published)
                self._items[-1] = (last, size + published.nbytes)
                self._bytes += published.nbytes
                return True
        return self.put_nowait(PendingUpdates(published), published.nbytes)

    async def get_batch(self) -> list[object]:
        """Everything queued, oldest first; waits while there is nothing."""
        while not self._items:
            if self._loop is None:  # asked once: get_running_loop() costs a getpid() call
                self._loop = asyncio.get_running_loop()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = [item for item, _ in self._items]
        self._items = []
        self._bytes = 0
        return items

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Flag:
    """Set once, never cleared; `on_set` (if any) is called when it is set.

    What `Subscriber.overflowed` needs of an asyncio.Event, without the deque of waiters an
    Event holds for each of thousands of subscribers: the transport is called back instead.
    """

    __slots__ = ("_is_set", "on_set")

    def __init__(self) -> None:
        self._is_set = False
        self.on_set: Callable[[], None] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if not self._is_set:
            self._is_set = True
            if self.on_set is not None:
                self.on_set()


class Subscriber:
    """A consumer of committed updates with a bounded outbox: a slow one overflows alone.

    Give `doc_id` for one record (a y-websocket peer, sent `PendingUpdates`) or `collections`
    (None = all) for a multiplexed peer (sent each `Committed`, for its seq). After an
    overflow it gets nothing more and `overflowed` is set (its `on_set` tells the transport,
    which closes the connection), and the peer catches up from its cursor on reconnect.
    """

    def __init__(
        self,
        name: str,
        *,
        doc_id: DocId | None = None,
        collections: Sequence[str] | None = None,
        echo_own: bool = False,
        max_queue: int = 2048,
        max_queue_bytes: int = 8 << 20,
    ) -> None:
        self.name = name
        self.doc_id = doc_id
        self.collections = frozenset(collections) if collections is not None else None
        self.echo_own = echo_own
        self.queue = Outbox(max_queue, max_queue_bytes)
        self.overflowed = Flag()
        # Set by a transport that can send an item at once, without its writer task: called
        # only while the outbox is idle (so nothing queued is overtaken); False if it did not.
        self.send_now: Callable[[object], bool] | None = None

    def wants(self, collection: str) -> bool:
        """For a multiplexed peer: whether it subscribed to `collection`'s updates."""
        return self.collections is None or collection in self.collections

    def offer(self, committed: Committed) -> None:
        self.offer_frame(committed, len(committed.update))

    def offer_published(self, published: Published) -> None:
        if self.overflowed.is_set():
            return
        if self.send_now is not None and self.queue.is_idle() and self.send_now(published):
            return
        if not self.queue.put_published_nowait(published):
            self.overflowed.set()

    def offer_frame(self, item: object, nbytes: int | None = None) -> None:
        if self.overflowed.is_set():
            return
        if self.send_now is not None and self.queue.is_idle() and self.send_now(item):
            return
        if nbytes is None:
            nbytes = len(item) if isinstance(item, bytes) else MESSAGE_BYTES
        if not self.queue.put_nowait(item, nbytes):
            self.overflowed.set()


def group_by_document(batch: Iterable[Committed]) -> dict[DocId, list[Committed]]:
    """A commit's updates per record, in seq order within each record."""
    groups: dict[DocId, list[Committed]] = {}
    for committed in batch:
        group = groups.get(committed.doc_id)
        if group is None:
            groups[committed.doc_id] = [committed]
        else:
            group.append(committed)
    return groups

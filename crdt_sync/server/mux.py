"""`/ws`: the multiplexed endpoint, one connection for every record a client syncs.

hello -> welcome -> catch-up from the client's cursor, streamed in pages -> caught_up -> live.
The reader turns frames into events through PeerSession and starts writes; the writer owns
everything that goes out: catch-up, then the queue (live updates, acks, errors, answers).
"""

from __future__ import annotations

import asyncio
import functools
import time

from ..engine import WriteResult
from ..errors import (
    CrdtSyncError,
    DocumentError,
    ProtocolError,
    SchemaViolation,
    StoreError,
    UnknownCollection,
)
from ..fanout import Subscriber
from ..ids import DocId, Origin, Seq, split_doc_id
from ..protocol import (
    Ack,
    AwarenessReceived,
    AwarenessUpdate,
    ByeReceived,
    CaughtUp,
    CloseCode,
    DocumentRefused,
    Error,
    HelloReceived,
    PeerSession,
    PingReceived,
    Role,
    SyncStep1Received,
    SyncStep2,
    SyncUpdate,
    UpdateReceived,
    Welcome,
)
from ..protocol.awareness import AwarenessRoom, AwarenessState, encode_awareness_update
from ..store.base import Committed
from .asgi_websocket import AsgiWebSocket
from .live import Connection, Hub, WritesInFlight

CATCH_UP_PAGE = 500
SERVER_NAME = "crdt-sync/0.1"
MAX_AWARENESS_DOCS = 64  # documents one connection may be present in at once

AwarenessRooms = dict[DocId, AwarenessRoom[Connection]]


class MuxPeer:
    """One /ws connection: its session, and the moment it is welcomed."""

    def __init__(self, connection: Connection, hub: Hub, rooms: AwarenessRooms) -> None:
        self.connection = connection
        self.hub = hub
        self.rooms = rooms
        self.present_in: set[DocId] = set()  # the rooms this connection owns states in
        self.session = PeerSession(Role.SERVER)
        self.welcomed = asyncio.Event()
        self.hello: HelloReceived
        self.caught_up_to = 0
        self.collections: tuple[str, ...] | None = None
        self.writes = WritesInFlight()
        name = connection.principal.name
        self.origin = Origin(name, door="ws", token=name)  # set from the hello

    async def read(self) -> None:
        try:
            while True:
                frame = await self.connection.receive_bytes()
                for event in self.session.receive(frame):
                    await self._handle(event)
                self._flush_to_queue()
        finally:
            await self.writes.wait_all()

    async def _handle(self, event: object) -> None:
        if isinstance(event, HelloReceived):
            await self._hello(event)
        elif isinstance(event, UpdateReceived):
            await self.connection.refusals.wait_for_budget()
            await self.writes.wait_for_room()
            # Compensated: a /ws client that keeps its refused change gets the undoing update.
            counters = self.hub.engine.counters
            compensated = counters["compensated"]
            write = self.hub.engine.write_nowait(
                event.doc,
                event.update,
                origin=self.origin,
                sender=self.connection.subscriber,
                compensate=True,
            )
            self.writes.add(write, functools.partial(self._written, event))
            # Spent at the check, before the commit (as on /yjs).
            self.connection.refusals.spend_at_check(counters["compensated"] - compensated)
        elif isinstance(event, SyncStep1Received):
            diff = await self.hub.engine.committed_diff(event.doc, event.state_vector)
            self.connection.put_nowait(SyncStep2(event.doc, diff))
        elif isinstance(event, DocumentRefused):
            self.connection.put_nowait(
                Error.for_document(event.error, doc=event.doc, cseq=event.cseq)
            )
        elif isinstance(event, AwarenessReceived):
            self._relay_awareness(event.doc, event.data, event.states)
        elif isinstance(event, ByeReceived):
            self.connection.request_close(CloseCode.NORMAL, "bye")
        elif isinstance(event, PingReceived):
            pass  # the session queued the pong itself

    def _relay_awareness(self, doc: DocId, data: bytes, states: tuple[AwarenessState, ...]) -> None:
        """Relay the states this connection owns (awareness.py, Rule (ownership))."""
        if doc not in self.present_in and len(self.present_in) >= MAX_AWARENESS_DOCS:
            raise ProtocolError(
                f"awareness for {doc}: a connection may be present in at most "
                f"{MAX_AWARENESS_DOCS} documents at once"
            )
        room = self.rooms.setdefault(doc, AwarenessRoom())
        relayed = room.receive(self.connection, states)
        if relayed:
            self.present_in.add(doc)
            self._offer_others(doc, data if relayed == states else encode_awareness_update(relayed))
        elif not room:
            del self.rooms[doc]

    def leave_awareness(self) -> None:
        """Tell the others this connection's states are gone (y-protocols removals)."""
        for doc in self.present_in:
            room = self.rooms.get(doc)
            if room is None:
                continue
            removals = room.leave(self.connection)
            if removals:
                self._offer_others(doc, encode_awareness_update(removals))
            if not room:
                del self.rooms[doc]
        self.present_in.clear()

    def _offer_others(self, doc: DocId, data: bytes) -> None:
        """To the other /ws peers that sync the record's collection, as its updates go."""
        message = AwarenessUpdate(doc, data)
        collection = split_doc_id(doc)[0]
        for peer in self.hub.connections:
            if (
                peer.endpoint == "ws"
                and peer is not self.connection
                and peer.subscriber.wants(collection)
            ):
                peer.put_nowait(message)

    async def _hello(self, hello: HelloReceived) -> None:
        """Only note it: the writer sends welcome, so nothing can go out ahead of it."""
        self.hello = hello
        name = self.connection.principal.name
        self.origin = Origin(hello.client or name, door="ws", token=name)
        self.welcomed.set()

    async def _welcome(self) -> None:
        hello, schema = self.hello, self.hub.engine.schema
        unknown = [c for c in hello.collections or () if c not in schema.collections]
        self.collections = tuple(
            c for c in hello.collections or schema.collections if c in schema.collections
        )
        self.connection.client_id = hello.client
        self.connection.subscriber.collections = frozenset(self.collections)
        self.session.send(Welcome(int(await self.hub.store.cursor()), SERVER_NAME))
        for name in unknown:
            error = UnknownCollection(name, f"unknown collection {name!r}: not synced")
            self.session.send(Error(None, None, error.code, error.message))
        await self._send_frames()

    def _written(self, event: UpdateReceived, write: asyncio.Future[WriteResult]) -> None:
        """Ack once committed (queued behind the fan-out of the same commit), or say why not."""
        if write.cancelled():
            return
        exc = write.exception()
        if exc is None:
            self.connection.put_nowait(Ack(event.doc, event.cseq, write.result().seq or 0))
        elif isinstance(exc, DocumentError):
            if isinstance(exc, SchemaViolation) and exc.compensated_seq is not None:
                self.connection.refusals.spend_at_answer()
            else:
                self.connection.refusals.spend()
            self.connection.put_nowait(Error.for_document(exc, doc=event.doc, cseq=event.cseq))
        elif isinstance(exc, StoreError):
            # Not acknowledged: the client keeps it queued and sends it again after reconnect.
            self.connection.request_close(CloseCode.TRY_AGAIN_LATER, exc.message)
        elif isinstance(exc, CrdtSyncError):
            self.connection.put_nowait(Error(event.doc, event.cseq, exc.code, exc.message))
        else:
            self.connection.fail(exc)

    def _flush_to_queue(self) -> None:
        for frame in self.session.frames_to_send():
            self.connection.put_nowait(frame)

    async def write(self) -> None:
        await self.welcomed.wait()
        await self._welcome()
        await self._catch_up()
        await self.connection.send_outgoing(self._encode)

    async def _catch_up(self) -> None:
        store = self.hub.store
        cursor = Seq(self.session.cursor)
        while True:
            page = await store.log_since(cursor, collections=self.collections, limit=CATCH_UP_PAGE)
            for entry in page:
                self.session.send(SyncUpdate(entry.doc_id, entry.update, seq=entry.seq))
                cursor = entry.seq
            await self._send_frames()
            if len(page) < CATCH_UP_PAGE:
                break
        self.session.send(CaughtUp(self.session.cursor))
        self.caught_up_to = self.session.cursor
        self.connection.cursor = self.session.cursor
        self.connection.last_sync = time.time()
        await self._send_frames()

    def _encode(self, item: object) -> list[bytes]:
        if isinstance(item, bytes):
            return [item]
        if isinstance(item, Committed):
            if item.seq <= self.caught_up_to:
                return []  # already sent during catch-up
            self.session.send(SyncUpdate(DocId(item.doc_id), item.update, seq=item.seq))
        else:
            self.session.send(item)  # type: ignore[arg-type]
        self.connection.cursor = self.session.cursor
        self.connection.last_sync = time.time()
        return self.session.frames_to_send()

    async def _send_frames(self) -> None:
        await self.connection.send_frames(self.session.frames_to_send())


async def serve_mux(websocket: AsgiWebSocket, hub: Hub, rooms: AwarenessRooms) -> None:
    connection = await hub.connect(
        websocket,
        "ws",
        lambda principal: Subscriber(
            principal.name,
            collections=(),
            max_queue=hub.engine.limits.subscriber_queue,
            max_queue_bytes=hub.engine.limits.subscriber_queue_bytes,
        ),
    )
    if connection is None:
        return
    peer = MuxPeer(connection, hub, rooms)
    try:
        await connection.run(peer.read(), peer.write())
    finally:
        peer.leave_awareness()
        hub.disconnect(connection)

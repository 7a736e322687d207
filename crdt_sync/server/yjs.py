"""`/yjs/{collection}/{id}`: the standard y-websocket protocol, one record per connection.

Byte for byte what stock clients expect: one message per frame; our sync step 1 on connect;
every committed update echoed to every peer of the record, the sender included (newer
y-websocket clients read that echo as "saved"); awareness decoded, then a connection's own
states relayed to all peers, the sender included (protocol/awareness.py); query-awareness
answered; a refused write answered with permission-denied.

A stock client keeps what it wrote whatever the answer, so a refusal that left its copy
ahead of the server would wedge it (every later update depends on the refused one). So
refusals are compensated (`Engine.write(compensate=True)`): the client gets the restoring
update as the echo of its write, then the permission-denied. A refusal that cannot be
compensated closes the connection (4422) after the permission-denied: the client's copy
holds what the server will never take, and only a fresh copy can sync again.
"""

from __future__ import annotations

import asyncio
import functools

from pycrdt import get_state

from ..engine import WriteResult
from ..errors import CrdtSyncError, DocumentError, LimitExceeded, SchemaViolation, StoreError
from ..fanout import PendingUpdates, Published, Subscriber
from ..ids import DocId, Origin, make_doc_id
from ..protocol.awareness import AwarenessRoom, decode_awareness_update, encode_awareness_update
from ..protocol.close import CloseCode
from ..protocol.ysync import (
    YjsAwareness,
    YjsPermissionDenied,
    YjsQueryAwareness,
    YjsSyncStep1,
    YjsSyncStep2,
    YjsUpdate,
    decode_yjs_message,
    encode_awareness,
    encode_permission_denied,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
)
from ..record import EMPTY_UPDATE
from .asgi_websocket import AsgiWebSocket
from .live import Connection, Hub, WritesInFlight
from .wire import Wire, binary_frame_header

MAX_MERGED_UPDATES = 256  # updates of one peer written as one, at most


class Room:
    """Awareness of one record's peers: who owns which client id, and its last state."""

    def __init__(self) -> None:
        self.awareness: AwarenessRoom[Connection] = AwarenessRoom()

    def present_frames(self) -> list[bytes]:
        """The room's states as one awareness message, if anyone is present."""
        states = self.awareness.states()
        return [encode_awareness(encode_awareness_update(states))] if states else []


async def serve_yjs(
    websocket: AsgiWebSocket, hub: Hub, rooms: dict[DocId, Room], doc_path: str
) -> None:
    collection, _, record_id = doc_path.partition("/")
    try:
        doc_id = make_doc_id(collection, record_id)
        hub.engine.schema.collection(collection, doc_id)
    except DocumentError as exc:
        await websocket.accept()
        await websocket.close(CloseCode.BAD_REQUEST, exc.message[:120])
        return
    connection = await hub.connect(
        websocket,
        "yjs",
        lambda principal: Subscriber(
            principal.name,
            doc_id=doc_id,
            echo_own=True,
            max_queue=hub.engine.limits.subscriber_queue,
            max_queue_bytes=hub.engine.limits.subscriber_queue_bytes,
        ),
    )
    if connection is None:
        return
    # Committed updates, awareness and answers go out at once while the writer task is idle
    # (no task switch per peer and frame: a commit reaches 200 peers in one loop step).
    if connection.wire is not None:
        connection.subscriber.send_now = functools.partial(_send_now, connection.wire)
    room = rooms.setdefault(doc_id, Room())
    try:
        # Subscribed before reading the state: nothing committed in between can be missed.
        # No document stays in memory per connection; the state read is kept only to answer
        # the peer's own step 1, which comes at once.
        joined = await hub.engine.committed_update(doc_id)
        connection.put_nowait(encode_sync_step1(get_state(joined)))
        # As the reference server does: a late joiner sees who is here without waiting for
        # the others to renew their presence (stock clients never send query-awareness).
        for frame in room.present_frames():
            connection.put_nowait(frame)
        reader = _read(connection, hub, room, doc_id, joined)
        # The reader drops the state after the peer's first message; this frame, which
        # lasts as long as the connection, must not keep it (a copy of the record each).
        del joined
        await connection.run(reader, connection.send_outgoing(_encode_update))
    finally:
        removals = room.awareness.leave(connection)
        if removals:
            _offer_peers(hub, doc_id, encode_awareness(encode_awareness_update(removals)))
        if not room.awareness and not hub.engine.peers_of(doc_id) - {connection.subscriber}:
            rooms.pop(doc_id, None)
        hub.disconnect(connection)


def _send_now(wire: Wire, item: object) -> bool:
    if isinstance(item, Published):  # the whole message, framed once for all the peers
        return wire.write_now(item.frame(_framed_update))
    return isinstance(item, bytes) and wire.send_now([item])


def _framed_update(update: bytes) -> bytes:
    frame = encode_sync_update(update)
    return binary_frame_header(len(frame)) + frame


def _encode_update(item: object) -> list[bytes]:
    if isinstance(item, PendingUpdates | Published):
        return [item.frame(encode_sync_update)]
    return [item] if isinstance(item, bytes) else []


async def _read(
    connection: Connection, hub: Hub, room: Room, doc_id: DocId, joined: bytes | None
) -> None:
    writes = WritesInFlight()
    name = connection.principal.name
    origin = Origin(name, door="yjs", token=name)
    answer = functools.partial(_answer, connection)
    # Updates read back to back (a pipelining client: the frames of one TCP read) are
    # written as one once the reader has to wait for more: see Engine.write_merged_nowait.
    pending: list[bytes] = []
    flush_soon: asyncio.Handle | None = None
    loop = asyncio.get_running_loop()  # asked once: it costs a getpid() call

    def flush() -> None:
        nonlocal flush_soon
        flush_soon = None
        updates = pending.copy()
        pending.clear()
        compensated = hub.engine.counters["compensated"]
        for write in hub.engine.write_merged_nowait(
            doc_id, updates, origin=origin, sender=connection.subscriber, compensate=True
        ):
            writes.add(write, answer)
        # Spent at the check (a live record's writes are checked before this returns), not
        # once committed: past the budget, not one more frame of this peer is read.
        connection.refusals.spend_at_check(hub.engine.counters["compensated"] - compensated)

    try:
        while True:
            # Nothing of the last message (a whole document, maybe) held while the peer idles.
            message = diff = None
            message = decode_yjs_message(await connection.receive_bytes())
            known, joined = joined, None  # what it was shown on joining, for its first message
            if isinstance(message, YjsSyncStep1):
                # Answered after this peer's own writes are committed, so the answer holds
                # them, and from the live record when no write is in flight (no store read).
                if flush_soon is not None:
                    flush_soon.cancel()
                    flush()
                await writes.wait_all()
                diff = await hub.engine.committed_diff(doc_id, message.state_vector, known=known)
                connection.put_nowait(encode_sync_step2(diff))
            elif isinstance(message, YjsSyncStep2 | YjsUpdate):
                if message.update == EMPTY_UPDATE:
                    continue  # a fresh client's step 2: nothing to write, no record to load
                # Writes run concurrently so they share group commits; they start in order.
                await connection.refusals.wait_for_budget()  # at once while within it
                if not pending:
                    await writes.wait_for_room()
                pending.append(message.update)
                # A peer refused lately gets no merging: each frame is checked (and spends
                # its refusal) before the next is read.
                if len(pending) >= MAX_MERGED_UPDATES or connection.refusals.is_short:
                    if flush_soon is not None:
                        flush_soon.cancel()
                    flush()
                elif flush_soon is None:
                    flush_soon = loop.call_soon(flush)
            elif isinstance(message, YjsAwareness):
                # Decoded first (ProtocolError: 4400): garbage relayed makes stock clients exit.
                states = decode_awareness_update(message.payload)
                relayed = room.awareness.receive(connection, states)
                if relayed:
                    payload = (
                        message.payload if relayed == states else encode_awareness_update(relayed)
                    )
                    _offer_peers(hub, doc_id, encode_awareness(payload))
            elif isinstance(message, YjsQueryAwareness):
                for frame in room.present_frames():
                    connection.put_nowait(frame)
            elif isinstance(message, YjsPermissionDenied):
                pass  # only servers send it; a client echoing one changes nothing
    finally:
        if flush_soon is not None:  # what was read is written, even if the peer left
            flush_soon.cancel()
            flush()
        await writes.wait_all()


def _offer_peers(hub: Hub, doc_id: DocId, frame: bytes) -> None:
    for peer in hub.engine.peers_of(doc_id):
        peer.offer_frame(frame)


def _answer(connection: Connection, write: asyncio.Future[WriteResult]) -> None:
    """A write's outcome for its sender; its echo (after commit) is the fan-out's."""
    if write.cancelled():
        return
    exc = write.exception()
    if isinstance(exc, StoreError):
        # Nothing was stored: the client must sync again once the store is back.
        connection.request_close(CloseCode.TRY_AGAIN_LATER, exc.message)
    elif isinstance(exc, SchemaViolation) and exc.compensated_seq is not None:
        # Its echo (queued at commit, before this) already undid it on the client's copy.
        connection.refusals.spend_at_answer()  # if not spent at its check (see flush)
        connection.put_nowait(encode_permission_denied(exc.message))
    elif isinstance(exc, DocumentError | LimitExceeded):
        # The client's copy keeps what the server refused: every later update would depend
        # on it. Say why, then close: the client must drop its copy and sync afresh.
        connection.refusals.spend()
        connection.put_nowait(encode_permission_denied(exc.message))
        connection.close_after_sending(CloseCode.REFUSED_WRITE, exc.message)
    elif isinstance(exc, CrdtSyncError):
        connection.put_nowait(encode_permission_denied(exc.message))
    elif exc is not None:
        connection.fail(exc)

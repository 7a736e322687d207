"""The replica's `/ws` link: hello, catch-up from its cursor, push of the queue, live (client).

The mirror of `server/mux.py`: the same PeerSession (Role.CLIENT) checks every frame both ways.
Three tasks share one connection: the reader turns frames into events (the session answers
pings itself), the processor applies them to the local file in order, in batches (one
transaction per run of remote updates, with the cursor that covers them), and the pusher sends
the queue, one write per document in flight (a document's later changes depend on its earlier
ones, so they wait for the ack), all of a document's pending changes merged into that write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode as WebsocketCloseCode

from ..errors import AuthError, ConnectionFailed, Forbidden, ProtocolError, WebsocketUnavailable
from ..ids import DocId
from ..protocol import (
    Acked,
    Bye,
    CaughtUpReceived,
    CloseCode,
    ErrorReceived,
    Event,
    Hello,
    PeerSession,
    RemoteUpdate,
    Role,
    SyncStep1,
    SyncStep2Received,
    SyncUpdate,
    Welcomed,
)
from ..record import EMPTY_STATE_VECTOR
from .context import SyncContext
from .status import SyncState, Transport

MAX_WRITES_IN_FLIGHT = 64  # the server works on 64 writes of one connection at a time
MAX_BATCH = 2000  # events applied in one local transaction
INBOX = 4096  # frames read ahead of the processor; a full inbox stops reading (backpressure)
POLL_INTERVAL = 1.0  # how often an idle link looks for changes made by another process
OPEN_TIMEOUT = 10.0
BYE_TIMEOUT = 5.0
MAX_FRAME = 16 << 20


def websocket_url(server: str) -> str:
    """``http://host:port`` -> ``ws://host:port/ws`` (https -> wss)."""
    base = server.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    return base + "/ws"


class MuxLink:
    """One `/ws` connection of a replica.

    `run()` returns when the pass is complete (`live=False`: caught up, queue settled, bye
    said), or, live, only by raising when the connection ends.

    Raises (from run):
        WebsocketUnavailable: the upgrade was answered with plain HTTP (use REST).
        ConnectionFailed: unreachable, or the connection dropped (retry with backoff).
        AuthError / Forbidden: the token was refused (4401 / 4403): do not retry.
        ProtocolError: the server broke the protocol (or says this client did: 4400).
    """

    def __init__(self, context: SyncContext, server: str, token: str, *, live: bool) -> None:
        self.context = context
        self.url = websocket_url(server)
        self.token = token
        self.live = live
        self.session = PeerSession(Role.CLIENT)
        self.inbox: asyncio.Queue[Event] = asyncio.Queue(INBOX)
        self.welcomed = asyncio.Event()
        self.caught_up = False
        self.in_flight: dict[int, tuple[DocId, int]] = {}  # cseq -> (document, changes)
        self.resetting: set[DocId] = set()  # refused: waiting for the server's whole state
        self.singles: set[DocId] = set()  # a merged write was refused: one change at a time
        self.said_bye = False
        self._send_lock = asyncio.Lock()
        self._websocket: ClientConnection | None = None

    @property
    def reached_live(self) -> bool:
        """The connection got as far as caught-up: the replica resets its backoff."""
        return self.caught_up

    async def run(self) -> None:
        board = self.context.board
        board.update(state=SyncState.CONNECTING, transport=Transport.WEBSOCKET)
        websocket = await self._connect()
        self._websocket = websocket
        try:
            board.update(state=SyncState.SYNCING)
            hello = Hello(
                self.context.replica_id, await self.context.cursor(), self.context.collections
            )
            await self._send(hello)
            await _first_of(self._read(websocket), self._process(), self._push())
        finally:
            await websocket.close()

    async def _connect(self) -> ClientConnection:
        try:
            return await websockets.connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self.token}"},
                open_timeout=OPEN_TIMEOUT,
                max_size=MAX_FRAME,
                ping_interval=20,
                ping_timeout=20,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise WebsocketUnavailable(
                f"{self.url}: websocket upgrade answered with HTTP {status}"
            ) from None
        except (InvalidHandshake, InvalidURI) as exc:
            raise WebsocketUnavailable(f"{self.url}: websocket handshake failed: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise ConnectionFailed(
                f"{self.url}: cannot connect: {exc or type(exc).__name__}"
            ) from None

    # -- the reader ---------------------------------------------------------------------------

    async def _read(self, websocket: ClientConnection) -> None:
        try:
            async for frame in websocket:
                events = self.session.receive(frame)  # ProtocolError: a broken server
                await self._flush()  # pongs
                for event in events:
                    if isinstance(event, Welcomed):
                        self.welcomed.set()
                    await self.inbox.put(event)
        except ConnectionClosed:
            pass
        await self.inbox.join()  # everything read is applied before the outcome is decided
        code, reason = websocket.close_code, websocket.close_reason or ""
        if self.said_bye and code == CloseCode.NORMAL:
            return
        raise _closed(self.url, code, reason)

    # -- the processor ------------------------------------------------------------------------

    async def _process(self) -> None:
        while True:
            batch = [await self.inbox.get()]
            while len(batch) < MAX_BATCH and not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            try:
                changed = await self._apply(batch)
                if changed:
                    await self.context.refresh()
            finally:
                for _ in batch:
                    self.inbox.task_done()
            if changed:
                self.context.wake.set()

    async def _apply(self, batch: list[Event]) -> bool:
        """Apply a batch of events to the file and the link; False if none changed anything
        (then there is no status to refresh and nothing new for the pusher)."""
        local = self.context.local
        changed = False
        remote: list[tuple[DocId, bytes]] = []
        acks: list[tuple[DocId, int]] = []
        cursor = 0

        async def flush() -> None:
            # Remote updates and the cursor in one transaction; the cursor only ever covers
            # updates applied (acks' seqs are this replica's own writes, held already).
            nonlocal remote, acks, cursor
            if remote or cursor:
                await local.apply_remote(remote, cursor or None)
            if acks:
                await local.settle(acks)
            remote, acks, cursor = [], [], 0

        for event in batch:
            changed = changed or isinstance(event, _CHANGING)
            if isinstance(event, RemoteUpdate):
                remote.append((event.doc, event.update))
                cursor = max(cursor, event.seq or 0)
            elif isinstance(event, SyncStep2Received) and event.doc in self.resetting:
                await flush()
                await local.rebuild(event.doc, event.update)
                self.resetting.discard(event.doc)
            elif isinstance(event, SyncStep2Received):
                remote.append((event.doc, event.update))
            elif isinstance(event, Acked):
                acks.append((event.doc, event.cseq))
                self.in_flight.pop(event.cseq, None)
                cursor = max(cursor, event.seq)
            elif isinstance(event, CaughtUpReceived):
                cursor = max(cursor, event.cursor)
                await flush()
                self.caught_up = True
            elif isinstance(event, Welcomed):
                if event.cursor < await self.context.cursor():
                    await local.reset_cursor()  # the server's log was replaced: start over
                    changed = True
            elif isinstance(event, ErrorReceived):
                await flush()
                await self._refused(event)
        await flush()
        return changed

    async def _refused(self, error: ErrorReceived) -> None:
        if error.cseq is None:
            if error.doc is not None:
                self.resetting.discard(DocId(error.doc))  # our step 1 was refused: give up on it
            self.context.board.update(last_error=f"{error.code}: {error.message}")
            return
        # The session refused an error for a cseq not in flight: this one is in `in_flight`.
        doc, changes = self.in_flight.pop(error.cseq)
        if changes > 1:
            self.singles.add(doc)  # which of the merged changes is bad? send them one by one
        else:
            await self.context.local.reject(doc, error.cseq, error.code, error.message)
        self.resetting.add(doc)
        await self._send(SyncStep1(doc, EMPTY_STATE_VECTOR))

    # -- the pusher ---------------------------------------------------------------------------

    async def _push(self) -> None:
        await self.welcomed.wait()
        board = self.context.board
        while True:
            self.context.wake.clear()
            # Settled before looking at the queue and still after: the processor may have
            # made more to send (a rebuild) while the queue was read.
            was_settled = self._is_settled()
            sent = await self._send_queue()
            if sent:
                board.update(state=SyncState.SYNCING)
            elif was_settled and self._is_settled() and not self.context.wake.is_set():
                if board.status.state is not SyncState.SYNCED or board.status.pending:
                    await self.context.mark_synced()
                if not self.live:
                    # Keep reading until the server closes (acks on their way still arrive);
                    # the reader ends the pass then, or this timeout does.
                    self.said_bye = True
                    await self._send(Bye())
                    await asyncio.sleep(BYE_TIMEOUT)
                    return
            # Not asyncio.wait_for: on 3.11 it can swallow a cancellation that races the wake.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self.context.wake.wait()

    async def _send_queue(self) -> int:
        room = MAX_WRITES_IN_FLIGHT - len(self.in_flight)
        busy = frozenset(doc for doc, _ in self.in_flight.values()) | self.resetting
        batch = await self.context.local.outgoing(
            exclude=busy, singles=frozenset(self.singles), limit=room
        )
        for write in batch:
            self.in_flight[write.cseq] = (write.doc_id, write.changes)
            await self._send(SyncUpdate(write.doc_id, write.update, cseq=write.cseq))
        return len(batch)

    def _is_settled(self) -> bool:
        return self.caught_up and not self.in_flight and not self.resetting and self.inbox.empty()

    async def _send(self, message: Any) -> None:
        async with self._send_lock:
            self.session.send(message)
            await self._flush_locked()

    async def _flush(self) -> None:
        async with self._send_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        assert self._websocket is not None  # only called once connected
        for frame in self.session.frames_to_send():
            try:
                await self._websocket.send(frame)
            except ConnectionClosed:
                return  # the reader sees the close and decides what it means


# The events that change the local file or the link's state (a Welcomed only when it resets the
# cursor); the rest (pings, pongs, awareness, the server's step 1) leave both as they were.
_CHANGING = (RemoteUpdate, SyncStep2Received, Acked, CaughtUpReceived, ErrorReceived)


def _closed(url: str, code: int | None, reason: str) -> Exception:
    """The error for a connection the server ended (or that dropped: no code).

    The codes that say not to retry (4400, 4401, 4403, 1008; 4413 is never sent) give errors
    the replica does not retry (ProtocolError, AuthError, Forbidden); any other, including
    codes this client does not know, a ConnectionFailed, retried with backoff.
    """
    said = f"{url}: closed by the server with {code}" + (f" ({reason})" if reason else "")
    if code is None or code == WebsocketCloseCode.ABNORMAL_CLOSURE:  # dropped: no close frame
        return ConnectionFailed(f"{url}: connection lost")
    if code == CloseCode.UNAUTHORIZED:
        return AuthError(said)
    if code in (CloseCode.FORBIDDEN, CloseCode.POLICY_VIOLATION):
        return Forbidden(said)
    if code in (CloseCode.BAD_REQUEST, CloseCode.DOCUMENT_TOO_LARGE):
        return ProtocolError(said)
    # 1000 without our bye (the server is done with us) is retried as a drop would be.
    return ConnectionFailed(said)


async def _first_of(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run `jobs` until the first ends; cancel the others; raise the first failure."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result

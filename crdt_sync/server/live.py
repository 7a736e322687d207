"""What both websocket endpoints share: authenticate, admit, run, close with the right code.

A connection runs a reader and a writer; all frames go out through the writer, from one
bounded queue, so a slow peer only ever fills its own queue. Any task may ask the
connection to close; the first reason wins and decides the close code.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Scope

from ..engine import Engine
from ..errors import AuthError, CrdtSyncError, LimitExceeded, ProtocolError
from ..fanout import Subscriber
from ..protocol.close import CloseCode
from ..store.base import Store
from .admission import Admission
from .asgi_websocket import AsgiWebSocket, Disconnected, SocketState
from .auth import Principal, authenticate, bearer_token
from .errors import close_code, close_reason
from .refusals import RefusalBudget
from .wire import ClosedWire, Wire, wire_of

log = logging.getLogger("crdt_sync.server")
CLOSE_TIMEOUT = 10.0
MAX_WRITES_IN_FLIGHT = 64  # a connection's writes the server works on at once


_connection_numbers = itertools.count(1)


def _next_connection_id() -> str:
    return f"c{next(_connection_numbers)}"


@dataclass(frozen=True, slots=True)
class CloseAfterSending:
    """Queued like a frame: the writer closes the connection once what came before is sent."""

    code: int
    reason: str


@dataclass(eq=False)
class Connection:
    websocket: AsgiWebSocket
    principal: Principal
    endpoint: str
    subscriber: Subscriber
    client_id: str = ""
    cursor: int = 0
    last_sync: float | None = None
    connected_at: float = field(default_factory=time.time)
    id: str = field(default_factory=_next_connection_id)  # names it to the admin API
    refusals: RefusalBudget = field(default_factory=lambda: RefusalBudget(10.0, 20))
    _close: asyncio.Future[tuple[int, str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # Direct sends (wire.py), if the server runs `WireProtocol`.
    wire: Wire | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.wire = wire_of(self.websocket)
        # A stuck peer blocks its writer inside send(): the overflow is acted on from outside.
        self.subscriber.overflowed.on_set = lambda: self.request_close(
            CloseCode.SLOW_CONSUMER,
            "slow consumer: outgoing queue overflowed; reconnect with your cursor",
        )

    def request_close(self, code: int, reason: str) -> None:
        if not self._close.done():
            self._close.set_result((code, reason))

    def fail(self, exc: BaseException) -> None:
        """A bug surfaced in work done for this connection: log it, close with 1011."""
        log.error("connection %s failed", self.principal.name, exc_info=exc)
        self.request_close(CloseCode.INTERNAL_ERROR, "internal server error")

    async def receive_bytes(self) -> bytes:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise Disconnected()
        data = message.get("bytes")
        if data is None:
            raise ProtocolError("frames are binary; got a text frame")
        return bytes(data)

    async def send_outgoing(self, encode: Callable[[object], list[bytes]]) -> None:
        """The writer: drain the subscriber's outbox, in order, a batch at a time, until cancelled.

        What arrives while a batch is being sent waits in the outbox, where updates to one
        record merge: under load, fewer and larger frames. An overflow requests the close,
        and `run` cancels this task even while it is blocked inside send().
        """
        outbox = self.subscriber.queue
        while True:
            frames: list[bytes] = []
            for item in await outbox.get_batch():
                if isinstance(item, CloseAfterSending):
                    await self.send_frames(frames)
                    self.request_close(item.code, item.reason)
                    return
                frames.extend(encode(item))
            item = None  # not held while the peer idles: a step 2 is a whole document
            await self.send_frames(frames)

    async def send_frames(self, frames: list[bytes]) -> None:
        """Send each as one binary message, in order: in one write where the server allows."""
        if not frames:
            return
        if self.wire is None:
            for frame in frames:
                await self.websocket.send_bytes(frame)
            return
        try:
            await self.wire.send_binary(frames)
        except ClosedWire:
            raise Disconnected() from None

    def put_nowait(self, item: object) -> None:
        """Queue a frame or message for the writer; a peer that does not read overflows."""
        self.subscriber.offer_frame(item)

    def close_after_sending(self, code: int, reason: str) -> None:
        """Close once every frame queued so far is sent (a refusal's reason, say)."""
        self.put_nowait(CloseAfterSending(code, reason))

    async def run(self, *jobs: Coroutine[Any, Any, None]) -> None:
        """Run reader and writer until one ends or a close is requested; then close."""
        stop = self._close.get_loop().create_future()

        def stop_soon(_: object) -> None:
            if not stop.done():
                stop.set_result(None)

        tasks = [asyncio.ensure_future(job) for job in jobs]
        waited: list[asyncio.Future[Any]] = [*tasks, self._close]
        for future in waited:
            future.add_done_callback(stop_soon)
        try:
            await stop
        finally:
            self._close.remove_done_callback(stop_soon)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        code, reason = self._outcome(results)
        if code is not None:
            await self.close(code, reason)

    def _outcome(self, results: list[Any]) -> tuple[int | None, str]:
        if self._close.done():
            return self._close.result()
        for result in results:
            if isinstance(result, Disconnected):
                return None, ""
            if isinstance(result, CrdtSyncError):
                return close_code(result), result.message
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("connection %s failed", self.principal.name, exc_info=result)
                return CloseCode.INTERNAL_ERROR, "internal server error"
        return CloseCode.NORMAL, "bye"

    async def close(self, code: int, reason: str) -> None:
        if self.websocket.application_state is SocketState.DISCONNECTED:
            return
        try:
            # A peer that reads nothing cannot receive a close frame either: do not wait forever.
            await asyncio.wait_for(self.websocket.close(code, close_reason(reason)), CLOSE_TIMEOUT)
        except (RuntimeError, OSError, Disconnected, TimeoutError):
            pass  # the peer is gone or stuck: there is nobody left to tell


class WritesInFlight:
    """A connection's writes started and not yet answered: at most `limit` at once.

    Writes run concurrently so they share group commits; the bound keeps a peer that
    pipelines from holding unbounded memory in the server.
    """

    def __init__(self, limit: int = MAX_WRITES_IN_FLIGHT) -> None:
        self.limit = limit
        self.pending: set[asyncio.Future[Any]] = set()
        self._room: asyncio.Future[None] | None = None

    async def wait_for_room(self) -> None:
        while len(self.pending) >= self.limit:
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    def add(
        self, write: asyncio.Future[Any], answer: Callable[[asyncio.Future[Any]], None]
    ) -> None:
        """Track `write`; `answer(write)` is called once it is done."""
        self.pending.add(write)
        write.add_done_callback(lambda done: self._done(done, answer))

    async def wait_all(self) -> None:
        """Until every write started so far is done (its outcome is `answer`'s, not raised).

        Each is awaited in turn rather than gathered: a gather wakes its waiter one loop
        step after the last write is done, and a round trip's reply waits on this.
        """
        while self.pending:
            write = next(iter(self.pending))
            try:
                await write
            except asyncio.CancelledError:
                if not write.cancelled():
                    raise  # this task was cancelled, not the write
            except Exception:  # noqa: BLE001, S110  (answered by the write's callback)
                pass
            self.pending.discard(write)  # if its callback has not run yet

    def _done(
        self, write: asyncio.Future[Any], answer: Callable[[asyncio.Future[Any]], None]
    ) -> None:
        self.pending.discard(write)
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        answer(write)


def _token_of(scope: Scope) -> str | None:
    """`?token=` (the last one, as Starlette's QueryParams.get) or a bearer Authorization.

    Read from the scope, not through the WebSocket's `query_params` and `headers`, which it
    would build and keep for the connection's life; the headers are dropped from the scope
    after this, the last read of them (a /yjs connection lasts as long as the peer is open).
    """
    query: bytes = scope["query_string"]
    token = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)).get("token")
    if token:
        return token
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


class Hub:
    """The server's live state: engine, connections, admission control, revocation sweep."""

    def __init__(self, store: Store, engine: Engine, admission: Admission) -> None:
        self.store = store
        self.engine = engine
        self.admission = admission
        self.connections: set[Connection] = set()
        self.joins = 0  # connections asked for, refused ones included (front.py's build waits)
        # Told `("connect" | "disconnect", connection)`: the admin's activity log.
        self.listeners: list[Callable[[str, Connection], None]] = []

    async def connect(
        self,
        websocket: AsgiWebSocket,
        endpoint: str,
        subscriber: Callable[[Principal], Subscriber],
    ) -> Connection | None:
        """Authenticate and admit; None when refused (the websocket is closed with a reason)."""
        self.joins += 1
        token = _token_of(websocket.scope)
        try:
            principal = await authenticate(self.store, token)
            self.admission.admit()
        except (AuthError, LimitExceeded) as exc:
            await websocket.accept()
            await websocket.close(close_code(exc), close_reason(exc.message))
            return None
        await websocket.accept()
        websocket.scope["headers"] = []  # read already (_token_of)
        limits = self.engine.limits
        connection = Connection(
            websocket,
            principal,
            endpoint,
            subscriber(principal),
            refusals=RefusalBudget(limits.refusals_per_second, limits.refusal_burst),
        )
        self.connections.add(connection)
        self.engine.subscribe(connection.subscriber)
        for listener in self.listeners:
            listener("connect", connection)
        return connection

    def disconnect(self, connection: Connection) -> None:
        connection.subscriber.overflowed.on_set = None  # no cycle left for the collector
        connection.subscriber.send_now = None
        if connection in self.connections:
            self.connections.discard(connection)
            self.engine.unsubscribe(connection.subscriber)
            self.admission.release()
            for listener in self.listeners:
                listener("disconnect", connection)

    def close_token(self, token_hash: str, reason: str) -> int:
        """Close every connection of one token at once (its revocation through the API)."""
        chosen = [c for c in self.connections if c.principal.token_hash == token_hash]
        for connection in chosen:
            connection.request_close(CloseCode.UNAUTHORIZED, reason)
        return len(chosen)

    async def sweep_revoked(self) -> int:
        """Close every connection whose token was revoked (by the CLI or the API)."""
        closed = 0
        for token_hash in {c.principal.token_hash for c in self.connections}:
            if await self.store.find_token(token_hash) is None:
                for connection in [
                    c for c in self.connections if c.principal.token_hash == token_hash
                ]:
                    connection.request_close(CloseCode.UNAUTHORIZED, "token revoked")
                    closed += 1
        return closed

    def close_all(self, code: int, reason: str) -> None:
        for connection in self.connections:
            connection.request_close(code, reason)

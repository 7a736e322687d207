"""uvicorn's websockets-sansio protocol, holding less for each open connection (server layer).

The same protocol (flow control, size limit, pings, closing handshake are uvicorn's and
websockets'), with what it keeps per connection for its whole life made smaller:

- the ASGI receive queue: an asyncio.Queue is four deques (~3 KiB) for what holds a few
  events at a time (uvicorn stops reading the socket while one waits; wire.py, past
  `BACKLOG`); a list does;
- the `writable` flag: an asyncio.Event's deque of waiters (~0.8 KiB) for one writer;
- the upgrade request's and response's headers, kept (by uvicorn, and by the request
  parser's suspended frame) long after the handshake used them; the ASGI scope holds the
  request's own copy, which is what the app reads.

Measured with tracemalloc at 1,000 open /yjs connections: benchmarks/README.md, live_bench (c).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGIReceiveEvent
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.http11 import Request


class _Inbox:
    """What uvicorn asks of its receive queue (`put_nowait`, `get`, `empty`), as a list."""

    __slots__ = ("_items", "_loop", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: list[ASGIReceiveEvent] = []
        self._waiters: list[asyncio.Future[None]] = []

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        return self._items.pop(0)


class _Gate:
    """What uvicorn asks of its `writable` event (`set`, `clear`, `is_set`, `wait`)."""

    __slots__ = ("_loop", "_open", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._open = False
        self._waiters: list[asyncio.Future[None]] | None = None  # made by the first wait

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if self._open:
            return True
        waiter = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            self._waiters.remove(waiter)
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` implementation, keeping less per open connection."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue = _Inbox(self.loop)  # type: ignore[assignment]
        writable = _Gate(self.loop)
        writable.set()  # as uvicorn starts it
        self.writable = writable  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)  # the scope now holds the headers, as bytes
        event.headers.clear()

    def start_keepalive(self) -> None:
        # Called once, right after the accepting response was sent: its last use.
        self.response.headers.clear()
        super().start_keepalive()

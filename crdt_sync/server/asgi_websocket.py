"""One websocket connection over ASGI messages: what the record doors use of Starlette's.

Starlette's `WebSocket` imports `starlette.requests` and with it its datastructures, form
parsers, python_multipart, `http.cookies` and `http.client`: ~8 ms on `crdt-sync serve`'s way
from the process's start to its first record synced (benchmarks/README.md, issue 16), for a
connection object of which the doors use a handful of methods. This is that subset, with
Starlette's ASGI messages and state checks (starlette 1.10's `websockets.py`): the same answers
to a peer, the same errors for a misuse, and a `Disconnected` where Starlette raises
`WebSocketDisconnect`.
"""

from __future__ import annotations

import enum
from typing import Any

from starlette.types import Message, Receive, Scope, Send


class SocketState(enum.Enum):
    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2


class Disconnected(Exception):
    """The peer went away; nothing to answer (Starlette's `WebSocketDisconnect(1006)`)."""


class SocketClosed(RuntimeError):
    """Used after the close: received from after the peer's, or sent to after ours."""


class AsgiWebSocket:
    """The connection's two sides: `client_state` (what the peer sent), `application_state`
    (what we sent), each CONNECTING, then CONNECTED, then DISCONNECTED."""

    # Slots: a /yjs connection holds this for as long as the peer's tab is open.
    __slots__ = ("_receive", "_send", "application_state", "client_state", "scope")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        self.scope = scope
        self._receive = receive
        self._send = send
        self.client_state = SocketState.CONNECTING
        self.application_state = SocketState.CONNECTING

    @property
    def path_params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.scope.get("path_params", {})
        return params

    async def receive(self) -> Message:
        """The next ASGI message: `websocket.connect` first, then `websocket.receive` ones
        until a `websocket.disconnect` (returned, not raised)."""
        state = self.client_state
        if state is SocketState.DISCONNECTED:
            raise SocketClosed('Cannot call "receive" once a disconnect message has been received.')
        message = await self._receive()
        message_type = message["type"]
        if state is SocketState.CONNECTING:
            if message_type != "websocket.connect":
                raise RuntimeError(
                    f'Expected ASGI message "websocket.connect", but got {message_type!r}'
                )
            self.client_state = SocketState.CONNECTED
        elif message_type == "websocket.disconnect":
            self.client_state = SocketState.DISCONNECTED
        elif message_type != "websocket.receive":
            raise RuntimeError(
                'Expected ASGI message "websocket.receive" or "websocket.disconnect", '
                f"but got {message_type!r}"
            )
        return message

    async def accept(self) -> None:
        """Complete the handshake (after the peer's `websocket.connect`, read here if not yet)."""
        if self.client_state is SocketState.CONNECTING:
            await self.receive()
        await self._send_message({"type": "websocket.accept", "subprotocol": None, "headers": []})

    async def send_bytes(self, data: bytes) -> None:
        await self._send_message({"type": "websocket.send", "bytes": data})

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Before `accept`, this refuses the handshake (uvicorn answers HTTP 403)."""
        await self._send_message({"type": "websocket.close", "code": code, "reason": reason or ""})

    async def _send_message(self, message: Message) -> None:
        state = self.application_state
        message_type = message["type"]
        if state is SocketState.DISCONNECTED:
            raise SocketClosed('Cannot call "send" once a close message has been sent.')
        if state is SocketState.CONNECTING:
            if message_type == "websocket.send":
                raise RuntimeError(
                    'Expected ASGI message "websocket.accept", "websocket.close" or '
                    f'"websocket.http.response.start", but got {message_type!r}'
                )
            self.application_state = (
                SocketState.DISCONNECTED
                if message_type == "websocket.close"
                else SocketState.CONNECTED
            )
            await self._send(message)
            return
        if message_type == "websocket.accept":
            raise RuntimeError(
                'Expected ASGI message "websocket.send" or "websocket.close", '
                f"but got {message_type!r}"
            )
        if message_type == "websocket.close":
            self.application_state = SocketState.DISCONNECTED
        try:
            await self._send(message)
        except OSError:  # the transport is gone (uvicorn raises ClientDisconnected, an OSError)
            self.application_state = SocketState.DISCONNECTED
            raise Disconnected() from None

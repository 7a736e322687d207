"""The websocket implementation `crdt-sync serve` runs: wsprotocol.py's, two per-message costs cut.

Measured per message (benchmarks/README.md, issue 16), uvicorn's implementation spends most of
a small frame's cost around it rather than on it:

- sending: every `websocket.send` goes through the connection's and uvicorn's ASGI layers and
  websockets' frame builder, one `transport.write` (one syscall) per frame. A server frame is
  never masked and, without an extension, is a fixed header before the payload, so `Wire`
  builds it here and writes everything a writer has queued (an echo and a step 2, a burst of
  fan-out) with one `transport.write`;
- receiving: every message paused reading (an epoll_ctl) until the app took it, then resumed
  it (another). Here reading pauses only once `BACKLOG` messages wait for the app, which still
  bounds what a peer that outpaces the server can queue.

Only plain binary frames on an open connection take the short path: with an extension
negotiated (permessage-deflate: an app embedded under uvicorn's defaults) or once a close is
under way, everything goes through the ASGI `send` as before. Flow control is uvicorn's: a
write waits while the transport is paused for writing, and `send_now` declines.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from websockets.frames import Frame
from websockets.protocol import State

from .wsprotocol import LeanWebSocketProtocol

if TYPE_CHECKING:
    from .asgi_websocket import AsgiWebSocket

BACKLOG = 16  # messages received and not yet taken by the app, before reading pauses
EXTENSION = "crdt_sync.wire"  # the scope extension that holds a connection's `Wire`


class ClosedWire(Exception):
    """The peer is gone: nothing more can be sent."""


def binary_frame_header(size: int) -> bytes:
    """RFC 6455 5.2: FIN, opcode 2 (binary), unmasked (a server's), the payload's length."""
    if size < 126:
        return bytes((0x82, size))
    if size < 1 << 16:
        return struct.pack("!BBH", 0x82, 126, size)
    return struct.pack("!BBQ", 0x82, 127, size)


class Wire:
    """Direct sends on one connection of `WireProtocol`: see the module's docstring."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WireProtocol) -> None:
        self._protocol = protocol

    def send_now(self, payloads: Sequence[bytes]) -> bool:
        """Write the payloads as binary messages now if the short path is open and the
        transport is not paused for writing; False (nothing written) otherwise."""
        return self.write_now(_framed(payloads))

    def write_now(self, framed: bytes) -> bool:
        """`send_now` for messages framed already (`binary_frame_header` and payload): one
        commit's frame is built once and written as it is to every peer of the record."""
        protocol = self._protocol
        if (
            protocol.writable.is_set()
            and not protocol.disconnected
            and self._is_short_path_open()
            and not protocol.transport.is_closing()
        ):
            protocol.transport.write(framed)
            return True
        return False

    def _is_short_path_open(self) -> bool:
        """Plain frames may be written past the ASGI send: open, no close, no extension."""
        conn = self._protocol.conn
        return not self._protocol.close_sent and conn.state is State.OPEN and not conn.extensions

    async def send_binary(self, payloads: Sequence[bytes]) -> None:
        """Send each payload as one binary message, in order, with one write when it can.

        Raises ClosedWire once the peer is gone; past a close (ours or the peer's), the
        ASGI send raises what it raises there.
        """
        protocol = self._protocol
        if not protocol.writable.is_set():
            await protocol.writable.wait()
        if protocol.disconnected:
            raise ClosedWire()
        if not self._is_short_path_open():
            for payload in payloads:
                await protocol.send({"type": "websocket.send", "bytes": payload})
            return
        protocol.transport.write(_framed(payloads))


def _framed(payloads: Sequence[bytes]) -> bytes:
    if len(payloads) == 1:
        return binary_frame_header(len(payloads[0])) + payloads[0]
    chunks: list[bytes] = []
    for payload in payloads:
        chunks.append(binary_frame_header(len(payload)))
        chunks.append(payload)
    return b"".join(chunks)


class WireProtocol(LeanWebSocketProtocol):
    """The lean websockets-sansio protocol with a `Wire` in the scope's extensions."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # a handshake that went on to the app
            scope["extensions"][EXTENSION] = Wire(self)

    def handle_bytes(self, event: Frame) -> None:
        if not event.fin or self.close_sent or self.queue.qsize() >= BACKLOG:
            super().handle_bytes(event)  # fragments, discards after a close, and the pause
            return
        data = event.data if isinstance(event.data, bytes) else bytes(event.data)
        self.curr_msg_data_type = "bytes"
        self.queue.put_nowait({"type": "websocket.receive", "bytes": data})


def wire_of(websocket: AsgiWebSocket) -> Wire | None:
    """The connection's `Wire`, if the server runs `WireProtocol`."""
    wire = websocket.scope.get("extensions", {}).get(EXTENSION)
    return wire if isinstance(wire, Wire) else None


# What `uvicorn.Config(ws=...)` is given: the class itself, so any uvicorn that can run the
# websockets-sansio implementation runs this one.
WEBSOCKET_PROTOCOL = WireProtocol

"""Limits and policy over real sockets: sizes, connection caps, storms, slow peers, revocation."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest
import websockets
from pycrdt import Doc, Map, Text

from crdt_sync.engine import Limits
from crdt_sync.protocol import CloseCode, Hello, PeerSession, Role
from crdt_sync.protocol.ysync import (
    YjsPermissionDenied,
    YjsUpdate,
    decode_yjs_message,
    encode_sync_update,
)

from .clis import run_async
from .conftest import RunningServer, wait_for
from .peers import mux_peer, record_of, yjs_peer

ServerFactory = Callable[..., Awaitable[RunningServer]]


async def closed_with(websocket: websockets.ClientConnection) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(websocket.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_an_oversized_frame_closes_only_its_sender(server: RunningServer) -> None:
    url = server.ws("/yjs/contacts/1")
    async with yjs_peer(url) as bystander, websockets.connect(url, max_size=None) as big:
        await big.recv()
        await big.send(b"\x00\x02" + b"\x00" * (2 << 20))
        code, _ = await closed_with(big)
        assert code == CloseCode.MESSAGE_TOO_BIG
        bystander.get("record", type=Map)["name"] = "unbothered"
        async with yjs_peer(url) as later:
            await wait_for(lambda: record_of(later).get("name") == "unbothered")


async def test_a_document_over_the_size_limit_is_refused_and_the_record_unchanged(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(limits=Limits(max_document_bytes=4096))
    async with (
        websockets.connect(server.ws("/yjs/contacts/2")) as ws,
        yjs_peer(server.ws("/yjs/contacts/2")) as watcher,
    ):
        await ws.recv()
        from pycrdt import Doc

        doc = Doc()
        before = doc.get_state()
        with doc.transaction():
            fields = doc.get("record", type=Map)
            fields["name"] = "Big"
            fields["notes"] = Text("x" * 8000)
        await ws.send(encode_sync_update(doc.get_update(before)))
        denied = decode_yjs_message(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(denied, YjsPermissionDenied)
        assert "over the limit of 4096" in denied.reason
        assert record_of(watcher) == {}


async def test_connections_over_the_cap_are_told_to_try_again_later(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(max_connections=2)
    async with mux_peer(server.ws("/ws"), client="a"), mux_peer(server.ws("/ws"), client="b"):
        async with websockets.connect(server.ws("/ws")) as third:
            code, reason = await closed_with(third)
        assert code == CloseCode.TRY_AGAIN_LATER and "server is full" in reason
    async with mux_peer(server.ws("/ws"), client="c") as fourth:
        assert fourth.welcome is not None


async def test_a_reconnect_storm_is_admitted_at_a_bounded_rate_and_the_server_stays_responsive(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(admission_rate=20.0, admission_burst=10.0)
    url = server.ws("/yjs/contacts/storm")

    async def connect() -> int | None:
        async with websockets.connect(url) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
            return None

    results = await asyncio.gather(*(connect() for _ in range(60)))
    refused = [code for code in results if code is not None]
    assert refused and set(refused) == {CloseCode.TRY_AGAIN_LATER}
    assert results.count(None) >= 10
    async with httpx.AsyncClient(base_url=server.http, timeout=5) as http:
        assert (await http.get("/health")).status_code == 200


def stuck_websocket(port: int, path: str, first_frame: bytes) -> socket.socket:
    """A websocket client that sends one frame and then never reads, with a tiny receive buffer.

    Written by hand because client libraries keep reading into their own buffers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    mask = os.urandom(4)
    assert len(first_frame) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(first_frame))
    sock.sendall(bytes([0x82, 0x80 | len(first_frame)]) + mask + masked)
    return sock


async def test_a_stuck_consumer_is_disconnected_and_catches_up_from_its_cursor(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(limits=Limits(subscriber_queue=64))
    hub = server.app.state.hub  # type: ignore[attr-defined]
    session = PeerSession(Role.CLIENT)
    session.send(Hello("stuck", 0, None))
    token_path = server.ws("/ws").split(str(server.port), 1)[1]
    stuck = await asyncio.to_thread(
        stuck_websocket, server.port, token_path, session.frames_to_send()[0]
    )
    try:
        await wait_for(lambda: any(c.client_id == "stuck" for c in hub.connections))
        (stuck_connection,) = [c for c in hub.connections if c.client_id == "stuck"]
        async with mux_peer(server.ws("/ws"), client="writer") as writer:
            # Write until the peer that reads nothing has overflowed (bounded).
            for i in range(2000):
                cseq = await writer.edit(f"contacts/s{i % 20}", name=f"n{i}" + "y" * 8000)
                if i % 50 == 49:
                    await writer.wait_ack(cseq)
                if stuck_connection.subscriber.overflowed.is_set():
                    break
            assert stuck_connection.subscriber.overflowed.is_set()
            last = await writer.wait_ack(cseq)
            # The writer was never slowed down or refused because of the stuck peer.
            assert not writer.errors
            await wait_for(lambda: stuck_connection not in hub.connections, timeout=30)
    finally:
        stuck.close()
    async with mux_peer(server.ws("/ws"), client="stuck") as again:
        assert again.seqs and max(again.seqs) == last
        assert record_of(again.document(f"contacts/s{i % 20}"))["name"] == f"n{i}" + "y" * 8000


async def test_a_revoked_token_closes_its_open_connections(server: RunningServer) -> None:
    async with websockets.connect(server.ws("/yjs/contacts/9")) as ws:
        await ws.recv()
        # Not subprocess.run: the server runs in this event loop and must keep serving meanwhile.
        done = await run_async("token", "revoke", "phone", "--db", str(server.db_path))
        assert done.exit_code == 0, done.stderr
        code, reason = await closed_with(ws)
        assert code == CloseCode.UNAUTHORIZED and reason == "token revoked"
    async with websockets.connect(server.ws("/ws")) as again:
        code, _ = await closed_with(again)
        assert code == CloseCode.UNAUTHORIZED


async def test_a_burst_on_one_record_does_not_drop_peers_that_keep_reading(
    server_factory: ServerFactory,
) -> None:
    """Outboxes bound frames, but a record's updates queued back to back merge into one:
    a pipelined burst far longer than the bound reaches every reading peer, nobody closed."""
    server = await server_factory(limits=Limits(subscriber_queue=8))
    url = server.ws("/yjs/contacts/burst")
    async with yjs_peer(url) as first, yjs_peer(url) as second, websockets.connect(url) as writer:
        await writer.recv()  # the server's step 1
        doc = Doc()
        fields = doc.get("record", type=Map)
        frames = []
        for i in range(400):
            before = doc.get_state()
            with doc.transaction():
                if i == 0:
                    fields["name"] = "Burst"
                fields["company"] = f"company {i}"
            frames.append(encode_sync_update(doc.get_update(before)))
        for frame in frames:
            await writer.send(frame)
        for peer in (first, second):
            await wait_for(lambda p=peer: record_of(p).get("company") == "company 399", timeout=30)
        echoed = Doc()
        while echoed.get_state() != doc.get_state():  # the writer's own echoes, after commit
            message = decode_yjs_message(await asyncio.wait_for(writer.recv(), 10))
            if isinstance(message, YjsUpdate):
                echoed.apply_update(message.update)
        hub = server.app.state.hub  # type: ignore[attr-defined]
        assert len(hub.connections) == 3
        assert not any(c.subscriber.overflowed.is_set() for c in hub.connections)

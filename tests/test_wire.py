"""The websocket implementation the server runs (server/wire.py), over real sockets.

Frames are built and written by the server itself, several in one write, and reading pauses
only once messages pile up: what a stock client sees must not change.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import uvicorn
import websockets
from pycrdt import Doc, Map, Text, get_update

from crdt_sync.protocol.ysync import (
    YjsSyncStep1,
    YjsSyncStep2,
    YjsUpdate,
    decode_yjs_message,
    encode_sync_step1,
    encode_sync_update,
)
from crdt_sync.server.app import WEBSOCKET_IMPLEMENTATION, Settings, create_app
from crdt_sync.server.wire import BACKLOG, binary_frame_header

from .client_helpers import stored
from .conftest import RunningServer, free_socket, make_tokens, wait_for
from .peers import record_of, yjs_peer


def test_frame_headers_use_each_length_encoding_of_rfc_6455() -> None:
    assert binary_frame_header(125) == b"\x82\x7d"
    assert binary_frame_header(126) == b"\x82\x7e\x00\x7e"
    assert binary_frame_header(65535) == b"\x82\x7e\xff\xff"
    assert binary_frame_header(65536) == b"\x82\x7f" + (65536).to_bytes(8, "big")


async def _until(ws: websockets.ClientConnection, kind: type) -> object:
    while True:
        message = decode_yjs_message(await asyncio.wait_for(ws.recv(), 10))
        if isinstance(message, kind):
            return message


async def test_a_burst_far_past_the_read_backlog_is_read_whole_and_in_order(
    server: RunningServer,
) -> None:
    doc: Doc = Doc()  # type: ignore[type-arg]
    record = doc.get("record", type=Map)
    with doc.transaction():
        record["name"] = "Burst"
        record["notes"] = notes = Text()
    updates = [doc.get_update()]
    for i in range(BACKLOG * 8):
        before = doc.get_state()
        notes += f"{i},"
        updates.append(doc.get_update(before))
    async with websockets.connect(server.ws("/yjs/contacts/burst")) as ws:
        await _until(ws, YjsSyncStep1)
        # Sent without waiting: they arrive in the server's first reads, far faster than
        # the app takes them, so reading pauses and resumes on the way.
        for update in updates:
            await ws.send(encode_sync_update(update))
        await ws.send(encode_sync_step1(doc.get_state()))
        answer = await _until(ws, YjsSyncStep2)
        assert isinstance(answer, YjsSyncStep2)
    expected = "".join(f"{i}," for i in range(BACKLOG * 8))
    view = await stored(server, "contacts/burst")
    assert view is not None and view["notes"] == expected


async def test_frames_of_every_length_reach_stock_clients_whole(server: RunningServer) -> None:
    url = server.ws("/yjs/contacts/sizes")
    fields = ("company", "phone", "notes")
    async with websockets.connect(url) as ws:
        await _until(ws, YjsSyncStep1)
        doc: Doc = Doc()  # type: ignore[type-arg]
        record = doc.get("record", type=Map)
        mirror: Doc = Doc()  # type: ignore[type-arg]  # what the echoes hold, applied
        # 3 fields of 3-byte characters: frame lengths in 7 bits, 16 bits and 64 bits.
        for length in (3, 100, 9_000):
            before = doc.get_state()
            with doc.transaction():
                record["name"] = "Sizes"
                for name in fields:
                    record[name] = Text("€" * length) if name == "notes" else "€" * length
            await ws.send(encode_sync_update(doc.get_update(before)))
            echo = await _until(ws, YjsUpdate)
            assert isinstance(echo, YjsUpdate)
            mirror.apply_update(echo.update)
            assert all(record_of(mirror)[name] == "€" * length for name in fields)
    async with yjs_peer(url) as fresh:  # its step 2 holds the whole document (> 64 KiB)
        assert record_of(fresh)["notes"] == "€" * 9_000


async def test_a_client_that_offers_compression_gets_plain_frames(server: RunningServer) -> None:
    async with websockets.connect(server.ws("/yjs/contacts/plain"), compression="deflate") as ws:
        assert isinstance(decode_yjs_message(await ws.recv()), YjsSyncStep1)
        assert ws.protocol.extensions == []


async def test_peers_get_a_burst_in_commit_order_whether_sent_at_once_or_queued(
    server: RunningServer,
) -> None:
    url = server.ws("/yjs/contacts/order")
    doc: Doc = Doc()  # type: ignore[type-arg]
    record = doc.get("record", type=Map)
    with doc.transaction():
        record["name"] = "Order"
        record["notes"] = notes = Text()
    updates = [doc.get_update()]
    for i in range(300):
        before = doc.get_state()
        notes += f"{i},"
        updates.append(doc.get_update(before))
    expected = "".join(f"{i}," for i in range(300))
    readers = [await websockets.connect(url) for _ in range(3)]
    try:
        for reader in readers:
            await _until(reader, YjsSyncStep1)
        async with websockets.connect(url) as writer:
            await _until(writer, YjsSyncStep1)
            for update in updates:
                await writer.send(encode_sync_update(update))
            for reader in readers:
                mirror: Doc = Doc()  # type: ignore[type-arg]
                seen = ""
                while seen != expected:
                    echo = await _until(reader, YjsUpdate)
                    assert isinstance(echo, YjsUpdate)
                    mirror.apply_update(echo.update)
                    # Each frame applies at once: it never depends on one still to come.
                    assert get_update(echo.update, mirror.get_state())[:1] == b"\x00"
                    seen = str(mirror.get("record", type=Map).get("notes", ""))
    finally:
        for reader in readers:
            await reader.close()


async def test_with_compression_negotiated_frames_take_the_asgi_send_and_still_arrive(
    tmp_path: Path,
) -> None:
    # An app embedded under uvicorn's defaults (permessage-deflate on) with this protocol.
    db_path = tmp_path / "deflate.db"
    _, device = await make_tokens(db_path)
    sock = free_socket()
    config = uvicorn.Config(
        create_app(Settings(db_path=db_path)),
        log_level="warning",
        ws=WEBSOCKET_IMPLEMENTATION,
        ws_per_message_deflate=True,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started or task.done())
        url = f"ws://127.0.0.1:{sock.getsockname()[1]}/yjs/contacts/deflate?token={device}"
        async with websockets.connect(url, compression="deflate") as writer:
            assert [e.name for e in writer.protocol.extensions] == ["permessage-deflate"]
            await _until(writer, YjsSyncStep1)
            async with yjs_peer(url) as reader:
                doc: Doc = Doc()  # type: ignore[type-arg]
                doc.get("record", type=Map)["name"] = "Deflated"
                update = doc.get_update()
                await writer.send(encode_sync_update(update))
                echo = await _until(writer, YjsUpdate)
                assert isinstance(echo, YjsUpdate)
                await wait_for(lambda: record_of(reader).get("name") == "Deflated")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)

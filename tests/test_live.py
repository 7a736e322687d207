"""Live sync over real websockets: y-websocket (stock pycrdt Provider) and /ws together."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets
from pycrdt import Doc, Map, Text

from crdt_sync.ids import DocId
from crdt_sync.protocol import CloseCode
from crdt_sync.protocol.ysync import (
    YjsPermissionDenied,
    YjsSyncStep1,
    YjsSyncStep2,
    YjsUpdate,
    decode_yjs_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
)
from crdt_sync.record import Records, document_from_state
from crdt_sync.schema import DEFAULT_SCHEMA

from .client_helpers import stored
from .conftest import RunningServer, wait_for
from .peers import mux_peer, record_of, yjs_peer

records = Records(DEFAULT_SCHEMA)


async def test_two_stock_yjs_clients_converge_and_the_store_holds_the_result(
    server: RunningServer,
) -> None:
    url = server.ws("/yjs/contacts/42")
    async with yjs_peer(url) as alice, yjs_peer(url) as bob:
        alice_record = alice.get("record", type=Map)
        with alice.transaction():
            alice_record["name"] = "Ann"
            alice_record["notes"] = Text("met at the fair")
        await wait_for(lambda: record_of(bob).get("name") == "Ann")
        bob_record = bob.get("record", type=Map)
        bob_record["email"] = "ann@example.com"
        bob_record["notes"].insert(0, "first ")
        alice_record["phone"] = "+33 1"
        expected = {
            "name": "Ann",
            "email": "ann@example.com",
            "phone": "+33 1",
            "notes": "first met at the fair",
        }
        await wait_for(lambda: record_of(alice) == expected and record_of(bob) == expected)
    await wait_for(lambda: _view_is(server, "contacts/42", expected))


async def _view_is(server: RunningServer, doc_id: str, expected: dict[str, object]) -> bool:
    view = await stored(server, doc_id)
    return view is not None and all(view[k] == v for k, v in expected.items())


async def test_the_server_sends_its_sync_step_1_first_and_echoes_a_write_after_commit(
    server: RunningServer,
) -> None:
    async with websockets.connect(server.ws("/yjs/contacts/7")) as ws:
        first = decode_yjs_message(await ws.recv())
        assert isinstance(first, YjsSyncStep1)
        doc = document_from_state(None)
        update = records.patch(DocId("contacts/7"), doc, {"name": "Echo"}, creating=True)
        await ws.send(encode_sync_update(update))
        echo = decode_yjs_message(await asyncio.wait_for(ws.recv(), 10))
        assert echo == YjsUpdate(update)
        # The echo came after commit: the store already has it.
        assert (await stored(server, "contacts/7"))["name"] == "Echo"  # type: ignore[index]


async def test_a_refused_write_is_undone_on_the_writer_then_denied_and_the_connection_stays_up(
    server: RunningServer,
) -> None:
    async with websockets.connect(server.ws("/yjs/deals/9")) as ws:
        await ws.recv()
        doc = Doc()
        good = records.patch(DocId("deals/9"), doc, {"title": "ok"}, creating=True)
        await ws.send(encode_sync_update(good))
        assert decode_yjs_message(await asyncio.wait_for(ws.recv(), 10)) == YjsUpdate(good)
        before = doc.get_state()
        doc.get("record", type=Map)["amount"] = "ten"
        await ws.send(encode_sync_update(doc.get_update(before)))
        # First the echo, which holds the refused item as a deleted one: the writer's copy
        # snaps back; then the reason.
        echo = decode_yjs_message(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(echo, YjsUpdate) and b"ten" not in echo.update
        doc.apply_update(echo.update)
        assert record_of(doc) == {"title": "ok"}
        denied = decode_yjs_message(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(denied, YjsPermissionDenied)
        assert denied.reason.startswith("deals/9: amount must be a finite number")
        # The same connection, the same copy: the next edit is not refused.
        before = doc.get_state()
        doc.get("record", type=Map)["amount"] = 10
        later = doc.get_update(before)
        await ws.send(encode_sync_update(later))
        assert decode_yjs_message(await asyncio.wait_for(ws.recv(), 10)) == YjsUpdate(later)
    view = await stored(server, "deals/9")
    assert view is not None and view["title"] == "ok" and view["amount"] == 10


async def test_a_write_that_cannot_be_undone_is_denied_then_closes_the_connection_with_4422(
    server: RunningServer,
) -> None:
    async with websockets.connect(server.ws("/yjs/deals/9")) as ws:
        await ws.recv()
        await ws.send(encode_sync_update(b"\x01\x05garbage"))
        denied = decode_yjs_message(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(denied, YjsPermissionDenied) and "not a Yjs update" in denied.reason
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == CloseCode.REFUSED_WRITE
        assert ws.close_reason.startswith("deals/9: not a Yjs update")
    assert await stored(server, "deals/9") is None
    async with yjs_peer(server.ws("/yjs/deals/9")) as fresh:  # the server is up and well
        assert record_of(fresh) == {}


@pytest.mark.parametrize(
    ("token", "reason"),
    [("", "missing token"), ("cs_wrong", "unknown or revoked token")],
)
async def test_no_token_or_a_wrong_one_is_closed_with_4401(
    server: RunningServer, token: str, reason: str
) -> None:
    for path in ("/yjs/contacts/1", "/ws"):
        async with websockets.connect(server.ws(path, token=token)) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CloseCode.UNAUTHORIZED
        assert reason in closed.value.rcvd.reason


async def test_an_unknown_collection_on_yjs_is_closed_as_a_bad_request(
    server: RunningServer,
) -> None:
    async with websockets.connect(server.ws("/yjs/invoices/1")) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.BAD_REQUEST
    assert "unknown collection 'invoices'" in closed.value.rcvd.reason


async def test_garbage_frames_close_only_the_sender(server: RunningServer) -> None:
    url = server.ws("/yjs/contacts/5")
    async with yjs_peer(url) as bystander:
        async with websockets.connect(url) as rude:
            await rude.recv()
            await rude.send(b"\x07\x07\x07")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await rude.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.BAD_REQUEST
        bystander.get("record", type=Map)["name"] = "still here"
        await wait_for(lambda: _view_is(server, "contacts/5", {"name": "still here"}))


async def test_mux_and_yjs_clients_editing_one_record_converge(server: RunningServer) -> None:
    async with yjs_peer(server.ws("/yjs/contacts/42")) as stock, mux_peer(server.ws("/ws")) as mux:
        cseq = await mux.edit("contacts/42", name="Ann")
        seq = await mux.wait_ack(cseq)
        assert seq > 0
        await wait_for(lambda: record_of(stock).get("name") == "Ann")
        stock.get("record", type=Map)["company"] = "Acme"
        await wait_for(lambda: record_of(mux.document("contacts/42")).get("company") == "Acme")
        assert record_of(mux.document("contacts/42")) == record_of(stock)


async def test_a_mux_client_reconnecting_with_its_cursor_receives_exactly_what_it_missed(
    server: RunningServer,
) -> None:
    async with mux_peer(server.ws("/ws"), client="a") as writer:
        async with mux_peer(server.ws("/ws"), client="b") as reader:
            seq = await writer.wait_ack(await writer.edit("contacts/1", name="One"))
            await wait_for(lambda: seq in reader.seqs)
            cursor = reader.session.cursor
        missed = [
            await writer.wait_ack(await writer.edit(f"contacts/{i}", name=f"N{i}"))
            for i in range(2, 6)
        ]
        async with mux_peer(server.ws("/ws"), client="b", cursor=cursor) as again:
            assert again.seqs == missed
            assert record_of(again.document("contacts/5")) == {"name": "N5"}


async def test_a_refused_mux_write_names_the_document_and_keeps_the_connection(
    server: RunningServer,
) -> None:
    async with mux_peer(server.ws("/ws")) as peer:
        bad = await peer.edit("deals/3", amount=-4.0)
        unknown = await peer.write("invoices/1", b"\x00\x00")
        await wait_for(lambda: len(peer.errors) == 2)
        by_cseq = {e.cseq: e for e in peer.errors}
        assert by_cseq[bad].doc == "deals/3" and by_cseq[bad].code == "schema_violation"
        assert "amount must be a number >= 0" in by_cseq[bad].message
        assert by_cseq[unknown].code == "unknown_collection"
        ok = await peer.wait_ack(await peer.edit("contacts/3", name="fine"))
        assert ok > 0
        # The writer got the compensation (its own copy snapped back) before the error.
        assert record_of(peer.document("deals/3")) == {}
    # A refused create keeps its (undone) bytes, and serves no record.
    view = await stored(server, "deals/3", with_deleted=True)
    assert view is not None and view.pop("_deleted") is True
    assert set(view.values()) == {"3", None}
    async with server.client() as http:
        assert (await http.get("/api/deals/3")).status_code == 404


async def test_status_lists_connected_clients(server: RunningServer) -> None:
    async with mux_peer(server.ws("/ws"), client="tablet-7"), server.client() as http:
        status = (await http.get("/api/sync/status")).json()
        assert status["connections"] == 1
        assert status["clients"][0]["client_id"] == "tablet-7"
        assert status["clients"][0]["device"] == "phone"
        # One process on its SQLite file: the deployment is this node alone.
        (node,) = status["nodes"]
        assert node["id"] == status["node"] and node["this"] and node["alive"]
        assert node["connections"] == 1
    async with httpx.AsyncClient(base_url=server.http) as anonymous:
        assert (await anonymous.get("/api/sync/status")).status_code == 401


async def test_a_step_1_without_a_state_vector_closes_only_its_sender(
    server: RunningServer,
) -> None:
    url = server.ws("/yjs/contacts/6")
    async with yjs_peer(url) as bystander:
        async with websockets.connect(url) as rude:
            await rude.recv()
            await rude.send(b"\x00\x00\x03\xff\xff\xff")  # step 1 whose state vector is garbage
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await rude.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.BAD_REQUEST
            assert "state vector" in closed.value.rcvd.reason
        bystander.get("record", type=Map)["name"] = "still here"
        await wait_for(lambda: _view_is(server, "contacts/6", {"name": "still here"}))


async def test_peers_that_only_join_and_read_load_no_live_record(server: RunningServer) -> None:
    """A join is served from the store; a fresh client's empty step 2 writes nothing. (The
    stock JS client joins like this; pycrdt's Provider also echoes what it receives.)"""
    engine = server.app.state.hub.engine  # type: ignore[attr-defined]
    async with yjs_peer(server.ws("/yjs/contacts/7")) as writer:
        writer.get("record", type=Map)["name"] = "Ann"
        await wait_for(lambda: _view_is(server, "contacts/7", {"name": "Ann"}))
    engine.live.discard(DocId("contacts/7"))
    for doc_id in ["contacts/7"] * 3 + ["contacts/empty1", "contacts/empty2"]:
        async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as reader:
            assert isinstance(decode_yjs_message(await reader.recv()), YjsSyncStep1)
            doc = Doc()
            await reader.send(encode_sync_step1(doc.get_state()))
            await reader.send(encode_sync_step2(doc.get_update()))  # empty: [0, 0]
            step2 = decode_yjs_message(await asyncio.wait_for(reader.recv(), 10))
            assert isinstance(step2, YjsSyncStep2)
            doc.apply_update(step2.update)
            assert record_of(doc) == ({"name": "Ann"} if doc_id == "contacts/7" else {})
    assert len(engine.live) == 0

"""Issue 14, item 2: client ids JavaScript cannot hold (2**53 and up) are refused at every door.

Yjs in JavaScript rounds such an id (or throws and drops the update) while pycrdt keeps it
modulo 2**53: accepted, one write made Node and the REST view disagree for good. Each test
sends the forged bytes by one door and checks the refusal, then that the stock Node client,
the REST view and the store still agree.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
import websockets

from crdt_sync.ids import DocId
from crdt_sync.protocol import CloseCode, SyncStep1
from crdt_sync.protocol.ysync import (
    YjsPermissionDenied,
    YjsUpdate,
    decode_yjs_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
)

from .client_helpers import stored
from .conftest import RunningServer, wait_for
from .peers import mux_peer
from .test_node_client import node, node_client
from .yjs_bytes import delete_only, map_set, state_vector

__all__ = ["node"]  # the fixture, imported for its tests here

TOP = 2**53
TIMEOUT = 10.0


async def drain(websocket: websockets.ClientConnection) -> None:
    while True:
        await websocket.recv()


async def create_contact(server: RunningServer, record_id: str) -> None:
    async with server.client() as http:
        answer = await http.post("/api/contacts", json={"id": record_id, "name": "Ann"})
        assert answer.status_code == 201, answer.text


async def wait_denied(raw: websockets.ClientConnection) -> YjsPermissionDenied:
    async def denied() -> YjsPermissionDenied:
        while True:
            message = decode_yjs_message(bytes(await raw.recv()))
            if isinstance(message, YjsPermissionDenied):
                return message

    return await asyncio.wait_for(denied(), TIMEOUT)


async def wait_update(raw: websockets.ClientConnection) -> None:
    async def update() -> None:
        while not isinstance(decode_yjs_message(bytes(await raw.recv())), YjsUpdate):
            pass

    await asyncio.wait_for(update(), TIMEOUT)


@pytest.mark.node
async def test_a_write_claiming_client_2_to_the_53_is_refused_and_node_and_rest_agree(
    node: str, server: RunningServer
) -> None:
    doc_id = "contacts/c53"
    await create_contact(server, "c53")
    async with (
        node_client(node, server, doc_id) as js,
        websockets.connect(server.ws(f"/yjs/{doc_id}")) as raw,
    ):
        await raw.recv()  # the server's step 1
        await raw.send(encode_sync_update(map_set(TOP - 1, 0, "phone", "+1 safe")))
        await js.wait(lambda: js.record.get("phone") == "+1 safe")

        for client in (TOP, TOP + 5):  # the second would be stored as client 5
            async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as forger:
                await forger.recv()
                await forger.send(encode_sync_update(map_set(client, 0, "phone", "+2 forged")))
                denied = await wait_denied(forger)
                assert denied.reason.startswith(f"{doc_id}: not a Yjs update every peer can decode")
                assert "client id is larger than 2**53 - 1" in denied.reason
                # Nothing of it can be undone on the sender's copy: told so, and closed.
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(drain(forger), TIMEOUT)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == CloseCode.REFUSED_WRITE

        # Other connections still write: only the sender was dropped.
        await raw.send(encode_sync_update(map_set(TOP - 1, 1, "company", "Acme")))
        await js.wait(lambda: js.record.get("company") == "Acme")
        assert js.record["phone"] == "+1 safe"
        assert js.of("connection-close") == []
    async with server.client() as http:
        rest = (await http.get(f"/api/{doc_id}")).json()
    assert rest["phone"] == "+1 safe" and rest["company"] == "Acme"
    assert (await stored(server, doc_id) or {})["phone"] == "+1 safe"


async def test_the_mux_door_refuses_it_with_an_error_frame_and_stays_up(
    server: RunningServer,
) -> None:
    doc_id = "contacts/m53"
    await create_contact(server, "m53")
    async with mux_peer(server.ws("/ws")) as mux:
        cseq = await mux.write(doc_id, map_set(TOP + 5, 0, "phone", "+2 forged"))
        await wait_for(lambda: any(e.cseq == cseq for e in mux.errors))
        (error,) = [e for e in mux.errors if e.cseq == cseq]
        assert error.code == "invalid_update" and "client id" in error.message
        good = await mux.write(doc_id, map_set(TOP - 1, 0, "phone", "+1 safe"))
        assert await mux.wait_ack(good) > 0
    assert (await stored(server, doc_id) or {})["phone"] == "+1 safe"


async def test_the_rest_doors_refuse_it_and_store_nothing(server: RunningServer) -> None:
    doc_id = "contacts/r53"
    await create_contact(server, "r53")
    forged = map_set(TOP, 0, "phone", "+2 forged")
    async with server.client() as http:
        answer = await http.post(
            f"/api/docs/{doc_id}/update",
            content=forged,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_update"
        assert "client id is larger than 2**53 - 1" in answer.json()["error"]["message"]

        for update in (forged, delete_only(TOP + 5, 0)):
            push = await http.post(
                "/api/sync/outgoing",
                json={"updates": [{"doc": doc_id, "update": base64.b64encode(update).decode()}]},
            )
            assert push.status_code == 200, push.text
            (rejected,) = push.json()["rejected"]
            assert rejected["code"] == "invalid_update" and "client id" in rejected["message"]
            assert push.json()["applied"] == []

        sv = base64.b64encode(state_vector({TOP: 1})).decode()
        diff = await http.get(f"/api/docs/{doc_id}/update", params={"sv": sv})
        assert diff.status_code == 400 and "state vector client id" in diff.text
        assert (await http.get(f"/api/{doc_id}")).json()["phone"] is None
    assert (await stored(server, doc_id) or {})["phone"] is None


async def test_a_state_vector_naming_client_2_to_the_53_closes_only_its_sender(
    server: RunningServer,
) -> None:
    doc_id = "contacts/s53"
    await create_contact(server, "s53")
    async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as good:
        await good.recv()
        async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as raw:
            await raw.recv()
            await raw.send(encode_sync_step1(state_vector({TOP + 5: 1})))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(drain(raw), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.BAD_REQUEST
        assert "state vector" in closed.value.rcvd.reason
        # The other peer is untouched and still syncing.
        async with server.client() as http:
            await http.patch(f"/api/{doc_id}", json={"phone": "+3"})
        await wait_update(good)


async def test_yjs_refuses_a_step_2_or_a_delete_set_naming_client_2_to_the_53(
    server: RunningServer,
) -> None:
    doc_id = "contacts/d53"
    await create_contact(server, "d53")
    for frame in (
        encode_sync_step2(map_set(TOP + 5, 0, "phone", "+2 forged")),
        encode_sync_update(delete_only(TOP + 5, 0)),
        encode_sync_update(delete_only(5, TOP - 1, 2)),  # a clock range past 2**53 - 1
    ):
        async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as raw:
            await raw.recv()
            await raw.send(frame)
            denied = await wait_denied(raw)
            assert denied.reason.startswith(f"{doc_id}: not a Yjs update every peer can decode")
            with pytest.raises(websockets.ConnectionClosed) as closed:  # cannot be undone
                await asyncio.wait_for(drain(raw), TIMEOUT)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == CloseCode.REFUSED_WRITE
    async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as raw:
        await raw.recv()
        await raw.send(encode_sync_update(map_set(7, 0, "phone", "+1 safe")))
        await wait_update(raw)  # the echo of the good write
    assert (await stored(server, doc_id) or {})["phone"] == "+1 safe"


async def test_the_mux_door_refuses_a_delete_set_and_closes_on_a_state_vector_naming_it(
    server: RunningServer,
) -> None:
    doc_id = "contacts/n53"
    await create_contact(server, "n53")
    async with mux_peer(server.ws("/ws")) as mux:
        cseq = await mux.write(doc_id, delete_only(TOP, 0))
        await wait_for(lambda: any(e.cseq == cseq for e in mux.errors))
        (error,) = [e for e in mux.errors if e.cseq == cseq]
        assert error.code == "invalid_update" and "delete set client id" in error.message
        mux.session.send(SyncStep1(DocId(doc_id), state_vector({TOP + 5: 1})))
        await mux._flush()
        assert mux._reader is not None
        await asyncio.wait_for(mux._reader, TIMEOUT)  # it ends with the connection
        assert mux.websocket.close_code == CloseCode.BAD_REQUEST
        assert "state vector client id" in (mux.websocket.close_reason or "")
    assert (await stored(server, doc_id) or {})["name"] == "Ann"

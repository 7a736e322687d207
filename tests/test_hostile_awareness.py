"""Issue 14, item 1: awareness is decoded before it is relayed, on /yjs and on /ws.

One awareness update a stock client cannot decode made every Node y-websocket client of the
room exit. Now its sender is closed with 4400 and nobody else sees it; and a peer can relay
only the presence it brought, not overwrite or remove another's.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from crdt_sync.protocol import CloseCode, YjsAwareness, decode_yjs_message
from crdt_sync.protocol.awareness import (
    AwarenessState,
    decode_awareness_update,
    encode_awareness_update,
)
from crdt_sync.protocol.ysync import encode_awareness

from .conftest import RunningServer, wait_for
from .peers import mux_peer
from .test_node_client import NodeClient, node, node_client

__all__ = ["node"]  # the fixture, imported for its tests here

TIMEOUT = 10.0
# The frames: an awareness message whose inner update is cut short (/yjs) ...
CUT_SHORT = bytes.fromhex("011a01922101 18") + b'{"user":{"name":"fuzz'
# ... and an update whose count says 2 states when one follows (/ws `data`).
TWO_SAID_ONE_SENT = bytes.fromhex("02922101 18") + b'{"user":{"name":"fuzz"}}'


async def closed_with(websocket: websockets.ClientConnection) -> websockets.frames.Close:
    async def drain() -> None:
        while True:
            await websocket.recv()

    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(drain(), TIMEOUT)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd


def frames_seen(js: NodeClient) -> list[dict[str, object]]:
    return [c for f in js.of("awareness-frame") for c in f["clients"]]


def present(client: int, clock: int, state: object) -> bytes:
    return encode_awareness_update([AwarenessState(client, clock, json.dumps(state), False)])


@pytest.mark.node
async def test_cut_short_awareness_closes_its_sender_and_node_clients_of_the_room_live_on(
    node: str, server: RunningServer
) -> None:
    doc_id = "contacts/a1"
    async with (
        node_client(node, server, doc_id) as ann,
        node_client(node, server, doc_id) as bob,
    ):
        await ann.command("awareness", state={"user": {"name": "Ann"}})
        await bob.wait(lambda: ann.client_id in bob.awareness)
        for frame in (CUT_SHORT, encode_awareness(TWO_SAID_ONE_SENT)):
            async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as attacker:
                await attacker.recv()  # the server's step 1
                await attacker.send(frame)
                close = await closed_with(attacker)
            assert close.code == CloseCode.BAD_REQUEST
            assert close.reason.startswith("awareness update: truncated")

        # Both still run, connected, and still hear each other (presence and edits).
        await bob.command("awareness", state={"user": {"name": "Bob"}})
        bob_id = bob.client_id
        assert bob_id is not None
        await ann.wait(lambda: ann.awareness.get(bob_id) == {"user": {"name": "Bob"}})
        await ann.edit({"set": "name", "value": "Ann"})
        await bob.wait(lambda: bob.record.get("name") == "Ann")
        for js in (ann, bob):
            assert js.process.returncode is None
            assert js.of("connection-close") == [] and js.of("error") == []
            assert all("fuzz" not in json.dumps(c) for c in frames_seen(js))


@pytest.mark.node
async def test_a_peer_cannot_overwrite_or_remove_a_node_clients_presence(
    node: str, server: RunningServer
) -> None:
    doc_id = "contacts/a2"
    ann_state = {"user": {"name": "Ann"}}
    async with (
        node_client(node, server, doc_id) as ann,
        node_client(node, server, doc_id) as bob,
        websockets.connect(server.ws(f"/yjs/{doc_id}")) as mallory,
    ):
        await mallory.recv()
        await ann.command("awareness", state=ann_state)
        ann_id = ann.client_id
        assert ann_id is not None
        await bob.wait(lambda: bob.awareness.get(ann_id) == ann_state)
        forged = {"user": {"name": "Mallory"}}
        await mallory.send(encode_awareness(present(ann_id, 1000, forged)))
        removal = AwarenessState.removal(ann_id, 2000)
        await mallory.send(encode_awareness(encode_awareness_update([removal])))
        # Mallory's own presence is relayed, after her forgeries: once Bob has it, they were
        # dropped, not delayed.
        await mallory.send(encode_awareness(present(12345, 1, {"user": {"name": "M"}})))
        await bob.wait(lambda: 12345 in bob.awareness)
        assert bob.awareness[ann_id] == ann_state
        assert all(c["clock"] not in (1000, 2000) for c in frames_seen(bob))
        assert bob.of("connection-close") == [] and ann.of("connection-close") == []


@pytest.mark.node
async def test_a_peer_that_drops_its_connection_has_its_presence_removed_everywhere(
    node: str, server: RunningServer
) -> None:
    doc_id = "contacts/a3"
    async with node_client(node, server, doc_id) as bob:
        async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as gone:
            await gone.recv()
            await gone.send(encode_awareness(present(777, 3, {"user": {"name": "Gone"}})))
            await bob.wait(lambda: 777 in bob.awareness)
        # No removal of its own was sent: the server tells the room, one clock later.
        await bob.wait(lambda: 777 not in bob.awareness)
        assert {"clientID": 777, "clock": 4, "state": None} in frames_seen(bob)


async def test_awareness_over_the_limits_closes_its_sender_on_yjs(server: RunningServer) -> None:
    doc_id = "contacts/a4"
    big = present(1, 1, {"pad": "x" * 9000})
    five = encode_awareness_update([AwarenessState(n, 1, "{}", False) for n in range(1, 6)])
    for update, reason in ((big, "over the limit of 8192"), (five, "at most 4 client ids")):
        async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as raw:
            await raw.recv()
            await raw.send(encode_awareness(update))
            close = await closed_with(raw)
        assert close.code == CloseCode.BAD_REQUEST and reason in close.reason


async def test_a_good_yjs_peer_sees_only_decodable_awareness_and_late_joiners_get_the_room(
    server: RunningServer,
) -> None:
    doc_id = "contacts/a5"
    async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as good:
        await good.recv()
        async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as bad:
            await bad.recv()
            await bad.send(encode_awareness(b"\x01\x05\x01\x03NaN"))
            assert (await closed_with(bad)).code == CloseCode.BAD_REQUEST
        async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as other:
            await other.recv()
            await other.send(encode_awareness(present(9, 1, {"n": 9})))
            message = decode_yjs_message(await asyncio.wait_for(good.recv(), TIMEOUT))
            assert isinstance(message, YjsAwareness)  # the first awareness the good peer got
            assert decode_awareness_update(message.payload) == (
                AwarenessState(9, 1, '{"n": 9}', False),
            )
            async with websockets.connect(server.ws(f"/yjs/{doc_id}")) as late:
                await late.recv()  # step 1, then the room's presence
                joined = decode_yjs_message(await asyncio.wait_for(late.recv(), TIMEOUT))
                assert isinstance(joined, YjsAwareness)
                assert [s.client for s in decode_awareness_update(joined.payload)] == [9]


async def test_the_mux_door_closes_a_sender_of_garbage_awareness_and_relays_none_of_it(
    server: RunningServer,
) -> None:
    doc = "contacts/m1"
    async with mux_peer(server.ws("/ws"), "watcher") as watcher:
        async with mux_peer(server.ws("/ws"), "attacker") as attacker:
            await attacker.send_awareness(doc, TWO_SAID_ONE_SENT)
            assert attacker._reader is not None
            await asyncio.wait_for(attacker._reader, TIMEOUT)  # it ends with the connection
            assert attacker.websocket.close_code == CloseCode.BAD_REQUEST
            assert (attacker.websocket.close_reason or "").startswith("awareness update: truncated")
        async with mux_peer(server.ws("/ws"), "friend") as friend:
            await friend.send_awareness(doc, present(5, 1, {"n": 5}))
            await wait_for(lambda: len(watcher.awareness) >= 1)
            # The friend's echo of its own state, and a forgery of it by the watcher: dropped.
            await watcher.send_awareness(doc, present(5, 9, {"n": "forged"}))
        await wait_for(lambda: len(watcher.awareness) >= 2)  # the friend left: its removal
        assert [(a.doc, a.states) for a in watcher.awareness] == [
            (doc, (AwarenessState(5, 1, '{"n": 5}', False),)),
            (doc, (AwarenessState.removal(5, 2),)),
        ]


async def test_mux_awareness_reaches_only_peers_that_sync_the_records_collection(
    server: RunningServer,
) -> None:
    """Presence on a contact is for those who sync contacts, as the contact's updates are."""
    async with (
        mux_peer(server.ws("/ws"), "contacts-watcher", collections=("contacts",)) as contacts,
        mux_peer(server.ws("/ws"), "deals-watcher", collections=("deals",)) as deals,
        mux_peer(server.ws("/ws"), "presenter") as presenter,
    ):
        await presenter.send_awareness("contacts/m2", present(7, 1, {"n": 7}))
        await presenter.send_awareness("deals/m2", present(8, 1, {"n": 8}))
        await wait_for(lambda: len(contacts.awareness) >= 1 and len(deals.awareness) >= 1)
        await presenter.send_awareness("contacts/m2", present(7, 2, {"n": 72}))
        await wait_for(lambda: len(contacts.awareness) >= 2)
        await asyncio.sleep(0.2)  # what deals-watcher would wrongly get has had time to arrive
        assert [a.doc for a in contacts.awareness] == ["contacts/m2", "contacts/m2"]
        assert [a.doc for a in deals.awareness] == ["deals/m2"]

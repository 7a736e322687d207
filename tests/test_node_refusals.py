"""Issue 11: a refusal never wedges a stock Yjs client, and the refused value shows nowhere.

The writers are the stock clients: yjs + y-websocket under Node (`tests/node/yclient.mjs`)
and pycrdt docs speaking the y-websocket protocol. After each scenario every replica, REST,
`/api/docs`, the replayed history and the raw stored log are searched for the refused value.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from pycrdt import Doc, Map

from crdt_sync.history import replay
from crdt_sync.ids import DocId
from crdt_sync.protocol.ysync import (
    YjsPermissionDenied,
    YjsSyncStep2,
    YjsUpdate,
    decode_yjs_message,
    encode_sync_step1,
    encode_sync_update,
)
from crdt_sync.record import Records
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.store import SQLiteStore
from crdt_sync.yupdate import read_state_vector

from .conftest import RunningServer, wait_for
from .peers import record_of, yjs_peer
from .test_node_client import NodeClient, node, node_client

__all__ = ["node"]  # the fixture, imported for its tests here

pytestmark = pytest.mark.node

MARK = "REFUSED"  # in every refused string value, to look for in bytes and views
TIMEOUT = 10.0


async def stored_log(server: RunningServer, doc_id: str) -> list[bytes]:
    async with SQLiteStore(server.db_path) as store:
        return [entry.update for entry in await store.history(DocId(doc_id))]


async def everything_served(server: RunningServer, doc_id: str) -> list[Any]:
    """Every view of the record the server gives: REST, /api/docs, sync pulls, history."""
    async with server.client() as http:
        served: list[Any] = [
            (await http.get(f"/api/{doc_id}")).json(),
            (await http.get(f"/api/docs/{doc_id}")).json(),
            (await http.get("/api/sync/initial")).json(),
            (await http.get("/api/sync/incremental", params={"since": 1})).json(),
        ]
    async with SQLiteStore(server.db_path) as store:
        log = await store.history(DocId(doc_id))
    served += [step.view for step in replay(Records(DEFAULT_SCHEMA), DocId(doc_id), log)]
    return served


async def assert_refused_value_nowhere(
    server: RunningServer, doc_id: str, refused: object, *watchers: NodeClient
) -> None:
    """Not in the stored bytes, not in anything served, never seen by a watcher."""
    for entry in await stored_log(server, doc_id):
        assert MARK.encode() not in entry
    for served in await everything_served(server, doc_id):
        assert MARK not in repr(served)
    for watcher in watchers:
        for event in watcher.of("record"):
            assert MARK not in repr(event["record"])
            assert refused not in event["record"].values()


async def test_a_refused_edit_then_a_valid_one_reach_every_client_and_the_refused_value_none(
    node: str, server: RunningServer
) -> None:
    doc_id = "contacts/21"
    async with (
        node_client(node, server, doc_id) as writer,
        node_client(node, server, doc_id) as watcher,
    ):
        await writer.edit({"set": "name", "value": "Ann"})
        await watcher.wait(lambda: watcher.record == {"name": "Ann"})

        # name must be a string: the whole transaction is refused, its valid phone too.
        await writer.edit({"set": "name", "value": 42}, {"set": "phone", "value": f"+1 {MARK}"})
        await writer.wait(lambda: len(writer.denied) == 1)
        assert writer.denied[0].startswith("contacts/21: name must be a string")
        await writer.wait(lambda: writer.record == {"name": "Ann"})  # its copy snapped back

        await writer.edit({"set": "company", "value": "Acme"})
        expected = {"name": "Ann", "company": "Acme"}
        await watcher.wait(lambda: watcher.record == expected)
        await writer.wait(lambda: writer.record == expected)
        async with yjs_peer(server.ws(f"/yjs/{doc_id}")) as fresh:
            assert record_of(fresh) == expected
        assert writer.denied == [writer.denied[0]] and writer.of("connection-close") == []
        assert [e["status"] for e in writer.of("status")] == ["connected"]
        await assert_refused_value_nowhere(server, doc_id, 42, watcher)
        async with SQLiteStore(server.db_path) as store:
            log = await store.history(DocId(doc_id))
        steps = replay(Records(DEFAULT_SCHEMA), DocId(doc_id), log)
        assert [step.view["name"] for step in steps] == ["Ann"] * len(steps)
    async with server.client() as http:
        rest = (await http.get(f"/api/{doc_id}")).json()
    assert rest == {"id": "21", "email": None, "phone": None, "notes": None, **expected}


@pytest.mark.parametrize("writer_is", ["above", "below"])
async def test_a_refused_edit_and_valid_ones_sent_back_to_back_converge_everywhere(
    node: str, server: RunningServer, writer_is: str
) -> None:
    """Three transactions in one go; /yjs reads them back to back and checks them together
    (then the first one's overwritten value must not stay in the stored bytes) or, split
    across reads, compensates the first. Either way every replica converges."""
    server_id: int = server.app.state.engine.live.client_id  # type: ignore[attr-defined]
    client_id = server_id + 2**30 if writer_is == "above" else server_id - 1
    doc_id = "deals/31"
    async with (
        node_client(node, server, doc_id, client_id=client_id) as writer,
        node_client(node, server, doc_id) as watcher,
    ):
        await writer.edit({"set": "title", "value": "Roof"}, {"set": "currency", "value": "USD"})
        await watcher.wait(lambda: watcher.record.get("currency") == "USD")
        await writer.command(
            "transactions",
            transactions=[
                [{"set": "currency", "value": f"euros {MARK}"}],
                [{"set": "stage", "value": "won"}],
                [{"set": "currency", "value": "EUR"}],
            ],
        )

        def converged() -> bool:
            return (
                watcher.record == writer.record
                and watcher.record.get("stage") == "won"
                and MARK not in repr(writer.record)
            )

        await watcher.wait(converged)
        currency = watcher.record["currency"]
        # Above the server's id the writer's correction wins any tie with the compensation;
        # below it, it wins only if the three came in one read (then nothing was refused).
        assert currency == "EUR" if writer_is == "above" else currency in ("EUR", "USD")
        assert len(writer.denied) <= 1 and writer.of("connection-close") == []
        async with yjs_peer(server.ws(f"/yjs/{doc_id}")) as fresh:
            assert record_of(fresh) == watcher.record
        await assert_refused_value_nowhere(server, doc_id, f"euros {MARK}", watcher)
    async with server.client() as http:
        rest = (await http.get(f"/api/{doc_id}")).json()
    assert (rest["currency"], rest["stage"]) == (currency, "won")


class RawYjs:
    """A pycrdt Doc on a raw /yjs websocket: edits are made offline, sent when told."""

    def __init__(self, websocket: websockets.ClientConnection, client_id: int) -> None:
        self.websocket = websocket
        self.doc: Doc = Doc(client_id=client_id)
        self.denied: list[str] = []
        self.answers = 0  # sync step 2 messages received
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.websocket:
                message = decode_yjs_message(bytes(frame))  # type: ignore[arg-type]
                if isinstance(message, YjsUpdate | YjsSyncStep2):
                    self.doc.apply_update(message.update)
                    self.answers += isinstance(message, YjsSyncStep2)
                elif isinstance(message, YjsPermissionDenied):
                    self.denied.append(message.reason)
        except websockets.ConnectionClosed:
            pass

    async def round_trip(self) -> None:
        """Ask the server a question: once answered, all it queued before has arrived."""
        answers = self.answers
        await self.websocket.send(encode_sync_step1(self.doc.get_state()))
        await wait_for(lambda: self.answers > answers)

    def has_seen(self, client_id: int) -> bool:
        return client_id in read_state_vector(self.doc.get_state())

    def edit(self, **fields: Any) -> bytes:
        before = self.doc.get_state()
        record = self.doc.get("record", type=Map)
        with self.doc.transaction():
            for name, value in fields.items():
                record[name] = value
        return self.doc.get_update(before)


@pytest.mark.parametrize(
    ("first", "bad_id", "good_id", "expected", "denied"),
    [
        # Of two concurrent writes of one map key the higher client id's wins; the
        # compensation comes after the refused write, so it wins wherever that write would.
        ("refused", 2_000_000_000, 3_000_000_000, "GBP", True),
        ("refused", 3_000_000_000, 2_000_000_000, "USD", True),
        # Arriving second and losing to the valid write, the bad value is never visible:
        # it changes nothing, so nothing is refused.
        ("valid", 2_000_000_000, 3_000_000_000, "GBP", False),
        ("valid", 3_000_000_000, 2_000_000_000, "GBP", True),
    ],
)
async def test_a_refused_and_a_concurrent_valid_edit_of_one_field_converge_in_either_order(
    node: str,
    server: RunningServer,
    first: str,
    bad_id: int,
    good_id: int,
    expected: str,
    denied: bool,
) -> None:
    doc_id = "deals/41"
    async with server.client() as http:
        created = await http.post(
            "/api/deals", json={"id": "41", "title": "Roof", "currency": "USD"}
        )
        assert created.status_code == 201, created.text
    async with (
        node_client(node, server, doc_id) as watcher,
        websockets.connect(server.ws(f"/yjs/{doc_id}")) as bad_socket,
        websockets.connect(server.ws(f"/yjs/{doc_id}")) as good_socket,
    ):
        bad, good = RawYjs(bad_socket, bad_id), RawYjs(good_socket, good_id)
        for peer in (bad, good):
            await peer.websocket.send(encode_sync_step1(b"\x00"))
        await wait_for(lambda: all(record_of(p.doc).get("currency") == "USD" for p in (bad, good)))
        # Both made before either sees the other's: concurrent.
        refused = bad.edit(currency=f"euros {MARK}")
        valid = good.edit(currency="GBP")
        order = [(bad, refused), (good, valid)]
        if first == "valid":
            order.reverse()
        for (peer, update), (other, _) in zip(order, reversed(order)):
            await peer.websocket.send(encode_sync_update(update))
            # Processed (committed and fanned out) before the next is sent, so the arrival
            # order is the one chosen.
            await wait_for(lambda o=other, p=peer: o.has_seen(p.doc.client_id))

        def converged() -> bool:
            values = {record_of(p.doc).get("currency") for p in (bad, good)}
            return values == {watcher.record.get("currency")} == {expected}

        try:
            await watcher.wait(converged)
            await bad.round_trip()
        finally:
            for peer in (bad, good):
                peer.reader.cancel()
        reason = f"deals/41: currency must match [A-Z]{{3}}, got 'euros {MARK}'"
        assert bad.denied == ([reason] if denied else [])
        await assert_refused_value_nowhere_shown(server, doc_id, watcher)


async def assert_refused_value_nowhere_shown(
    server: RunningServer, doc_id: str, watcher: NodeClient
) -> None:
    """Shown: a write that lost to a concurrent one on arrival is never visible, so it is
    not refused, and its bytes are kept as a deleted item (see ARCHITECTURE.md)."""
    for served in await everything_served(server, doc_id):
        assert MARK not in repr(served)
    for event in watcher.of("record"):
        assert MARK not in repr(event["record"])


async def test_a_stock_create_without_a_required_field_serves_no_record_anywhere(
    node: str, server: RunningServer
) -> None:
    doc_id = "contacts/51"
    async with node_client(node, server, doc_id) as writer:
        await writer.edit({"set": "email", "value": "ann@example.com"})
        await writer.wait(lambda: writer.denied == ["contacts/51: name is required"])
        await writer.wait(lambda: writer.record == {})
        async with server.client() as http:
            assert (await http.get(f"/api/{doc_id}")).status_code == 404
            assert (await http.get("/api/contacts")).json()["items"] == []
            initial = (await http.get("/api/sync/initial")).json()
            assert initial["changes"]["contacts"]["created"] == []
            incremental = (await http.get("/api/sync/incremental", params={"since": 1})).json()
            assert incremental["changes"]["contacts"]["created"] == []
            assert incremental["changes"]["contacts"]["updated"] == []
            # The REST door refuses the same change with the same words.
            push = await http.post(
                "/api/sync/outgoing",
                json={
                    "changes": {
                        "contacts": {
                            "created": [{"id": "52", "email": "bob@example.com"}],
                            "updated": [],
                            "deleted": [],
                        }
                    },
                    "lastPulledAt": 1,
                },
            )
            assert "name is required" in push.text

        # The same client, the same copy: a whole create in one transaction lands.
        await writer.edit({"set": "name", "value": "Ann"}, {"set": "email", "value": "a@x"})
        async with server.client() as http:
            await wait_for(lambda: _served(http, doc_id, {"name": "Ann", "email": "a@x"}), TIMEOUT)
        assert len(writer.denied) == 1


async def _served(http: Any, doc_id: str, expected: dict[str, str]) -> bool:
    answer = await http.get(f"/api/{doc_id}")
    return bool(answer.status_code == 200 and expected.items() <= answer.json().items())

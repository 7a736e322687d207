"""REST writes go through the engine: live /ws and /yjs peers see them at once; status, metrics."""

from __future__ import annotations

import asyncio

from pycrdt import Map

from .conftest import RunningServer, wait_for
from .peers import mux_peer, record_of, yjs_peer
from .rest_helpers import assert_error


async def test_a_crud_edit_reaches_connected_websocket_clients(server: RunningServer) -> None:
    async with server.client() as admin:
        (await admin.post("/api/contacts", json={"id": "c1", "name": "Ann"})).raise_for_status()
        async with (
            mux_peer(server.ws("/ws"), client="tablet") as mux,
            yjs_peer(server.ws("/yjs/contacts/c1")) as yjs,
        ):
            assert record_of(mux.document("contacts/c1"))["name"] == "Ann"  # caught up
            (
                await admin.patch("/api/contacts/c1", json={"email": "ann@example.com"})
            ).raise_for_status()
            await wait_for(
                lambda: record_of(mux.document("contacts/c1")).get("email") == "ann@example.com"
            )
            await wait_for(lambda: record_of(yjs).get("email") == "ann@example.com")
            (await admin.post("/api/contacts", json={"id": "c2", "name": "Bob"})).raise_for_status()
            await wait_for(lambda: record_of(mux.document("contacts/c2")).get("name") == "Bob")


async def test_a_rest_edit_and_a_concurrent_websocket_edit_of_other_fields_both_survive(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        (await admin.post("/api/deals", json={"id": "d1", "title": "Deal"})).raise_for_status()
        async with (
            yjs_peer(server.ws("/yjs/deals/d1")) as peer,
            server.client(server.device_token) as device,
        ):
            record = peer.get("record", type=Map)
            push = {
                "changes": {
                    "deals": {
                        "created": [],
                        "deleted": [],
                        "updated": [
                            {
                                "id": "d1",
                                "title": "Deal",
                                "amount": 0,
                                "stage": "won",
                                "currency": None,
                                "contact_id": None,
                                "close_date": None,
                                "notes": None,
                                "_status": "updated",
                                "_changed": "stage",
                            }
                        ],
                    }
                },
                "lastPulledAt": 1,
            }
            record["amount"] = 500.0  # the websocket edit, racing the REST ones
            pushed, patched = await asyncio.gather(
                device.post("/api/sync/outgoing", json=push),
                admin.patch("/api/deals/d1", json={"currency": "EUR"}),
            )
            assert pushed.json()["experimentalRejectedIds"] == {}
            patched.raise_for_status()
            expected = {"title": "Deal", "amount": 500, "stage": "won", "currency": "EUR"}
            await wait_for(lambda: record_of(peer) == expected)

            async def server_has_it() -> bool:
                view = (await admin.get("/api/deals/d1")).json()
                return {k: view[k] for k in expected} == expected

            await wait_for(server_has_it)


async def test_a_push_reaches_live_peers_of_every_record_it_touched(server: RunningServer) -> None:
    async with (
        mux_peer(server.ws("/ws"), client="watcher", collections=("tasks",)) as mux,
        server.client(server.device_token) as device,
    ):
        rows = [
            {"id": f"t{i}", "title": f"task {i}", "_status": "created", "_changed": ""}
            for i in range(3)
        ]
        answer = (
            await device.post(
                "/api/sync/outgoing",
                json={
                    "changes": {"tasks": {"created": rows, "updated": [], "deleted": ["t9"]}},
                    "lastPulledAt": None,
                },
            )
        ).json()
        seqs = [a["seq"] for a in answer["applied"] if a["seq"] is not None]
        await wait_for(lambda: all(s in mux.seqs for s in seqs))
        assert {doc_id: record_of(doc)["title"] for doc_id, doc in mux.documents.items()} == {
            f"tasks/t{i}": f"task {i}" for i in range(3)
        }


async def test_status_and_metrics_report_the_same_figures(server: RunningServer) -> None:
    async with server.client() as admin, server.client(server.device_token) as device:
        device.headers["X-Client-Id"] = "phone-7"
        for i in range(3):
            (
                await admin.post("/api/contacts", json={"id": f"c{i}", "name": "x"})
            ).raise_for_status()
        (await admin.delete("/api/contacts/c0")).raise_for_status()
        await device.get("/api/sync/initial")
        assert_error(await admin.post("/api/deals", json={"title": 5}), 422, "schema_violation")
        await device.post(
            "/api/sync/outgoing",
            json={
                "changes": {
                    "deals": {
                        "created": [
                            {
                                "id": "x",
                                "title": "t",
                                "amount": -1,
                                "_status": "created",
                                "_changed": "",
                            }
                        ]
                    }
                }
            },
        )
        async with mux_peer(server.ws("/ws"), client="tablet"):
            status = (await device.get("/api/sync/status")).json()
            metrics = (await admin.get("/metrics")).text
    assert status["cursor"] == 4 and status["timestamp"] == 5
    assert status["collections"]["contacts"] == {"records": 2, "deleted": 1}
    assert status["collections"]["deals"] == {"records": 0, "deleted": 0}
    assert [(c["client_id"], c["endpoint"]) for c in status["clients"]] == [("tablet", "ws")]
    assert [(d["device"], d["client_id"]) for d in status["rest_devices"]] == [("phone", "phone-7")]
    assert status["refused_writes"] == {"schema_violation": 2}
    assert status["errors"] == {"422": 1}
    assert status["queues"]["outgoing_total"] >= 0
    for line in [
        "crdt_sync_cursor 4.0",
        'crdt_sync_records{collection="contacts",state="live"} 2.0',
        'crdt_sync_records{collection="contacts",state="deleted"} 1.0',
        'crdt_sync_connections{endpoint="ws"} 1.0',
        'crdt_sync_refused_writes_total{code="schema_violation"} 2.0',
        'crdt_sync_http_errors_total{status="422"} 1.0',
        "crdt_sync_writes_total 4.0",
    ]:
        assert line in metrics.splitlines(), line

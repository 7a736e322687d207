"""The sync management API: overview, connected clients, tokens created/listed/revoked."""

from __future__ import annotations

import asyncio

import websockets
from websockets.exceptions import ConnectionClosed

from .conftest import RunningServer, wait_for
from .peers import mux_peer, yjs_peer
from .rest_helpers import assert_error, device


async def test_overview_reports_cursor_log_and_connections(server: RunningServer) -> None:
    async with server.client() as admin:
        for i in range(3):
            (
                await admin.post("/api/contacts", json={"id": f"c{i}", "name": "A"})
            ).raise_for_status()
        async with mux_peer(server.ws("/ws"), client="tablet"):
            answer = (await admin.get("/api/admin/sync/overview")).json()
    assert answer["cursor"] >= 3
    assert answer["log_entries"] >= 3
    assert answer["connections"] == {"ws": 1}


async def test_clients_lists_each_transport_with_its_lag(server: RunningServer) -> None:
    async with server.client() as admin:
        (await admin.post("/api/contacts", json={"id": "c1", "name": "Ann"})).raise_for_status()
        async with device(server, "laptop") as rest:
            (await rest.get("/api/sync/initial")).raise_for_status()
        (await admin.post("/api/contacts", json={"id": "c2", "name": "Bob"})).raise_for_status()
        async with (
            mux_peer(server.ws("/ws"), client="tablet"),
            yjs_peer(server.ws("/yjs/contacts/c1")),
        ):
            answer = (await admin.get("/api/admin/sync/clients")).json()
    by_transport = {c["transport"]: c for c in answer["live"]}
    assert set(by_transport) == {"ws", "yjs"}
    ws = by_transport["ws"]
    assert (ws["token"], ws["role"], ws["client_id"]) == ("phone", "device", "tablet")
    assert ws["behind"] == 0 and ws["cursor"] == answer["cursor"]
    assert by_transport["yjs"]["behind"] is None
    [laptop] = answer["rest"]
    assert (laptop["token"], laptop["client_id"], laptop["behind"]) == ("phone", "laptop", 1)


async def test_a_device_token_may_not_use_the_admin_api(server: RunningServer) -> None:
    async with server.client(server.device_token) as phone:
        assert_error(await phone.get("/api/admin/sync/clients"), 403, "forbidden")
        assert_error(await phone.post("/api/admin/tokens", json={"name": "x"}), 403, "forbidden")
    async with server.client("") as nobody:
        assert_error(await nobody.get("/api/admin/tokens"), 401, "unauthorized")


async def test_a_created_token_is_returned_once_and_works(server: RunningServer) -> None:
    async with server.client() as admin:
        created = await admin.post("/api/admin/tokens", json={"name": "kiosk"})
        assert created.status_code == 201
        token = created.json()["token"]
        listed = (await admin.get("/api/admin/tokens")).json()
    assert all("token" not in row for row in listed)
    [kiosk_row] = [r for r in listed if r["name"] == "kiosk"]
    assert (kiosk_row["role"], kiosk_row["revoked_at"]) == ("device", None)
    async with server.client(token) as kiosk:
        assert (await kiosk.get("/api/sync/initial")).status_code == 200


async def test_bad_token_requests_are_refused_and_change_nothing(server: RunningServer) -> None:
    async with server.client() as admin:
        before = (await admin.get("/api/admin/tokens")).json()
        assert_error(await admin.post("/api/admin/tokens", json={"name": ""}), 400, "bad_request")
        bad_role = await admin.post("/api/admin/tokens", json={"name": "x", "role": "root"})
        assert_error(bad_role, 400, "bad_request")
        assert_error(await admin.delete("/api/admin/tokens/nobody"), 404, "not_found")
        assert (await admin.get("/api/admin/tokens")).json() == before
        assert (await admin.get("/health")).status_code == 200


async def test_revoking_a_token_closes_its_sockets_at_once_and_refuses_it_after(
    server_factory: object,
) -> None:
    # A long sweep interval: the close must come from the revocation itself.
    server: RunningServer = await server_factory(revocation_interval=3600.0)  # type: ignore[operator]
    async with server.client() as admin:
        token = (await admin.post("/api/admin/tokens", json={"name": "tab"})).json()["token"]
        async with websockets.connect(server.ws("/yjs/contacts/c1", token)) as socket:

            async def connected() -> bool:
                live = (await admin.get("/api/admin/sync/clients")).json()["live"]
                return [c["token"] for c in live] == ["tab"]

            await wait_for(connected)
            revoked = (await admin.delete("/api/admin/tokens/tab")).json()
            assert revoked == {"name": "tab", "closed_connections": 1}
            try:
                await asyncio.wait_for(socket.wait_closed(), 5)
            except ConnectionClosed:
                pass
            assert socket.close_code == 4401
        listed = {r["name"]: r for r in (await admin.get("/api/admin/tokens")).json()}
        assert listed["tab"]["revoked_at"] is not None
    async with server.client(token) as tab:
        assert_error(await tab.get("/api/sync/initial"), 401, "unauthorized")

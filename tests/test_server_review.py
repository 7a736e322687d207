"""Server behaviour the review asked to pin down: creates that race, refusals counted once,
and what the server remembers about the devices it has seen."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets

from crdt_sync.errors import StoreError
from crdt_sync.protocol import CloseCode
from crdt_sync.protocol.ysync import YjsSyncStep1, decode_yjs_message
from crdt_sync.server.app import WEBSOCKET_IMPLEMENTATION, Settings, create_app
from crdt_sync.store.base import Store

from .conftest import RunningServer, free_socket, make_tokens, wait_for
from .peers import mux_peer, record_of, yjs_peer
from .test_rest_sync import assert_error


async def test_two_concurrent_creates_of_one_id_give_one_201_and_one_409(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        for i in range(10):
            first, second = await asyncio.gather(
                admin.post("/api/contacts", json={"id": f"c{i}", "name": "first"}),
                admin.post("/api/contacts", json={"id": f"c{i}", "name": "second"}),
            )
            made, refused = (first, second) if first.status_code == 201 else (second, first)
            assert made.status_code == 201, (first.text, second.text)
            assert_error(refused, 409, "record_exists")
            stored = (await admin.get(f"/api/contacts/c{i}")).json()
            assert stored == made.json()


async def test_a_patch_of_a_record_never_created_is_404_and_creates_nothing(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        assert_error(
            await admin.patch("/api/contacts/ghost", json={"name": "Ghost"}),
            404,
            "record_not_found",
        )
        assert_error(await admin.get("/api/contacts/ghost"), 404, "record_not_found")
        assert (await admin.get("/api/contacts")).json()["items"] == []


async def test_each_refused_admin_write_is_counted_once_by_its_code(server: RunningServer) -> None:
    async with server.client() as admin:
        (await admin.post("/api/contacts", json={"id": "c1", "name": "Ann"})).raise_for_status()
        assert_error(
            await admin.post("/api/contacts", json={"id": "c1", "name": "B"}), 409, "record_exists"
        )
        assert_error(
            await admin.patch("/api/contacts/c1", json={"name": 5}), 422, "schema_violation"
        )
        assert_error(
            await admin.patch("/api/contacts/c9", json={"name": "C"}), 404, "record_not_found"
        )
        status = (await admin.get("/api/sync/status")).json()
    assert status["refused_writes"] == {
        "record_exists": 1,
        "schema_violation": 1,
        "record_not_found": 1,
    }


async def test_an_initial_pull_whose_scan_fails_is_answered_503(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed pages come from `scan_snapshot`: its failure must surface while an error
    answer can still be sent, not as a cut stream."""
    store: Store = server.app.state.store  # type: ignore[attr-defined]

    async def failing(*args: Any, **options: Any) -> Any:
        raise StoreError("disk trouble")

    monkeypatch.setattr(store, "scan_snapshot", failing)
    async with server.client(server.device_token) as device:
        response = await device.get("/api/sync/initial")
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_error"


async def test_the_sync_status_keeps_only_the_most_recently_seen_rest_devices(
    server: RunningServer,
) -> None:
    telemetry = server.app.state.telemetry  # type: ignore[attr-defined]
    telemetry.max_devices = 3
    async with server.client(server.device_token) as device:
        for name in ("d1", "d2", "d3", "d1", "d4", "d5"):
            pulled = await device.get("/api/sync/initial", headers={"X-Client-Id": name})
            pulled.raise_for_status()
        status = (await device.get("/api/sync/status")).json()
    assert [d["client_id"] for d in status["rest_devices"]] == ["d5", "d4", "d1"]
    assert [d["pulls"] for d in status["rest_devices"]] == [1, 1, 2]


async def test_a_websocket_whose_token_lookup_fails_is_answered_503_before_the_upgrade(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The websocket endpoints skip the middleware stack (server/app.py App): a store error
    before the upgrade still gets the error answer the stack's handler gave it."""
    store: Store = server.app.state.store  # type: ignore[attr-defined]

    async def failing(*args: Any, **options: Any) -> Any:
        raise StoreError("disk trouble")

    monkeypatch.setattr(store, "find_token", failing)
    for path in ("/yjs/contacts/c1", "/ws"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(server.ws(path)):
                pass
        assert refused.value.response.status_code == 503, path
        assert json.loads(refused.value.response.body)["error"]["code"] == "store_error"
    monkeypatch.undo()
    async with websockets.connect(server.ws("/yjs/contacts/c1")) as ws:  # the server is up
        assert isinstance(decode_yjs_message(await ws.recv()), YjsSyncStep1)


async def test_the_record_doors_under_a_root_path_serve_through_the_router(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a proxy that strips a prefix (uvicorn's root_path), `door_of` leaves a websocket
    scope to the router, whose routes serve the same doors (app.py, RoutedDoor): a record
    syncs over both, and a store error before the upgrade is answered 503 there too."""
    db_path = tmp_path / "server.db"
    _, device = await make_tokens(db_path)
    app = create_app(Settings(db_path=db_path))
    sock = free_socket()
    config = uvicorn.Config(
        app, log_level="warning", ws=WEBSOCKET_IMPLEMENTATION, lifespan="on", root_path="/sync"
    )
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve(sockets=[sock]))
    try:
        await wait_for(lambda: served.started)
        base = f"ws://127.0.0.1:{sock.getsockname()[1]}"
        async with mux_peer(f"{base}/ws?token={device}", client="phone") as peer:
            await peer.wait_ack(await peer.edit("contacts/ada", name="Ada"))
        async with yjs_peer(f"{base}/yjs/contacts/ada?token={device}") as doc:
            assert record_of(doc)["name"] == "Ada"
        assert app.runtime is not None

        async def failing(*args: Any, **options: Any) -> Any:
            raise StoreError("disk trouble")

        monkeypatch.setattr(app.runtime.store, "find_token", failing)
        for path in ("/yjs/contacts/c1", "/ws"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(f"{base}{path}?token={device}"):
                    pass
            assert refused.value.response.status_code == 503, path
    finally:
        served.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.mark.parametrize("path", ["/yjs/contacts", "/yjs/contacts/c1/more", "/yjs", "/nowhere"])
async def test_a_websocket_to_a_path_no_endpoint_serves_is_refused_at_the_upgrade(
    server: RunningServer, path: str
) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(server.ws(path)):
            pass
    assert refused.value.response.status_code == 403


async def test_a_websocket_token_comes_from_the_query_or_a_bearer_authorization_header(
    server: RunningServer,
) -> None:
    bare = server.ws("/yjs/contacts/c1", token="")
    for headers in (
        {"Authorization": f"Bearer {server.device_token}"},
        {"Authorization": f"bearer  {server.device_token} "},
    ):
        async with websockets.connect(bare, additional_headers=headers) as ws:
            assert isinstance(decode_yjs_message(await ws.recv()), YjsSyncStep1)
    # Given twice in the query, the last one counts (as Starlette's QueryParams.get reads it).
    twice = f"{bare}?token=nope&token={server.device_token}"
    async with websockets.connect(twice) as ws:
        assert isinstance(decode_yjs_message(await ws.recv()), YjsSyncStep1)
    for headers in ({"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}, {}):
        async with websockets.connect(bare, additional_headers=headers) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CloseCode.UNAUTHORIZED, headers

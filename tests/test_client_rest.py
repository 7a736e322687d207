"""The REST fallback: a server whose websocket upgrade is refused, as behind an HTTP-only proxy."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from crdt_sync.client import SyncState, Transport
from crdt_sync.server.app import Settings, create_app

from .client_helpers import (
    admin_patch,
    replica_on,
    seed,
    server_view,
    two_replicas_and_an_admin_converge,
)
from .conftest import RunningServer, free_socket, make_tokens, wait_for
from .test_client_sync import schema_with_nickname

HAS_REST = importlib.util.find_spec("crdt_sync.server.sync_push") is not None
pytestmark = pytest.mark.skipif(not HAS_REST, reason="needs /api/sync/* from the REST branch (issue 4)")


class WebsocketGate:
    """ASGI wrapper that refuses websocket upgrades (HTTP 403) while closed, like a proxy."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.is_open = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and not self.is_open:
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        await self.app(scope, receive, send)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, WebsocketGate]]:
    db_path = tmp_path / "server.db"
    admin, device = await make_tokens(db_path)
    app = create_app(Settings(db_path=db_path))
    gate = WebsocketGate(app)
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(gate, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_for(lambda: server.started or task.done())
    yield RunningServer(sock.getsockname()[1], db_path, admin, device, app, server), gate
    server.should_exit = True
    await asyncio.wait_for(task, 15)


@pytest.mark.parametrize("order", ["alice first", "bob first"])
async def test_two_replicas_and_an_admin_converge_over_the_rest_fallback(
    gated: tuple[RunningServer, WebsocketGate], tmp_path: Path, order: str
) -> None:
    server, _ = gated
    await two_replicas_and_an_admin_converge(server, tmp_path, order)
    async with replica_on(server, tmp_path / "alice.db", server.device_token) as alice:
        status = await alice.sync()
        assert status.transport is Transport.REST and status.state is SyncState.SYNCED


async def test_a_refused_change_is_rejected_with_its_reason_over_rest(
    gated: tuple[RunningServer, WebsocketGate], tmp_path: Path
) -> None:
    server, _ = gated
    await seed(server)
    async with replica_on(server, tmp_path / "phone.db", server.device_token,
                          schema=schema_with_nickname()) as replica:
        await replica.sync()
        await replica.update("contacts", "ada", {"email": "ada@example.com"})
        await replica.update("contacts", "ada", {"nickname": "Countess"})
        await replica.update("contacts", "ada", {"phone": "+33 1"})
        status = await replica.sync()
        assert (status.pending, status.rejected) == (0, 1)
        [rejected] = await replica.rejected()
        assert rejected.code == "schema_violation" and "nickname" in (rejected.reason or "")
        ada = await server_view(server, "contacts/ada")
        assert ada is not None and (ada["email"], ada["phone"]) == ("ada@example.com", "+33 1")
        assert (await replica.get("contacts", "ada") or {})["nickname"] is None


async def test_live_mode_falls_back_to_rest_and_returns_to_websockets_when_they_work(
    gated: tuple[RunningServer, WebsocketGate], tmp_path: Path
) -> None:
    server, gate = gated
    await seed(server)
    async with replica_on(server, tmp_path / "phone.db", server.device_token,
                          rest_interval=0.2, websocket_retry=0.5) as replica, replica.live():
        await replica.wait_status(
            lambda s: s.transport is Transport.REST and s.state is SyncState.SYNCED, 10
        )
        assert (await replica.get("contacts", "ada") or {})["name"] == "Ada"
        await replica.update("contacts", "ada", {"email": "ada@example.com"})
        await wait_for(lambda: _server_field(server, "ada", "email", "ada@example.com"))
        await admin_patch(server, "contacts/ada", {"company": "Analytical"})
        await wait_for(lambda: _replica_field(replica, "company", "Analytical"))
        gate.is_open = True
        await replica.wait_status(
            lambda s: s.transport is Transport.WEBSOCKET and s.state is SyncState.SYNCED, 10
        )
        await admin_patch(server, "contacts/ada", {"phone": "+33 1"})
        await wait_for(lambda: _replica_field(replica, "phone", "+33 1"))


async def _server_field(server: RunningServer, record_id: str, name: str, value: object) -> bool:
    view = await server_view(server, f"contacts/{record_id}")
    return view is not None and view[name] == value


async def _replica_field(replica: Any, name: str, value: object) -> bool:
    view = await replica.get("contacts", "ada")
    return view is not None and view[name] == value


async def test_a_rest_pass_needs_a_valid_token(
    gated: tuple[RunningServer, WebsocketGate], tmp_path: Path
) -> None:
    from crdt_sync.errors import AuthError

    server, _ = gated
    async with replica_on(server, tmp_path / "phone.db", "cs_not-a-token") as replica:
        await replica.create("contacts", {"name": "Ada"}, id="ada")
        with pytest.raises(AuthError, match="HTTP 401"):
            await replica.sync()
        assert replica.status.state is SyncState.ERROR and replica.status.pending == 1


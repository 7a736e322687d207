"""The REST fallback: a server whose websocket upgrade is refused, as behind an HTTP-only proxy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import uvicorn
from fastapi import APIRouter

from crdt_sync.client import SyncState, Transport, rest
from crdt_sync.errors import ProtocolError
from crdt_sync.server import docs_views, metrics, sync_push, sync_views
from crdt_sync.server import rest as server_rest
from crdt_sync.server.app import Settings, create_app

from .client_helpers import (
    admin_delete,
    admin_patch,
    field_is,
    replica_on,
    schema_with_nickname,
    seed,
    server_view,
    two_replicas_and_an_admin_converge,
)
from .conftest import RunningServer, free_socket, make_tokens, wait_for


class WebsocketGate:
    """ASGI wrapper that refuses websocket upgrades (HTTP 403) while closed, like a proxy, and
    logs the path of every HTTP request it passes on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.is_open = False
        self.requests: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and not self.is_open:
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        if scope["type"] == "http":
            self.requests.append(scope["path"])
        await self.app(scope, receive, send)

    def count(self, prefix: str) -> int:
        return sum(path.startswith(prefix) for path in self.requests)


@contextlib.asynccontextmanager
async def gated_server(db_path: Path) -> AsyncIterator[tuple[RunningServer, WebsocketGate]]:
    admin, device = await make_tokens(db_path)
    app = create_app(Settings(db_path=db_path))
    async with serving(app, db_path, admin, device) as running:
        yield running


@contextlib.asynccontextmanager
async def serving(
    app: Any, db_path: Path, admin: str, device: str
) -> AsyncIterator[tuple[RunningServer, WebsocketGate]]:
    gate = WebsocketGate(app)
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(gate, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_for(lambda: server.started or task.done())
    try:
        yield RunningServer(sock.getsockname()[1], db_path, admin, device, app, server), gate
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, WebsocketGate]]:
    async with gated_server(tmp_path / "server.db") as running:
        yield running


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
    async with replica_on(
        server, tmp_path / "phone.db", server.device_token, schema=schema_with_nickname()
    ) as replica:
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
    async with (
        replica_on(
            server,
            tmp_path / "phone.db",
            server.device_token,
            rest_interval=0.2,
            websocket_retry=0.5,
        ) as replica,
        replica.live(),
    ):
        await replica.wait_status(
            lambda s: s.transport is Transport.REST and s.state is SyncState.SYNCED, 10
        )
        assert (await replica.get("contacts", "ada") or {})["name"] == "Ada"
        await replica.update("contacts", "ada", {"email": "ada@example.com"})
        await wait_for(lambda: field_is(server, "contacts/ada", "email", "ada@example.com"))
        await admin_patch(server, "contacts/ada", {"company": "Analytical"})
        await wait_for(lambda: field_is(replica, "contacts/ada", "company", "Analytical"))
        gate.is_open = True
        await replica.wait_status(
            lambda s: s.transport is Transport.WEBSOCKET and s.state is SyncState.SYNCED, 10
        )
        await admin_patch(server, "contacts/ada", {"phone": "+33 1"})
        await wait_for(lambda: field_is(replica, "contacts/ada", "phone", "+33 1"))


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


# The pull: /api/sync/updates, or one document at a time on a server without it


async def seed_contacts(server: RunningServer, count: int) -> None:
    for i in range(count):
        await admin_patch(
            server,
            f"contacts/c{i:03}",
            {"name": f"Contact {i}", "email": f"c{i}@example.com"},
            creating=True,
        )


async def server_cursor(server: RunningServer) -> int:
    return int(await server.app.state.store.cursor())  # type: ignore[attr-defined]


async def test_a_first_sync_pulls_the_log_in_pages_not_one_record_at_a_time(
    gated: tuple[RunningServer, WebsocketGate], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, gate = gated
    await seed_contacts(server, 300)
    await admin_patch(server, "contacts/c007", {"company": "Analytical"})
    await admin_delete(server, "contacts/c009")
    monkeypatch.setattr(rest, "UPDATES_PAGE", 128)
    async with replica_on(server, tmp_path / "phone.db", server.device_token) as replica:
        status = await replica.sync()
        held = await replica.query("contacts")
        c7 = await replica.get("contacts", "c007")
    assert status.transport is Transport.REST and status.cursor == await server_cursor(server)
    assert gate.count("/api/sync/updates") == 3  # 302 log entries, 128 per answer
    assert gate.count("/api/docs/") == 0 and gate.count("/api/sync/incremental") == 0
    assert len(held) == 299 and c7 is not None and c7["company"] == "Analytical"
    assert held == [await server_view(server, f"contacts/{row['id']}") for row in held]


async def test_a_reconnect_pulls_only_what_changed_since_the_cursor(
    gated: tuple[RunningServer, WebsocketGate], tmp_path: Path
) -> None:
    server, gate = gated
    await seed_contacts(server, 50)
    async with replica_on(server, tmp_path / "phone.db", server.device_token) as replica:
        await replica.sync()
        await admin_patch(server, "contacts/c003", {"phone": "+33 1"})
        await replica.update("contacts", "c004", {"phone": "+33 2"})
        gate.requests.clear()
        before_push = await server_cursor(server)
        status = await replica.sync()
        c3 = await replica.get("contacts", "c003")
    assert gate.requests == ["/api/sync/updates", "/api/sync/outgoing"]
    assert c3 is not None and c3["phone"] == "+33 1" and status.pending == 0
    assert status.cursor == before_push  # the pull's; the push's seq comes with the next pull


@pytest.mark.parametrize("token", ["device", "admin"])
async def test_a_server_without_the_update_log_is_pulled_one_document_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    """A server from before /api/sync/updates: its catch-all answers 403 (device) or 404."""
    db_path = tmp_path / "server.db"
    admin, device = await make_tokens(db_path)
    older = APIRouter()  # the REST routes as they were before /api/sync/updates
    for module in (sync_views, sync_push, metrics, docs_views):
        older.include_router(module.router)
    monkeypatch.setattr(server_rest, "router", older)
    async with serving(create_app(Settings(db_path=db_path)), db_path, admin, device) as (
        server,
        gate,
    ):
        await seed_contacts(server, 20)
        key = server.device_token if token == "device" else server.admin_token
        async with replica_on(server, tmp_path / "phone.db", key) as replica:
            status = await replica.sync()
            held = await replica.query("contacts")
        assert status.cursor == await server_cursor(server)
    assert gate.count("/api/sync/updates") == 1 and gate.count("/api/sync/incremental") == 1
    assert gate.count("/api/docs/") == 20 and len(held) == 20


async def test_a_replica_ahead_of_a_replaced_server_starts_over_from_its_log(
    tmp_path: Path,
) -> None:
    """As on /ws: the server's store was replaced by one with a shorter log."""
    async with gated_server(tmp_path / "old.db") as (old, _):
        await seed_contacts(old, 30)
        async with replica_on(old, tmp_path / "phone.db", old.device_token) as replica:
            assert (await replica.sync()).cursor == 30
    async with gated_server(tmp_path / "new.db") as (new, gate):
        await admin_patch(new, "deals/d1", {"title": "Fresh", "amount": 5}, creating=True)
        async with replica_on(new, tmp_path / "phone.db", new.device_token) as replica:
            status = await replica.sync()
            deal = await replica.get("deals", "d1")
            kept = await replica.query("contacts")
    assert status.cursor == 1 and deal is not None and deal["title"] == "Fresh"
    assert len(kept) == 30  # merging is idempotent: the replica keeps what it held
    assert gate.count("/api/sync/updates") == 2  # refused (since=31), then since=1


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"not cbor at all", "wrong shape"),
        (cbor2.dumps([1, 2]), "wrong shape"),
        (cbor2.dumps({"updates": [], "cursor": 3}), "wrong shape"),
        (
            cbor2.dumps(
                {
                    "updates": [{"doc": "contacts/a", "update": b"\x00", "seq": 9}],
                    "cursor": 8,
                    "more": False,
                }
            ),
            "wrong shape",
        ),  # seq past the cursor
        (
            cbor2.dumps(
                {
                    "updates": [
                        {"doc": "contacts/a", "update": b"\x00", "seq": 5},
                        {"doc": "contacts/b", "update": b"\x00", "seq": 4},
                    ],
                    "cursor": 8,
                    "more": False,
                }
            ),
            "wrong shape",
        ),  # out of order
        (
            cbor2.dumps(
                {
                    "updates": [{"doc": "contacts/a", "update": "text", "seq": 5}],
                    "cursor": 8,
                    "more": False,
                }
            ),
            "wrong shape",
        ),
        (
            cbor2.dumps(
                {
                    "updates": [{"doc": "no slash", "update": b"\x00", "seq": 5}],
                    "cursor": 8,
                    "more": False,
                }
            ),
            "bad document",
        ),
        (cbor2.dumps({"updates": [], "cursor": 1, "more": False}), "wrong shape"),  # behind since
    ],
)
def test_an_update_log_answer_of_the_wrong_shape_is_a_protocol_error(
    answer: bytes, match: str
) -> None:
    with pytest.raises(ProtocolError, match=match):
        rest._log_page(answer, 3)

"""Replicas syncing with the real server over /ws: convergence, refusals, live, status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from crdt_sync.client import Replica, SyncState, SyncStatus, Transport

from .client_helpers import (
    admin_delete,
    admin_patch,
    collect_statuses,
    field_is,
    replica_on,
    schema_with_nickname,
    seed,
    server_view,
    two_replicas_and_an_admin_converge,
)
from .conftest import RunningServer, wait_for


@pytest.mark.parametrize("order", ["alice first", "bob first"])
async def test_two_replicas_and_an_admin_edit_offline_and_all_converge(
    server: RunningServer, tmp_path: Path, order: str
) -> None:
    await two_replicas_and_an_admin_converge(server, tmp_path, order)


async def test_a_fresh_replica_catches_up_and_then_gets_only_what_is_new(
    server: RunningServer, tmp_path: Path
) -> None:
    for i in range(30):
        await admin_patch(server, f"contacts/c{i}", {"name": f"C {i}"}, creating=True)
    async with replica_on(server, tmp_path / "phone.db", server.device_token) as replica:
        status = await replica.sync()
        assert status.state is SyncState.SYNCED and status.transport is Transport.WEBSOCKET
        assert status.last_sync_at is not None
        assert len(await replica.query("contacts")) == 30
        cursor = status.cursor
        await admin_patch(server, "contacts/c7", {"email": "c7@example.com"})
        status = await replica.sync()
        assert status.cursor == cursor + 1
        assert (await replica.get("contacts", "c7") or {})["email"] == "c7@example.com"


async def test_a_change_the_server_refuses_is_rejected_with_its_reason_and_not_retried(
    server: RunningServer, tmp_path: Path
) -> None:
    """A replica whose schema has a field the server lacks: only that change is rejected."""
    await seed(server)
    async with replica_on(
        server, tmp_path / "phone.db", server.device_token, schema=schema_with_nickname()
    ) as replica:
        await replica.sync()
        await replica.update("contacts", "ada", {"email": "ada@example.com"})
        await replica.update("contacts", "ada", {"nickname": "Countess"})  # refused
        await replica.update("contacts", "ada", {"phone": "+33 1"})  # made after it: kept
        await replica.create("contacts", {"name": "Zed", "nickname": "Z"}, id="zed")  # refused
        await replica.create("contacts", {"name": "Yan"}, id="yan")

        status = await replica.sync()
        assert (status.pending, status.rejected) == (0, 2)
        rejected = await replica.rejected()
        assert [(c.doc_id, c.code) for c in rejected] == [
            ("contacts/ada", "schema_violation"),
            ("contacts/zed", "schema_violation"),
        ]
        assert all("unknown field 'nickname'" in (c.reason or "") for c in rejected)
        ada = await server_view(server, "contacts/ada")
        assert ada is not None and (ada["email"], ada["phone"]) == ("ada@example.com", "+33 1")
        assert await server_view(server, "contacts/zed") is None
        assert (await server_view(server, "contacts/yan") or {})["name"] == "Yan"
        # The replica went back to the server's truth: no trace of what was refused.
        local_ada = await replica.get("contacts", "ada")
        assert local_ada is not None and local_ada["nickname"] is None
        assert local_ada["phone"] == "+33 1"
        assert await replica.get("contacts", "zed") is None
        # Nothing is resent: another pass changes nothing and the rejections stay listed.
        status = await replica.sync()
        assert (status.pending, status.rejected) == (0, 2)
        assert await replica.forget_rejected() == 2
        assert replica.status.rejected == 0


async def test_live_mode_carries_changes_both_ways_as_they_happen(
    server: RunningServer, tmp_path: Path
) -> None:
    await seed(server)
    token = server.device_token
    async with (
        replica_on(server, tmp_path / "a.db", token) as alice,
        replica_on(server, tmp_path / "b.db", token) as bob,
    ):
        async with alice.live(), bob.live():
            await alice.wait_synced(10)
            await bob.wait_synced(10)
            await alice.update("contacts", "ada", {"email": "ada@example.com"})
            await wait_for(lambda: field_is(bob, "contacts/ada", "email", "ada@example.com"))
            await bob.update("contacts", "ada", {"phone": "+33 1"})
            await wait_for(lambda: field_is(alice, "contacts/ada", "phone", "+33 1"))
            await admin_patch(server, "contacts/ada", {"company": "Analytical"})
            await wait_for(lambda: field_is(alice, "contacts/ada", "company", "Analytical"))
            await wait_for(lambda: field_is(bob, "contacts/ada", "company", "Analytical"))
            await admin_delete(server, "contacts/alan")
            await wait_for(lambda: _absent(bob, "alan"))
            await alice.wait_synced(10)
        assert alice.status.state is SyncState.OFFLINE
    assert (await server_view(server, "contacts/ada") or {})["phone"] == "+33 1"


async def _absent(replica: Replica, record_id: str) -> bool:
    return await replica.get("contacts", record_id) is None


async def test_status_stream_shows_connecting_syncing_synced_and_back_after_a_change(
    server: RunningServer, tmp_path: Path
) -> None:
    await seed(server)
    async with replica_on(server, tmp_path / "phone.db", server.device_token) as replica:
        await replica.create("contacts", {"name": "Yan"}, id="yan")
        seen: list[SyncStatus] = []
        watching = asyncio.create_task(collect_statuses(replica, seen))
        try:
            async with replica.live():
                await wait_for(lambda: _reached(seen, SyncState.SYNCED, 1))
                await replica.update("contacts", "yan", {"email": "yan@example.com"})
                await wait_for(lambda: _reached(seen, SyncState.SYNCED, 2))
            await wait_for(lambda: seen[-1].state is SyncState.OFFLINE)
        finally:
            watching.cancel()
    states = _distinct([s.state for s in seen])
    assert states == [
        SyncState.OFFLINE,
        SyncState.CONNECTING,
        SyncState.SYNCING,
        SyncState.SYNCED,
        SyncState.SYNCING,
        SyncState.SYNCED,
        SyncState.OFFLINE,
    ]
    assert seen[0].pending == 1
    first_synced = next(s for s in seen if s.state is SyncState.SYNCED)
    assert first_synced.pending == 0 and first_synced.last_sync_at is not None
    assert any(
        s.state is SyncState.SYNCING and s.pending == 1 for s in seen[seen.index(first_synced) :]
    )


def _reached(seen: list[SyncStatus], state: SyncState, times: int) -> bool:
    return _distinct([s.state for s in seen]).count(state) >= times


def _distinct(states: list[SyncState]) -> list[SyncState]:
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] is not s]


async def test_many_offline_edits_of_one_record_go_as_few_writes_and_all_survive(
    server_factory: Callable[..., Awaitable[RunningServer]], tmp_path: Path
) -> None:
    server = await server_factory()
    async with replica_on(server, tmp_path / "phone.db", server.device_token) as replica:
        await replica.create("contacts", {"name": "Ada", "notes": ""}, id="ada")
        text = ""
        for i in range(200):
            text += f"{i},"
            await replica.update("contacts", "ada", {"notes": text})
        status = await replica.sync()
        assert status.pending == 0
    assert (await server_view(server, "contacts/ada") or {})["notes"] == text

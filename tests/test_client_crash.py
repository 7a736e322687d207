"""Crashes on either side of a sync: nothing lost, nothing applied twice, the queue survives."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from crdt_sync.client import Replica, SyncState, SyncStatus

from .client_helpers import admin_patch, collect_statuses, replica_on, stored_rows
from .conftest import RunningServer, ServerProcess, make_tokens, wait_for


async def test_server_killed_in_the_middle_of_a_push_loses_and_doubles_nothing(
    tmp_path: Path, server_process: Callable[..., ServerProcess]
) -> None:
    db_path = tmp_path / "server.db"
    _, device = await make_tokens(db_path)
    process = server_process(db_path)
    url = f"http://127.0.0.1:{process.port}"
    count, text = 1500, ""
    async with replica_on(url, tmp_path / "phone.db", device) as replica:
        for i in range(count):
            await replica.create("contacts", {"name": f"C {i}", "notes": f"note {i}"}, id=f"c{i}")
        for i in range(100):  # a text edited many times: an update applied twice would show
            text += f"{i};"
            await replica.update("contacts", "c0", {"notes": text})
        queued = replica.status.pending
        seen: list[SyncStatus] = []
        watching = asyncio.create_task(collect_statuses(replica, seen))
        async with replica.live():
            at_kill = await replica.wait_status(lambda s: s.pending < queued - 200, timeout=60)
            process.kill()
            await replica.wait_status(lambda s: s.state is SyncState.ERROR, timeout=30)
            server_process(db_path, process.port)
            await replica.wait_synced(timeout=120)
        watching.cancel()
    assert 0 < at_kill.pending < queued  # the kill came in the middle of the push
    states = [s.state for s in seen]
    after_error = states[states.index(SyncState.ERROR) :]
    assert SyncState.CONNECTING in after_error and after_error[-1] is SyncState.SYNCED

    rows = await stored_rows(db_path)
    assert len(rows) == count
    for i in range(count):
        view, deleted = rows[f"contacts/c{i}"]
        assert not deleted and view["name"] == f"C {i}"
        assert view["notes"] == (text if i == 0 else f"note {i}")


async def test_replica_process_killed_mid_sync_restarts_with_its_queue_intact(
    server: RunningServer, tmp_path: Path
) -> None:
    await asyncio.gather(
        *(
            admin_patch(server, f"deals/d{i}", {"title": f"Deal {i}"}, creating=True)
            for i in range(500)
        )
    )
    path, count = tmp_path / "phone.db", 3000
    async with Replica(path) as replica:
        for i in range(count):
            await replica.create("contacts", {"name": f"C {i}"}, id=f"c{i}")
    store = server.app.state.store  # type: ignore[attr-defined]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crdt_sync",
        "client",
        "sync",
        "--db",
        str(path),
        "--server",
        server.http,
        "--token",
        server.device_token,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for(lambda: _cursor_at_least(store, 500 + 300), timeout=60)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL  # killed, not finished

    async with replica_on(server, path, server.device_token) as replica:
        pending = {c.doc_id for c in await replica.pending(limit=count)}
        on_server = {
            doc for doc in (await stored_rows(server.db_path)) if doc.startswith("contacts/")
        }
        assert 0 < len(pending) < count
        assert pending | on_server == {f"contacts/c{i}" for i in range(count)}
        assert len(await replica.query("contacts")) == count  # the local records too
        status = await replica.sync()
        assert (status.pending, status.rejected) == (0, 0)
    rows = await stored_rows(server.db_path)
    assert sum(doc.startswith("contacts/") for doc in rows) == count
    assert all(rows[f"contacts/c{i}"][0]["name"] == f"C {i}" for i in range(count))
    async with replica_on(server, tmp_path / "fresh.db", server.device_token) as fresh:
        await fresh.sync()
        assert len(await fresh.query("contacts")) == count
        assert len(await fresh.query("deals")) == 500


async def _cursor_at_least(store: object, target: int) -> bool:
    return int(await store.cursor()) >= target  # type: ignore[attr-defined]

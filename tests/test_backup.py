"""`crdt-sync backup DEST`: a checked, consistent copy of a store a server is writing to."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx

from crdt_sync.store import SQLiteStore

from .clis import run, run_async
from .conftest import make_tokens, spawn_server
from .peers import mux_peer
from .test_cli import seeded

WRITERS = 3
RECORDS = 8


async def test_a_backup_during_a_write_storm_holds_every_write_acked_before_it(
    tmp_path: Path,
) -> None:
    """Writers keep going while the copy is taken a few pages at a time; the copy is the store
    at one instant: every write acked before the backup began, each record's view as of it."""
    db = tmp_path / "busy.db"
    copy = tmp_path / "copy.db"
    _, device = await make_tokens(db)
    process = spawn_server(db)
    acked: list[tuple[int, str, str]] = []  # (seq, doc_id, title)
    try:
        url = f"ws://127.0.0.1:{process.port}/ws?token={device}"
        started = asyncio.Event()
        backup_done = asyncio.Event()

        async def storm(writer: int) -> None:
            async with mux_peer(url, client=f"phone-{writer}") as peer:
                for n in range(2000):  # bounded: the backup ends long before
                    doc_id = f"tasks/w{writer}-{n % RECORDS}"  # its own: the last write wins
                    title = f"w{writer} n{n} " + "x" * 200  # fill pages: many backup steps
                    seq = await peer.wait_ack(await peer.edit(doc_id, title=title))
                    acked.append((seq, doc_id, title))
                    if n == 100:
                        started.set()
                    if backup_done.is_set() and n > 150:
                        return

        writers = [asyncio.create_task(storm(w)) for w in range(WRITERS)]
        await asyncio.wait_for(started.wait(), 60)
        acked_before = [seq for seq, _, _ in acked]
        ran = await run_async("backup", str(copy), "--db", str(db), "--step-pages", "2", "--json")
        backup_done.set()
        await asyncio.gather(*writers)
        assert ran.exit_code == 0, ran.stderr
        report = ran.json()
        assert report["ok"] is True and report["steps"] > 5
        assert len(acked) > len(acked_before)  # writes went on during the backup

        checked = await run_async("check", "--db", str(copy), "--json")
        assert checked.exit_code == 0, checked.stdout
        async with SQLiteStore(copy) as store:
            log = await store.log_since(0, limit=1_000_000)
            views = {row.doc_id: row.view for row in await store.snapshot(limit=100)}
        cursor = report["cursor"]
        assert [entry.seq for entry in log] == list(range(1, cursor + 1))  # a prefix of the log
        assert set(acked_before) <= {entry.seq for entry in log}
        expected: dict[str, str] = {}
        for seq, doc_id, title in sorted(acked):
            if seq <= cursor:
                expected[doc_id] = title
        assert {doc_id: view["title"] for doc_id, view in views.items()} == expected
        assert not copy.with_name("copy.db.partial").exists()
    finally:
        process.process.terminate()
        process.process.wait(15)

    # Restoring is putting the copy in place of the store: a server serves it as it was.
    restored = spawn_server(copy)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{restored.port}",
            headers={"Authorization": f"Bearer {device}"},
        ) as client:
            answer = (await client.get("/api/sync/initial")).json()
        titles = {row["id"]: row["title"] for row in answer["changes"]["tasks"]["created"]}
        assert titles == {doc_id.removeprefix("tasks/"): t for doc_id, t in expected.items()}
        assert answer["timestamp"] == cursor + 1
    finally:
        restored.process.terminate()
        restored.process.wait(15)


def test_backup_refuses_destinations_it_may_not_write_and_changes_nothing(
    tmp_path: Path,
) -> None:
    store = seeded(tmp_path / "crm.db", ("contacts/ada", "Ada"))
    taken = tmp_path / "taken.db"
    taken.write_bytes(b"someone's file")
    before = store.read_bytes()

    run("backup", str(taken), "--db", str(store)).assert_one_line_error(2, "pass --force")
    assert taken.read_bytes() == b"someone's file"
    run("backup", str(tmp_path), "--db", str(store)).assert_one_line_error(2, "is a directory")
    missing_dir = tmp_path / "nowhere" / "copy.db"
    run("backup", str(missing_dir), "--db", str(store)).assert_one_line_error(2, "does not exist")
    itself = run("backup", str(store), "--db", str(store), "--force")
    itself.assert_one_line_error(2, "is the store itself")
    no_store = run("backup", str(tmp_path / "out.db"), "--db", str(tmp_path / "typo.db"))
    no_store.assert_one_line_error(4, "no store at")
    bad_step = run("backup", str(tmp_path / "out.db"), "--db", str(store), "--step-pages", "0")
    assert bad_step.exit_code == 2 and "Traceback" not in bad_step.stderr
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "out.db").exists()
    assert store.read_bytes() == before

    replaced = run("backup", str(taken), "--db", str(store), "--force")
    assert replaced.exit_code == 0, replaced.stderr
    assert "backed up" in replaced.stdout and "1 records" in replaced.stdout
    shown = run("docs", "show", "contacts/ada", "--db", str(taken), "--json")
    assert shown.json()["view"]["name"] == "Ada"


def test_a_copy_that_fails_the_check_is_removed_and_dest_left_alone(tmp_path: Path) -> None:
    """A store damaged by another program copies damaged: the backup says so and keeps nothing."""
    store = seeded(tmp_path / "crm.db", *[("contacts/a", f"a {n}") for n in range(3)])
    db = sqlite3.connect(store)
    with db:
        db.execute("UPDATE updates SET prev_seq = NULL WHERE seq = 2")  # seq 1 cut off
    db.close()
    dest = tmp_path / "copy.db"
    dest.write_bytes(b"yesterday's backup")

    damaged = run("backup", str(dest), "--db", str(store), "--force")
    damaged.assert_one_line_error(7, "failed the store check (orphans: 1)")
    assert dest.read_bytes() == b"yesterday's backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["crm.db", "copy.db"] + [p.name for p in tmp_path.glob("crm.db-*")]
    )

"""Background compaction: a running server folds much-edited records itself, losing nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import httpx
import pytest
from pycrdt import Doc, Map, Text

from crdt_sync.compactor import CompactionPolicy, Compactor
from crdt_sync.engine import Engine
from crdt_sync.errors import ConfigError
from crdt_sync.history import Step, replay, step_at
from crdt_sync.ids import DocId, Origin
from crdt_sync.record import Records
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.store import SQLiteStore
from crdt_sync.store.base import Committed

from .clis import run, run_async
from .conftest import RunningServer, make_tokens, spawn_server, wait_for
from .peers import mux_peer, record_of, yjs_peer

ServerFactory = Callable[..., Awaitable[RunningServer]]
records = Records(DEFAULT_SCHEMA)
RECORDS = [f"contacts/c{n}" for n in range(4)]
KEYSTROKES = 60
WS_WRITES = 80
REST_WRITES = 40


def eager(**changes: object) -> CompactionPolicy:
    """A policy that compacts after a few rows, at once: many compactions in a short test."""
    settings: dict[str, object] = {"rows": 10, "bytes": 1 << 20, "pause": 0.0, "idle": 0.05}
    settings.update(changes)
    return CompactionPolicy(**settings)


def compactor_of(server: RunningServer) -> Compactor:
    compactor = server.app.state.compactor  # type: ignore[attr-defined]
    assert isinstance(compactor, Compactor)
    return compactor


async def history_of(server: RunningServer, doc_id: str) -> list[Step]:
    async with SQLiteStore(server.db_path) as store:
        return list(replay(records, DocId(doc_id), await store.history(DocId(doc_id))))


async def test_compaction_racing_ws_yjs_and_rest_writes_loses_none_of_them(
    server_factory: ServerFactory,
) -> None:
    """Three doors write different fields of the same records while the compactor folds them:
    every keystroke is in the text, every field ends at its last write, and history after
    each snapshot says what each acked write made of the record."""
    server = await server_factory(compaction=eager())
    typed = "the quick brown fox jumps over the lazy dog, again and again"[:KEYSTROKES]
    ws_acks: list[tuple[int, str, str]] = []  # (seq, doc_id, phone)
    emails: dict[str, str] = {}

    async def type_notes(doc_id: str) -> None:
        async with yjs_peer(server.ws(f"/yjs/{doc_id}")) as doc:
            fields = doc.get("record", type=Map)
            with doc.transaction():
                fields["name"] = "Start"
                fields["notes"] = notes = Text()
            for n, char in enumerate(typed):
                notes.insert(n, char)  # one update per keystroke, as an editor sends them
                await asyncio.sleep(0.002)
            await wait_for(lambda: _notes_stored(server, doc_id, typed), 30)

    async def write_phones() -> None:
        await wait_for(lambda: _all_exist(server), 30)
        async with mux_peer(server.ws("/ws"), client="phone") as peer:
            for n in range(WS_WRITES):
                doc_id = RECORDS[n % len(RECORDS)]
                phone = f"+33 {n}"
                seq = await peer.wait_ack(await peer.edit(doc_id, phone=phone))
                ws_acks.append((seq, doc_id, phone))

    async def write_emails() -> None:
        await wait_for(lambda: _all_exist(server), 30)
        async with server.client() as admin:
            for n in range(REST_WRITES):
                doc_id = RECORDS[n % len(RECORDS)]
                email = f"e{n}@example.com"
                answer = await admin.patch(f"/api/{doc_id}", json={"email": email})
                assert answer.status_code == 200, answer.text
                emails[doc_id] = email

    await asyncio.gather(*(type_notes(d) for d in RECORDS), write_phones(), write_emails())
    compactor = compactor_of(server)
    await asyncio.wait_for(compactor.wait_idle(), 30)
    # On a slow machine the compactor may fold every racing write into its last snapshot;
    # one more acked write per record (below the threshold) always follows that snapshot.
    async with mux_peer(server.ws("/ws"), client="phone") as peer:
        for doc_id in RECORDS:
            phone = f"+33 last {doc_id}"
            ws_acks.append(
                (await peer.wait_ack(await peer.edit(doc_id, phone=phone)), doc_id, phone)
            )
    async with server.client() as admin:
        status = (await admin.get("/api/sync/status")).json()
        metrics = (await admin.get("/metrics")).text
    assert status["compactor"]["compactions"] >= len(RECORDS)
    assert status["compactor"]["rows_folded"] > 0 and status["compactor"]["failures"] == 0
    assert status["compactor"]["steps"] >= status["compactor"]["compactions"]  # short logs: one
    assert status["compactor"]["current"] is None  # idle
    assert "crdt_sync_compactions_total" in metrics
    assert "crdt_sync_compaction_steps_total" in metrics

    last_phone = {doc_id: phone for _, doc_id, phone in sorted(ws_acks)}
    async with SQLiteStore(server.db_path) as store:
        for doc_id in RECORDS:
            row = await store.get_record(DocId(doc_id))
            assert row is not None
            assert row.view["notes"] == typed
            assert row.view["phone"] == last_phone[doc_id]
            assert row.view["email"] == emails[doc_id]
            assert row.view["name"] == "Start"
    firsts: dict[str, int] = {}
    for doc_id in RECORDS:
        steps = await history_of(server, doc_id)
        assert steps[0].is_snapshot
        firsts[doc_id] = steps[0].seq
        after = [(seq, phone) for seq, d, phone in ws_acks if d == doc_id and seq >= steps[0].seq]
        assert after  # the last write per record, and any that raced the last snapshot
        for seq, phone in after:
            assert step_at(DocId(doc_id), steps, seq).view["phone"] == phone
    seq, doc_id, phone = max(a for a in ws_acks if a[0] >= firsts[a[1]])
    db = str(server.db_path)
    at = await run_async("docs", "history", doc_id, "--at", str(seq), "--db", db, "--json")
    assert at.exit_code == 0, at.stderr
    assert at.json()["view"]["phone"] == phone

    # What a client fetches is whole: a fresh stock Yjs client and a fresh /ws replica.
    async with yjs_peer(server.ws(f"/yjs/{RECORDS[0]}")) as fresh:
        assert record_of(fresh)["notes"] == typed
    async with mux_peer(server.ws("/ws"), client="fresh") as replica:
        for doc_id in RECORDS:
            assert record_of(replica.document(doc_id))["notes"] == typed
    checked_store = await run_async("check", "--db", str(server.db_path), "--json")
    assert checked_store.exit_code == 0, checked_store.stdout


async def _all_exist(server: RunningServer) -> bool:
    async with SQLiteStore(server.db_path) as store:
        return all([await store.get_record(DocId(d)) is not None for d in RECORDS])


async def _notes_stored(server: RunningServer, doc_id: str, typed: str) -> bool:
    async with SQLiteStore(server.db_path) as store:
        row = await store.get_record(DocId(doc_id))
    return row is not None and row.view.get("notes") == typed


async def test_a_record_is_compacted_once_its_rows_pass_the_threshold_and_not_before(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(compaction=eager(rows=5))
    compactor = compactor_of(server)
    async with mux_peer(server.ws("/ws"), client="phone") as peer:
        for n in range(4):
            await peer.wait_ack(await peer.edit("contacts/a", name=f"A{n}"))
        await asyncio.wait_for(compactor.wait_idle(), 10)
        assert [s.is_snapshot for s in await history_of(server, "contacts/a")] == [False] * 4
        assert compactor.statistics().compactions == 0
        await peer.wait_ack(await peer.edit("contacts/a", name="A4"))
        await asyncio.wait_for(compactor.wait_idle(), 10)
    steps = await history_of(server, "contacts/a")
    assert [(s.is_snapshot, s.view["name"]) for s in steps] == [(True, "A4")]
    assert compactor.statistics().compactions == 1


async def test_a_record_is_compacted_once_its_bytes_pass_the_threshold(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(compaction=eager(rows=1000, bytes=600))
    compactor = compactor_of(server)
    async with mux_peer(server.ws("/ws"), client="phone") as peer:
        for n in range(3):  # small updates: 3 rows, far below 600 bytes
            await peer.wait_ack(await peer.edit("contacts/small", name=f"S{n}"))
        for n in range(3):  # ~250 bytes each: the third passes 600
            await peer.wait_ack(await peer.edit("contacts/big", name=f"B{n}" + "x" * 240))
        await asyncio.wait_for(compactor.wait_idle(), 10)
    assert len(await history_of(server, "contacts/small")) == 3
    big = await history_of(server, "contacts/big")
    assert len(big) == 1 and big[0].is_snapshot


async def test_debt_left_from_before_the_start_is_found_and_compacted(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    db = tmp_path / "server.db"
    async with SQLiteStore(db) as store:
        engine = Engine(store, DEFAULT_SCHEMA)
        for n in range(30):
            await engine.patch(
                DocId("deals/old"), {"title": f"T{n}"}, origin=Origin("seed"), creating=n == 0
            )
        await engine.patch(
            DocId("deals/once"), {"title": "1"}, origin=Origin("seed"), creating=True
        )
        assert (await store.statistics()).compaction_debt == 29
    server = await server_factory(db, compaction=eager())
    await asyncio.wait_for(compactor_of(server).wait_idle(), 10)
    async with server.client() as admin:
        status = (await admin.get("/api/sync/status")).json()
    assert status["compaction_debt"] == 0
    assert status["compactor"]["compactions"] == 1 and status["compactor"]["scanning"] is False
    steps = await history_of(server, "deals/old")
    assert [(s.is_snapshot, s.view["title"]) for s in steps] == [(True, "T29")]


BACKLOG = 4500  # rows of one record written before the server started: five steps of 1,000


async def test_a_long_backlog_is_folded_in_steps_while_acks_keep_landing(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    """A record with thousands of rows is folded a bounded prefix per transaction: writes to it
    over /ws commit between the steps, every acked write stays, history after the snapshot
    is right and the store checks clean."""
    db = tmp_path / "server.db"
    long = DocId("contacts/long")
    async with SQLiteStore(db) as store:
        engine = Engine(store, DEFAULT_SCHEMA)
        document: Doc[object] = Doc()
        fields = document.get("record", type=Map)
        futures = []
        for n in range(BACKLOG):  # pipelined, as a busy server commits them
            before = document.get_state()
            fields["name"] = f"N{n}"
            update = document.get_update(before)
            futures.append(engine.write_nowait(long, update, origin=Origin("seed")))
        await asyncio.gather(*futures)
        assert (await store.statistics()).compaction_debt == BACKLOG - 1
    # Not due at start: the peer's writes tip it over, so the fold runs while they go on.
    server = await server_factory(db, compaction=eager(rows=BACKLOG + 100))
    compactor = compactor_of(server)
    between_steps: list[int] = []  # seqs of the peer's writes committed mid-fold

    def watch(committed: Sequence[Committed]) -> None:
        current = compactor.statistics().current
        if current is not None and 0 < current.rows_folded < current.rows:
            between_steps.extend(c.seq for c in committed if c.doc_id == long)

    compactor.store.add_commit_listener(watch)
    sent: list[tuple[int, str]] = []  # (cseq, phone)
    async with mux_peer(server.ws("/ws"), client="phone") as peer:
        while len(sent) < 5000 and (compactor.statistics().steps < 5 or len(sent) < 200):
            # Always 20 in flight, never a pause to wait for acks: whenever a step commits,
            # writes are queued behind it, and they commit before the next step is submitted.
            while len(sent) - len(peer.acks) >= 20:
                await asyncio.sleep(0.001)
            phone = f"+44 {len(sent)}"
            sent.append((await peer.edit(long, phone=phone), phone))
        acks = [(await peer.wait_ack(cseq, timeout=60), phone) for cseq, phone in sent]
    await asyncio.wait_for(compactor.wait_idle(), 30)
    statistics = compactor.statistics()
    assert statistics.compactions == 1 and statistics.steps >= 5, statistics
    assert statistics.failures == 0 and statistics.current is None
    assert between_steps, "no write committed between two steps of the fold"

    steps = await history_of(server, long)
    assert steps[0].is_snapshot and steps[0].seq > BACKLOG
    assert steps[-1].view["phone"] == max(acks)[1]
    for seq, phone in acks:
        if seq >= steps[0].seq:
            assert step_at(long, steps, seq).view["phone"] == phone
    async with SQLiteStore(server.db_path) as store:
        row = await store.get_record(long)
    assert row is not None and row.view["name"] == f"N{BACKLOG - 1}"
    assert row.view["phone"] == max(acks)[1]
    checked = await run_async("check", "--db", str(server.db_path), "--json")
    assert checked.exit_code == 0, checked.stdout


def test_a_policy_that_makes_no_sense_is_refused() -> None:
    with pytest.raises(ConfigError, match="rows must be at least 2, got 1"):
        CompactionPolicy(rows=1)
    with pytest.raises(ConfigError, match="bytes must be at least 1, got 0"):
        CompactionPolicy(bytes=0)


async def test_serve_compacts_by_default_with_its_thresholds_and_not_with_no_compact(
    tmp_path: Path,
) -> None:
    """The real `crdt-sync serve`: `--compact-rows` sets the threshold, `--no-compact` stops it;
    what happened shows in /api/sync/status and `crdt-sync status`."""
    for options, is_compacting in [(("--compact-rows", "3"), True), (("--no-compact",), False)]:
        db = tmp_path / f"{options[0].strip('-')}.db"
        admin, device = await make_tokens(db)
        process = spawn_server(db, options=options)
        try:
            async with mux_peer(
                f"ws://127.0.0.1:{process.port}/ws?token={device}", client="phone"
            ) as peer:
                for n in range(10):
                    await peer.wait_ack(await peer.edit("tasks/t", title=f"T{n}"))
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{process.port}",
                headers={"Authorization": f"Bearer {admin}"},
            ) as client:

                async def status() -> dict[str, object]:
                    return dict((await client.get("/api/sync/status")).json())

                if is_compacting:
                    await wait_for(lambda: _debt_below(status, 3), 20)
                    compactor = (await status())["compactor"]
                    assert isinstance(compactor, dict)
                    assert compactor["thresholds"] == {"rows": 3, "bytes": 64 * 1024}
                    assert compactor["compactions"] >= 3
                else:
                    answer = await status()
                    assert answer["compactor"] is None and answer["compaction_debt"] == 9
        finally:
            process.process.terminate()
            process.process.wait(15)
        shown = (await run_async("status", "--db", str(db), "--json")).json()
        assert (shown["snapshots"] == 1) is is_compacting
        assert shown["records_with_debt"] == (0 if shown["compaction_debt"] == 0 else 1)
    bad = run("serve", "--db", str(tmp_path / "x.db"), "--compact-rows", "1")
    assert bad.exit_code == 2 and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.db").exists()


async def _debt_below(status: Callable[[], Awaitable[dict[str, object]]], rows: int) -> bool:
    debt = (await status())["compaction_debt"]
    assert isinstance(debt, int)
    return debt < rows

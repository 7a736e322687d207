"""Bounded growth: under a steady stream of edits to a fixed set of records, a server that
compacts in the background keeps its file within a small multiple of the compacted size."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from pycrdt import Map, Text

from .clis import run, run_async
from .conftest import make_tokens, spawn_server, wait_for
from .peers import MuxPeer, mux_peer

RECORDS = 20
ROUNDS = 20  # each round: every record gets KEYSTROKES edits
KEYSTROKES = 40
WINDOW = 400  # characters each record's notes keep: typed at the end, cut at the start
MULTIPLE = 4  # what "a small multiple of its compacted size" means here


async def test_steady_edits_keep_the_file_within_a_small_multiple_of_its_compacted_size(
    tmp_path: Path,
) -> None:
    db = tmp_path / "steady.db"
    admin, device = await make_tokens(db)
    process = spawn_server(db, options=("--compact-rows", "20"))
    appended = 0  # bytes of every update sent: what the file would hold without compaction
    sizes: list[int] = []
    try:
        async with mux_peer(f"ws://127.0.0.1:{process.port}/ws?token={device}") as peer:
            for n in range(RECORDS):
                appended += await _create(peer, f"contacts/c{n}")
            for _ in range(ROUNDS):
                pending = []
                for n in range(RECORDS):
                    for _ in range(KEYSTROKES):
                        update = _keystroke(peer, f"contacts/c{n}")
                        appended += len(update)
                        pending.append(await peer.write(f"contacts/c{n}", update))
                for cseq in pending:  # pipelined: acks are awaited per round, not per edit
                    await peer.wait_ack(cseq, timeout=60)
                # Measured once the compactor caught up with the round: on a loaded machine
                # it may still be folding, and a sample would count rows it folds a moment
                # later.
                await wait_for(lambda: _compactor_idle(process.port, admin), 60)
                sizes.append(_store_bytes(db))
            expected = {f"contacts/c{n}": _notes(peer, f"contacts/c{n}") for n in range(RECORDS)}
    finally:
        process.process.terminate()
        process.process.wait(15)

    status = (await run_async("status", "--db", str(db), "--json")).json()
    assert status["snapshots"] == RECORDS  # every record was compacted by the server itself
    shown = await run_async("docs", "show", "contacts/c7", "--db", str(db), "--json")
    assert shown.json()["view"]["notes"] == expected["contacts/c7"]

    grown = db.stat().st_size  # the server stopped cleanly: its WAL is folded in
    compacted = _compacted_size(db, tmp_path / "compacted.db")
    assert compacted + appended > MULTIPLE * compacted  # without compaction it would not fit
    assert grown <= MULTIPLE * compacted, (grown, compacted, sizes)
    # And it stays flat rather than creeping up: the second half grew no more than the first.
    half = len(sizes) // 2
    assert sizes[-1] - sizes[half] <= max(sizes[half] - sizes[0], 64 * 1024), sizes


async def _create(peer: MuxPeer, doc_id: str) -> int:
    document = peer.document(doc_id)
    with document.transaction():
        fields = document.get("record", type=Map)
        fields["name"] = doc_id
        fields["notes"] = Text("x" * WINDOW)
    update = document.get_update()
    await peer.wait_ack(await peer.write(doc_id, update))
    return len(update)


def _keystroke(peer: MuxPeer, doc_id: str) -> bytes:
    """Type one character at the end of the notes and cut one at the start: a rolling text."""
    document = peer.document(doc_id)
    notes = document.get("record", type=Map)["notes"]
    before = document.get_state()
    with document.transaction():
        notes.insert(len(notes), "abcdefghijklmnopqrstuvwxyz"[len(str(notes)) % 26])
        del notes[0]
    return document.get_update(before)


async def _compactor_idle(port: int, admin: str) -> bool:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {admin}"}) as client:
        status = (await client.get(f"http://127.0.0.1:{port}/api/sync/status")).json()
    compactor = status["compactor"]
    return compactor["due"] == 0 and compactor["current"] is None and not compactor["scanning"]


def _notes(peer: MuxPeer, doc_id: str) -> str:
    return str(peer.document(doc_id).get("record", type=Map)["notes"])


def _store_bytes(db: Path) -> int:
    """Pages the store uses, without its free pages (reused) or its WAL (bounded by checkpoints)."""
    connection = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        (free,) = connection.execute("PRAGMA freelist_count").fetchone()
        (size,) = connection.execute("PRAGMA page_size").fetchone()
        return int((pages - free) * size)
    finally:
        connection.close()


def _compacted_size(db: Path, copy: Path) -> int:
    """The smallest file holding the same store: a copy, every record compacted by the real
    command, squeezed with VACUUM INTO."""
    _vacuum_into(db, copy)
    compacted = run("compact", "--all", "--db", str(copy))
    assert compacted.exit_code == 0, compacted.stderr
    squeezed = copy.with_name("squeezed.db")
    _vacuum_into(copy, squeezed)
    return squeezed.stat().st_size


def _vacuum_into(source: Path, target: Path) -> None:
    connection = sqlite3.connect(source)
    try:
        connection.execute("VACUUM INTO ?", (str(target),))
    finally:
        connection.close()

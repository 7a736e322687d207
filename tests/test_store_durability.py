"""An acknowledged append survives the writing process being killed (SIGKILL) at any moment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from crdt_sync.ids import DocId, Seq
from crdt_sync.store import SQLiteStore

ACKNOWLEDGED_BEFORE_KILL = 300

# Appends forever in waves of concurrent writers (so group commits are in flight when the kill
# lands) and prints "seq doc_id update-hex" for each append once it has returned.
WRITER = """
import asyncio, sys
from pycrdt import Doc, Map
from crdt_sync.ids import DocId, Origin
from crdt_sync.store import SQLiteStore

async def main(path):
    documents = [Doc() for _ in range(8)]
    async with SQLiteStore(path, synchronous="FULL") as store:
        async def append(n):
            document = documents[n % 8]
            before = document.get_state()
            document.get("record", type=Map)["n"] = n
            update = document.get_update(before)
            doc_id = f"contacts/{n % 8}"
            seq = await store.append(
                DocId(doc_id), update, view={"n": n}, is_deleted=False, origin=Origin("child")
            )
            print(seq, doc_id, update.hex(), flush=True)
        for wave in range(100_000):
            await asyncio.gather(*(append(wave * 10 + i) for i in range(10)))

asyncio.run(main(sys.argv[1]))
"""


def test_every_acknowledged_append_survives_a_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[tuple[int, str, bytes]] = []
    try:
        assert child.stdout is not None
        while len(acknowledged) < ACKNOWLEDGED_BEFORE_KILL:
            line = child.stdout.readline()
            assert line, f"the writer stopped early: {child.communicate()[1]}"
            seq_text, doc_id, update_hex = line.split()
            acknowledged.append((int(seq_text), doc_id, bytes.fromhex(update_hex)))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL

    cursor, stored = asyncio.run(read_back(path, {doc_id for _, doc_id, _ in acknowledged}))
    assert cursor >= max(seq for seq, _, _ in acknowledged)
    for seq, _, update in acknowledged:
        assert stored.get(seq) == update, f"acknowledged seq {seq} is missing"


async def read_back(path: Path, doc_ids: set[str]) -> tuple[Seq, dict[int, bytes]]:
    """The cursor and every stored update of `doc_ids`, by seq, from a fresh open of the file."""
    async with SQLiteStore(path) as store:
        stored: dict[int, bytes] = {}
        for doc_id in doc_ids:
            stored.update({entry.seq: entry.update for entry in await store.history(DocId(doc_id))})
        return await store.cursor(), stored

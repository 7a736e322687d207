"""A `crdt-sync serve` process killed with SIGKILL under load keeps every acknowledged update."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import websockets
from pycrdt import Map

from crdt_sync.ids import DocId
from crdt_sync.store import SQLiteStore

from .conftest import ServerProcess, make_tokens, wait_for
from .peers import MuxPeer


async def test_sigkill_under_load_loses_no_acknowledged_update(
    tmp_path: Path, server_process: Callable[..., ServerProcess]
) -> None:
    db_path = tmp_path / "crash.db"
    _, device = await make_tokens(db_path)
    process = server_process(db_path)
    url = f"ws://127.0.0.1:{process.port}/ws?token={device}"
    sent: dict[tuple[str, int], tuple[str, bytes]] = {}

    async def load(name: str, peer: MuxPeer) -> None:
        for i in range(5000):  # bounded; the kill comes long before the end
            # One record per write; pipelining many writes to one record is tested elsewhere.
            doc_id = f"contacts/{name}-{i}"
            doc = peer.document(doc_id)
            before = doc.get_state()
            doc.get("record", type=Map)["name"] = f"{name} {i}"
            update = doc.get_update(before)
            cseq = await peer.write(doc_id, update)
            sent[(name, cseq)] = (doc_id, update)
            if i % 50 == 49:
                await peer.wait_ack(cseq, timeout=30)  # a window of 50 writes in flight

    peers = []
    for name in ("a", "b", "c"):
        websocket = await websockets.connect(url)
        peer = MuxPeer(websocket, name)
        await peer.hello()
        await asyncio.wait_for(peer.caught_up.wait(), 10)
        peers.append(peer)
    loads = [asyncio.create_task(load(p.client, p)) for p in peers]
    try:
        await wait_for(lambda: sum(len(p.acks) for p in peers) >= 600, timeout=120)
        process.kill()
        await asyncio.gather(*loads, return_exceptions=True)
    finally:
        for task in loads:
            task.cancel()
        for peer in peers:
            await peer.close()
    acknowledged = [(p.client, cseq, seq) for p in peers for cseq, seq in p.acks.items()]
    assert len(acknowledged) >= 600

    server_process(db_path)  # restarts on the same file: recovery must not lose anything either
    async with SQLiteStore(db_path) as store:
        for name, cseq, seq in acknowledged:
            doc_id, update = sent[(name, cseq)]
            history = await store.history(DocId(doc_id))
            assert any(entry.seq == seq and entry.update == update for entry in history), (
                f"acknowledged update {name}/{cseq} (seq {seq}) on {doc_id} is missing"
            )

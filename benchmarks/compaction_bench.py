"""Background compaction: what it saves, and what it costs the writes it runs beside.

    python benchmarks/compaction_bench.py --quick     # 10,000 keystrokes, 10 s of steady load
    python benchmarks/compaction_bench.py             # 100,000 keystrokes, 30 s of steady load

1. One record edited N times (Y.Text keystrokes) through the engine's write path, with the
   background compactor (serve's defaults) and without: the file's size, and the cold load of
   the record (open the store, read its state, build its document) at points along the way.
2. A real `crdt-sync serve` taking a steady 1,000 updates/s over `/ws` (keystrokes into 20
   records): ack latency p50/p99/max with the compactor on and off (`--no-compact`).

Prints tables; asserts nothing (see README.md in this directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import websockets
from _common import ROOT, free_port, start_server

from crdt_sync.compactor import CompactionPolicy, Compactor
from crdt_sync.engine import Engine
from crdt_sync.ids import DocId, Origin
from crdt_sync.protocol import Acked, Hello, PeerSession, Role, SyncUpdate, Welcomed
from crdt_sync.record import document_from_state
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.store import SQLiteStore

ORIGIN = Origin("bench")
DOC = DocId("contacts/typed")
ALPHABET = "abcdefghijklmnopqrstuvwxyz "


def keystrokes(count: int) -> list[bytes]:
    """A record created, then `count` one-character edits to its notes: mostly typing at the
    end, every tenth a backspace, as someone writing."""
    document: pycrdt.Doc[Any] = pycrdt.Doc()
    fields = document.get("record", type=pycrdt.Map)
    updates = []
    with document.transaction():
        fields["name"] = "Typed"
        fields["notes"] = notes = pycrdt.Text()
    updates.append(document.get_update())
    for n in range(count):
        before = document.get_state()
        if n % 10 == 9 and len(notes):
            del notes[len(notes) - 1]
        else:
            notes.insert(len(notes), ALPHABET[n % len(ALPHABET)])
        updates.append(document.get_update(before))
    return updates


async def cold_load_ms(path: Path, runs: int = 5) -> float:
    """Median time to open the store, read the record's state and build its document."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        async with SQLiteStore(path) as store:
            document_from_state(await store.load(DOC))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def one_record(workdir: Path, count: int, compacting: bool) -> list[tuple[int, float]]:
    """Write the keystrokes; (edits so far, cold load ms) at a few points; returns them."""
    path = workdir / f"typed-{'on' if compacting else 'off'}.db"
    updates = keystrokes(count)
    points = sorted({count // 10, count // 2, count})
    loads: list[tuple[int, float]] = []
    async with SQLiteStore(path) as store:
        engine = Engine(store, DEFAULT_SCHEMA)
        compactor = Compactor(store, CompactionPolicy()) if compacting else None
        async with compactor if compactor is not None else contextlib.nullcontext():
            await engine.write(DOC, updates[0], origin=ORIGIN)
            written = 0
            for point in points:
                while written < point:  # pipelined, 200 in flight: group commits as a server
                    chunk = updates[1 + written : 1 + min(point, written + 200)]
                    futures = [engine.write_nowait(DOC, u, origin=ORIGIN) for u in chunk]
                    await asyncio.gather(*futures)
                    written += len(chunk)
                    await asyncio.sleep(0)  # the compactor's turn, as between a server's reads
                if compactor is not None:
                    await compactor.wait_idle()
                loads.append((point, await cold_load_ms(path)))
            stats = await store.statistics()
            if not compacting:  # what one compaction of the whole backlog costs, for contrast
                start = time.perf_counter()
                report = await store.compact(DOC)
                print(
                    f"  (then one `compact` of its {report.updates_before:,} rows:"
                    f" {time.perf_counter() - start:.2f} s, one transaction)"
                )
        await engine.settle()
    size = path.stat().st_size
    print(
        f"  compactor {'on ' if compacting else 'off'}: file {size / 1e6:8.2f} MB,"
        f" log rows {stats.log_entries:,}, "
        + ", ".join(f"cold load after {n:,}: {ms:.1f} ms" for n, ms in loads)
    )
    return loads


async def steady_load(workdir: Path, seconds: float, compacting: bool, rate: int = 1000) -> None:
    """`rate` updates/s over one /ws connection for `seconds`; ack latencies from send to ack."""
    path = workdir / f"steady-{'on' if compacting else 'off'}.db"
    admin, device = (_token(path, role, name) for role, name in [("admin", "a"), ("device", "d")])
    port = free_port()
    options = [] if compacting else ["--no-compact"]
    args = ["-m", "crdt_sync", "serve", "--db", str(path), "--port", str(port)]
    server = start_server([*args, "--log-level", "warning", *options], port, workdir / "s.log")
    try:
        records = 20
        total = int(seconds * rate)
        streams = [keystrokes(total // records + 1) for _ in range(records)]
        sent: dict[int, float] = {}
        acked: dict[int, float] = {}
        session = PeerSession(Role.CLIENT)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token={device}") as ws:
            welcomed = asyncio.Event()

            async def read() -> None:
                async for frame in ws:
                    for event in session.receive(bytes(frame)):  # type: ignore[arg-type]
                        if isinstance(event, Welcomed):
                            welcomed.set()
                        elif isinstance(event, Acked):
                            acked[event.cseq] = time.perf_counter()
                    for out in session.frames_to_send():
                        await ws.send(out)

            reader = asyncio.create_task(read())
            session.send(Hello("bench", 0, None))
            for out in session.frames_to_send():
                await ws.send(out)
            await asyncio.wait_for(welcomed.wait(), 30)
            start = time.perf_counter()
            for n in range(total):  # paced: update n leaves at start + n / rate
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                record, index = n % records, n // records
                cseq = n + 1
                doc_id = DocId(f"contacts/r{record}")
                session.send(SyncUpdate(doc_id, streams[record][index], cseq=cseq))
                sent[cseq] = time.perf_counter()
                for out in session.frames_to_send():
                    await ws.send(out)
            deadline = time.perf_counter() + 60
            while len(acked) < len(sent) and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            reader.cancel()
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {admin}"}) as client:
            status = (await client.get(f"http://127.0.0.1:{port}/api/sync/status")).json()
    finally:
        server.terminate()
        server.wait(30)
    latencies = sorted((acked[c] - sent[c]) * 1000 for c in sent if c in acked)
    compactor = status.get("compactor") or {}
    print(
        f"  compactor {'on ' if compacting else 'off'}: {len(latencies):,}/{len(sent):,} acked,"
        f" ack p50 {_pct(latencies, 0.5):.1f} ms, p99 {_pct(latencies, 0.99):.1f} ms,"
        f" max {latencies[-1]:.1f} ms; compactions {compactor.get('compactions', '-')},"
        f" debt at the end {status['compaction_debt']} rows, file {path.stat().st_size / 1e6:.2f} MB"
    )


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def _token(path: Path, role: str, name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "crdt_sync", "token", "create", "--role", role, "--name", name,
         "--db", str(path)],
        capture_output=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return done.stdout.decode().strip()


async def main(quick: bool) -> None:
    count, seconds = (10_000, 10.0) if quick else (100_000, 30.0)
    with tempfile.TemporaryDirectory(prefix="crdt-sync-bench-") as directory:
        workdir = Path(directory)
        print(f"One record, {count:,} keystrokes through Engine.write (serve's default policy)")
        for compacting in (False, True):
            await one_record(workdir, count, compacting)
        print(f"\nA steady 1,000 updates/s over /ws for {seconds:g} s (20 records, keystrokes)")
        for compacting in (False, True):
            await steady_load(workdir, seconds, compacting)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, about a minute")
    asyncio.run(main(parser.parse_args().quick))

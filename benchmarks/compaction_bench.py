"""Background compaction: what it saves, and what it costs the writes it runs beside.

    python benchmarks/compaction_bench.py --quick     # 10,000 keystrokes, 10 s of steady load
    python benchmarks/compaction_bench.py             # 100,000 keystrokes, 30 s of steady load

1. One record edited N times (Y.Text keystrokes) through the engine's write path, with the
   background compactor (serve's defaults) and without: the file's size, and the cold load of
   the record (open the store, read its state, build its document) at points along the way.
2. A real `crdt-sync serve` taking a steady 1,000 updates/s over `/ws` (keystrokes into 20
   records): ack latency p50/p99/max with the compactor on and off (`--no-compact`).
3. One record's N keystrokes appended to the store uncompacted (straight to the store: what
   a server with `--no-compact` leaves), then a compactor started on it while a steady 1,000
   updates/s go to 20 other records through Engine.write: write latency while the backlog is
   folded a bounded prefix per transaction (the store's default), beside the same with the
   whole backlog in one transaction (what compaction did before it was stepped).

`--parts 2 3` runs only those parts (part 1 takes most of the time: each keystroke through the
engine reads the record's notes, and reading a Y.Text walks every item it ever held).

Prints tables; asserts nothing (see README.md in this directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
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
from crdt_sync.store.compaction import STEP_ROWS

ORIGIN = Origin("bench")
DOC = DocId("contacts/typed")
ALPHABET = "abcdefghijklmnopqrstuvwxyz "
WINDOW = 4000  # characters of notes, at most: the schema allows 10,000 (DEFAULT_MAX_LENGTH)


def keystrokes(count: int) -> list[bytes]:
    """A record created, then `count` one-character edits to its notes, as someone writing:
    typing at the end, every tenth a backspace; once the notes are WINDOW long, revising
    them: a character deleted here, one inserted there, so the text stays within the limit.

    Each update is its transaction's, as an editor sends it (Yjs's `update` event). Not
    `get_update(state_before)`: that carries the document's whole delete set every time, so
    with every backspace each later keystroke grew (to ~1 KB after 10,000 of them).
    """
    document: pycrdt.Doc[Any] = pycrdt.Doc()
    fields = document.get("record", type=pycrdt.Map)
    updates: list[bytes] = []
    subscription = document.observe(lambda event: updates.append(event.update))
    with document.transaction():
        fields["name"] = "Typed"
        fields["notes"] = notes = pycrdt.Text()
    for n in range(count):
        length = len(notes)
        if length >= WINDOW:
            at = (n * 7919) % length  # spread over the text: a prime stride
            if n % 2:
                del notes[at]
            else:
                notes.insert(at, ALPHABET[n % len(ALPHABET)])
        elif n % 10 == 9 and length:
            del notes[length - 1]
        else:
            notes.insert(length, ALPHABET[n % len(ALPHABET)])
    document.unobserve(subscription)
    assert len(updates) == count + 1, "one update per transaction"
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
        await engine.settle()
    size = path.stat().st_size
    print(
        f"  compactor {'on ' if compacting else 'off'}: file {size / 1e6:8.2f} MB"
        f" ({_free_share(path):.0%} free pages), log rows {stats.log_entries:,}, "
        + ", ".join(f"cold load after {n:,}: {ms:.1f} ms" for n, ms in loads)
    )
    return loads


def _free_share(path: Path) -> float:
    """The file's share of pages on SQLite's freelist: space it reuses but does not give back."""
    db = sqlite3.connect(path)
    try:
        (free,) = db.execute("PRAGMA freelist_count").fetchone()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
    finally:
        db.close()
    return free / pages if pages else 0.0


async def _backlog(workdir: Path, count: int) -> Path:
    """A store holding one record's `count` keystrokes, uncompacted (made once, then copied)."""
    path = workdir / "backlog.db"
    if path.exists():
        return path
    updates = keystrokes(count)
    async with SQLiteStore(path) as store:
        for start in range(0, len(updates), 1000):  # group commits of 1,000, as a busy server's
            futures = [
                store.append_nowait(DOC, u, view={"name": "Typed"}, is_deleted=False, origin=ORIGIN)
                for u in updates[start : start + 1000]
            ]
            await asyncio.gather(*futures)
    return path


async def backlog_under_load(
    workdir: Path, count: int, step: int | None, seconds: float, rate: int = 1000
) -> None:
    """Fold one record's `count` uncompacted rows while `rate` writes/s go to 20 other records.

    `step`: rows per compaction transaction; None for the store's default. The latency of a
    write is from `write_nowait` to its commit; `during` counts those started while the
    backlog's record was being folded.
    """
    path = workdir / f"backlog-{step or 'stepped'}.db"
    shutil.copy(await _backlog(workdir, count), path)
    options = {} if step is None else {"compaction_step": step, "compaction_step_bytes": 1 << 40}
    streams = [keystrokes(int(seconds * rate) // 20 + 1) for _ in range(20)]
    latencies: list[tuple[float, bool]] = []  # (ms, started while the backlog was folded)
    async with SQLiteStore(path, **options) as store:
        engine = Engine(store, DEFAULT_SCHEMA)
        folding: list[float] = []  # when writes first and last saw the backlog being folded
        async with Compactor(store, CompactionPolicy()) as compactor:
            start = time.perf_counter()
            total = int(seconds * rate)
            pending = []
            for n in range(total):  # paced: write n starts at start + n / rate
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                current = compactor.statistics().current
                during = current is not None and current.doc_id == DOC
                began = time.perf_counter()
                if during:
                    if not folding:
                        folding.append(began)
                    folding[1:] = [began]  # the last write so far that saw it
                record, index = n % 20, n // 20
                future = engine.write_nowait(
                    DocId(f"contacts/r{record}"), streams[record][index], origin=ORIGIN
                )
                future.add_done_callback(
                    lambda _, b=began, d=during: latencies.append(
                        ((time.perf_counter() - b) * 1000, d)
                    )
                )
                pending.append(future)
            await asyncio.gather(*pending)
            current = compactor.statistics().current
            still_folding = current is not None and current.doc_id == DOC
            await compactor.wait_idle()
            stats = compactor.statistics()
        await engine.settle()
    backlog_steps = stats.steps - stats.compactions + 1  # the other records': one step each
    during = sorted(ms for ms, d in latencies if d)
    every = sorted(ms for ms, _ in latencies)
    name = "one transaction" if step is not None else f"steps of {STEP_ROWS:,} rows"
    fold = (
        "longer than the run"
        if still_folding or len(folding) < 2
        else f"about {folding[1] - folding[0]:.2f} s"
    )
    print(
        f"  {name:>22}: backlog folded in {fold} ({backlog_steps} transactions);"
        f" writes while folding: {len(during):,}, p50 {_pct(during, 0.5):.1f} ms,"
        f" p99 {_pct(during, 0.99):.1f} ms, max {_pct(during, 1.0):.1f} ms;"
        f" all {len(every):,}: p50 {_pct(every, 0.5):.1f} ms, p99 {_pct(every, 0.99):.1f} ms"
    )


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
        f" max {latencies[-1]:.1f} ms, over 250 ms {sum(ms > 250 for ms in latencies):,};"
        f" compactions {compactor.get('compactions', '-')},"
        f" debt at the end {status['compaction_debt']} rows, file {path.stat().st_size / 1e6:.2f} MB"
    )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def _token(path: Path, role: str, name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "crdt_sync", "token", "create", "--role", role, "--name", name,
         "--db", str(path)],
        capture_output=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return done.stdout.decode().strip()


async def main(quick: bool, parts: set[int]) -> None:
    count, seconds = (10_000, 10.0) if quick else (100_000, 30.0)
    with tempfile.TemporaryDirectory(prefix="crdt-sync-bench-") as directory:
        workdir = Path(directory)
        if 1 in parts:
            print(f"One record, {count:,} keystrokes through Engine.write (serve's default policy)")
            for compacting in (False, True):
                await one_record(workdir, count, compacting)
        if 2 in parts:
            print(f"\nA steady 1,000 updates/s over /ws for {seconds:g} s (20 records, keystrokes)")
            for compacting in (False, True):
                await steady_load(workdir, seconds, compacting)
        if 3 in parts:
            print(
                f"\nA {count:,}-row log folded by a compactor while 1,000 updates/s go to other"
                f" records ({seconds / 2:g} s)"
            )
            for step in (None, 10**9):
                await backlog_under_load(workdir, count, step, seconds / 2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, about a minute")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    arguments = parser.parse_args()
    asyncio.run(main(arguments.quick, set(arguments.parts)))

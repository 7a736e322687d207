"""Figures for many nodes: the PostgreSQL store beside SQLite, one node and three.

    python benchmarks/nodes_bench.py [--quick] [--postgres URL]

Prints a table; asserts nothing. Store level (no HTTP): what the nodes' writers and catch-up
cost, in one run on the same machine.

- appends/s with 100 concurrent writers: SQLiteStore (one file), one PostgresStore, and three
  PostgresStores on one schema (three nodes' writers contending for the seq lock);
- the seq lock's share of a commit: one PostgresStore with max_batch=1, so every append is one
  transaction (key check, seq lock, inserts, COMMIT), against the same rows written by plain
  INSERTs with no lock, one transaction each;
- catch-up: a client whose node was down while N updates were committed reads them all with
  `log_since` pages of 1,000 (what /ws catch-up does): seconds for N = 100,000 (10,000 quick);
  and, server level, the node started again and a /ws client with the cursor from before
  until its caught-up frame;
- server level (real `crdt-sync serve` processes, /ws clients over 127.0.0.1): updates/s of
  24 writers (each its own record, one write in flight, round-robin over the nodes) for a
  few seconds, and the fan-out latency from a write's send to its arrival at a watcher on
  every node (p50, p99; with 3 nodes also the p99 of watchers on another node than the
  writer's): one SQLite node, one PostgreSQL node, three PostgreSQL nodes with a Redis bus;
- light load across nodes: on three PostgreSQL nodes, a /ws writer on node A edits one record
  20 times a second while a y-websocket client on node C applies what arrives: p50 and p99
  from a send until C holds the edit.

Each PostgreSQL run uses a fresh schema of the database at --postgres (default
CRDT_SYNC_TEST_POSTGRES or postgresql://postgres@127.0.0.1:5432/test), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import websockets
from pycrdt import Doc, Map

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import free_port, start_server

from crdt_sync.ids import DocId, Origin, Seq
from crdt_sync.protocol import (
    Acked,
    CaughtUpReceived,
    Hello,
    PeerSession,
    RemoteUpdate,
    Role,
    SyncUpdate,
)
from crdt_sync.protocol.ysync import (
    YjsSyncStep1,
    YjsSyncStep2,
    YjsUpdate,
    decode_yjs_message,
    encode_sync_step1,
    encode_sync_step2,
)
from crdt_sync.server.auth import create_token
from crdt_sync.store import SQLiteStore, store_at
from crdt_sync.store.postgres import PostgresStore


def contact_update() -> bytes:
    document: Doc[Any] = Doc()
    document.get("record", type=Map)["name"] = "Ann"
    return document.get_update()


UPDATE = contact_update()  # one real update; the store does not look inside it


@contextmanager
def schema(url: str) -> Iterator[str]:
    name = f"crdt_sync_bench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {name}".encode())
        try:
            sep = "&" if "?" in url else "?"
            yield f"{url}{sep}options={quote(f'-csearch_path={name}')}"
        finally:
            db.execute(f"DROP SCHEMA {name} CASCADE".encode())


async def appends_per_second(stores: list[SQLiteStore | PostgresStore], total: int) -> float:
    writers = 100

    async def writer(w: int) -> None:
        store = stores[w % len(stores)]
        for n in range(total // writers):
            await store.append(
                DocId(f"contacts/w{w}-{n % 10}"), UPDATE, view={"name": "Ann"},
                is_deleted=False, origin=Origin("bench"),
            )  # fmt: skip

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return total / (time.perf_counter() - started)


async def sqlite_rate(total: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteStore(Path(tmp) / "bench.db") as store:
            return await appends_per_second([store], total)


async def postgres_rate(url: str, nodes: int, total: int) -> float:
    with schema(url) as where:
        stores = [PostgresStore(where, readers=1) for _ in range(nodes)]
        for store in stores:
            await store.__aenter__()
        try:
            return await appends_per_second(list(stores), total)
        finally:
            for store in stores:
                await store.close()


async def commit_costs(url: str, commits: int) -> tuple[float, float]:
    """(ms per one-append transaction through the store, ms per plain INSERT transaction)."""
    with schema(url) as where:
        async with PostgresStore(where, max_batch=1, readers=1) as store:
            started = time.perf_counter()
            for n in range(commits):
                await store.append(
                    DocId(f"contacts/{n % 50}"), UPDATE, view={"name": "Ann"},
                    is_deleted=False, origin=Origin("bench"),
                )  # fmt: skip
            store_ms = (time.perf_counter() - started) * 1000 / commits
        async with await psycopg.AsyncConnection.connect(where, autocommit=True) as db:
            await db.execute("CREATE TABLE plain_log (LIKE updates INCLUDING ALL)")
            started = time.perf_counter()
            for n in range(commits):
                await db.execute(
                    "INSERT INTO plain_log (seq, doc_id, collection, data, origin, at)"
                    " VALUES (%s, %s, 'contacts', %s, 'bench', 0)",
                    (n + 1, f"contacts/{n % 50}", UPDATE),
                )
            plain_ms = (time.perf_counter() - started) * 1000 / commits
    return store_ms, plain_ms


async def fill(writer: PostgresStore, updates: int) -> None:
    """`updates` appends over 1,000 records, a thousand at a time."""
    for start in range(0, updates, 1000):
        await asyncio.gather(
            *(
                writer.append(
                    DocId(f"contacts/{n % 1000}"),
                    UPDATE,
                    view={"name": "Ann"},
                    is_deleted=False,
                    origin=Origin("bench"),
                )
                for n in range(start, min(updates, start + 1000))
            )
        )


async def catch_up_seconds(url: str, updates: int) -> float:
    with schema(url) as where:
        async with PostgresStore(where, readers=1) as writer:
            await fill(writer, updates)
        async with PostgresStore(where, readers=1) as node:  # the node back up
            started = time.perf_counter()
            cursor, seen = Seq(0), 0
            while True:
                page = await node.log_since(cursor, limit=1000)
                if not page:
                    break
                seen += len(page)
                cursor = page[-1].seq
            elapsed = time.perf_counter() - started
    assert seen == updates, (seen, updates)
    return elapsed


# Server level: real nodes, /ws clients.

WRITERS = 24


class Client:
    """A /ws client: sends edits and notes when each is acked, and when updates arrive."""

    def __init__(self, websocket: Any, name: str) -> None:
        self.websocket = websocket
        self.session = PeerSession(Role.CLIENT)
        self.name = name
        self.acks: dict[int, asyncio.Future[int]] = {}
        self.arrived: dict[int, float] = {}  # seq -> perf_counter at arrival
        self.caught_up = asyncio.Event()
        self.count = 0
        self._cseq = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None

    async def start(self, cursor: int = 0) -> None:
        self.session.send(Hello(self.name, cursor, None))
        await self._flush()
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self.caught_up.wait(), 600)

    async def write(self, doc_id: str, update: bytes) -> int:
        cseq = next(self._cseq)
        self.acks[cseq] = asyncio.get_running_loop().create_future()
        self.session.send(SyncUpdate(DocId(doc_id), update, cseq=cseq))
        await self._flush()
        try:
            return await asyncio.wait_for(self.acks[cseq], 60)
        finally:
            del self.acks[cseq]

    async def _flush(self) -> None:
        for frame in self.session.frames_to_send():
            await self.websocket.send(frame)

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self.websocket:
                now = time.perf_counter()
                for event in self.session.receive(bytes(frame)):
                    if isinstance(event, RemoteUpdate) and event.seq is not None:
                        self.arrived[event.seq] = now
                        self.count += 1
                    elif isinstance(event, CaughtUpReceived):
                        self.caught_up.set()
                    elif isinstance(event, Acked) and event.cseq in self.acks:
                        self.acks[event.cseq].set_result(event.seq)
                await self._flush()

    async def close(self) -> None:
        await self.websocket.close()
        if self._reader is not None:
            await self._reader


@contextlib.asynccontextmanager
async def client(port: int, token: str, name: str, cursor: int = 0) -> AsyncIterator[Client]:
    url = f"ws://127.0.0.1:{port}/ws?token={token}"
    async with websockets.connect(url, max_size=None) as websocket:
        peer = Client(websocket, name)
        await peer.start(cursor)
        try:
            yield peer
        finally:
            await peer.close()


def edits(writer: int) -> Iterator[bytes]:
    document: Doc[Any] = Doc()
    record = document.get("record", type=Map)
    for n in itertools.count():
        before = document.get_state()
        record["name"] = f"writer {writer} edit {n}"
        yield document.get_update(before)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@contextlib.contextmanager
def nodes(store: str, count: int, bus: str | None, logs: Path) -> Iterator[list[int]]:
    """`count` serve processes on `store` (a file or a URL); their ports."""
    ports, processes = [], []
    try:
        for index in range(count):
            port = free_port()
            where = ["--store", store] if store.startswith("postgresql") else ["--db", store]
            args = ["-m", "crdt_sync", "serve", *where, "--port", str(port),
                    "--log-level", "warning", "--no-compact"]  # fmt: skip
            if bus is not None:
                args += ["--bus", bus]
            processes.append(start_server(args, port, logs / f"node{index}.log", timeout=60))
            ports.append(port)
        yield ports
    finally:
        for process in processes:
            process.kill()
            process.wait()


async def device_token(store: str) -> str:
    async with store_at(store if store.startswith("postgresql") else Path(store)) as opened:
        return await create_token(opened, name="bench", role="device")


async def live_load(store: str, count: int, bus: str | None, seconds: float) -> dict[str, float]:
    """Updates/s and fan-out latencies (ms) of WRITERS writers over `count` nodes."""
    token = await device_token(store)
    with tempfile.TemporaryDirectory() as logs, nodes(store, count, bus, Path(logs)) as ports:
        async with contextlib.AsyncExitStack() as stack:
            watchers = [
                await stack.enter_async_context(client(port, token, f"watcher-{i}"))
                for i, port in enumerate(ports)
            ]
            writers = [
                await stack.enter_async_context(client(ports[w % count], token, f"writer-{w}"))
                for w in range(WRITERS)
            ]
            sent: dict[int, tuple[float, int]] = {}  # seq -> (send time, writer's node)
            deadline = time.perf_counter() + seconds

            async def write(w: int) -> None:
                updates = edits(w)
                while time.perf_counter() < deadline:
                    at = time.perf_counter()
                    seq = await writers[w].write(f"contacts/bench-{w}", next(updates))
                    sent[seq] = (at, w % count)

            started = time.perf_counter()
            await asyncio.gather(*(write(w) for w in range(WRITERS)))
            rate = len(sent) / (time.perf_counter() - started)
            settle = time.perf_counter() + 30
            while time.perf_counter() < settle and any(
                not set(sent) <= set(w.arrived) for w in watchers
            ):
                await asyncio.sleep(0.05)
    every, remote = [], []
    for node, watcher in enumerate(watchers):
        for seq, (at, origin) in sent.items():
            if seq in watcher.arrived:
                latency = (watcher.arrived[seq] - at) * 1000
                every.append(latency)
                if origin != node:
                    remote.append(latency)
    return {
        "rate": rate,
        "p50": percentile(every, 0.5),
        "p99": percentile(every, 0.99),
        "remote_p99": percentile(remote, 0.99),
        "missing": sum(len(set(sent) - set(w.arrived)) for w in watchers),
    }


async def light_convergence(store: str, bus: str, seconds: float) -> dict[str, float]:
    """Light load on 3 nodes: a /ws writer on node A edits one record 20 times a second while
    a y-websocket client of that record on node C (the bytes any stock Yjs client sends and
    reads) applies what arrives; ms from each send to the moment C's copy holds that edit."""
    token = await device_token(store)
    doc_id = "contacts/light"
    with tempfile.TemporaryDirectory() as logs, nodes(store, 3, bus, Path(logs)) as ports:
        url = f"ws://127.0.0.1:{ports[2]}/yjs/{doc_id}?token={token}"
        async with client(ports[0], token, "light-writer") as writer:
            updates = edits(0)
            await writer.write(doc_id, next(updates))  # the record exists before C joins
            async with websockets.connect(url) as reader:
                copy: Doc[Any] = Doc()
                fields = copy.get("record", type=Map)
                seen: dict[int, float] = {}  # edit number -> perf_counter when C held it

                async def read() -> None:
                    with contextlib.suppress(websockets.ConnectionClosed):
                        async for frame in reader:
                            message = decode_yjs_message(frame)
                            if isinstance(message, YjsSyncStep1):
                                await reader.send(encode_sync_step2(b"\x00\x00"))
                            elif isinstance(message, YjsSyncStep2 | YjsUpdate):
                                copy.apply_update(message.update)
                                name = str(fields.get("name", ""))
                                seen.setdefault(int(name.rsplit(" ", 1)[1]), time.perf_counter())

                await reader.send(encode_sync_step1(copy.get_state()))
                reading = asyncio.create_task(read())
                sent: dict[int, float] = {}
                for n in range(1, int(seconds * 20) + 1):
                    sent[n] = time.perf_counter()
                    await writer.write(doc_id, next(updates))
                    await asyncio.sleep(max(0.0, sent[n] + 0.05 - time.perf_counter()))
                settle = time.perf_counter() + 10
                while len(sent) not in seen and time.perf_counter() < settle:
                    await asyncio.sleep(0.01)
                reading.cancel()
    # An edit counts as arrived when C's copy holds it or a later one (a merged frame).
    latencies, arrived = [], float("inf")
    for n in sorted(sent, reverse=True):
        arrived = min(arrived, seen.get(n, float("inf")))
        latencies.append((arrived - sent[n]) * 1000)
    return {
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "edits": len(sent),
        "missing": sum(1 for latency in latencies if latency == float("inf")),
    }


async def node_catch_up(url: str, bus: str | None, updates: int) -> tuple[float, float]:
    """(s until a restarted node answers, s until its /ws client caught up `updates`)."""
    with schema(url) as where:
        token = await device_token(where)
        async with PostgresStore(where, readers=1) as writer:  # the node is down meanwhile
            await fill(writer, updates)
        with tempfile.TemporaryDirectory() as logs:
            started = time.perf_counter()
            with nodes(where, 1, bus, Path(logs)) as (port,):
                up = time.perf_counter() - started
                started = time.perf_counter()
                async with client(port, token, "back") as peer:
                    caught = time.perf_counter() - started
                    assert peer.count == updates, (peer.count, updates)
    return up, caught


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CRDT_SYNC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis", default=os.environ.get("CRDT_SYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 8.0
    live: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        live.append(("SQLite, 1 node", await live_load(f"{tmp}/live.db", 1, None, seconds)))
    with schema(args.postgres) as where:
        live.append(("PostgreSQL, 1 node", await live_load(where, 1, args.redis, seconds)))
    with schema(args.postgres) as where:
        live.append(("PostgreSQL, 3 nodes", await live_load(where, 3, args.redis, seconds)))
    for name, figures in live:
        print(
            f"server, {WRITERS} /ws writers, {name:<20} {figures['rate']:>7,.0f} updates/s;"
            f" fan-out p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms"
            + (
                f" (p99 on another node {figures['remote_p99']:.1f} ms)"
                if name.endswith("3 nodes")
                else ""
            )
            + (f"; {figures['missing']:.0f} MISSING" if figures["missing"] else "")
        )
    with schema(args.postgres) as where:
        light = await light_convergence(where, args.redis, seconds * 2)
    print(
        f"light load, 3 nodes: /ws writer on A at 20 edits/s, y-websocket client on C:"
        f" {light['edits']:.0f} edits, send to C holding it p50 {light['p50']:.1f} ms,"
        f" p99 {light['p99']:.1f} ms"
        + (f"; {light['missing']:.0f} MISSING" if light["missing"] else "")
    )
    total = 5_000 if args.quick else 30_000
    rows = [
        ("appends/s, 100 writers, SQLite (1 node)", f"{await sqlite_rate(total):,.0f}"),
        ("appends/s, 100 writers, PostgreSQL, 1 node", f"{await postgres_rate(args.postgres, 1, total):,.0f}"),
        ("appends/s, 100 writers, PostgreSQL, 3 nodes", f"{await postgres_rate(args.postgres, 3, total):,.0f}"),
    ]  # fmt: skip
    store_ms, plain_ms = await commit_costs(args.postgres, 300 if args.quick else 2000)
    rows.append(("ms per one-append commit: store (seq lock) / plain INSERT", f"{store_ms:.2f} / {plain_ms:.2f}"))  # fmt: skip
    updates = 10_000 if args.quick else 100_000
    seconds = await catch_up_seconds(args.postgres, updates)
    rows.append((f"catch-up of {updates:,} updates by log_since pages", f"{seconds:.2f} s"))
    up, caught = await node_catch_up(args.postgres, args.redis, updates)
    rows.append((f"node down while {updates:,} committed: up again / its /ws client caught up", f"{up:.2f} s / {caught:.2f} s"))  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    asyncio.run(main())

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
  `log_since` pages of 1,000 (what /ws catch-up does): seconds for N = 100,000 (10,000 quick).

Each PostgreSQL run uses a fresh schema of the database at --postgres (default
CRDT_SYNC_TEST_POSTGRES or postgresql://postgres@127.0.0.1:5432/test), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from pycrdt import Doc, Map

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crdt_sync.ids import DocId, Origin, Seq
from crdt_sync.store import SQLiteStore
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


async def catch_up_seconds(url: str, updates: int) -> float:
    with schema(url) as where:
        async with PostgresStore(where, readers=1) as writer:
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CRDT_SYNC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
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
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    asyncio.run(main())

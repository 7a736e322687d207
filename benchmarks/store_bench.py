"""Figures for the SQLite store: group commit, changes_since at scale, compaction.

    python benchmarks/store_bench.py [--quick]

Prints tables; asserts nothing. Each figure is the median of a few runs, on fresh files in a
temporary directory, with the store's defaults (synchronous=FULL, WAL).

- Appends/s with 1, 10 and 100 concurrent writers, group commit (the default, max_batch=1000)
  against one commit per update: the same SQLiteStore with max_batch=1, so the only difference
  is how many updates share a transaction (and its fsync of the WAL).
- changes_since(cursor, limit=1000) for 1,000 changes among 10k, 100k and 1M records. The big
  stores are built fast by bulk executemany INSERTs straight into the store's own `updates` and
  `records` tables (one real contact update as filler for every row), then 1,000 real changes
  are appended through the store; only the changes_since call is timed.
- Compaction of typical contacts with ~10 edits each: time, and stored bytes per record before
  and after, against the size of the record's JSON view.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import bulk_fill

from crdt_sync.ids import DocId, Origin, Seq
from crdt_sync.store import SQLiteStore

ORIGIN = Origin("bench")
RUNS = 5
FIRST_NAMES = ["Ann", "Bob", "Chloé", "Dario", "Eva", "Farid", "Grace", "Hugo", "Inès", "Jon"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay Industries"]


class Contact:
    """A contact's CRDT document; `edit()` returns the update of one edit and the view after it."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.document: Doc[Any] = Doc()
        self.record = self.document.get("record", type=Map)
        self.edits = 0

    def edit(self) -> tuple[bytes, dict[str, Any]]:
        before = self.document.get_state()
        with self.document.transaction():
            for name, value in self._fields().items():
                self.record[name] = value
        self.edits += 1
        return self.document.get_update(before), self.record.to_py() or {}

    def _fields(self) -> dict[str, Any]:
        rng = self.rng
        if self.edits == 0:
            first = rng.choice(FIRST_NAMES)
            return {
                "name": f"{first} {rng.choice('BCDLMRST')}.",
                "email": f"{first.lower()}{rng.randrange(1000)}@example.com",
                "phone": f"+33 1 {rng.randrange(10**8):08d}",
                "company": rng.choice(COMPANIES),
                "stage": "lead",
                "score": rng.randrange(100),
            }
        field = rng.choice(["phone", "stage", "score", "notes", "title", "company"])
        values = {
            "phone": f"+33 6 {rng.randrange(10**8):08d}",
            "stage": rng.choice(["lead", "qualified", "customer", "lost"]),
            "score": rng.randrange(100),
            "notes": f"Called on day {rng.randrange(365)}, follow up about the renewal.",
            "title": rng.choice(["CTO", "Buyer", "Head of Sales", "Founder"]),
            "company": rng.choice(COMPANIES),
        }
        return {field: values[field]}


async def median_of(runs: int, measure: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await measure() for _ in range(runs)])


# Group commit


async def appends_per_second(workdir: Path, writers: int, total: int, max_batch: int) -> float:
    rng = random.Random(writers)
    path = Path(tempfile.mkdtemp(dir=workdir)) / "appends.db"
    contacts = [Contact(rng) for _ in range(writers)]
    per_writer = [[contacts[w].edit() for _ in range(total // writers)] for w in range(writers)]
    async with SQLiteStore(path, max_batch=max_batch) as store:

        async def writer(w: int) -> None:
            for update, view in per_writer[w]:
                await store.append(
                    DocId(f"contacts/{w}"), update, view=view, is_deleted=False, origin=ORIGIN
                )

        start = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed = time.perf_counter() - start
    return writers * (total // writers) / elapsed


async def bench_group_commit(workdir: Path, quick: bool) -> None:
    print(f"\nAppends/s (synchronous=FULL; medians of {RUNS} runs, each pairing both modes)")
    print(f"{'writers':>8} {'group commit':>14} {'1 commit/update':>16} {'ratio':>7}")
    ratio = commit_ms = 0.0
    for writers in (1, 10, 100):
        group_total = (5_000 if quick else 20_000) if writers > 1 else (500 if quick else 2_000)
        single_total = 500 if quick else 2_000
        runs = []
        for _ in range(RUNS):  # paired, so a slow spell of the disk hits both modes alike
            group = await appends_per_second(workdir, writers, group_total, 1000)
            single = await appends_per_second(workdir, writers, single_total, 1)
            runs.append((group, single, group / single))
        group, single, ratio = (statistics.median(column) for column in zip(*runs))
        commit_ms = commit_ms or 1000 / single  # one writer, one commit at a time
        print(f"{writers:>8} {group:>14,.0f} {single:>16,.0f} {ratio:>6.1f}x")
    print(f"group commit / one commit per update at 100 writers: {ratio:.1f}x (target >= 20x)")
    print(
        f"(one append alone, commit and fsync of the WAL included, takes {commit_ms:.2f} ms here)"
    )


# changes_since at scale


async def changes_since_seconds(workdir: Path, records: int) -> tuple[float, float]:
    """(seconds to build, median seconds of changes_since for 1,000 changes)."""
    path = workdir / f"changes-{records}.db"
    start = time.perf_counter()
    async with SQLiteStore(path):
        pass  # creates the schema
    update, view = Contact(random.Random(0)).edit()
    view_json = json.dumps(view, separators=(",", ":"))
    bulk_fill(path, records, update, lambda _: view_json)  # one filler for every record
    rng = random.Random(records)
    async with SQLiteStore(path) as store:
        cursor = await store.cursor()
        contacts = [(rng.randrange(records), Contact(rng)) for _ in range(1_000)]
        await asyncio.gather(*(change(store, i, contact) for i, contact in contacts))
        built = time.perf_counter() - start

        async def measure() -> float:
            gc.disable()  # as timeit does: a collection of earlier garbage is not this call's
            try:
                start = time.perf_counter()
                await store.changes_since(Seq(cursor), limit=1000)
                return time.perf_counter() - start
            finally:
                gc.enable()

        timed = await median_of(15, measure)
    path.unlink()
    return built, timed


async def change(store: SQLiteStore, i: int, contact: Contact) -> None:
    update, view = contact.edit()
    await store.append(
        DocId(f"contacts/{i:07d}"), update, view=view, is_deleted=False, origin=ORIGIN
    )


async def bench_changes_since(workdir: Path, quick: bool) -> None:
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    print("\nchanges_since(cursor, limit=1000) for 1,000 changes (median of 15 calls)")
    print(f"{'records':>10} {'build s':>9} {'query ms':>10}")
    timings = {}
    for records in sizes:
        built, timed = await changes_since_seconds(workdir, records)
        timings[records] = timed
        print(f"{records:>10,} {built:>9.1f} {timed * 1000:>10.2f}")
    largest = sizes[-1]
    print(
        f"ratio {largest:,} / 10,000 records: {timings[largest] / timings[10_000]:.2f}x (target < 2x)"
    )


# Compaction


async def bench_compaction(workdir: Path, quick: bool) -> None:
    count = 200 if quick else 1_000
    rng = random.Random(7)
    path = workdir / "compaction.db"
    json_bytes = 0
    async with SQLiteStore(path) as store:
        for n in range(count):
            contact = Contact(rng)
            for _ in range(10):
                update, view = contact.edit()
                await store.append(
                    DocId(f"contacts/{n}"), update, view=view, is_deleted=False, origin=ORIGIN
                )
            json_bytes += len(json.dumps(view, ensure_ascii=False).encode())
        start = time.perf_counter()
        report = await store.compact_all()
        elapsed = time.perf_counter() - start
    print(f"\nCompaction of {count:,} contacts with 10 edits each")
    print(f"  time: {elapsed:.2f} s ({elapsed / count * 1e6:.0f} us per record)")
    print(
        f"  stored bytes per record: before {report.bytes_before / count:.0f},"
        f" after {report.bytes_after / count:.0f}, JSON view {json_bytes / count:.0f}"
    )
    print(f"  after / JSON: {report.bytes_after / json_bytes:.2f}x (target <= 2x)")


async def main(quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="crdt-sync-bench-") as directory:
        workdir = Path(directory)
        await bench_group_commit(workdir, quick)
        await bench_changes_since(workdir, quick)
        await bench_compaction(workdir, quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    asyncio.run(main(parser.parse_args().quick))

"""Figures for the REST sync views: initial sync, incremental pull, push of one batch.

    python benchmarks/rest_bench.py [--quick]

Prints tables; asserts nothing. For each store size (100k and 1M contacts; --quick: 10k and
100k) the store is bulk-filled straight into its tables (one real CRDT update as filler for
every record, each with its own JSON view), then `crdt-sync serve` runs as a subprocess and an
httpx client in this process measures:

- initial sync of every record as ONE streamed answer (`limit` = all): seconds, bytes sent,
  bytes / the records' plain JSON (a compact JSON array of the same flat objects), and the
  server's peak RSS while serving it, sampled every 10 ms with psutil;
- push of 1,000 changed records in one batch (WatermelonDB rows with `_changed`), seconds;
- incremental pull of those 1,000 changes, median of 7 pulls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from pycrdt import Doc, Map

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import bulk_fill, free_port, start_server

from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.server.auth import create_token
from crdt_sync.store import SQLiteStore

FIELDS = list(DEFAULT_SCHEMA.collections["contacts"].fields)
FIRST = ["Ann", "Bob", "Chloé", "Dario", "Eva", "Farid", "Grace", "Hugo", "Inès", "Jon"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay Industries"]


def contact_view(rng: random.Random, i: int) -> dict[str, Any]:
    first = rng.choice(FIRST)
    return {
        "id": f"{i:07d}",
        "name": f"{first} {rng.choice('BCDLMRST')}.",
        "email": f"{first.lower()}{i}@example.com",
        "phone": f"+33 1 {rng.randrange(10**8):08d}",
        "company": rng.choice(COMPANIES),
        "notes": None,
    }


def filler_update() -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("record", type=Map)["name"] = "filler"
    return doc.get_update()


def fill(path: Path, records: int) -> int:
    """Fill `records` contacts; returns the bytes of their plain JSON array."""
    rng = random.Random(records)
    plain = 2  # "[" and "]"

    def view_json(i: int) -> str:
        nonlocal plain
        text = json.dumps(contact_view(rng, i), ensure_ascii=False, separators=(",", ":"))
        plain += len(text.encode()) + 1
        return text

    bulk_fill(path, records, filler_update(), view_json)
    return plain - 1  # no comma after the last


class PeakRSS:
    """Samples a process's RSS every 10 ms in a thread, while in the `with` block."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRSS:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)


async def measure(workdir: Path, records: int) -> dict[str, float]:
    path = workdir / f"rest-{records}.db"
    async with SQLiteStore(path) as store:
        device = await create_token(store, name="phone", role="device")
    plain = fill(path, records)
    port = free_port()
    serve = ["-m", "crdt_sync", "serve", "--db", str(path), "--port", str(port)]
    server = start_server([*serve, "--log-level", "warning"], port, workdir / f"rest-{records}.log")
    figures: dict[str, float] = {"plain": plain}
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {device}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as http:
            figures["rss_before"] = psutil.Process(server.pid).memory_info().rss
            with PeakRSS(server.pid) as rss:
                start = time.perf_counter()
                sent = 0
                async with http.stream(
                    "GET", "/api/sync/initial", params={"limit": records}
                ) as response:
                    async for chunk in response.aiter_raw():
                        sent += len(chunk)
                figures["initial_s"] = time.perf_counter() - start
            figures["initial_bytes"], figures["rss_peak"] = sent, rss.peak
            status = (await http.get("/api/sync/status")).json()
            timestamp = status["timestamp"]
            rng = random.Random(1)
            rows = [
                {
                    "id": f"{i:07d}",
                    "name": "x",
                    "company": f"Co {n}",
                    "_status": "updated",
                    "_changed": "company",
                }
                for n, i in enumerate(rng.sample(range(records), 1000))
            ]
            body = {
                "changes": {"contacts": {"created": [], "updated": rows, "deleted": []}},
                "lastPulledAt": timestamp,
            }
            start = time.perf_counter()
            answer = (await http.post("/api/sync/outgoing", json=body)).raise_for_status().json()
            figures["push_s"] = time.perf_counter() - start
            assert not answer["rejected"], answer["rejected"][:3]
            pulls = []
            for _ in range(7):
                start = time.perf_counter()
                pulled = (
                    (await http.get("/api/sync/incremental", params={"since": timestamp}))
                    .raise_for_status()
                    .json()
                )
                pulls.append(time.perf_counter() - start)
            assert len(pulled["changes"]["contacts"]["updated"]) == 1000
            figures["incremental_s"] = statistics.median(pulls)
    finally:
        server.terminate()
        server.wait(30)
        path.unlink()
    return figures


async def main(quick: bool) -> None:
    sizes = (10_000, 100_000) if quick else (100_000, 1_000_000)
    results = {}
    with tempfile.TemporaryDirectory(prefix="crdt-sync-rest-bench-") as directory:
        for records in sizes:
            results[records] = await measure(Path(directory), records)
    print("\nInitial sync, one streamed answer with every record")
    print(
        f"{'records':>10} {'seconds':>8} {'MB sent':>8} {'/ plain JSON':>13} "
        f"{'RSS before':>11} {'RSS peak':>9}"
    )
    for records, f in results.items():
        print(
            f"{records:>10,} {f['initial_s']:>8.2f} {f['initial_bytes'] / 1e6:>8.1f} "
            f"{f['initial_bytes'] / f['plain']:>12.3f}x {f['rss_before'] / 2**20:>9.0f}MB "
            f"{f['rss_peak'] / 2**20:>7.0f}MB"
        )
    print("\nPush of 1,000 changed records in one batch; incremental pull of those 1,000")
    print(f"{'records':>10} {'push s':>8} {'pull ms':>8}")
    for records, f in results.items():
        print(f"{records:>10,} {f['push_s']:>8.2f} {f['incremental_s'] * 1000:>8.1f}")
    small, large = (results[s] for s in sizes)
    print(
        f"\nincremental pull {sizes[1]:,} / {sizes[0]:,}: "
        f"{large['incremental_s'] / small['incremental_s']:.2f}x (target < 2x)"
    )
    print(
        f"peak RSS serving the initial sync {sizes[1]:,} / {sizes[0]:,}: "
        f"{large['rss_peak'] / small['rss_peak']:.2f}x (target <= 1.5x)"
    )
    worst = max(f["initial_bytes"] / f["plain"] for f in results.values())
    print(f"initial sync bytes / plain JSON: {worst:.3f}x at worst (target <= 1.3x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k records")
    asyncio.run(main(parser.parse_args().quick))

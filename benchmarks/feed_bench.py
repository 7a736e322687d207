"""Figures for the admin change feed (GET /api/admin/feed): latency and server CPU per page.

    python benchmarks/feed_bench.py [--seconds 10] [--rate 1000] [--records 10000]

Prints a table; asserts nothing. A store of `--records` contacts is bulk-filled, then
`crdt-sync serve` runs as a subprocess. A writer in this process pushes `--rate` updates a
second spread over every record (WatermelonDB pushes to /api/sync/outgoing, ten a second, each
row a new `company` value, one transaction each), while 0, 1 and 20 feed subscribers (the
stream an open admin page reads) receive the changes. For each run:

- latency from commit to receipt, p50 and p99: a change's commit time is when its push was
  answered (pushes are answered once committed, so this is a little late: the figures lean
  low by at most a push's answer time, shown as `push p50`); its receipt is when a subscriber
  read the event carrying that value;
- server CPU (user + system seconds of the server process per second of run), and CPU per
  subscriber over the run without subscribers.

The feed reads the store at most every 0.2 s per subscriber (coalescing: a busy record is
sent once per read), so latencies of ~0.1-0.2 s are by design, not queueing. Subscribers run
in this process too: with 20 of them at 1,000 changes/s each, this process may become the
bottleneck on a small machine (its own CPU is printed to tell).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from pycrdt import Doc, Map

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import bulk_fill, free_port, start_server

from crdt_sync.server.auth import create_token
from crdt_sync.store import SQLiteStore

PUSHES_PER_SECOND = 10


def filler_update() -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("record", type=Map)["name"] = "filler"
    return doc.get_update()


class Subscriber:
    """One feed reader: the time each `company` value arrived."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.events = 0
        self.ready = asyncio.Event()

    async def run(self, http: httpx.AsyncClient, since: int) -> None:
        async with http.stream("GET", "/api/admin/feed", params={"since": since}) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("event: ready"):
                    self.ready.set()
                elif line.startswith("data: ") and '"company"' in line:
                    self.events += 1
                    company = json.loads(line[6:])["record"]["company"]
                    if company is not None and company.startswith("v"):
                        self.received.setdefault(company, time.monotonic())


async def write(
    http: httpx.AsyncClient,
    records: int,
    rate: int,
    seconds: float,
    committed: dict[str, float],
    run_name: str,
) -> list[float]:
    """Push `rate` updates a second for `seconds`, each push on time even if the one before
    is not answered yet; note each value's commit (answer) time. Returns the pushes' times."""
    rng = random.Random(7)
    per_push = max(1, rate // PUSHES_PER_SECOND)
    timestamp = (await http.get("/api/sync/status")).json()["timestamp"]
    push_times: list[float] = []

    async def push(rows: list[dict[str, str]]) -> None:
        body = {
            "changes": {"contacts": {"created": [], "updated": rows, "deleted": []}},
            "lastPulledAt": timestamp,
        }
        sent = time.monotonic()
        (await http.post("/api/sync/outgoing", json=body)).raise_for_status()
        answered = time.monotonic()
        push_times.append(answered - sent)
        for row in rows:
            committed[row["company"]] = answered

    start = time.monotonic()
    n = 0
    pushes = []
    for k in range(int(seconds * PUSHES_PER_SECOND)):
        await asyncio.sleep(max(0.0, start + k / PUSHES_PER_SECOND - time.monotonic()))
        rows = []
        for i in rng.sample(range(records), per_push):
            n += 1
            rows.append({"id": f"{i:07d}", "company": f"v{run_name}-{n}", "_changed": "company"})
        pushes.append(asyncio.create_task(push(rows)))
    await asyncio.gather(*pushes)
    return push_times


async def run(
    base: str, admin: str, records: int, rate: int, seconds: float, n: int
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {admin}"}
    limits = httpx.Limits(max_connections=n + 4)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as http:
        since = (await http.get("/api/sync/status")).json()["cursor"]
        subscribers = [Subscriber() for _ in range(n)]
        readers = [asyncio.create_task(s.run(http, since)) for s in subscribers]
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subscribers)), 30)
        committed: dict[str, float] = {}
        return await _measure(http, records, rate, seconds, subscribers, readers, committed)


async def _measure(
    http: httpx.AsyncClient,
    records: int,
    rate: int,
    seconds: float,
    subscribers: list[Subscriber],
    readers: list[asyncio.Task[None]],
    committed: dict[str, float],
) -> dict[str, float]:
    server = psutil.Process(SERVER_PID[0])
    me = psutil.Process()
    cpu_before, mine_before, started = server.cpu_times(), me.cpu_times(), time.monotonic()
    push_times = await write(http, records, rate, seconds, committed, str(len(subscribers)))
    elapsed = time.monotonic() - started
    cpu_after, mine_after = server.cpu_times(), me.cpu_times()
    deadline = time.monotonic() + 10  # let the last changes arrive
    while subscribers and time.monotonic() < deadline:
        if all(len(s.received) >= len(committed) for s in subscribers):
            break
        await asyncio.sleep(0.05)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    latencies = sorted(
        t - committed[value]
        for s in subscribers
        for value, t in s.received.items()
        if value in committed
    )
    expected = len(committed) * len(subscribers)
    figures = {
        "updates_per_s": len(committed) / elapsed,
        "server_cpu": _busy(cpu_before, cpu_after) / elapsed,
        "client_cpu": _busy(mine_before, mine_after) / elapsed,
        "push_p50": statistics.median(push_times),
        "received_share": len(latencies) / expected if expected else 1.0,
    }
    if latencies:
        figures["p50"] = latencies[len(latencies) // 2]
        figures["p99"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return figures


SERVER_PID = [0]


def _busy(before: Any, after: Any) -> float:
    return float((after.user - before.user) + (after.system - before.system))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000, help="updates a second")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[0, 1, 20])
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "feed.db"
        async with SQLiteStore(path) as store:
            admin = await create_token(store, name="admin", role="admin")
        filler = filler_update()
        bulk_fill(
            path,
            options.records,
            filler,
            lambda i: json.dumps({"id": f"{i:07d}", "name": "filler"}),
        )
        port = free_port()
        serve = ["-m", "crdt_sync", "serve", "--db", str(path), "--port", str(port)]
        server = start_server([*serve, "--log-level", "warning"], port, Path(folder) / "s.log")
        SERVER_PID[0] = server.pid
        rows = []
        try:
            for n in options.subscribers:
                figures = await run(
                    f"http://127.0.0.1:{port}",
                    admin,
                    options.records,
                    options.rate,
                    options.seconds,
                    n,
                )
                rows.append((n, figures))
        finally:
            server.terminate()
            server.wait(15)
    baseline = next((f["server_cpu"] for n, f in rows if n == 0), None)
    print(
        f"feed: {options.rate} updates/s over {options.records:,} records, "
        f"{options.seconds:g} s a run"
    )
    print(
        f"{'pages':>5} {'updates/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'received':>8} "
        f"{'server cpu':>10} {'cpu/page':>8} {'push p50 ms':>11} {'bench cpu':>9}"
    )
    for n, f in rows:
        per_page = (
            f"{(f['server_cpu'] - baseline) / n * 100:7.1f}%" if n and baseline is not None else ""
        )
        p50 = f"{f['p50'] * 1000:7.0f}" if "p50" in f else f"{'-':>7}"
        p99 = f"{f['p99'] * 1000:7.0f}" if "p99" in f else f"{'-':>7}"
        print(
            f"{n:>5} {f['updates_per_s']:9.0f} {p50} {p99} {f['received_share']:8.1%} "
            f"{f['server_cpu'] * 100:9.1f}% {per_page:>8} {f['push_p50'] * 1000:11.1f} "
            f"{f['client_cpu'] * 100:8.1f}%"
        )


if __name__ == "__main__":
    asyncio.run(main())

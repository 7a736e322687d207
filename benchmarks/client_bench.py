"""Client replica benchmark: first sync, reconnect after offline edits, over /ws and REST.

    python benchmarks/client_bench.py                  # 100k records over /ws and over REST
    python benchmarks/client_bench.py --records 20000 --rest-records 20000 --runs 1

The server is `crdt-sync` in its own process (uvicorn, WAL, synchronous=FULL), seeded straight
through the store; the replicas run in this process. Prints figures, asserts nothing.

1. first sync: a fresh replica's `sync()` of every record (time, records/s, replica file size);
2. reconnect: replica A makes N offline edits (N records, one each), then `sync()`; measured
   until A's queue is empty and replica B, live on the same server, has every one of them;
3. the same two over the REST fallback (the server refuses websocket upgrades, as behind a
   proxy that passes only HTTP). REST pulls take the update log from `/api/sync/updates`;
4. for comparison, a first sync over REST from a server without `/api/sync/updates` (it
   answers 404 there, as an older server does), where the replica fetches one document diff
   per changed record (`--legacy-records`, 0 to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from _common import free_port, start_server
from pycrdt import Doc

from crdt_sync.client import Replica, SyncState
from crdt_sync.ids import DocId, Origin
from crdt_sync.record import Records
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.server.auth import create_token
from crdt_sync.store import Append, SQLiteStore


async def seed(db_path: Path, records: int) -> str:
    """`records` contacts straight into the store, 1,000 per transaction; returns a device token."""
    helper = Records(DEFAULT_SCHEMA)
    async with SQLiteStore(db_path) as store:
        for start in range(0, records, 1000):
            batch = []
            for i in range(start, min(records, start + 1000)):
                doc_id = DocId(f"contacts/c{i}")
                fields = {
                    "name": f"Contact {i}",
                    "email": f"c{i}@example.com",
                    "company": f"Company {i % 97}",
                    "notes": f"met at event {i % 13}",
                }
                document: Doc[Any] = Doc()
                update = helper.patch(doc_id, document, fields, creating=True)
                batch.append(
                    Append(doc_id, update, helper.view(doc_id, document), False, Origin("bench"))
                )
            await store.append_many(batch)
        return await create_token(store, name="bench-device", role="device")


class Server:
    """The server in its own process; `websockets=False` refuses upgrades (REST only),
    `bulk=False` answers 404 on /api/sync/updates (a server from before it)."""

    def __init__(self, db_path: Path, *, websockets: bool, bulk: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [__file__, "--serve", str(db_path), str(self.port)]
        args += ([] if websockets else ["--no-websockets"]) + ([] if bulk else ["--no-bulk"])
        self.process = start_server(args, self.port, db_path.with_suffix(".log"))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def serve(db_path: str, port: int, websockets: bool, bulk: bool) -> None:
    import uvicorn

    from crdt_sync.server.app import Settings, create_app

    inner: Any = create_app(Settings(db_path=Path(db_path)))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and not websockets:
            await send({"type": "websocket.close", "code": 1008})  # HTTP 403
            return
        if scope["type"] == "http" and not bulk and scope["path"] == "/api/sync/updates":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await inner(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=16 << 20)


async def first_sync(workdir: Path, server: Server, token: str, label: str) -> tuple[float, int]:
    path = workdir / f"first-{label}-{time.monotonic_ns()}.db"
    async with Replica(path, server=server.url, token=token) as replica:
        started = time.perf_counter()
        status = await replica.sync()
        seconds = time.perf_counter() - started
        held = len(await replica.query("contacts"))
    wal = Path(f"{path}-wal")  # checkpointed away on close, usually
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    print(
        f"  {label}: {seconds:7.2f} s   {held / seconds:9,.0f} records/s   "
        f"replica file {size / 1e6:6.1f} MB   cursor {status.cursor}"
    )
    return seconds, held


async def reconnect(workdir: Path, server: Server, token: str, edits: int, label: str) -> float:
    a_path, b_path = workdir / f"a-{label}.db", workdir / f"b-{label}.db"
    options: dict[str, Any] = {"rest_interval": 0.2}
    async with (
        Replica(a_path, server=server.url, token=token, **options) as alice,
        Replica(b_path, server=server.url, token=token, **options) as bob,
    ):
        if not a_path.with_suffix(".synced").exists():
            await alice.sync()
            await bob.sync()
            a_path.with_suffix(".synced").touch()
        stamp = time.monotonic_ns()
        for i in range(edits):
            await alice.update("contacts", f"c{i}", {"phone": f"+1 {stamp} {i}"})
        async with bob.live():
            await bob.wait_status(lambda s: s.state is SyncState.SYNCED, 60)
            started = time.perf_counter()
            await alice.sync()
            async with httpx.AsyncClient() as http:  # the server's cursor once A is done
                target = (await http.get(f"{server.url}/ready")).json()["cursor"]
            await bob.wait_status(lambda s: s.cursor >= target, 300)
            seconds = time.perf_counter() - started
        last = await bob.get("contacts", f"c{edits - 1}")
        assert last is not None and last["phone"] == f"+1 {stamp} {edits - 1}"
    print(
        f"  {label}: {seconds:7.2f} s until A's queue is empty and B has all {edits} edits "
        f"({edits / seconds:,.0f} edits/s)"
    )
    return seconds


async def median(runs: int, measure: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await measure() for _ in range(runs)])


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="client-bench-") as tmp:
        workdir = Path(tmp)
        results: dict[str, float] = {}
        print(f"seeding {args.records:,} records ...")
        db = workdir / "server.db"
        token = await seed(db, args.records)
        server = Server(db, websockets=True)
        try:
            print(f"first sync of {args.records:,} records over /ws (median of {args.runs}):")
            results["ws first"] = await median(
                args.runs, lambda: _first(workdir, server, token, "ws")
            )
            print(f"reconnect after {args.edits:,} offline edits over /ws:")
            results["ws reconnect"] = await median(
                args.runs, lambda: reconnect(workdir, server, token, args.edits, "ws")
            )
        finally:
            server.stop()

        rest_db = workdir / "rest.db"
        rest_token = await seed(rest_db, args.rest_records)
        server = Server(rest_db, websockets=False)
        try:
            print(f"first sync of {args.rest_records:,} records over REST (median of {args.runs}):")
            results["rest first"] = await median(
                args.runs, lambda: _first(workdir, server, rest_token, "rest")
            )
            print(f"reconnect after {args.edits:,} offline edits over REST:")
            results["rest reconnect"] = await median(
                args.runs, lambda: reconnect(workdir, server, rest_token, args.edits, "rest")
            )
        finally:
            server.stop()

        if args.legacy_records:
            legacy_db = workdir / "legacy.db"
            legacy_token = await seed(legacy_db, args.legacy_records)
            server = Server(legacy_db, websockets=False, bulk=False)
            try:
                print(
                    f"first sync of {args.legacy_records:,} records over REST, one document "
                    f"at a time (a server without /api/sync/updates; median of {args.runs}):"
                )
                results["legacy first"] = await median(
                    args.runs, lambda: _first(workdir, server, legacy_token, "rest, per document")
                )
            finally:
                server.stop()

        print("\nsummary (medians)")
        print(f"  {'':<32}{'/ws':>12}{'REST':>12}")
        ws_rate = args.records / results["ws first"]
        rest_rate = args.rest_records / results["rest first"]
        print(f"  {'first sync, records/s':<32}{ws_rate:>12,.0f}{rest_rate:>12,.0f}")
        print(
            f"  {f'reconnect, {args.edits} edits, s':<32}{results['ws reconnect']:>12.2f}"
            f"{results['rest reconnect']:>12.2f}"
        )
        if "legacy first" in results:
            legacy_rate = args.legacy_records / results["legacy first"]
            print(
                f"  REST first sync one document at a time: {legacy_rate:,.0f} records/s"
                f" ({rest_rate / legacy_rate:.1f}x slower than the update log)"
            )


async def _first(workdir: Path, server: Server, token: str, label: str) -> float:
    seconds, _ = await first_sync(workdir, server, token, label)
    return seconds


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rest-records", type=int, default=100_000)
    parser.add_argument(
        "--legacy-records",
        type=int,
        default=2_000,
        help="records for the per-document REST comparison (0: skip)",
    )
    parser.add_argument("--edits", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", nargs=2, metavar=("DB", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--no-websockets", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-bulk", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve:
        serve(
            parsed.serve[0],
            int(parsed.serve[1]),
            websockets=not parsed.no_websockets,
            bulk=not parsed.no_bulk,
        )
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        asyncio.run(main(parsed))

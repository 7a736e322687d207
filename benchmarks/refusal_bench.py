"""What refused writes cost the server, and what a flood of them costs everyone else.

    python benchmarks/refusal_bench.py [--quick]

The server is crdt-sync's app under uvicorn in a subprocess of its own (SQLite WAL,
synchronous=FULL), so its CPU time is its own (psutil); the load is pycrdt documents on raw
`/yjs` websockets in this process (the y-websocket protocol, as any stock client speaks it).
Prints a table; asserts nothing.

(a) CPU per write: the server's CPU time over many connections each sending a burst of
    writes (one at a time, each answered before the next), divided by the writes: valid edits,
    compensated refusals (a deal's amount set to a string), and uncompensable ones (bytes
    that are no update: permission denied, then close 4422). Each connection sends at most
    the refusal burst, so the rate limit never waits here; the same connections sending
    nothing give the baseline subtracted from each.
(b) Valid writers' throughput on one shared record, alone and while one more connection
    floods that record with refused writes as fast as it can: with the per-connection
    refusal budget (the default: 20 at once, 10/s), and with the budget lifted. Target: with
    the budget, >= 80% of the no-flood figure.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, free_port, start_server
from pycrdt import Map

sys.path.insert(0, str(ROOT))

WRITERS = 8
WINDOW = 8  # a valid writer's edits in flight


def serve(port: int, db: str, budget: str) -> None:
    """The server process: `python refusal_bench.py --serve PORT DB default|unlimited`."""
    import uvicorn

    from crdt_sync.engine import Limits
    from crdt_sync.server.app import Settings, create_app

    limits = (
        Limits() if budget == "default" else Limits(refusals_per_second=1e9, refusal_burst=10**9)
    )
    app = create_app(Settings(db_path=Path(db), limits=limits, tune_gc=True))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=2 << 20)


async def make_token(db: Path) -> str:
    from crdt_sync.server.auth import create_token
    from crdt_sync.store import SQLiteStore

    async with SQLiteStore(db) as store:
        return await create_token(store, name="bench", role="device")


class Server:
    def __init__(self, directory: Path, budget: str) -> None:
        import psutil

        self.db = directory / f"{budget}.db"
        self.token = asyncio.run(make_token(self.db))
        self.port = free_port()
        self.process = start_server(
            [__file__, "--serve", str(self.port), str(self.db), budget],
            self.port,
            directory / f"{budget}.log",
        )
        self.ps = psutil.Process(self.process.pid)

    def url(self, doc_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/yjs/{doc_id}?token={self.token}"

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:  # connections still open: the figures are taken
            self.process.kill()
            self.process.wait(10)


class Peer:
    """A pycrdt document on a raw /yjs websocket, reading every frame in a task."""

    def __init__(self, websocket: Any, client_id: int) -> None:
        from pycrdt import Doc

        self.websocket = websocket
        self.doc: Any = Doc(client_id=client_id)
        self.client_id = client_id
        self.echoed = 0  # the highest clock of ours the server sent back
        self.answers = 0  # permission-denied messages
        self.updated = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        import websockets

        from crdt_sync.protocol.ysync import (
            YjsPermissionDenied,
            YjsSyncStep2,
            YjsUpdate,
            decode_yjs_message,
        )
        from crdt_sync.yupdate import read_update

        try:
            async for frame in self.websocket:
                message = decode_yjs_message(bytes(frame))
                if isinstance(message, YjsUpdate | YjsSyncStep2):
                    self.doc.apply_update(message.update)
                    for struct in read_update(message.update).structs:
                        if struct.client == self.client_id:
                            self.echoed = max(self.echoed, struct.clock + struct.length)
                elif isinstance(message, YjsPermissionDenied):
                    self.answers += 1
                self.updated.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.updated.set()  # a close is news too

    def edit(self, name: str, value: Any) -> bytes:
        from pycrdt import Map

        before = self.doc.get_state()
        self.doc.get("record", type=Map)[name] = value
        return bytes(self.doc.get_update(before))

    async def wait(self, condition: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.updated.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the server did not answer in time")
            try:
                await asyncio.wait_for(self.updated.wait(), left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        await self.websocket.close()
        self.reader.cancel()


async def connect(server: Server, doc_id: str, client_id: int) -> Peer:
    import websockets

    from crdt_sync.protocol.ysync import encode_sync_step1

    websocket = await websockets.connect(server.url(doc_id), max_size=2 << 20)
    peer = Peer(websocket, client_id)
    await websocket.send(encode_sync_step1(b"\x00"))
    await peer.wait(peer.updated.is_set)  # the server's step 1
    return peer


async def create_deal(server: Server, doc_id: str) -> None:
    from crdt_sync.protocol.ysync import encode_sync_update

    peer = await connect(server, doc_id, 1_000_000_001)
    update = peer.edit("title", "Shared deal")
    await peer.websocket.send(encode_sync_update(update))
    await peer.wait(lambda: peer.echoed >= 1)
    await peer.close()


# -- (a) CPU per write ------------------------------------------------------------------------


async def cpu_per_write(server: Server, kind: str, connections: int, burst: int) -> float:
    """Server CPU seconds per write of `kind`, connections set up beforehand (not counted).

    Each connection sends its writes one at a time, each answered before the next (the echo
    of a valid write, the permission-denied of a refused one); an uncompensable write closes
    its connection, so each connection sends one, and its close is counted with it.
    """
    from crdt_sync.protocol.ysync import encode_sync_update

    peers = []
    for n in range(connections):
        doc_id = f"deals/{kind}-{n}"
        await create_deal(server, doc_id)
        peer = await connect(server, doc_id, 2_000_000_000 + n)
        await peer.wait(lambda p=peer: len(p.doc.get("record", type=Map)) > 0)
        peers.append(peer)
    writes = 0
    before = server.cpu()
    for peer in peers:
        for i in range(1 if kind == "uncompensable" else burst):
            if kind == "valid":
                update = peer.edit("amount", float(i))
            elif kind == "refused":
                update = peer.edit("amount", f"ten {i}")
            else:
                update = b"\x01\x05garbage"
            answers, echoed = peer.answers, peer.echoed
            await peer.websocket.send(encode_sync_update(update))
            if kind == "valid":
                await peer.wait(lambda p=peer, e=echoed: p.echoed > e)
            else:
                await peer.wait(lambda p=peer, a=answers: p.answers > a)
            writes += 1
        if kind == "uncompensable":
            await peer.wait(lambda p=peer: p.reader.done())  # closed by the server
    spent = server.cpu() - before
    for peer in peers:
        await peer.close()
    return spent / writes


# -- (b) throughput under a flood -------------------------------------------------------------


async def valid_throughput(server: Server, doc_id: str, seconds: float, with_flood: bool) -> float:
    from crdt_sync.protocol.ysync import encode_sync_update

    await create_deal(server, doc_id)
    writers = [await connect(server, doc_id, 2_100_000_000 + k) for k in range(WRITERS)]
    for writer in writers:
        await writer.wait(lambda w=writer: len(w.doc.get("record", type=Map)) > 0)
    stop = time.monotonic() + seconds
    counts = [0] * WRITERS

    async def write(k: int) -> None:
        writer, sent = writers[k], 0
        start = writer.echoed
        while time.monotonic() < stop:
            await writer.wait(lambda: sent - (writer.echoed - start) < WINDOW)  # noqa: B023
            stage = ("lead", "won")[sent % 2]
            await writer.websocket.send(encode_sync_update(writer.edit("stage", stage)))
            sent += 1
        await writer.wait(lambda: writer.echoed - start >= sent)
        counts[k] = sent

    started = time.monotonic()
    # The flooder gets a process of its own: in this one it would take the writers' loop.
    flooder = (
        multiprocessing.get_context("spawn").Process(
            target=flood, args=(server.url(doc_id), stop - time.monotonic())
        )
        if with_flood
        else None
    )
    if flooder is not None:
        flooder.start()
    await asyncio.gather(*(write(k) for k in range(WRITERS)))
    elapsed = time.monotonic() - started
    if flooder is not None:
        flooder.join(30)
        if flooder.is_alive():
            flooder.kill()
    for writer in writers:
        await writer.close()
    return sum(counts) / elapsed


def flood(url: str, seconds: float) -> None:
    """A flooding client (a process of its own): refused writes as fast as the socket takes
    them, for `seconds`; the server's refusal budget decides how fast it reads them."""
    import websockets

    from crdt_sync.protocol.ysync import encode_sync_update

    async def run() -> None:
        from pycrdt import Doc

        doc: Any = Doc(client_id=2_200_000_000)
        stop = time.monotonic() + seconds
        async with websockets.connect(url, max_size=2 << 20) as websocket:
            drain = asyncio.create_task(_drain(websocket))
            fields = doc.get("record", type=Map)
            n = 0
            while time.monotonic() < stop:
                before = doc.get_state()
                fields["amount"] = f"ten {n}"
                n += 1
                try:
                    await asyncio.wait_for(
                        websocket.send(encode_sync_update(doc.get_update(before))),
                        max(0.01, stop - time.monotonic()),
                    )
                except (TimeoutError, websockets.ConnectionClosed):
                    break
            drain.cancel()

    asyncio.run(run())


async def _drain(websocket: Any) -> None:
    import websockets

    try:
        async for _ in websocket:
            pass
    except websockets.ConnectionClosed:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument(
        "--serve", nargs=3, metavar=("PORT", "DB", "BUDGET"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where it is stuck
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return
    connections, seconds = (20, 5.0) if args.quick else (50, 15.0)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as directory:
        server = Server(Path(directory), "default")
        try:
            for kind in ("valid", "refused", "uncompensable"):
                print(f"(a) {kind} ...", file=sys.stderr, flush=True)
                # An uncompensable write is one per connection: more of them, for the clock.
                count = connections * (5 if kind == "uncompensable" else 1)
                per = asyncio.run(cpu_per_write(server, kind, count, 20))
                rows.append((f"server CPU per {kind} write", f"{per * 1e6:,.0f} us"))
            alone = asyncio.run(valid_throughput(server, "deals/alone", seconds, False))
            rows.append((f"{WRITERS} valid writers on one record, alone", f"{alone:,.0f} edits/s"))
            flooded = asyncio.run(valid_throughput(server, "deals/flooded", seconds, True))
            rows.append(
                (
                    "... while one connection floods it with refused writes (default budget)",
                    f"{flooded:,.0f} edits/s = {flooded / alone:.0%} (target >= 80%)",
                )
            )
        finally:
            server.stop()
        server = Server(Path(directory), "unlimited")
        try:
            alone2 = asyncio.run(valid_throughput(server, "deals/alone", seconds, False))
            flooded2 = asyncio.run(valid_throughput(server, "deals/flooded", seconds, True))
            rows.append(
                (
                    "... the same with the refusal budget lifted",
                    f"{flooded2:,.0f} edits/s = {flooded2 / alone2:.0%} of {alone2:,.0f} alone",
                )
            )
        finally:
            server.stop()
    width = max(len(name) for name, _ in rows)
    print(f"\n{'figure'.ljust(width)}  result")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()

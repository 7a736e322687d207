"""The floor under live_bench (l)'s "server start to its first record synced", and ours beside it.

    python benchmarks/start_floor.py [--repeats 5] [--sides ours,floor,hocuspocus,ywss] [--source]

Measured as live_bench (l) measures it: a store of `--count` records that the server has
served once; the server process started again; a client polls its port every 10 ms, then
opens one record (step 1, step 2: synced). Each side `--repeats` times, the sides taking
turns; medians. `floor` is the least a Python server of these records can do: a bare ASGI
echo app (no Starlette, no crdt-sync) under uvicorn with crdt-sync's websocket protocol, in
a process that imports what serving a record needs (uvicorn, its sans-I/O websockets, pycrdt,
sqlite3, aiosqlite, cbor2) and opens the SQLite file (`_floor_server.py`: nothing else is
imported); the client's step 1 comes back as the server's, its answer as the step 2 that
syncs it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import live_bench
from live_bench import Server, compile_checkout, install_node_peers, run_load


class FloorServer(Server):
    def prepare(self) -> None:
        self.db.touch()

    def seed(self, prefix: str, count: int) -> float:
        return 0.0

    def launch(self, *, same_port: bool = False) -> None:
        import subprocess

        if not (same_port and self.port):
            self.port = live_bench.free_port()
        log = open(self.logs / f"floor-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.python, str(HERE / "_floor_server.py"), str(self.db), str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        live_bench.RUNNING.add(self.process)
        self._log_name = log.name


def first_sync_ms(server: Server, python: str) -> float:
    """One restart: process start -> its first record synced, as live_bench (l) times it."""
    started: dict[str, float] = {}

    def on_event(name: str, payload: dict[str, Any]) -> None:
        if name == "ready":
            started["at"] = time.time()
            server.launch(same_port=True)

    params = {
        "workload": "cold_load",
        "base": server.base,
        "token": server.token,
        "collection": "contacts",
        "run": "start",
        "dialect": "hocuspocus" if server.side == "hocuspocus" else "y-websocket",
        "prefix": "k",
        "count": 1,
        "concurrency": 1,
        "timeout": 60,
    }
    try:
        result = run_load(python, params, 90, on_event)
    finally:
        server.stop()
    return float((result["first_synced_at"] - started["at"]) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sides", default="ours,floor")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument(
        "--source",
        action="store_true",
        help="remove the checkout's crdt_sync bytecode first (PYTHONDONTWRITEBYTECODE keeps it"
        " from coming back): every start compiles crdt_sync, as live_bench (l) did before",
    )
    args = parser.parse_args()
    sides = args.sides.split(",")
    node_dir = install_node_peers() if {"hocuspocus", "ywss"} & set(sides) else None
    if args.source:  # what the checkout's servers compile at every start without bytecode
        for cache in (HERE.parent / "crdt_sync").rglob("__pycache__"):
            shutil.rmtree(cache)
    else:
        compile_checkout(sys.executable)  # as live_bench (l) does
    times: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="start-floor-") as tmp:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        servers: dict[str, Server] = {}
        for side in sides:
            kind = FloorServer if side == "floor" else Server
            server = servers[side] = kind(side, sys.executable, Path(tmp) / f"{side}.db", logs)
            server.node_dir = node_dir
            server.prepare()
            server.seed("k", args.count)
            server.start()  # it has served this store once: what is measured is a restart
            server.stop()
        for _ in range(args.repeats):
            for side in sides:
                times[side].append(first_sync_ms(servers[side], sys.executable))
    floor = statistics.median(times["floor"]) if "floor" in times else None
    for side, values in times.items():
        median = statistics.median(values)
        ratio = f", {median / floor:.2f}x the floor" if floor else ""
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"{side:10} start to first record synced: median {median:.0f} ms{ratio} ({shown})")


if __name__ == "__main__":
    main()

"""Live sync side by side: crdt-sync's `/yjs` endpoint against the servers users would pick
otherwise: Hocuspocus, y-websocket's own server, and pycrdt-websocket.

    python benchmarks/live_bench.py [--quick] [--only a,r,b,c,l,d] [--sides ours,hocuspocus,...]
                                    [--peer-python PATH] [--repeats-b N] [--churn-runs N]

Every server speaks y-websocket (Hocuspocus in its envelope: the same messages, each prefixed
with the document's name); each runs as a subprocess of its own on 127.0.0.1, and the load
comes from another process (`_live_load.py`), so the servers' CPU and memory are their own.
Prints a table of every figure per server and crdt-sync's ratio to the best peer measured in
the same run; asserts nothing. Needs psutil; `pip install pycrdt-websocket pycrdt-store` in the
python that runs that peer (`--peer-python`, default this one); Node >= 20 and npm for the
Node peers, whose packages (benchmarks/node/package-lock.json) `npm ci` installs into
~/.cache/crdt-sync/ on first use (a few minutes: better-sqlite3 compiles).

- hocuspocus: @hocuspocus/server 4.7 with @hocuspocus/extension-sqlite, as documented (the
  extension's debounce decides when a document's state is written: 2 s, at most 10 s).
- ywss: @y/websocket-server 0.1.1 (its own `server.js`) with YPERSISTENCE=dir (y-leveldb): an
  update is broadcast, then appended to LevelDB without waiting.

- ours: `python -m crdt_sync serve` (uvicorn, SQLite WAL, synchronous=FULL, group commit); a
  write is echoed to every peer of the record, the sender included, only after its commit.
- peer: pycrdt-websocket's `WebsocketServer` served by `websockets.serve` (its documented
  setup), each room with a pycrdt-store `SQLiteYStore` (default settings: no squashing, which
  drops history) on one file; a room loads its document from the store when it opens. It
  applies an update in memory, broadcasts it to every client of the room (the sender
  included) and writes it to SQLite afterwards, one commit per update, in the background.

Workloads:
(a) throughput: W writers x N edits sent pipelined (no waiting between sends), on W separate
    records and on one shared record; updates/s until a reader connected beforehand has seen
    every edit. For ours, also the time until every writer had its own echoes (= committed).
(b) fan-out: 1 writer, 50 and 200 subscribers on one record, paced edits; latency from the
    writer's send to each subscriber's receive. The subscribers are spread over processes of
    at most --fan-per-process (50) each, the writer in another: one clock for all of them
    (perf_counter, CLOCK_MONOTONIC, checked), and no one process reads 20,000 frames/s.
(c) memory: server RSS per open record with 1,000 and 5,000 records open at once (one synced
    connection per record, (RSS open - RSS before) / count, fresh server each), and RSS after
    each of many stored records was opened once and closed (100k, at most 600 s a side; 5k
    with --quick, the median of 3 runs: `--churn-runs`).
(l) cold load: N stored records (5k with --quick, 20k), the server stopped after serving that
    store once and started again; each record opened once, 64 at a time: records/s, and the
    time from the server process's start to its first record synced (a client polls the port
    every 10 ms, then opens one record alone); `--cold-restarts` restarts (3), medians.
Every server is measured from idle: started, listening, and then no longer busy starting up
(under 5 ms of CPU in 0.1 s).
(d) durability: writers send a pipelined burst of 2,000 edits, the server gets SIGKILL 0 ms,
    100 ms, ... after the last one was sent, restarts on the same file, and a fresh client
    counts what is missing: of the edits acknowledged (ours: echoed after commit) and of the
    edits sent (the peer has no acknowledgement; its echo is sent before the write to SQLite).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOAD = HERE / "_live_load.py"
SIDES = ("ours", "pycrdt", "hocuspocus", "ywss")
NODE_SIDES = ("hocuspocus", "ywss")
LABELS = {
    "ours": "crdt-sync",
    "pycrdt": "pycrdt-websocket",
    "hocuspocus": "Hocuspocus",
    "ywss": "y-ws-server",
}
NODE_PACKAGES = HERE / "node"
RUNNING: set[subprocess.Popen[Any]] = set()  # servers and load processes: killed on the way out
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay Industries"]


# ---------------------------------------------------------------------------------------------
# the seeded records (both stores get the same documents)


def contact_update(i: int) -> tuple[bytes, Any]:
    from pycrdt import Doc, Map, Text

    doc: Doc[Any] = Doc()
    record = doc.get("record", type=Map)
    with doc.transaction():
        record["name"] = f"Contact {i}"
        record["email"] = f"contact{i}@example.com"
        record["phone"] = f"+33 1 {i:08d}"
        record["company"] = COMPANIES[i % len(COMPANIES)]
        record["notes"] = Text(
            "Met at the fair; wants a demo of the new pricing. Call back in March."
        )
    return doc.get_update(), doc


def seed_ours(db: str, prefix: str, count: int) -> None:
    """Records straight through the store API (append_many, 1,000 per transaction)."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from crdt_sync.ids import Origin, make_doc_id
    from crdt_sync.record import Records
    from crdt_sync.schema import DEFAULT_SCHEMA
    from crdt_sync.store import SQLiteStore
    from crdt_sync.store.base import Append

    records = Records(DEFAULT_SCHEMA)

    async def work() -> None:
        async with SQLiteStore(db) as store:
            for start in range(0, count, 1000):
                batch = []
                for i in range(start, min(count, start + 1000)):
                    doc_id = make_doc_id("contacts", f"{prefix}{i}")
                    update, doc = contact_update(i)
                    batch.append(
                        Append(
                            doc_id, update, records.view(doc_id, doc), False, Origin("bench-seed")
                        )
                    )
                await store.append_many(batch)

    asyncio.run(work())


def peer_store_class(db: str) -> Any:
    from pycrdt.store import SQLiteYStore

    class BenchYStore(SQLiteYStore):
        db_path = db  # one file for every room; squash options left at None (the default)

    return BenchYStore


def seed_peer(db: str, prefix: str, count: int) -> None:
    """The store's own schema (created by SQLiteYStore), rows inserted in bulk: one update per
    record, exactly what the room would have written for it."""
    import asyncio
    import sqlite3

    store_class = peer_store_class(db)

    async def init() -> None:
        async with store_class(path="/init") as store:
            await store.db_initialized.wait()

    asyncio.run(init())
    connection = sqlite3.connect(db)
    now = time.time()
    with connection:
        for start in range(0, count, 5000):
            connection.executemany(
                "INSERT INTO yupdates VALUES (?, ?, ?, ?)",
                [
                    (f"/yjs/contacts/{prefix}{i}", contact_update(i)[0], b"", now)
                    for i in range(start, min(count, start + 5000))
                ],
            )
    connection.close()


# ---------------------------------------------------------------------------------------------
# the peer server (runs under --peer-python)


def peer_server(db: str, port: int) -> None:
    import asyncio
    import logging
    import resource

    import anyio
    from pycrdt.store import YDocNotFound
    from pycrdt.websocket import WebsocketServer, YRoom, exception_logger
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.WARNING)
    log = logging.getLogger("peer")
    store_class = peer_store_class(db)

    class Channel:
        """websockets' connection as the pycrdt Channel a YRoom serves."""

        def __init__(self, connection: Any, path: str) -> None:
            self._connection = connection
            self._path = path

        @property
        def path(self) -> str:
            return self._path

        def __aiter__(self) -> Channel:
            return self

        async def __anext__(self) -> bytes:
            try:
                message = await self._connection.recv()
            except ConnectionClosed:
                raise StopAsyncIteration() from None
            return message if isinstance(message, bytes) else message.encode()

        async def send(self, message: bytes) -> None:
            try:
                await self._connection.send(message)
            except ConnectionClosed:
                pass  # a broadcast to a client that just left

    class StoredRoomsServer(WebsocketServer):
        """Each room gets its SQLiteYStore and loads its document from it before serving."""

        loaded: dict[str, anyio.Event] = {}

        async def get_room(self, name: str) -> YRoom:
            room = self.rooms.get(name)
            if room is not None:
                await self.start_room(room)
                await self.loaded[name].wait()
                return room
            ystore = store_class(path=name, log=log)
            room = YRoom(ready=False, ystore=ystore, exception_handler=exception_logger, log=log)
            self.rooms[name] = room
            self.loaded[name] = loaded = anyio.Event()
            try:
                await self.start_room(room)  # starts the store too
                await ystore.started.wait()
                try:
                    await ystore.apply_updates(room.ydoc)
                except YDocNotFound:
                    pass
                room.ready = True  # from here on, updates are broadcast and stored
            finally:
                loaded.set()
            return room

        async def delete_room(self, *, name: str | None = None, room: YRoom | None = None) -> None:
            name = name if name is not None else self.get_room_name(room)  # type: ignore[arg-type]
            ystore = self.rooms[name].ystore
            await super().delete_room(name=name)
            self.loaded.pop(name, None)
            if (
                ystore is not None
                and ystore.db_initialized is not None
                and ystore.db_initialized.is_set()
            ):
                try:
                    await (
                        ystore._db.close()
                    )  # what stop() would do; each store has its own connection
                except Exception:  # noqa: BLE001
                    pass

    async def main() -> None:
        async with store_class(path="/init") as store:  # create the schema once, not per room
            await store.db_initialized.wait()
        websocket_server = StoredRoomsServer(
            rooms_ready=False, auto_clean_rooms=True, exception_handler=exception_logger, log=log
        )

        async def handler(connection: Any) -> None:
            path = connection.request.path.split("?", 1)[0]
            await websocket_server.serve(Channel(connection, path))

        async with (
            websocket_server,
            serve(handler, "127.0.0.1", port, max_size=2 << 20, ping_interval=20, ping_timeout=20),
        ):
            print(f"peer serving {db} on {port}", file=sys.stderr, flush=True)
            await asyncio.Future()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# servers and load processes


class Server:
    def __init__(self, side: str, python: str, db: Path, logs: Path) -> None:
        self.side, self.python, self.db, self.logs = side, python, db, logs
        self.node_dir: Path | None = None  # the Node peers' installed packages
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.token = "none"
        self._log_name = ""

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/yjs"

    def prepare(self) -> None:
        """A fresh store; ours needs a device token."""
        if self.side == "ours":
            out = subprocess.run(
                [
                    self.python,
                    "-m",
                    "crdt_sync",
                    "token",
                    "create",
                    "--db",
                    str(self.db),
                    "--role",
                    "device",
                    "--name",
                    "bench",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            self.token = out.stdout.strip().splitlines()[-1]

    def seed(self, prefix: str, count: int) -> float:
        t0 = time.perf_counter()
        if self.side in NODE_SIDES:
            assert self.node_dir is not None
            records = self.db.with_suffix(".records")
            subprocess.run(
                [
                    self.python,
                    str(Path(__file__)),
                    f"_records_{self.side}",
                    "--db",
                    str(records),
                    "--prefix",
                    prefix,
                    "--count",
                    str(count),
                ],
                cwd=ROOT,
                check=True,
                timeout=900,
            )
            subprocess.run(
                ["node", "seed.mjs", self.side, str(self.db), str(records)],
                cwd=self.node_dir,
                check=True,
                timeout=900,
            )
            return time.perf_counter() - t0
        subprocess.run(
            [
                self.python,
                str(Path(__file__)),
                f"_seed_{self.side}",
                "--db",
                str(self.db),
                "--prefix",
                prefix,
                "--count",
                str(count),
            ],
            cwd=ROOT,
            check=True,
            timeout=900,
        )
        return time.perf_counter() - t0

    def start(self) -> None:
        self.launch()
        self.wait_listening()
        self.wait_idle()

    def wait_idle(self, quiet: float = 0.005, windows: int = 5, most: float = 5.0) -> None:
        """Until the process spent under `quiet` CPU seconds in each of `windows` 0.1 s in a
        row (at most `most` s): every side is measured from idle. crdt-sync builds its HTTP
        app in a thread 0.2 s after its doors open (server/front.py), and that start-up
        work (~0.4 s of CPU) counted in whichever workload ran first: (b)'s 50-subscriber
        CPU, and (r)'s first run (~1,000 us an update against ~300) while one quiet 0.1 s
        was taken for idle, the build not yet begun."""
        deadline = time.monotonic() + most
        spent = self.cpu_seconds()
        in_a_row = 0
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.cpu_seconds()
            in_a_row = in_a_row + 1 if now - spent < quiet else 0
            if in_a_row >= windows:
                return
            spent = now

    def launch(self, *, same_port: bool = False) -> None:
        """Start the server process without waiting for it to listen."""
        if not (same_port and self.port):
            self.port = free_port()
        if self.side == "ours":
            command = [
                self.python,
                "-m",
                "crdt_sync",
                "serve",
                "--db",
                str(self.db),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ]
        elif self.side == "hocuspocus":
            command = ["node", "hocuspocus_server.mjs", str(self.port), str(self.db)]
        elif self.side == "ywss":
            command = ["node", "node_modules/@y/websocket-server/src/server.js"]
        else:
            command = [
                self.python,
                str(Path(__file__)),
                "_peer_server",
                "--db",
                str(self.db),
                "--port",
                str(self.port),
            ]
        log = open(self.logs / f"{self.side}-{self.port}.log", "wb")
        env = None
        if self.side == "ywss":
            env = {
                **os.environ,
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "YPERSISTENCE": str(self.db),
            }
        self.process = subprocess.Popen(
            command,
            cwd=self.node_dir if self.side in NODE_SIDES else ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_raise_nofile,
        )
        RUNNING.add(self.process)
        self._log_name = log.name

    def wait_listening(self) -> None:
        assert self.process is not None
        log = self._log_name
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.side} server exited with {self.process.returncode}; see {log}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.side} server did not listen within 60 s")

    def rss(self) -> int:
        import psutil

        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def rss_settled(self, samples: int = 3, gap: float = 0.5) -> int:
        values = []
        for _ in range(samples):
            time.sleep(gap)
            values.append(self.rss())
        return int(statistics.median(values))

    def cpu_seconds(self) -> float:
        import psutil

        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


def compile_checkout(python: str) -> None:
    """Bytecode for the checkout's crdt_sync, as `pip install` writes it for an installed one.

    The servers run crdt_sync from this checkout; with PYTHONDONTWRITEBYTECODE set (as it is
    on the benchmark machine) no run leaves its bytecode behind, so every start compiled
    every crdt_sync module again (~60 ms of (l)'s start to first sync), which a restart of
    an installed server never does (its dependencies in site-packages have theirs).
    """
    subprocess.run(
        [python, "-m", "compileall", "-q", str(ROOT / "crdt_sync")], cwd=ROOT, check=True
    )


EDITABLE_NOTE = (
    "its import finder adds ~15-20 ms to every start, which `pip install .` does not;"
    " for the figures users get, pass --ours-python from a venv installed that way"
)
EDITABLE_CHECK = """
import json
from importlib import metadata
try:
    url = metadata.distribution("crdt-sync").read_text("direct_url.json") or "{}"
except metadata.PackageNotFoundError:
    url = "{}"
print(json.loads(url).get("dir_info", {}).get("editable", False))
"""


def editable_install(python: str) -> bool:
    """Whether `python` has crdt-sync installed editable (`pip install -e`).

    An editable install's import finder is loaded by `site` at every start, before anything
    else: `site` took ~16 ms against ~3 ms without it, and start to the first record synced
    (l) was ~15-20 ms longer (start_floor.py, two pairs). Users run `pip install .` (the
    README's command): the figures that are theirs come from a python installed that way.
    """
    out = subprocess.run(
        [python, "-c", EDITABLE_CHECK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",  # not the checkout: a build's crdt_sync.egg-info there would be found first
    )
    return out.stdout.strip() == "True"


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_load(
    python: str,
    params: dict[str, Any],
    timeout: float,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one load process; `on_event(name, payload)` is called per EVENT, then GO is sent
    (for the events the load process waits on). Returns its RESULT (raises on error)."""
    process = subprocess.Popen(
        [python, str(LOAD), json.dumps(params)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_raise_nofile,
    )
    RUNNING.add(process)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"load {params['workload']} did not finish in {timeout:.0f} s"
                ) from None
            if line is None:
                raise RuntimeError(
                    f"load {params['workload']} exited with {process.wait()} and no result"
                )
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "EVENT":
                name, _, payload = rest.partition(" ")
                if on_event is not None:
                    on_event(name, json.loads(payload or "{}"))
                if name in WAITING_EVENTS.get(params["workload"], ()):
                    assert process.stdin is not None
                    process.stdin.write("GO\n")
                    process.stdin.flush()
            elif kind == "RESULT":
                result = json.loads(rest.strip())
                if "error" in result:
                    raise RuntimeError(result["error"])
                return result
    finally:
        if process.poll() is None:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        RUNNING.discard(process)


WAITING_EVENTS = {
    "open_records": ("warm", "open", "closed"),
    "churn": ("warm", "done"),
    "cold_load": ("ready",),
    "durability_write": ("ready",),
}


# ---------------------------------------------------------------------------------------------
# the workloads


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.python = {side: args.ours_python for side in SIDES}
        self.python["pycrdt"] = args.peer_python
        self.sides = tuple(args.sides)
        self.node_dir = install_node_peers() if set(self.sides) & set(NODE_SIDES) else None
        if self.node_dir is None and set(self.sides) & set(NODE_SIDES):
            self.sides = tuple(side for side in self.sides if side not in NODE_SIDES)
        self.counter = 0
        self.results: dict[str, Any] = {}

    def server(self, side: str, name: str) -> Server:
        self.counter += 1
        db = self.tmp / f"{side}-{name}-{self.counter}.db"
        server = Server(side, self.python[side], db, self.logs)
        server.node_dir = self.node_dir
        server.prepare()
        return server

    def each_side(self, run: int) -> tuple[str, ...]:
        """Every side, in an order that rotates with the run, so none always goes first."""
        shift = run % len(self.sides)
        return self.sides[shift:] + self.sides[:shift]

    def params(self, server: Server, workload: str, **extra: Any) -> dict[str, Any]:
        self.counter += 1
        return {
            "workload": workload,
            "base": server.base,
            "token": server.token,
            "collection": "contacts",
            "run": f"r{self.counter}",
            "dialect": "hocuspocus" if server.side == "hocuspocus" else "y-websocket",
            **extra,
        }

    def guarded(self, label: str, work: Callable[[], Any]) -> Any:
        try:
            return work()
        except Exception as exc:  # noqa: BLE001  (one side failing must not stop the other)
            print(f"  ! {label}: {type(exc).__name__}: {exc}", flush=True)
            if self.args.verbose:
                traceback.print_exc()
            return {"error": f"{type(exc).__name__}: {exc}"}

    def measured(self, server: Server, label: str, params: dict[str, Any]) -> dict[str, Any]:
        """One load run against `server`, with the server CPU seconds it cost."""
        cpu0 = self.guarded("cpu", server.cpu_seconds)
        result: dict[str, Any] = self.guarded(
            label, lambda: run_load(self.python["ours"], params, self.args.load_timeout + 30)
        )
        cpu1 = self.guarded("cpu", server.cpu_seconds)
        if isinstance(cpu0, float) and isinstance(cpu1, float):
            result["server_cpu_s"] = cpu1 - cpu0
        return result

    # (a)
    def throughput(self) -> None:
        a = self.args
        print(
            f"(a) throughput: {a.writers} writers x {a.edits} edits, {a.repeats} runs", flush=True
        )
        servers = {side: self.server(side, "a") for side in self.sides}
        for side, server in servers.items():
            self.guarded(f"start {side}", server.start)
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        try:
            for mode in ("separate", "shared"):
                for run in range(a.repeats):
                    for side in self.each_side(run):
                        server = servers[side]
                        params = self.params(
                            server,
                            "throughput",
                            mode=mode,
                            writers=a.writers,
                            edits=a.edits,
                            timeout=a.load_timeout,
                            peer_db=str(server.db) if side == "pycrdt" else None,
                        )
                        result = self.measured(server, f"{side} {mode}", params)
                        out.setdefault(mode, {}).setdefault(side, []).append(result)
                        if result.get("stored_s"):
                            result["stored_per_s"] = result["edits"] / result["stored_s"]
                        print(
                            f"  {mode:8} {side:10} run {run + 1}: {_brief(result, 'updates_per_s', 'upd/s')}"
                            f" seen={result.get('seen')} seen_s={_f(result.get('seen_s'))} "
                            + (
                                f"acked_s={_f(result.get('acked_s'))} "
                                if side == "ours"
                                else f"stored={result.get('stored_rows')} stored_s={_f(result.get('stored_s'))} "
                            )
                            + f"server_cpu_s={_f(result.get('server_cpu_s'))} "
                            f"client_cpu_s={_f(result.get('client_cpu_s'))}"
                            f"{' reconnects=' + str(result['reconnects']) if result.get('reconnects') else ''}"
                            f"{' errors=' + str(result['errors'][:2]) if result.get('errors') else ''}",
                            flush=True,
                        )
        finally:
            for server in servers.values():
                server.stop()
        self.results["a"] = out

    # (r)
    def roundtrip(self) -> None:
        a = self.args
        print(
            f"(r) round trips: {a.rt_writers} writers x {a.rt_edits} edits, a step 1 / step 2 "
            f"after each, {a.repeats} runs",
            flush=True,
        )
        servers = {side: self.server(side, "r") for side in self.sides}
        for side, server in servers.items():
            self.guarded(f"start {side}", server.start)
        out: dict[str, list[dict[str, Any]]] = {}
        try:
            for run in range(a.repeats):
                for side in self.each_side(run):
                    server = servers[side]
                    params = self.params(
                        server,
                        "roundtrip",
                        writers=a.rt_writers,
                        edits=a.rt_edits,
                        timeout=a.load_timeout,
                    )
                    result = self.measured(server, f"{side} round trips", params)
                    if result.get("server_cpu_s") is not None and result.get("answered"):
                        result["server_cpu_us_per_update"] = (
                            result["server_cpu_s"] / result["answered"] * 1e6
                        )
                    out.setdefault(side, []).append(result)
                    print(
                        f"  {side:10} run {run + 1}: {_brief(result, 'updates_per_s', 'upd/s')} "
                        f"answered={result.get('answered')} "
                        f"server_cpu={_f(result.get('server_cpu_us_per_update'), 0)} us/update"
                        f"{' errors=' + str(result['errors'][:2]) if result.get('errors') else ''}",
                        flush=True,
                    )
        finally:
            for server in servers.values():
                server.stop()
        self.results["r"] = out

    # (b)
    def fanout(self) -> None:
        a = self.args
        print(f"(b) fan-out: {a.fan_edits} edits at {a.fan_rate}/s, {a.repeats_b} runs", flush=True)
        out: dict[int, dict[str, list[dict[str, Any]]]] = {}
        servers = {side: self.server(side, "b") for side in self.sides}
        for side, server in servers.items():
            self.guarded(f"start {side}", server.start)
        try:
            for subs in a.subscribers:
                for run in range(a.repeats_b):
                    for side in self.each_side(run):
                        server = servers[side]
                        params = self.params(
                            server,
                            "fanout",
                            subscribers=subs,
                            edits=a.fan_edits,
                            rate=a.fan_rate,
                            timeout=a.load_timeout,
                            per_process=a.fan_per_process,
                        )
                        if a.fanout_dump:
                            params["dump"] = str(Path(a.fanout_dump) / f"{side}-{subs}-{run}.json")
                        result = self.measured(server, f"{side} fan-out {subs}", params)
                        out.setdefault(subs, {}).setdefault(side, []).append(result)
                        print(
                            f"  {subs:4} subs {side:10} run {run + 1}: p50={_f(result.get('p50_ms'))} ms "
                            f"p99={_f(result.get('p99_ms'))} ms max={_f(result.get('max_ms'))} ms "
                            f"missing={result.get('missing')} echo_p99={_f(result.get('echo_p99_ms'))} ms "
                            f"server_cpu_s={_f(result.get('server_cpu_s'))} "
                            f"procs={result.get('processes')} "
                            f"sub_cpu_max={_f(result.get('subscriber_cpu_s_max'))}"
                            f"{' errors=' + str(result['errors'][:2]) if result.get('errors') else ''}"
                            f"{' ' + result['error'] if 'error' in result else ''}",
                            flush=True,
                        )
        finally:
            for server in servers.values():
                server.stop()
        self.results["b"] = out

    # (c)
    def memory(self) -> None:
        a = self.args
        seeded = max([*a.open_counts, a.churn])
        print(
            f"(c) memory: {a.open_counts} open records; {a.churn} opened once and closed "
            f"(at most {a.churn_time:.0f} s a side)",
            flush=True,
        )
        out: dict[str, Any] = {"open": {}, "churn": {}}
        for side in self.sides:
            server = self.server(side, "c")
            seconds = self.guarded(f"seed {side}", lambda: server.seed("s", seeded))
            if isinstance(seconds, dict):
                continue
            print(f"  {side}: seeded {seeded} records in {seconds:.1f} s", flush=True)
            for count in a.open_counts:
                out["open"].setdefault(count, {})[side] = self.guarded(
                    f"{side} open {count}", lambda: self._open_records(server, count)
                )
                r = out["open"][count][side]
                print(
                    f"  {side:10} {count:5} open: {_brief(r, 'per_record_kib', 'KiB/record')} "
                    f"baseline={_mib(r.get('baseline'))} open={_mib(r.get('open_rss'))} "
                    f"closed={_mib(r.get('closed_rss'))} opened={r.get('opened')} in "
                    f"{_f(r.get('open_s'))} s",
                    flush=True,
                )
            runs = []
            for run in range(a.churn_runs):
                r = self.guarded(f"{side} churn", lambda: self._churn(server))
                runs.append(r)
                print(
                    f"  {side:10} churn {run + 1}: opened {r.get('opened')} of {r.get('requested')} in "
                    f"{_f(r.get('seconds'))} s ({_f(r.get('per_s'))}/s); baseline={_mib(r.get('baseline'))} "
                    f"after={_mib(r.get('after_rss'))} after+5s={_mib(r.get('settled_rss'))}"
                    f"{' error=' + r['error'] if 'error' in r else ''}",
                    flush=True,
                )
            out["churn"][side] = _median_run(runs, "per_s")
        self.results["c"] = out

    def _open_records(self, server: Server, count: int) -> dict[str, Any]:
        a = self.args
        server.start()
        rss: dict[str, int] = {}

        def on_event(name: str, payload: dict[str, Any]) -> None:
            if name == "warm":
                rss["baseline"] = server.rss_settled()
            elif name == "open":
                time.sleep(1.0)
                rss["open_rss"] = server.rss_settled()
            elif name == "closed":
                rss["closed_rss"] = server.rss_settled()

        try:
            params = self.params(
                server,
                "open_records",
                prefix="s",
                count=count,
                concurrency=a.open_concurrency,
                timeout=a.load_timeout,
            )
            result = run_load(self.python["ours"], params, a.load_timeout + 120, on_event)
        finally:
            server.stop()
        result.update(rss)
        if result["opened"]:
            result["per_record_kib"] = (rss["open_rss"] - rss["baseline"]) / result["opened"] / 1024
        return result

    def _churn(self, server: Server) -> dict[str, Any]:
        a = self.args
        server.start()
        rss: dict[str, int] = {}

        def on_event(name: str, payload: dict[str, Any]) -> None:
            if name == "warm":
                rss["baseline"] = server.rss_settled()
            elif name == "done":
                rss["after_rss"] = server.rss()
                time.sleep(5)
                rss["settled_rss"] = server.rss_settled()

        try:
            params = self.params(
                server,
                "churn",
                prefix="s",
                count=a.churn,
                concurrency=a.churn_concurrency,
                time_limit=a.churn_time,
                timeout=a.churn_time + 120,
            )
            result = run_load(self.python["ours"], params, a.churn_time + 300, on_event)
        finally:
            server.stop()
        result.update(rss)
        return result

    # (l)
    def cold_load(self) -> None:
        a = self.args
        print(
            f"(l) cold load: {a.cold} stored records, the server restarted, each opened once "
            f"({a.cold_concurrency} at a time)",
            flush=True,
        )
        out: dict[str, Any] = {}
        servers: dict[str, tuple[Server, float]] = {}
        for side in self.sides:
            server = self.server(side, "l")
            seconds = self.guarded(f"seed {side}", lambda: server.seed("k", a.cold))
            served = (
                seconds
                if isinstance(seconds, dict)
                else self.guarded(f"{side} first start", lambda: self._serve_once(server))
            )
            if isinstance(served, dict):
                out[side] = served
                continue
            servers[side] = (server, seconds)
        # The sides take turns restart by restart, as (a), (r) and (b) take turns run by run:
        # a slow minute of this shared machine then costs each side one restart, not one
        # side all of its restarts (one run had ours' three in one: 330 ms to the first sync
        # against y-ws-server's 183, when every other run had them within 1.2x).
        names = list(servers)
        loads: dict[str, list[dict[str, Any]]] = {side: [] for side in names}
        for turn in range(a.cold_restarts):
            for side in names[turn % len(names) :] + names[: turn % len(names)]:
                server = servers[side][0]
                loads[side].append(
                    self.guarded(f"{side} cold load", lambda: self._cold_load(server))
                )
        for side in names:
            r = out[side] = _medians_of_loads(loads[side])
            print(
                f"  {side:10} seeded in {servers[side][1]:.1f} s; {a.cold_restarts} restarts, medians: start to listening "
                f"{_f(r.get('listen_ms'), 0)} ms, to the first sync {_f(r.get('first_sync_ms'), 0)} ms; "
                f"opened {r.get('opened')} of {r.get('requested')} in {_f(r.get('seconds'))} s "
                f"({_f(r.get('per_s'), 0)}/s, p50 {_f(r.get('p50_ms'))} ms, p99 {_f(r.get('p99_ms'))} ms)"
                f" {[_f(v, 0) for v in r.get('first_sync_each_ms', [])]}"
                f"{' error=' + r['error'] if 'error' in r else ''}",
                flush=True,
            )
        self.results["l"] = out

    def _serve_once(self, server: Server) -> None:
        """The store served once before the restarts: what is measured is a restart."""
        if server.side == "ours":
            compile_checkout(self.python["ours"])
        server.start()
        server.stop()

    def _cold_load(self, server: Server) -> dict[str, Any]:
        a = self.args
        started: dict[str, float] = {}

        def on_event(name: str, payload: dict[str, Any]) -> None:
            if name == "ready":
                started["at"] = time.time()
                server.launch(same_port=True)

        try:
            params = self.params(
                server,
                "cold_load",
                prefix="k",
                count=a.cold,
                concurrency=a.cold_concurrency,
                timeout=a.load_timeout,
            )
            result = run_load(self.python["ours"], params, a.load_timeout + 60, on_event)
        finally:
            server.stop()
        result["listen_ms"] = (result["listening_at"] - started["at"]) * 1000
        if result.get("first_synced_at") is not None:
            result["first_sync_ms"] = (result["first_synced_at"] - started["at"]) * 1000
        return result

    # (d)
    def durability(self) -> None:
        a = self.args
        print(
            f"(d) durability: {a.dur_writers} writers x {a.dur_edits} edits, SIGKILL "
            f"{a.kill_delays} ms after the last was sent",
            flush=True,
        )
        out: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for delay in a.kill_delays:
            for side in self.sides:
                result = self.guarded(f"{side} durability", lambda: self._durability(side, delay))
                out.setdefault(delay, {}).setdefault(side, []).append(result)
                print(
                    f"  {side:10} kill +{delay:4} ms: sent={result.get('sent')} acked={result.get('acked')} "
                    f"stored={result.get('present')} lost_of_acked={result.get('lost_acked')} "
                    f"lost_of_sent={result.get('lost_sent')}"
                    f"{' error=' + result['error'] if 'error' in result else ''}",
                    flush=True,
                )
        self.results["d"] = out

    def _durability(self, side: str, delay_ms: int) -> dict[str, Any]:
        a = self.args
        server = self.server(side, "d")
        server.start()
        killed = {}

        def on_event(name: str, payload: dict[str, Any]) -> None:
            if name == "sent":
                time.sleep(delay_ms / 1000)
                server.kill()
                killed["at"] = time.time()

        try:
            params = self.params(
                server,
                "durability_write",
                writers=a.dur_writers,
                edits=a.dur_edits,
                timeout=a.load_timeout,
            )
            wrote = run_load(self.python["ours"], params, a.load_timeout + 30, on_event)
        finally:
            server.kill()
        server.start()
        try:
            params = self.params(
                server,
                "durability_check",
                records=wrote["records"],
                client_ids=wrote["client_ids"],
                base_clocks=wrote["base_clocks"],
                timeout=a.load_timeout,
            )
            checked = run_load(self.python["ours"], params, a.load_timeout + 30)
        finally:
            server.stop()
        present = checked["present"]
        lost_acked = sum(
            sum(1 for i in echoed if i >= stored)
            for echoed, stored in zip(wrote["echoed"], present)
        )
        return {
            "sent": sum(wrote["sent"]),
            "acked": sum(len(e) for e in wrote["echoed"]),
            "present": sum(present),
            "lost_acked": lost_acked,
            "lost_sent": sum(max(0, s - p) for s, p in zip(wrote["sent"], present)),
            "send_errors": wrote["send_errors"],
        }

    # the table
    def report(self) -> None:
        r, a = self.results, self.args
        print()
        print("=" * 110)
        print(
            f"live_bench results ({'quick' if a.quick else 'full'}); medians over runs; "
            "every server measured in this run"
        )
        for side in self.sides:
            print(f"  {LABELS[side]:18} {self.version(side)}")
        if editable_install(self.python["ours"]):
            print(f"  (crdt-sync is an editable install in {self.python['ours']}: {EDITABLE_NOTE})")
        print("=" * 110)
        rows: list[
            tuple[str, dict[str, float | None], bool]
        ] = []  # (figure, per side, higher wins)

        def per_side(runs_by_side: dict[str, Any], key: str) -> dict[str, float | None]:
            return {side: _median(runs_by_side.get(side, []), key) for side in self.sides}

        if "a" in r:
            for mode, sides in r["a"].items():
                where = "own records" if mode == "separate" else "one shared record"
                rows.append(
                    (
                        f"(a) {a.writers} writers x {a.edits} edits, pipelined, {where}: upd/s",
                        per_side(sides, "updates_per_s"),
                        True,
                    )
                )
        if "r" in r:
            what = f"(r) {a.rt_writers} writers x {a.rt_edits} edits, a round trip after each"
            rows.append((f"{what}: upd/s", per_side(r["r"], "updates_per_s"), True))
            rows.append(
                (
                    f"{what}: server CPU us/update",
                    per_side(r["r"], "server_cpu_us_per_update"),
                    False,
                )
            )
        if "b" in r:
            for subs, sides in r["b"].items():
                what = f"(b) fan-out, 1 writer at {a.fan_rate:.0f} edits/s, {subs} subscribers"
                rows.append((f"{what}: p99 ms", per_side(sides, "p99_ms"), False))
                rows.append(
                    (
                        f"{what}: server CPU s / {subs * a.fan_edits} deliveries",
                        per_side(sides, "server_cpu_s"),
                        False,
                    )
                )
        if "c" in r:
            churn = r["c"]["churn"]
            rows.append(
                (
                    f"(c) {a.churn} stored records opened one after another: records/s",
                    {side: (churn.get(side) or {}).get("per_s") for side in self.sides},
                    True,
                )
            )
            for count, sides in r["c"]["open"].items():
                rows.append(
                    (
                        f"(c) {count} records open at once: server RSS KiB per record",
                        {
                            side: (sides.get(side) or {}).get("per_record_kib")
                            for side in self.sides
                        },
                        False,
                    )
                )
        if "l" in r:
            cold = r["l"]
            for key, what, higher in (
                ("per_s", "each opened once: records/s", True),
                ("first_sync_ms", "the server's start to its first record synced: ms", False),
            ):
                rows.append(
                    (
                        f"(l) cold load, {a.cold} stored records after a restart, {what}",
                        {side: (cold.get(side) or {}).get(key) for side in self.sides},
                        higher,
                    )
                )
        if "d" in r:
            for key, what in (("lost_acked", "acknowledged"), ("lost_sent", "sent")):
                lost: dict[str, float | None] = {}
                for side in self.sides:
                    good = [
                        x
                        for runs in r["d"].values()
                        for x in runs.get(side, [])
                        if "error" not in x
                    ]
                    lost[side] = float(sum(x[key] for x in good)) if good else None
                rows.append(
                    (
                        f"(d) SIGKILL after bursts of {a.dur_writers * a.dur_edits}: {what} "
                        "edits lost, all runs",
                        lost,
                        False,
                    )
                )
        peers = [side for side in self.sides if side != "ours"]
        width = max([len(row[0]) for row in rows] + [20])
        print(
            f"{'figure':{width}} "
            + " ".join(f"{LABELS[side]:>17}" for side in self.sides)
            + f" {'ours/best peer':>15}"
        )
        for figure, values, higher in rows:
            known = {side: v for side, v in values.items() if side in peers and v is not None}
            best = (max if higher else min)(known.values()) if known else None
            ours = values.get("ours")
            if ours is None or best is None:
                ratio = "-"
            elif best == 0:
                ratio = "=" if ours == 0 else "worse"
            else:
                ratio = f"{ours / best:.2f}x" + (
                    " ok" if (ours >= best if higher else ours <= best) else ""
                )
            print(
                f"{figure:{width}} "
                + " ".join(f"{_f(values.get(side), 1):>17}" for side in self.sides)
                + f" {ratio:>15}"
            )
        print(
            "\nratios: higher is better for rates, lower for latency, CPU, memory and losses; "
            "'ok' marks a row where crdt-sync is at or better than the best peer;\n"
            "a peer's acknowledgement is its echo, which it sends before it stores."
        )
        if "a" in r and "pycrdt" in self.sides:
            stored = {m: _median(s.get("pycrdt", []), "stored_per_s") for m, s in r["a"].items()}
            print(
                "(a) a reader sees crdt-sync's edits only after their commit; the peers broadcast "
                "before they store.\n    pycrdt-websocket, until its rows were in SQLite: "
                + ", ".join(f"{m} {_f(v, 0)} upd/s" for m, v in stored.items())
            )
        for key, label in (("a", "(a)"), ("r", "(r)"), ("b", "(b)")):
            for side, why in self._failures(key).items():
                print(f"{label} {LABELS[side]}: {why}")
        if "d" in r:
            print("\n(d) durability per kill delay: sent / acknowledged / stored / lost of acked")
            for delay, sides in r["d"].items():
                cells = []
                for side in self.sides:
                    good = [x for x in sides.get(side, []) if "error" not in x]
                    if not good:
                        cells.append(f"{LABELS[side]} -")
                        continue
                    tot = {
                        k: sum(x[k] for x in good)
                        for k in ("sent", "acked", "present", "lost_acked", "lost_sent")
                    }
                    acked = f"{tot['acked']}" if side == "ours" else f"({tot['acked']})"
                    lost = f"{tot['lost_acked']}" if side == "ours" else f"({tot['lost_acked']})"
                    cells.append(f"{LABELS[side]} {tot['sent']}/{acked}/{tot['present']}/{lost}")
                print(f"  +{delay:>5} ms: " + "; ".join(cells))
            print(
                "  (in parentheses: a peer's echoes, which it sends before it stores, so they "
                "acknowledge nothing)"
            )
        print()

    def _failures(self, key: str) -> dict[str, str]:
        """Per side, why some runs of workload `key` gave no figure."""
        out: dict[str, str] = {}
        groups = self.results.get(key, {})
        by_side: dict[str, list[dict[str, Any]]] = {}
        if key == "r":
            by_side = groups
        else:
            for sides in groups.values():
                for side, runs in sides.items():
                    by_side.setdefault(side, []).extend(runs)
        for side, runs in by_side.items():
            failed = [x for x in runs if "error" in x or x.get("errors")]
            if failed:
                why = sorted({str((x.get("errors") or [x.get("error")])[0])[:120] for x in failed})
                out[side] = f"{len(failed)} of {len(runs)} runs with errors: {'; '.join(why)[:300]}"
        return out

    def version(self, side: str) -> str:
        try:
            if side in NODE_SIDES:
                assert self.node_dir is not None
                names = (
                    ("@hocuspocus/server", "@hocuspocus/extension-sqlite", "better-sqlite3")
                    if side == "hocuspocus"
                    else ("@y/websocket-server", "y-leveldb", "yjs")
                )
                node = subprocess.run(
                    ["node", "--version"], capture_output=True, text=True, timeout=30
                ).stdout.strip()
                modules = self.node_dir / "node_modules"
                found = [
                    f"{n} {json.loads((modules / n / 'package.json').read_text())['version']}"
                    for n in names
                ]
                return ", ".join(found) + f" (node {node})"
            module = "crdt-sync" if side == "ours" else "pycrdt-websocket"
            extra = "" if side == "ours" else ", m.version('pycrdt-store')"
            out = subprocess.run(
                [
                    self.python[side],
                    "-c",
                    f"import importlib.metadata as m; print(m.version('{module}'){extra},"
                    " 'pycrdt', m.version('pycrdt'))",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return out.stdout.strip()
        except Exception:  # noqa: BLE001
            return "(version unknown)"


def install_node_peers() -> Path | None:
    """benchmarks/node's packages installed with `npm ci` into a cache folder named after the
    lock file (installed once; better-sqlite3 compiles), with the scripts copied beside them.
    None, with the reason printed, when Node or npm is missing or the install fails."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        print("  ! the Node peers need node (>= 20) and npm on PATH: left out", flush=True)
        return None
    lock = (NODE_PACKAGES / "package-lock.json").read_bytes()
    folder = (
        Path.home() / ".cache" / "crdt-sync" / f"bench-node-{hashlib.sha256(lock).hexdigest()[:12]}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", "hocuspocus_server.mjs", "seed.mjs"):
        shutil.copyfile(NODE_PACKAGES / name, folder / name)
    if not (folder / "node_modules" / ".installed").exists():
        print(f"  installing the Node peers into {folder} (npm ci, a few minutes)", flush=True)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if done.returncode != 0:
            print(f"  ! npm ci failed ({done.returncode}): {done.stderr[-500:]}", flush=True)
            return None
        (folder / "node_modules" / ".installed").write_text("ok\n")
    return folder


def records_file(path: str, side: str, prefix: str, count: int) -> None:
    """The seeded records for a Node peer's seed.mjs: names as that peer names the rooms."""
    with open(path, "wb") as out:
        for i in range(count):
            name = f"contacts/{prefix}{i}" if side == "hocuspocus" else f"yjs/contacts/{prefix}{i}"
            update = contact_update(i)[0]
            encoded = name.encode()
            out.write(len(encoded).to_bytes(4, "big") + encoded)
            out.write(len(update).to_bytes(4, "big") + update)


def _median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [x[key] for x in results if isinstance(x.get(key), int | float)]
    return statistics.median(values) if values else None


def _ratio(ours: float | None, peer: float | None) -> str:
    if not ours or not peer:
        return "-"
    return f"{ours / peer:.2f}x"


def _f(value: Any, digits: int = 2) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def _medians_of_loads(loads: list[dict[str, Any]]) -> dict[str, Any]:
    """(l): the medians of each figure over a side's restarts (one restart alone moved by
    1.5x between runs on this shared machine: the row compared one sample a side)."""
    result = dict(loads[-1])
    for key in ("listen_ms", "first_sync_ms", "seconds", "per_s", "p50_ms", "p99_ms"):
        values = [load[key] for load in loads if load.get(key) is not None]
        if values:
            result[key] = statistics.median(values)
    result["opened"] = min(load.get("opened") or 0 for load in loads)
    result["first_sync_each_ms"] = [load.get("first_sync_ms") for load in loads]
    return result


def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose `key` is the median of the runs that have it (a run, not a mix of runs:
    its other figures go with it); the first run if none has it."""
    measured = sorted(
        (r for r in runs if isinstance(r.get(key), int | float)), key=lambda r: r[key]
    )
    return measured[(len(measured) - 1) // 2] if measured else runs[0]


def _mib(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value / 2**20:.1f} MiB"


def _brief(result: dict[str, Any], key: str, unit: str) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    return f"{_f(result.get(key), 1)} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller runs (about 8 minutes with every side)"
    )
    parser.add_argument("--only", default="a,r,b,c,l,d", help="workloads to run, e.g. a,c")
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help=f"servers to run, of {', '.join(SIDES)} (default: all)",
    )
    parser.add_argument(
        "--peer-python",
        default=sys.executable,
        help="python with pycrdt-websocket and pycrdt-store (default: this one)",
    )
    parser.add_argument(
        "--ours-python",
        default=sys.executable,
        help="python with crdt_sync installed; also runs the load generator",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, DBs)"
    )
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--fanout-dump",
        default="",
        help="(b): write each run's timeline (every edit's send, echo and receive per "
        "subscriber, perf_counter ns) to DIR/<side>-<subs>-<run>.json",
    )
    parser.add_argument(
        "--fan-per-process",
        type=int,
        default=50,
        help="(b): subscribers per load process (default 50: 200 subscribers in 4 processes)",
    )
    parser.add_argument(
        "--cold", type=int, default=0, help="(l): stored records (default 5,000; 20,000 full)"
    )
    parser.add_argument(
        "--cold-restarts",
        type=int,
        default=3,
        help="(l): restarts, each timed to its first sync and cold-loaded; medians (default 3)",
    )
    parser.add_argument(
        "--rt-edits",
        type=int,
        default=100,
        help="(r): edits per writer (default 100; 1,000 shows the warm, CPU-bound rate)",
    )
    parser.add_argument(
        "--churn-runs",
        type=int,
        default=0,
        help="(c): runs of the opened-once-and-closed load, a fresh server each, median "
        "(default 3 with --quick; 1 in full, whose run is 100k records)",
    )
    parser.add_argument(
        "--repeats-b",
        type=int,
        default=0,
        help="(b): runs per subscriber count, median taken (default 3)",
    )
    args = parser.parse_args()
    quick = args.quick
    args.writers, args.edits = 10, (300 if quick else 500)
    args.repeats = 3
    args.rt_writers, args.rt_edits = 10, args.rt_edits
    args.subscribers = [50, 200]
    args.fan_edits, args.fan_rate = 200, 100.0
    args.repeats_b = args.repeats_b or 3
    args.open_counts = [1000, 5000]
    args.open_concurrency = 64
    args.churn = 5_000 if quick else 100_000
    args.churn_time = 60.0 if quick else 600.0
    args.churn_concurrency = 64
    args.churn_runs = args.churn_runs or (3 if quick else 1)
    args.cold = args.cold or (5_000 if quick else 20_000)
    args.cold_concurrency = 64
    args.dur_writers, args.dur_edits = 4, 500
    args.kill_delays = [0, 150, 600] if quick else [0, 100, 300, 1000, 3000]
    args.load_timeout = 120.0
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = set(args.sides) - set(SIDES)
    if unknown or "ours" not in args.sides:
        parser.error(f"--sides: 'ours' and any of {', '.join(SIDES[1:])} (got {args.sides})")
    if editable_install(args.ours_python):
        print(f"warning: crdt-sync is an editable install in {args.ours_python}: {EDITABLE_NOTE}")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="live-bench-"))
    bench = Bench(args, tmp)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for key, work in (
            ("a", bench.throughput),
            ("r", bench.roundtrip),
            ("b", bench.fanout),
            ("c", bench.memory),
            ("l", bench.cold_load),
            ("d", bench.durability),
        ):
            if key in only:
                t0 = time.perf_counter()
                bench.guarded(f"workload {key}", work)
                print(f"  ({key} took {time.perf_counter() - t0:.0f} s)", flush=True)
        bench.report()
    finally:
        for process in list(RUNNING):  # only what this run started, by pid
            if process.poll() is None:
                process.kill()
                process.wait()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")


def _sub_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--prefix", default="s")
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args()
    if args.command == "_peer_server":
        peer_server(args.db, args.port)
    elif args.command == "_seed_ours":
        seed_ours(args.db, args.prefix, args.count)
    elif args.command == "_seed_pycrdt":
        seed_peer(args.db, args.prefix, args.count)
    elif args.command.startswith("_records_"):
        records_file(args.db, args.command.removeprefix("_records_"), args.prefix, args.count)
    else:
        raise SystemExit(f"unknown command {args.command}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        _sub_main()
    else:
        main()

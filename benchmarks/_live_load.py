"""The load generator of `live_bench.py`: y-websocket clients in a process of their own.

    python benchmarks/_live_load.py '{"workload": "throughput", ...}'

Not meant to be run by hand: `live_bench.py` starts it, one run per (workload, server), and
talks to it over stdout/stdin with one line per message:

- it prints `EVENT <name> <json>` at the points where the orchestrator measures something
  (server RSS) or acts (SIGKILL), and for some events waits for a `GO` line on stdin;
- it prints `RESULT <json>` last and exits 0 (or `RESULT {"error": ...}` and exits 1).

Every client speaks plain y-websocket (the same bytes to every server): on open it sends sync
step 1 with its state vector, answers the server's step 1 with a step 2, and is synced when
the server's step 2 arrives. For Hocuspocus (`"dialect": "hocuspocus"`) the same messages go
in its envelope: each prefixed with the document's name, after an authentication message.
Edits set `record["company"]` to a marker `#wwww.iiiiiii#` (writer, index) that appears
verbatim in the update bytes, so a receiver knows which edit a frame carries with one regex,
without decoding it into a document. Every loop is bounded in count and in time; every
address is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

MARKER = re.compile(rb"#(\d{4})\.(\d{7})#")
SYNC, AWARENESS, AUTH = 0, 1, 2
STEP1, STEP2, UPDATE = 0, 1, 2
HOCUSPOCUS_SYNC_REPLY = 4  # a sync message the server sends in answer; read as SYNC
HOCUSPOCUS_PERMISSION_DENIED = 1  # AUTH's sub-type
DIALECT = {"name": "y-websocket", "token": ""}  # set once per process from the params
RETRY_CODES = {1013, 1001, 1011}  # admission control / restarting: come back with backoff


def marker(writer: int, index: int) -> str:
    return f"#{writer:04d}.{index:07d}#"


# ---------------------------------------------------------------------------------------------
# y-websocket framing (lib0 varUint / varBytes)


def var_uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7


def sync_message(sub_type: int, payload: bytes) -> bytes:
    return bytes((SYNC, sub_type)) + var_uint(len(payload)) + payload


def var_string(text: str) -> bytes:
    data = text.encode()
    return var_uint(len(data)) + data


def hocuspocus_document(url: str) -> str:
    """Hocuspocus multiplexes documents on one socket and ignores the path: the record's name
    ("contacts/x") goes in every message instead."""
    return url.split("?", 1)[0].split("/yjs/", 1)[1]


def sync_payload(message: bytes) -> bytes:
    length, pos = read_var_uint(message, 2)
    return message[pos : pos + length]


def state_vector(encoded: bytes) -> dict[int, int]:
    count, pos = read_var_uint(encoded, 0)
    out = {}
    for _ in range(count):
        client, pos = read_var_uint(encoded, pos)
        clock, pos = read_var_uint(encoded, pos)
        out[client] = clock
    return out


# ---------------------------------------------------------------------------------------------
# one client


class OpenFailed(Exception):
    pass


class YClient:
    """One y-websocket connection to one record.

    `on_update(message, t_ns)` sees every sync-update frame (sub-type 2) with its arrival time;
    with `track` the client also applies everything it receives to `self.doc` (and `on_update`
    sees the server's step 2 too). With `reconnect_until` (monotonic) a dropped connection is
    opened again and synced, as y-websocket does: the server's step 1 is answered with all the
    client has that the server lacks, so edits not sent before the drop go in that step 2.
    """

    def __init__(
        self,
        url: str,
        *,
        on_update: Callable[[bytes, int], None] | None = None,
        track: bool = False,
        reconnect_until: float | None = None,
    ) -> None:
        self.url = url
        self.on_update = on_update
        self.track = track
        self.reconnect_until = reconnect_until
        self.reconnects = 0
        self.drops: list[str] = []  # why the server closed us, when we did not ask
        self.gone = asyncio.Event()  # closed for good: not reconnecting (any more)
        self._closing = False
        self._reopening: asyncio.Task[None] | None = None
        self.doc: Doc[Any] = Doc()
        self.ws: ClientConnection | None = None
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.denied: list[str] = []
        self.updates = 0
        self.step2s = asyncio.Event()  # set at every step 2 from the server (round trips)
        self._reader: asyncio.Task[None] | None = None
        self._envelope = b""
        if DIALECT["name"] == "hocuspocus":
            self._envelope = var_string(hocuspocus_document(url))

    async def open(self, deadline: float, sync_timeout: float = 30.0) -> None:
        """Connect and sync; retry on admission refusals (1013) until `deadline` (monotonic)."""
        attempt = 0
        while True:
            attempt += 1
            self.synced = asyncio.Event()
            self.closed = asyncio.Event()
            self.close_code = None
            try:
                self.ws = await connect(
                    self.url,
                    compression=None,
                    proxy=None,
                    max_size=16 << 20,
                    max_queue=512,
                    ping_interval=None,
                    open_timeout=20,
                    close_timeout=2,
                )
                self._reader = asyncio.create_task(self._read())
                if self._envelope:  # Hocuspocus: authenticate (token 0, then the token)
                    await self.ws.send(
                        self._envelope + bytes((AUTH, 0)) + var_string(DIALECT["token"])
                    )
                await self.send(sync_message(STEP1, self.doc.get_state()))
                done, _ = await asyncio.wait(
                    [
                        asyncio.create_task(self.synced.wait()),
                        asyncio.create_task(self.closed.wait()),
                    ],
                    timeout=sync_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in _:
                    task.cancel()
                if self.synced.is_set():
                    return
                code = self.close_code
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                if self.ws is not None:
                    await self.abort()
                if time.monotonic() > deadline:
                    raise OpenFailed(f"{type(exc).__name__}: {exc}") from None
            else:
                await self.abort()
                if code not in RETRY_CODES or time.monotonic() > deadline:
                    raise OpenFailed(f"closed before sync: code={code} {self.close_reason!r}")
            await asyncio.sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.5))

    async def _read(self) -> None:
        ws = self.ws
        assert ws is not None
        try:
            async for message in ws:
                t = time.perf_counter_ns()
                if isinstance(message, str) or len(message) < 2:
                    continue
                if self._envelope:  # Hocuspocus: drop the document name, map its kinds
                    length, start = read_var_uint(message, 0)
                    message = message[start + length :]
                    if len(message) < 2:
                        continue
                    if message[0] == HOCUSPOCUS_SYNC_REPLY:
                        message = bytes((SYNC,)) + message[1:]
                    elif message[0] == AUTH:
                        if message[1] == HOCUSPOCUS_PERMISSION_DENIED:
                            self.denied.append(message[2:].decode("utf-8", "replace"))
                        continue
                kind, sub = message[0], message[1]
                if kind == SYNC:
                    if sub == UPDATE:
                        self.updates += 1
                        if self.track:
                            self.doc.apply_update(sync_payload(message))
                        if self.on_update is not None:
                            self.on_update(message, t)
                    elif sub == STEP1:
                        sv = sync_payload(message)
                        await ws.send(self._envelope + sync_message(STEP2, self.doc.get_update(sv)))
                    elif sub == STEP2:
                        payload = sync_payload(message)
                        self.step2s.set()
                        if self.track or not self.synced.is_set():
                            self.doc.apply_update(payload)
                        if self.on_update is not None and (self.track or MARKER.search(payload)):
                            self.on_update(message, t)
                        self.synced.set()
                elif kind == AUTH:  # permission denied
                    self.denied.append(message[2:].decode("utf-8", "replace"))
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None
            self.close_reason = exc.rcvd.reason if exc.rcvd else ""
        except Exception as exc:  # noqa: BLE001
            self.close_reason = f"{type(exc).__name__}: {exc}"
        finally:
            if self.close_code is None and ws.close_code is not None:
                self.close_code = ws.close_code
            was_synced = self.synced.is_set()
            self.closed.set()
            if was_synced and not self._closing:
                self.drops.append(f"{self.close_code} {self.close_reason}")
                if self.reconnect_until is not None and time.monotonic() < self.reconnect_until:
                    self._reopening = asyncio.create_task(self._reopen())
                else:
                    self.gone.set()
            elif self._closing:
                self.gone.set()

    async def _reopen(self) -> None:
        assert self.reconnect_until is not None
        self.reconnects += 1
        try:
            await asyncio.sleep(random.uniform(0.05, 0.3))
            await self.open(self.reconnect_until)
        except Exception as exc:  # noqa: BLE001
            self.close_reason = f"reconnect failed: {type(exc).__name__}: {exc}"
            self.gone.set()

    async def send(self, message: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(self._envelope + message if self._envelope else message)

    async def close(self) -> None:
        self._closing = True
        if self._reopening is not None:
            self._reopening.cancel()
            await asyncio.gather(self._reopening, return_exceptions=True)
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001
                pass
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def abort(self) -> None:
        if self.ws is not None:
            self.ws.transport.abort()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


def edit_updates(
    doc: Doc[Any], edits: list[dict[str, Any]], clocks: list[int] | None = None
) -> list[bytes]:
    """One update per edit (a dict of fields to set), made on `doc` in order; `clocks` gets
    the doc's own clock after each edit."""
    record = doc.get("record", type=Map)
    out = []
    for fields in edits:
        before = doc.get_state()
        with doc.transaction():
            for key, value in fields.items():
                record[key] = value
        out.append(doc.get_update(before))
        if clocks is not None:
            clocks.append(state_vector(doc.get_state())[doc.client_id])
    return out


async def open_many(
    urls: list[str],
    *,
    concurrency: int,
    deadline: float,
    factory: Callable[[str], YClient] | None = None,
) -> tuple[list[YClient], list[str]]:
    """Open and sync one client per url, `concurrency` at a time; (opened, errors)."""
    gate = asyncio.Semaphore(concurrency)
    factory = factory or (lambda url: YClient(url))
    opened: list[YClient] = []
    errors: list[str] = []

    async def one(url: str) -> None:
        async with gate:
            client = factory(url)
            try:
                await client.open(deadline)
                opened.append(client)
            except OpenFailed as exc:
                errors.append(str(exc))

    await asyncio.gather(*(one(url) for url in urls))
    return opened, errors


async def close_many(clients: list[YClient], concurrency: int = 200) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: YClient) -> None:
        async with gate:
            await client.close()

    await asyncio.gather(*(one(c) for c in clients))


def emit(kind: str, name: str, payload: dict[str, Any] | None = None) -> None:
    sys.stdout.write(
        f"{kind} {name} {json.dumps(payload or {})}\n"
        if kind == "EVENT"
        else f"RESULT {json.dumps(payload)}\n"
    )
    sys.stdout.flush()


async def wait_go(timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), timeout)
    if line.strip() != "GO":
        raise RuntimeError(f"expected GO from the orchestrator, got {line!r}")


def url_of(params: dict[str, Any], record_id: str) -> str:
    return f"{params['base']}/{params['collection']}/{record_id}?token={params['token']}"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# ---------------------------------------------------------------------------------------------
# workloads


async def throughput(p: dict[str, Any]) -> dict[str, Any]:
    """W writers x N pipelined edits; done when the reader has seen every edit."""
    writers, edits, shared = p["writers"], p["edits"], p["mode"] == "shared"
    run = p["run"]
    deadline = time.monotonic() + p["timeout"]
    ids = [f"{run}-shared"] if shared else [f"{run}-w{j}" for j in range(writers)]
    total = writers * edits

    if shared:  # the record exists (with its required name) before anyone edits it
        seeder = YClient(url_of(p, ids[0]))
        await seeder.open(deadline)
        got = asyncio.Event()
        seeder.on_update = lambda m, t: got.set()
        await seeder.send(sync_message(UPDATE, edit_updates(seeder.doc, [{"name": "Shared"}])[0]))
        await asyncio.wait_for(got.wait(), 10)
        await seeder.close()

    # The reader applies what it gets and is done when its documents hold every writer's last
    # edit (state vectors): markers alone would not do, as a server may re-encode an update,
    # and a concurrent map write that loses is then sent without its (deleted) content.
    expected: dict[str, dict[int, int]] = {}
    covered: set[str] = set()
    all_seen = asyncio.Event()
    t_seen = [0]
    readers_by_id: dict[str, YClient] = {}

    def check(record_id: str, t: int) -> None:
        want = expected.get(record_id)
        if want is None or record_id in covered:
            return
        have = state_vector(readers_by_id[record_id].doc.get_state())
        if all(have.get(client, 0) >= clock for client, clock in want.items()):
            covered.add(record_id)
            if len(covered) == len(ids):
                t_seen[0] = t
                all_seen.set()

    def reader(record_id: str) -> YClient:
        client = YClient(
            url_of(p, record_id),
            track=True,
            reconnect_until=deadline,
            on_update=lambda m, t: check(record_id, t),
        )
        readers_by_id[record_id] = client
        return client

    record_of = {url_of(p, i): i for i in ids}
    readers, errors = await open_many(
        list(record_of), concurrency=50, deadline=deadline, factory=lambda u: reader(record_of[u])
    )
    if errors:
        raise RuntimeError(f"readers failed to open: {errors[:3]}")

    acked = [0] * writers
    t_acked = [0] * writers

    def writer_update(j: int) -> Callable[[bytes, int], None]:
        mine = f"{j:04d}".encode()

        def on_update(message: bytes, t: int) -> None:
            for found in MARKER.finditer(message):
                if found.group(1) == mine:
                    acked[j] += 1
                    if acked[j] == edits:
                        t_acked[j] = t

        return on_update

    clients = [
        YClient(
            url_of(p, ids[0 if shared else j]), on_update=writer_update(j), reconnect_until=deadline
        )
        for j in range(writers)
    ]
    await asyncio.gather(*(c.open(deadline) for c in clients))
    frames: list[list[bytes]] = []
    writer_clocks: list[tuple[str, int, list[int]]] = []
    for j, client in enumerate(clients):
        edits_j: list[dict[str, Any]] = [{"company": marker(j, i)} for i in range(edits)]
        if not shared:
            edits_j[0]["name"] = f"Writer {j}"
        clocks: list[int] = []
        frames.append([sync_message(UPDATE, u) for u in edit_updates(client.doc, edits_j, clocks)])
        expected.setdefault(ids[0 if shared else j], {})[client.doc.client_id] = clocks[-1]
        writer_clocks.append((ids[0 if shared else j], client.doc.client_id, clocks))

    t_sent = [0] * writers

    async def write(j: int) -> None:
        try:
            for frame in frames[j]:
                await clients[j].send(frame)
        except ConnectionClosed:
            pass  # dropped: the rest goes in the step 2 of the reconnection
        t_sent[j] = time.perf_counter_ns()

    t0 = time.perf_counter_ns()
    cpu0 = time.process_time()
    send_errors: list[str] = []
    for result in await asyncio.gather(*(write(j) for j in range(writers)), return_exceptions=True):
        if isinstance(result, BaseException):
            send_errors.append(f"{type(result).__name__}: {result}")
    # Until the reader has it all, or a connection is gone for good (then it never will).
    waits = [
        asyncio.create_task(all_seen.wait()),
        *(asyncio.create_task(c.gone.wait()) for c in [*clients, *readers]),
    ]
    await asyncio.wait(
        waits, timeout=max(1.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
    )
    for task in waits:
        task.cancel()
    # The writers' own echoes (ours: committed) may trail the reader by a little.
    ack_deadline = time.monotonic() + 5
    while min(acked) < edits and time.monotonic() < ack_deadline and all_seen.is_set():
        await asyncio.sleep(0.01)
    client_cpu_s = time.process_time() - cpu0
    stored_s = stored = None
    if p.get("peer_db"):  # the peer writes to SQLite after broadcasting: when is it all stored?
        # (rows of the writers' edits; the shared record's creating edit may be missing: the
        # peer drops a room's pending writes when its last client leaves, as the seeder did)
        stored, t_stored = await wait_stored(
            p["peer_db"], f"/yjs/{p['collection']}/{run}-", total, deadline=time.monotonic() + 60
        )
        stored_s = (t_stored - t0) / 1e9 if t_stored else None
    closes = sorted(
        {
            f"{role} dropped: {drop}"
            for role, group in (("writer", clients), ("reader", readers))
            for c in group
            for drop in c.drops
        }
    )
    reconnects = sum(c.reconnects for c in [*clients, *readers])
    seen = 0
    for record_id, client_id, clocks in writer_clocks:
        have = state_vector(readers_by_id[record_id].doc.get_state()).get(client_id, 0)
        seen += sum(1 for clock in clocks if have >= clock)
    denied = sum(len(c.denied) for c in clients)
    await close_many([*clients, *readers])
    out: dict[str, Any] = {
        "edits": total,
        "seen": seen,
        "complete": all_seen.is_set(),
        "send_s": (max(t_sent) - t0) / 1e9 if all(t_sent) else None,
        "seen_s": (t_seen[0] - t0) / 1e9 if all_seen.is_set() else None,
        "acked": sum(acked),
        "acked_s": (max(t_acked) - t0) / 1e9 if all(t_acked) else None,
        "stored_rows": stored,
        "stored_s": stored_s,
        "client_cpu_s": client_cpu_s,
        "reconnects": reconnects,
        "errors": send_errors + closes + ([f"{denied} permission-denied"] if denied else []),
    }
    out["updates_per_s"] = total / out["seen_s"] if out["seen_s"] else None
    return out


async def roundtrip(p: dict[str, Any]) -> dict[str, Any]:
    """W writers x N edits on their own records, each edit followed by a sync step 1 and a wait
    for the server's step 2: an editor that waits for the server after every edit, so nothing
    can be merged on the way. Rate = all edits / the time until the last writer had its
    last answer."""
    writers, edits = p["writers"], p["edits"]
    deadline = time.monotonic() + p["timeout"]
    ids = [f"{p['run']}-rt{j}" for j in range(writers)]
    clients = [YClient(url_of(p, ids[j])) for j in range(writers)]
    await asyncio.gather(*(c.open(deadline) for c in clients))
    frames = []
    for j, client in enumerate(clients):
        edits_j: list[dict[str, Any]] = [{"company": marker(j, i)} for i in range(edits)]
        edits_j[0]["name"] = f"Editor {j}"
        frames.append([sync_message(UPDATE, u) for u in edit_updates(client.doc, edits_j)])
    done = [0] * writers
    late: list[str] = []

    async def edit(j: int) -> None:
        client = clients[j]
        for frame in frames[j]:
            client.step2s.clear()
            await client.send(frame)
            await client.send(sync_message(STEP1, client.doc.get_state()))
            try:
                await asyncio.wait_for(client.step2s.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                late.append(f"writer {j}: no step 2 within the time limit")
                return
            done[j] += 1

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.gather(*(edit(j) for j in range(writers)))
    seconds = time.perf_counter() - t0
    client_cpu_s = time.process_time() - cpu0
    denied = sum(len(c.denied) for c in clients)
    await close_many(clients)
    total = sum(done)
    return {
        "edits": writers * edits,
        "answered": total,
        "seconds": seconds,
        "updates_per_s": total / seconds if seconds and total == writers * edits else None,
        "client_cpu_s": client_cpu_s,
        "errors": late[:3] + ([f"{denied} permission-denied"] if denied else []),
    }


async def wait_stored(db: str, prefix: str, rows: int, deadline: float) -> tuple[int, int | None]:
    """Poll the peer's SQLite file (read-only) until `rows` updates under `prefix` are in it."""
    import sqlite3

    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    count = 0
    try:
        while time.monotonic() < deadline:
            try:
                count = connection.execute(
                    "SELECT count(*) FROM yupdates WHERE path >= ? AND path < ?",
                    (prefix, prefix + "\uffff"),
                ).fetchone()[0]
            except sqlite3.OperationalError:
                pass  # locked by the writer for a moment
            if count >= rows:
                return count, time.perf_counter_ns()
            await asyncio.sleep(0.02)
        return count, None
    finally:
        connection.close()


def delivery_counter(
    row: list[int], edits: int, remaining: list[int], all_in: asyncio.Event
) -> Callable[[bytes, int], None]:
    """Marks in `row` (one subscriber's receive time per edit) the edits a frame delivers.

    Every edit sets the same field, so edit i has reached a subscriber once any edit >= i has
    (frames arrive in order): a server that merges a burst into one frame may drop what the
    later edits overwrote (crdt-sync re-encodes a merge, garbage-collected), and those edits
    count as delivered with the frame that superseded them, not as missing (f9369b8)."""

    def on_update(message: bytes, t: int) -> None:
        for found in MARKER.finditer(message):
            for i in range(min(int(found.group(2)), edits - 1), -1, -1):
                if row[i]:
                    break
                row[i] = t
                remaining[0] -= 1
                if remaining[0] == 0:
                    all_in.set()

    return on_update


async def fanout_subscribers(p: dict[str, Any]) -> dict[str, Any]:
    """One of `fanout`'s subscriber processes: open `subscribers` clients on the record; EVENT
    ready (with this process's perf_counter_ns); GO (the edits start); return each client's
    receive time per edit once all are in, or `wait_s` after GO."""
    subs, edits = p["subscribers"], p["edits"]
    deadline = time.monotonic() + p["timeout"]
    received = [[0] * edits for _ in range(subs)]
    remaining = [subs * edits]
    all_in = asyncio.Event()
    counters = iter([delivery_counter(row, edits, remaining, all_in) for row in received])
    subscribers, errors = await open_many(
        [url_of(p, p["record"])] * subs,
        concurrency=min(50, subs),
        deadline=deadline,
        factory=lambda u: YClient(u, on_update=next(counters)),
    )
    if errors:
        raise RuntimeError(f"{len(errors)} subscribers failed to open: {errors[:3]}")
    emit("EVENT", "ready", {"clock_ns": time.perf_counter_ns()})
    await wait_go()
    cpu0 = time.process_time()
    try:
        await asyncio.wait_for(all_in.wait(), p["wait_s"])
    except TimeoutError:
        pass
    cpu_s = time.process_time() - cpu0
    closes = sorted({f"{c.close_code} {c.close_reason}" for c in subscribers if c.close_code})
    await close_many(subscribers)
    return {"received_ns": received, "cpu_s": cpu_s, "errors": closes}


class SubscriberProcess:
    """A `fanout_subscribers` run in a child process, spoken to as `live_bench` speaks to us."""

    def __init__(self, process: asyncio.subprocess.Process, started_ns: int) -> None:
        self.process = process
        self.started_ns = started_ns

    @classmethod
    async def start(cls, params: dict[str, Any]) -> SubscriberProcess:
        started_ns = time.perf_counter_ns()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            json.dumps(params),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 << 20,  # the result is one line: every receive time of its subscribers
        )
        return cls(process, started_ns)

    async def line(self, timeout: float) -> tuple[str, dict[str, Any]]:
        """The next EVENT (its name) or RESULT (""), with its payload; raises on an error."""
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), max(0.1, timeout))
        if not raw:
            raise RuntimeError(f"a subscriber process exited with {await self.process.wait()}")
        kind, _, rest = raw.decode().rstrip("\n").partition(" ")
        name, _, payload = rest.partition(" ") if kind == "EVENT" else ("", "", rest)
        result = json.loads(payload or "{}")
        if "error" in result:
            raise RuntimeError(f"a subscriber process: {result['error']}")
        return name, result

    async def wait_ready(self, timeout: float) -> None:
        """Its subscribers are synced. Checks that its clock is ours: perf_counter is
        CLOCK_MONOTONIC on Linux, one clock for the whole system, so the child's reading
        must fall between its start and our reading of its line."""
        name, payload = await self.line(timeout)
        now = time.perf_counter_ns()
        if name != "ready" or not self.started_ns < payload["clock_ns"] < now:
            raise RuntimeError(f"a subscriber process: {name} {payload}, not a ready on our clock")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"GO\n")

    async def result(self, timeout: float) -> dict[str, Any]:
        _, result = await self.line(timeout)
        await asyncio.wait_for(self.process.wait(), 5)
        return result

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def fanout(p: dict[str, Any]) -> dict[str, Any]:
    """1 writer, S subscribers on one record; paced edits; latency from send to each receive.

    The subscribers are spread over processes of at most `per_process` each (the writer stays
    in this one), so reading 200 deliveries an edit is not one process's work: one Python
    process takes ~20,000 frames/s, the whole load of 200 subscribers at 100 edits/s. Every
    process stamps with perf_counter_ns, the one system-wide monotonic clock (checked)."""
    subs, edits, rate = p["subscribers"], p["edits"], p["rate"]
    deadline = time.monotonic() + p["timeout"]
    record = f"{p['run']}-fan"
    sent_ns = [0] * edits
    own_ns = [0] * edits

    def own_update(message: bytes, t: int) -> None:
        for found in MARKER.finditer(message):
            for i in range(min(int(found.group(2)), edits - 1), -1, -1):
                if own_ns[i]:
                    break
                own_ns[i] = t

    writer = YClient(url_of(p, record), on_update=own_update)
    await writer.open(deadline)
    created = asyncio.Event()
    writer.on_update = lambda m, t: created.set()
    await writer.send(sync_message(UPDATE, edit_updates(writer.doc, [{"name": "Fan-out"}])[0]))
    await asyncio.wait_for(created.wait(), 10)
    writer.on_update = own_update
    count = -(-subs // p.get("per_process", subs))
    sizes = [subs // count + (k < subs % count) for k in range(count)]
    wait_s = 0.5 + edits / rate + 10.0  # from GO: the pause below, the edits, then 10 s
    children: list[SubscriberProcess] = []
    try:
        for size in sizes:
            child_params = {
                **p,
                "workload": "fanout_subscribers",
                "subscribers": size,
                "record": record,
                "wait_s": wait_s,
                "timeout": max(1.0, deadline - time.monotonic()),
            }
            child_params.pop("dump", None)
            children.append(await SubscriberProcess.start(child_params))
        for child in children:
            await child.wait_ready(deadline - time.monotonic())
        for child in children:
            child.go()
        await asyncio.sleep(0.5)
        frames = [
            sync_message(UPDATE, u)
            for u in edit_updates(writer.doc, [{"company": marker(0, i)} for i in range(edits)])
        ]
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_ns[i] = time.perf_counter_ns()
            await writer.send(frame)
        results = [await child.result(wait_s + 30) for child in children]
    finally:
        for child in children:
            child.kill()
    received = [row for result in results for row in result["received_ns"]]
    latencies = [(row[i] - sent_ns[i]) / 1e6 for row in received for i in range(edits) if row[i]]
    own = [(own_ns[i] - sent_ns[i]) / 1e6 for i in range(edits) if own_ns[i]]
    closes = {f"{writer.close_code} {writer.close_reason}"} if writer.close_code else set()
    closes.update(error for result in results for error in result["errors"])
    await writer.close()
    if p.get("dump"):  # the timeline: per edit its send, its echo and each subscriber's receive
        with open(p["dump"], "w") as out:
            json.dump({"sent_ns": sent_ns, "own_ns": own_ns, "received_ns": received}, out)
    return {
        "subscribers": subs,
        "processes": len(children),
        "edits": edits,
        "deliveries": len(latencies),
        "missing": subs * edits - len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "echo_p50_ms": percentile(own, 50),
        "echo_p99_ms": percentile(own, 99),
        "echoes": len(own),
        "subscriber_cpu_s_max": max(result["cpu_s"] for result in results),
        "errors": sorted(closes),
    }


async def open_records(p: dict[str, Any]) -> dict[str, Any]:
    """Warm up; GO; open `count` records (one synced connection each); GO; close them; GO."""
    deadline = time.monotonic() + p["timeout"]
    ids = [f"{p['prefix']}{i}" for i in range(p["count"])]
    warm, _ = await open_many([url_of(p, i) for i in ids[:20]], concurrency=10, deadline=deadline)
    await close_many(warm)
    emit("EVENT", "warm")
    await wait_go()
    t0 = time.perf_counter()
    clients, errors = await open_many(
        [url_of(p, i) for i in ids], concurrency=p["concurrency"], deadline=deadline
    )
    opened_s = time.perf_counter() - t0
    alive = sum(1 for c in clients if not c.closed.is_set())
    emit(
        "EVENT",
        "open",
        {
            "opened": len(clients),
            "alive": alive,
            "seconds": opened_s,
            "errors": errors[:3],
            "failed": len(errors),
        },
    )
    await wait_go()
    await close_many(clients)
    emit("EVENT", "closed")
    await wait_go()
    return {
        "opened": len(clients),
        "alive": alive,
        "failed": len(errors),
        "open_s": opened_s,
        "errors": errors[:3],
    }


async def churn(p: dict[str, Any]) -> dict[str, Any]:
    """Warm up; GO; open and close each of `count` records once (bounded in time); GO."""
    deadline = time.monotonic() + p["timeout"]
    ids = [f"{p['prefix']}{i}" for i in range(p["count"])]
    warm, _ = await open_many([url_of(p, i) for i in ids[:20]], concurrency=10, deadline=deadline)
    await close_many(warm)
    emit("EVENT", "warm")
    await wait_go()
    stop_at = time.monotonic() + p["time_limit"]
    gate = asyncio.Semaphore(p["concurrency"])
    done = [0]
    failed: list[str] = []

    async def one(record_id: str) -> None:
        if time.monotonic() > stop_at:
            return
        async with gate:
            if time.monotonic() > stop_at:
                return
            client = YClient(url_of(p, record_id))
            try:
                await client.open(min(deadline, stop_at + 30))
                done[0] += 1
            except OpenFailed as exc:
                failed.append(str(exc))
            finally:
                await client.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in ids))
    seconds = time.perf_counter() - t0
    emit("EVENT", "done", {"opened": done[0], "seconds": seconds, "failed": len(failed)})
    await wait_go()
    return {
        "opened": done[0],
        "requested": len(ids),
        "seconds": seconds,
        "per_s": done[0] / seconds if seconds else None,
        "failed": len(failed),
        "errors": failed[:3],
    }


async def cold_load(p: dict[str, Any]) -> dict[str, Any]:
    """EVENT ready; GO (the orchestrator has just started the server, on the same store as
    its last run); wait for its port; open each of `count` stored records once, `concurrency`
    at a time. Reports when the port first accepted and when the first record was synced
    (wall clock, for the orchestrator to compare with the server's start), and records/s."""
    ids = [f"{p['prefix']}{i}" for i in range(p["count"])]
    host, _, port = p["base"].split("//", 1)[1].split("/", 1)[0].rpartition(":")
    emit("EVENT", "ready")
    await wait_go()
    deadline = time.monotonic() + p["timeout"]
    while True:  # polled every 10 ms: the moment it listens, not a retry's backoff later
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)
            continue
        writer.close()
        listening_at = time.time()
        break
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(p["concurrency"])
    latencies: list[float] = []
    failed: list[str] = []
    first_synced_at: list[float] = []

    async def one(record_id: str) -> None:
        async with gate:
            client = YClient(url_of(p, record_id))
            started = time.perf_counter()
            try:
                await client.open(deadline)
                latencies.append((time.perf_counter() - started) * 1000)
                if not first_synced_at:
                    first_synced_at.append(time.time())
            except OpenFailed as exc:
                failed.append(str(exc))
            finally:
                await client.close()

    await one(ids[0])  # alone: the first sync after the restart, then the rest at once
    await asyncio.gather(*(one(i) for i in ids[1:]))
    seconds = time.perf_counter() - t0
    return {
        "opened": len(latencies),
        "requested": len(ids),
        "seconds": seconds,
        "per_s": len(latencies) / seconds if seconds else None,
        "listening_at": listening_at,
        "first_synced_at": first_synced_at[0] if first_synced_at else None,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "failed": len(failed),
        "errors": failed[:3],
    }


async def durability_write(p: dict[str, Any]) -> dict[str, Any]:
    """Writers on separate records: a creating edit each, then a pipelined burst; the orchestrator
    SIGKILLs the server on EVENT sent. Reports per writer what was sent and what was echoed."""
    writers, edits = p["writers"], p["edits"]
    deadline = time.monotonic() + p["timeout"]
    ids = [f"{p['run']}-d{j}" for j in range(writers)]
    echoed: list[set[int]] = [set() for _ in range(writers)]

    def on_update(j: int) -> Callable[[bytes, int], None]:
        def handler(message: bytes, t: int) -> None:
            for found in MARKER.finditer(message):
                echoed[j].add(int(found.group(2)))

        return handler

    clients = [YClient(url_of(p, ids[j]), on_update=on_update(j)) for j in range(writers)]
    await asyncio.gather(*(c.open(deadline) for c in clients))
    created = [asyncio.Event() for _ in range(writers)]
    for j, client in enumerate(clients):
        client.on_update = lambda m, t, e=created[j]: e.set()
        await client.send(sync_message(UPDATE, edit_updates(client.doc, [{"name": f"D{j}"}])[0]))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in created)), 10)
    base = [state_vector(c.doc.get_state())[c.doc.client_id] for c in clients]
    frames = []
    for j, client in enumerate(clients):
        client.on_update = on_update(j)
        updates = edit_updates(client.doc, [{"company": marker(j, i)} for i in range(edits)])
        frames.append([sync_message(UPDATE, u) for u in updates])
    await asyncio.sleep(1.0)  # let a lazy store catch up with the creating edits
    emit("EVENT", "ready")
    await wait_go()
    sent = [0] * writers

    async def burst(j: int) -> None:
        for frame in frames[j]:
            await clients[j].send(frame)
            sent[j] += 1

    results = await asyncio.gather(*(burst(j) for j in range(writers)), return_exceptions=True)
    emit("EVENT", "sent", {"sent": sum(sent)})
    # The server is being killed: read what it managed to send before dying.
    try:
        await asyncio.wait_for(asyncio.gather(*(c.closed.wait() for c in clients)), 10)
    except TimeoutError:
        pass
    for client in clients:
        await client.abort()
    return {
        "records": ids,
        "client_ids": [c.doc.client_id for c in clients],
        "base_clocks": base,
        "sent": sent,
        "echoed": [sorted(e) for e in echoed],
        "send_errors": [
            f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)
        ],
    }


async def durability_check(p: dict[str, Any]) -> dict[str, Any]:
    """A fresh client syncs each record: how many burst edits of each writer are stored."""
    deadline = time.monotonic() + p["timeout"]
    present = []
    for record_id, client_id, base in zip(p["records"], p["client_ids"], p["base_clocks"]):
        client = YClient(url_of(p, record_id), track=True)
        await client.open(deadline)
        present.append(max(0, state_vector(client.doc.get_state()).get(client_id, 0) - base))
        await client.close()
    return {"present": present}


WORKLOADS = {
    "throughput": throughput,
    "roundtrip": roundtrip,
    "fanout": fanout,
    "fanout_subscribers": fanout_subscribers,
    "open_records": open_records,
    "churn": churn,
    "cold_load": cold_load,
    "durability_write": durability_write,
    "durability_check": durability_check,
}


def main() -> int:
    params = json.loads(sys.argv[1])
    DIALECT.update(name=params.get("dialect", "y-websocket"), token=params.get("token", ""))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        result = asyncio.run(WORKLOADS[params["workload"]](params))
    except Exception as exc:  # noqa: BLE001  (reported to the orchestrator, which goes on)
        emit("RESULT", "", {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit("RESULT", "", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Three nodes on one PostgreSQL store and one Redis: the guarantees of one node, across them.

Each test runs real `crdt-sync serve --store postgresql://... --bus redis://...` processes on
127.0.0.1 over a PostgreSQL schema of its own and a Redis of its own (a `redis-server` it
starts, so it may stop it without touching anyone else's).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from pycrdt import Map

from crdt_sync.ids import DocId, Seq
from crdt_sync.protocol.close import CloseCode
from crdt_sync.server.auth import create_token
from crdt_sync.store.postgres import PostgresStore

from .conftest import free_socket, wait_for
from .nodes import Node, spawn_node
from .peers import MuxPeer, mux_peer, record_of, yjs_peer
from .services import postgres, postgres_schema, unavailable


@dataclass
class PrivateRedis:
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False
            )
            if b"PONG" in ping.stdout:
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server", "not installed")
    with free_socket() as sock:
        port = sock.getsockname()[1]
    server = PrivateRedis(port)
    server.start()
    yield server
    server.stop()


@dataclass
class Deployment:
    url: str
    redis: PrivateRedis
    admin: str
    device: str
    nodes: list[Node]
    logs: Path

    def add_node(self, *, bus_url: str | None = None, extra: Sequence[str] = ()) -> Node:
        log = self.logs / f"node{len(self.nodes)}.log"
        node = spawn_node(self.url, log, bus_url=bus_url or self.redis.url, extra=extra)
        self.nodes.append(node)
        return node


@pytest.fixture
async def deployment(redis: PrivateRedis, tmp_path: Path) -> AsyncIterator[Deployment]:
    with postgres_schema() as url:
        async with PostgresStore(url) as store:
            admin = await create_token(store, name="admin", role="admin")
            device = await create_token(store, name="phone", role="device")
        deployment = Deployment(url, redis, admin, device, [], tmp_path)
        try:
            for _ in range(3):
                await asyncio.to_thread(deployment.add_node)
            yield deployment
        finally:
            for node in deployment.nodes:
                node.signal(signal.SIGCONT)
                node.kill()


async def test_a_mux_client_on_one_node_and_a_stock_yjs_client_on_another_converge(
    deployment: Deployment,
) -> None:
    a, _, c = deployment.nodes
    url = c.ws("/yjs/contacts/42", deployment.device)
    async with mux_peer(a.ws("/ws", deployment.device), client="ann-phone") as ann:
        async with yjs_peer(url) as bob:
            await ann.wait_ack(await ann.edit("contacts/42", name="Ann"))
            await wait_for(lambda: record_of(bob).get("name") == "Ann", timeout=5)
            bob.get("record", type=Map)["phone"] = "+33 1 23 45 67 89"
            await wait_for(
                lambda: record_of(ann.document("contacts/42")).get("phone") == "+33 1 23 45 67 89",
                timeout=5,
            )
    async with deployment.nodes[1].client(deployment.admin) as http:
        view = (await http.get("/api/contacts/42")).json()
    assert (view["name"], view["phone"]) == ("Ann", "+33 1 23 45 67 89")


async def test_revoking_a_token_on_one_node_closes_its_sockets_on_every_node(
    deployment: Deployment,
) -> None:
    a, b, c = deployment.nodes
    async with mux_peer(b.ws("/ws", deployment.device)) as on_b:
        async with mux_peer(c.ws("/ws", deployment.device)) as on_c:
            async with a.client(deployment.admin) as http:
                answer = await http.delete("/api/admin/tokens/phone")
                assert answer.status_code in (200, 204), answer.text
            for peer in (on_b, on_c):
                await wait_for(lambda peer=peer: peer.websocket.close_code is not None, 5)  # type: ignore[misc]
        for peer in (on_b, on_c):
            assert peer.websocket.close_code == CloseCode.UNAUTHORIZED
    async with websockets.connect(c.ws("/yjs/contacts/1", deployment.device)) as again:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await again.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.UNAUTHORIZED


async def test_a_retried_push_lands_once_whichever_node_gets_it(deployment: Deployment) -> None:
    a, b, _ = deployment.nodes
    push = {"changes": {"contacts": {"created": [{"id": "p1", "name": "Pat"}]}}, "lastPulledAt": 1}
    headers = {"Authorization": f"Bearer {deployment.device}", "Idempotency-Key": "batch-1"}
    async with httpx.AsyncClient(timeout=10) as http:
        answers = await asyncio.gather(
            http.post(f"{a.http}/api/sync/outgoing", json=push, headers=headers),
            http.post(f"{b.http}/api/sync/outgoing", json=push, headers=headers),
        )
        again = await http.post(f"{b.http}/api/sync/outgoing", json=push, headers=headers)
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert answers[0].json() == answers[1].json() == again.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    async with PostgresStore(deployment.url, readers=1) as store:
        history = await store.history(DocId("contacts/p1"))
    # Once, not two or three; the other node that had the record live rewrote its view after
    # the foreign commit with an empty update (engine: view repairs), which changes nothing.
    assert [e.origin for e in history if e.origin != "view-repair"] == ["phone"]


async def test_a_node_that_never_announces_still_has_its_writes_delivered_from_the_log(
    deployment: Deployment,
) -> None:
    """As a node killed between commit and publish: its commit reaches the others' peers
    although no news of it ever crosses the bus."""
    with free_socket() as sock:
        nowhere = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"  # nothing listens there
    silent = await asyncio.to_thread(deployment.add_node, bus_url=nowhere)
    other = deployment.nodes[0]
    async with mux_peer(other.ws("/ws", deployment.device), client="watcher") as watcher:
        async with mux_peer(silent.ws("/ws", deployment.device), client="writer") as writer:
            await writer.wait_ack(await writer.edit("deals/7", title="Quiet deal"))
        await wait_for(
            lambda: record_of(watcher.document("deals/7")).get("title") == "Quiet deal", 5
        )


async def test_redis_stopped_under_load_loses_nothing_and_fan_out_resumes(
    deployment: Deployment,
) -> None:
    a, b, _ = deployment.nodes
    async with mux_peer(b.ws("/ws", deployment.device), client="watcher") as watcher:
        async with mux_peer(a.ws("/ws", deployment.device), client="writer") as writer:
            acked: list[int] = []

            async def write(n: int) -> None:
                acked.append(
                    await writer.wait_ack(await writer.edit(f"tasks/t{n % 7}", title=f"task {n}"))
                )

            for n in range(20):
                await write(n)
            deployment.redis.stop()
            for n in range(20, 60):
                await write(n)
                await asyncio.sleep(0.1)  # about 5 s of writes while Redis is down
            deployment.redis.start()
            for n in range(60, 80):
                await write(n)
            await wait_for(lambda: set(acked) <= set(watcher.seqs), 10)
    assert sorted(watcher.seqs) == sorted(set(watcher.seqs))  # each update once


async def _status(node: Node, token: str) -> dict[str, object]:
    async with node.client(token) as http:
        answer = await http.get("/api/sync/status")
        assert answer.status_code == 200, answer.text
        status: dict[str, object] = answer.json()
        return status


async def test_a_node_killed_under_load_loses_no_acknowledged_write_and_doubles_none(
    deployment: Deployment,
) -> None:
    """SIGKILL node A while a /ws client and REST pushes write through it; the client moves to
    node B and catches up from its cursor, unanswered pushes are retried on B with their keys."""
    a, b, _ = deployment.nodes
    acked: dict[int, str] = {}  # seq -> the title that write set
    answered: set[str] = set()
    headers = {"Authorization": f"Bearer {deployment.device}"}

    async def push(http: httpx.AsyncClient, node: Node, n: int) -> bool:
        body = {"changes": {"deals": {"created": [{"id": f"d{n}", "title": f"deal {n}"}]}}}
        try:
            answer = await http.post(
                f"{node.http}/api/sync/outgoing",
                json={**body, "lastPulledAt": 1},
                headers={**headers, "Idempotency-Key": f"push-{n}"},
            )
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    async with httpx.AsyncClient(timeout=5) as http:
        async with mux_peer(a.ws("/ws", deployment.device), client="ann") as ann:

            async def ws_writes() -> None:
                for n in range(1000):
                    title = f"task {n}"
                    try:
                        seq = await ann.wait_ack(await ann.edit(f"tasks/t{n % 5}", title=title), 2)
                    except (websockets.ConnectionClosed, TimeoutError, AssertionError):
                        return
                    acked[seq] = title

            async def rest_writes() -> None:
                for n in range(1000):
                    if not await push(http, a, n):
                        return
                    answered.add(f"push-{n}")

            async def kill_soon() -> None:
                await wait_for(lambda: len(acked) >= 20 and len(answered) >= 5, 30)
                a.kill()

            await asyncio.gather(ws_writes(), rest_writes(), kill_soon())
        tried = {int(key.removeprefix("push-")) for key in answered}
        for n in range(max(tried) + 2):  # every push, retried on B: each lands once
            assert await push(http, b, n)

    # The client reconnects to B from cursor 0 and finds every acknowledged write.
    async with mux_peer(b.ws("/ws", deployment.device), client="ann") as again:
        assert set(acked) <= set(again.seqs)
    async with PostgresStore(deployment.url, readers=1) as store:
        log = await store.log_since(Seq(0), limit=100_000)
        records = {r.doc_id: r for r in await store.snapshot(limit=100_000)}
    device_writes = [e for e in log if e.origin != "view-repair"]
    assert len({e.seq for e in log}) == len(log)
    deals = [e for e in device_writes if e.doc_id.startswith("deals/")]
    assert len(deals) == len({e.doc_id for e in deals}) == max(tried) + 2  # none twice
    for seq in acked:
        assert any(e.seq == seq for e in log)
    last_acked: dict[str, int] = {}
    for seq in sorted(acked):
        n = int(acked[seq].removeprefix("task "))
        last_acked[f"tasks/t{n % 5}"] = n
    for doc_id, n in last_acked.items():  # a later write may have committed unacknowledged
        assert int(records[DocId(doc_id)].view["title"].removeprefix("task ")) >= n


async def ack_or_close(peer: MuxPeer, cseq: int) -> int | None:
    """The write's seq once acknowledged; None if the server closed the connection first."""

    def answered() -> bool:
        return cseq in peer.acks or peer.websocket.close_code is not None

    await wait_for(answered, 60)
    return peer.acks.get(cseq)


def writer_sessions(url: str, node: Node) -> list[tuple[object, ...]]:
    """The backend pid of `node`'s writer connection (none once PostgreSQL ended it)."""
    return postgres(
        url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
        (f"crdt-sync writer {node.process.pid}",),
    )


def holds_seq_lock(url: str, node: Node) -> bool:
    """Whether `node`'s writer is in a transaction that holds the seq lock now.

    The lock is the row lock of `seq_head`: while a transaction holds it (FOR UPDATE, then
    UPDATE), the row version others see carries that transaction's xid as its xmax, and
    pg_stat_activity names the transaction's xid beside its connection's application name.
    """
    rows = postgres(
        url,
        "SELECT count(*) FROM pg_stat_activity a, seq_head h"
        " WHERE a.application_name = %s AND a.backend_xid = h.xmax",
        (f"crdt-sync writer {node.process.pid}",),
    )
    return rows == [(1,)]


async def test_a_node_stopped_holding_the_seq_lock_is_cut_off_and_the_others_resume(
    deployment: Deployment,
) -> None:
    """SIGSTOP node D under write load until it is caught holding the seq lock (twice): the
    other nodes' commits wait, PostgreSQL ends D's session after --idle-timeout, they resume;
    once continued, D fails its batch unacknowledged and commits again on a new connection.
    No acknowledged write, of any node, is missing from the log.

    D takes idempotent REST pushes: a batch with keys holds the lock across round trips to
    its node (its answer needs its seqs); a /ws write holds it only inside one statement on
    the server, so a stopped node cannot hold it then (store/postgres/commits.py)."""
    b = deployment.nodes[1]
    d = await asyncio.to_thread(
        deployment.add_node, extra=["--idle-timeout", "1", "--lock-timeout", "30"]
    )
    acked: dict[str, dict[int, str]] = {"b": {}, "d": {}}  # seq -> doc_id, by node
    cut_off: list[str] = []  # writes the node answered with an error, or not at all
    done = asyncio.Event()

    async def write(name: str, node: Node) -> None:
        # One record per write: a failed write leaves no later one depending on it.
        n = 0
        while not done.is_set():
            try:
                async with mux_peer(node.ws("/ws", deployment.device), client=name) as peer:
                    while not done.is_set():
                        doc_id = f"tasks/{name}-{n}"
                        n += 1
                        seq = await ack_or_close(peer, await peer.edit(doc_id, title=doc_id))
                        if seq is None:  # a store error: "try again later", then reconnect
                            cut_off.append(doc_id)
                            break
                        acked[name[0]][seq] = doc_id
            except (OSError, TimeoutError, websockets.InvalidHandshake):
                continue  # (re)connecting while the node was stopped: again

    async def push(name: str, node: Node) -> None:
        headers = {"Authorization": f"Bearer {deployment.device}"}
        async with httpx.AsyncClient(timeout=60) as http:
            for n in itertools.count():
                if done.is_set():
                    return
                record_id = f"{name}-{n}"
                body = {"changes": {"tasks": {"created": [{"id": record_id, "title": name}]}}}
                try:
                    answer = await http.post(
                        f"{node.http}/api/sync/outgoing",
                        json={**body, "lastPulledAt": 1},
                        headers={**headers, "Idempotency-Key": record_id},
                    )
                except httpx.HTTPError:
                    answer = None
                if answer is None or answer.status_code != 200:  # 503: the store failed
                    cut_off.append(f"tasks/{record_id}")
                    continue
                seq = await asyncio.to_thread(
                    postgres,
                    deployment.url,
                    "SELECT seq FROM updates WHERE doc_id = %s",
                    (f"tasks/{record_id}",),
                )
                assert len(seq) == 1, (record_id, seq)  # acknowledged: stored, once
                acked["d"][int(str(seq[0][0]))] = f"tasks/{record_id}"

    async def more_acks(node: str, count: int) -> None:
        target = len(acked[node]) + count
        await wait_for(lambda: len(acked[node]) >= target, 60)

    async def stop_until_caught(times: int) -> int:
        caught = 0
        for attempt in range(1000):
            d.signal(signal.SIGSTOP)
            if not await asyncio.to_thread(holds_seq_lock, deployment.url, d):
                d.signal(signal.SIGCONT)
                await asyncio.sleep(random.uniform(0.01, 0.05))
                continue
            caught += 1
            await more_acks("b", 3)  # B commits again
            await wait_for(lambda: writer_sessions(deployment.url, d) == [], 60)  # D was ended
            d.signal(signal.SIGCONT)
            await more_acks("d", 3)  # and D commits again, on a new connection
            if caught == times:
                print(f"caught D holding the seq lock {caught} times in {attempt + 1} stops")
                break
        done.set()
        return caught

    writers = [push("d1", d), push("d2", d), push("d3", d), write("b1", b)]
    *_, caught = await asyncio.gather(*writers, stop_until_caught(2))
    assert caught == 2
    assert cut_off  # D's batch in flight at each stop failed, unacknowledged
    rows = await asyncio.to_thread(postgres, deployment.url, "SELECT seq, doc_id FROM updates")
    log = {seq: doc_id for seq, doc_id in rows}
    for node in acked.values():
        for seq, doc_id in node.items():
            assert log.get(seq) == doc_id


async def test_sync_status_on_any_node_lists_every_node_of_the_deployment(
    deployment: Deployment,
) -> None:
    """Each node keeps a heartbeat row in PostgreSQL: its address, start, last heartbeat and
    open connections. A node killed stays listed, no longer alive; one stopped cleanly leaves."""
    a, b, c = deployment.nodes

    def by_address(status: dict[str, object]) -> dict[str, dict[str, object]]:
        nodes = status["nodes"]
        assert isinstance(nodes, list)
        return {node["address"]: node for node in nodes}

    async with (
        mux_peer(c.ws("/ws", deployment.device), client="on-c"),
        mux_peer(c.ws("/ws", deployment.device), client="also-on-c"),
    ):

        async def c_has_two() -> bool:
            seen = by_address(await _status(a, deployment.device))
            return seen[c.http]["connections"] == 2

        await wait_for(c_has_two, 15)  # by C's next heartbeat
        for node in (a, b, c):
            status = await _status(node, deployment.device)
            seen = by_address(status)
            assert set(seen) == {a.http, b.http, c.http}
            assert all(n["alive"] for n in seen.values())
            assert [n["this"] for n in seen.values()].count(True) == 1
            assert seen[node.http]["this"] and seen[node.http]["id"] == status["node"]
            assert seen[c.http]["connections"] == 2
            assert seen[a.http]["connections"] == seen[b.http]["connections"] == 0
            assert len({n["id"] for n in seen.values()}) == 3

    c.kill()

    async def c_is_gone() -> bool:
        seen = by_address(await _status(a, deployment.device))
        return seen[c.http]["alive"] is False

    await wait_for(c_is_gone, 30)  # about three heartbeats missed
    b.signal(signal.SIGTERM)
    b.process.wait(30)
    seen = by_address(await _status(a, deployment.device))
    assert set(seen) == {a.http, c.http}  # B left on its way out; C's row stays, not alive

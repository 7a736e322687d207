"""Interop with the stock JavaScript client: yjs + y-websocket's WebsocketProvider under Node.

Every test runs twice (tests/doors.py): on one server, and with the Node client on node B of
three nodes over PostgreSQL while the other peers' writes enter through nodes A and C.

Each Node client is `tests/node/yclient.mjs`, a separate process driven by JSON lines on
stdin and reporting JSON lines on stdout (see the script's header). The npm packages are
pinned in `tests/package-lock.json`; the session fixture installs them with `npm ci` when
`tests/node_modules` is missing, and skips these tests on a machine without node and npm.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from pycrdt import Awareness, Doc, Map, Text

from crdt_sync.protocol.ysync import YjsAwareness, decode_yjs_message

from .client_helpers import stored
from .conftest import RunningServer, wait_for
from .doors import Doors
from .nodejs import node_with_packages
from .peers import mux_peer, record_of, yjs_peer

pytestmark = pytest.mark.node

TESTS = Path(__file__).parent
SCRIPT = TESTS / "node" / "yclient.mjs"
PACKAGES = ("yjs", "y-websocket", "ws")
TIMEOUT = 10.0


@pytest.fixture(scope="session")
def node() -> str:
    """The node executable, with tests/node_modules installed from the lockfile."""
    return node_with_packages(PACKAGES, "yjs/y-websocket interop")


class NodeClient:
    """One `yclient.mjs` process: what it reported, and commands to send it."""

    def __init__(self, process: asyncio.subprocess.Process, room: str) -> None:
        self.process = process
        self.room = room
        self.events: list[dict[str, Any]] = []
        self.record: dict[str, Any] = {}
        self.synced = False
        self.client_id: int | None = None
        self.awareness: dict[int, Any] = {}
        self.stderr = b""
        self._ids = itertools.count(1)
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    @property
    def denied(self) -> list[str]:
        return [e["reason"] for e in self.of("denied")]

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            event = json.loads(line)
            self.events.append(event)
            if event["event"] == "record":
                self.record = event["record"]
            elif event["event"] == "synced":
                self.synced = event["synced"]
            elif event["event"] == "awareness":
                self.client_id = event["clientID"]
                self.awareness = {int(k): v for k, v in event["states"].items()}

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = await self.process.stderr.read()

    async def wait(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        try:
            await wait_for(condition, timeout)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; node client on {self.room} reported:\n"
                + "\n".join(json.dumps(e) for e in self.events[-30:])
                + f"\nstderr: {self.stderr.decode(errors='replace')}"
            ) from None

    async def command(self, op: str, **fields: Any) -> None:
        """Send a command; return once the script has carried it out."""
        assert self.process.stdin is not None
        command_id = next(self._ids)
        line = json.dumps({"op": op, "id": command_id, **fields})
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

        def outcome() -> list[dict[str, Any]]:
            return [e for e in self.of("applied") + self.of("error") if e["id"] == command_id]

        await self.wait(lambda: bool(outcome()))
        if outcome()[0]["event"] == "error":
            raise AssertionError(f"node client refused {op}: {outcome()[0]['message']}")

    async def edit(self, *edits: dict[str, Any]) -> None:
        """Apply `edits` in one Yjs transaction (see yclient.mjs for the edit forms)."""
        await self.command("edit", edits=list(edits))

    async def close(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the script destroys its provider and exits
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


@asynccontextmanager
async def node_client(
    node: str,
    server: RunningServer,
    room: str,
    token: str | None = None,
    client_id: int | None = None,
) -> AsyncIterator[NodeClient]:
    """A stock WebsocketProvider on ws://.../yjs + '/' + room, yielded once synced."""
    token = server.device_token if token is None else token
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        f"ws://127.0.0.1:{server.port}/yjs",
        room,
        token,
        *([] if client_id is None else [str(client_id)]),
        cwd=TESTS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    client = NodeClient(process, room)
    try:
        await client.wait(lambda: client.synced, 20)
        yield client
    finally:
        await client.close()


async def test_node_pycrdt_and_mux_clients_editing_one_record_at_once_converge_with_the_store(
    node: str,
    doors: Doors,
) -> None:
    """On three nodes the Node client, the pycrdt peer and the /ws client each use another."""
    doc_id = "contacts/42"
    async with (
        node_client(node, doors.b, doc_id) as js,
        yjs_peer(doors.a.ws(f"/yjs/{doc_id}")) as py,
        mux_peer(doors.c.ws("/ws")) as mux,
    ):
        await js.edit({"set": "name", "value": "Ann"}, {"set": "notes", "text": "met at the fair"})
        mux_doc = mux.document(doc_id)
        await wait_for(
            lambda: (
                record_of(py).get("notes") == "met at the fair"
                and record_of(mux_doc).get("notes") == "met at the fair"
            )
        )

        # All three edit at once: every local change is made before any peer can see another's.
        py_record = py.get("record", type=Map)
        with py.transaction():
            py_record["phone"] = "+33 1"
            py_notes = py_record["notes"]
            assert isinstance(py_notes, Text)
            py_notes.insert(len(py_notes), " [py]")
        before = mux_doc.get_state()
        mux_record = mux_doc.get("record", type=Map)
        with mux_doc.transaction():
            mux_record["company"] = "Acme"
            mux_record["notes"].insert(3, "[mux]")
        mux_update = mux_doc.get_update(before)
        await js.edit(
            {"set": "email", "value": "ann@example.com"},
            {"insert": "notes", "index": 0, "text": "[node] "},
        )
        assert await mux.wait_ack(await mux.write(doc_id, mux_update)) > 0

        expected = {
            "name": "Ann",
            "email": "ann@example.com",
            "phone": "+33 1",
            "company": "Acme",
            "notes": "[node] met[mux] at the fair [py]",
        }
        await js.wait(
            lambda: (
                js.record == expected
                and record_of(py) == expected
                and record_of(mux_doc) == expected
            )
        )
        assert js.denied == [] and js.of("connection-close") == []
    assert await stored(doors.a, doc_id) == {"id": "42", **expected}


async def test_a_node_client_writing_a_bad_value_gets_the_reason_and_stays_connected(
    node: str,
    doors: Doors,
) -> None:
    doc_id = "deals/9"
    async with (
        node_client(node, doors.b, doc_id) as js,
        yjs_peer(doors.a.ws(f"/yjs/{doc_id}")) as py,
    ):
        await js.edit({"set": "title", "value": "Big deal"}, {"set": "currency", "value": "EUR"})
        await wait_for(lambda: record_of(py) == {"title": "Big deal", "currency": "EUR"})

        await js.edit({"set": "amount", "value": "ten"})
        await js.wait(lambda: len(js.denied) == 1)
        assert js.denied[0].startswith("deals/9: amount must be a finite number")

        # Same connection, still live: a peer's edit reaches it; the refused value reached nobody.
        py.get("record", type=Map)["stage"] = "won"
        await js.wait(lambda: js.record.get("stage") == "won")
        assert "amount" not in record_of(py)
        assert js.of("connection-close") == [] and js.synced
        assert [e["status"] for e in js.of("status")] == ["connected"]
    assert await stored(doors.a, doc_id) == {
        "id": "9",
        "title": "Big deal",
        "amount": None,
        "currency": "EUR",
        "stage": "won",
        "contact_id": None,
        "close_date": None,
        "notes": None,
    }


async def test_a_node_clients_awareness_is_relayed_to_the_other_peers_and_to_itself(
    node: str,
    doors: Doors,
) -> None:
    """Presence is relayed within a node (it is never committed, so it does not cross the
    log between nodes): every peer here is on node B."""
    server = doors.b
    doc_id = "contacts/8"
    async with (
        node_client(node, server, doc_id) as ann,
        node_client(node, server, doc_id) as bob,
        websockets.connect(server.ws(f"/yjs/{doc_id}")) as raw,
    ):
        await raw.recv()  # the server's sync step 1
        ann_state = {"user": {"name": "Ann", "color": "#ff0000"}, "cursor": {"index": 3}}
        await ann.command("awareness", state=ann_state)
        assert ann.client_id is not None
        await bob.wait(lambda: bob.awareness.get(ann.client_id) == ann_state)
        # The sender gets its own state back, as the awareness frame the server relayed.
        await ann.wait(
            lambda: any(
                c["clientID"] == ann.client_id and c["state"] == ann_state
                for f in ann.of("awareness-frame")
                for c in f["clients"]
            )
        )
        # A Python peer decodes the same frame with pycrdt's Awareness.
        seen = Awareness(Doc())

        async def relayed_to_python() -> bool:
            while seen.states.get(ann.client_id) != ann_state:
                message = decode_yjs_message(await raw.recv())
                if isinstance(message, YjsAwareness):
                    seen.apply_awareness_update(message.payload, "server")
            return True

        await asyncio.wait_for(relayed_to_python(), TIMEOUT)

        bob_state = {"user": {"name": "Bob", "color": "#0000ff"}}
        await bob.command("awareness", state=bob_state)
        assert bob.client_id is not None
        await ann.wait(lambda: ann.awareness.get(bob.client_id) == bob_state)


async def test_a_node_clients_good_edits_after_a_refused_write_still_sync(
    node: str,
    doors: Doors,
) -> None:
    doc_id = "deals/10"
    async with (
        node_client(node, doors.b, doc_id) as js,
        yjs_peer(doors.a.ws(f"/yjs/{doc_id}")) as py,
    ):
        await js.edit({"set": "title", "value": "Big deal"})
        await wait_for(lambda: record_of(py) == {"title": "Big deal"})
        await js.edit({"set": "amount", "value": "ten"})
        await js.wait(lambda: len(js.denied) == 1)

        await js.edit({"set": "amount", "value": 10})
        await js.wait(lambda: record_of(py).get("amount") == 10 or len(js.denied) > 1)
        later_denials = js.denied[1:]
    assert later_denials == []
    assert (await stored(doors.a, doc_id) or {}).get("amount") == 10


async def test_a_node_client_joining_late_sees_the_presence_already_in_the_room(
    node: str,
    doors: Doors,
) -> None:
    server = doors.b  # presence stays on its node (see the relay test above)
    doc_id = "contacts/9"
    ann_state = {"user": {"name": "Ann"}}
    async with node_client(node, server, doc_id) as ann:
        await ann.command("awareness", state=ann_state)
        # Once relayed back to Ann, the server holds her state.
        await ann.wait(
            lambda: any(
                c["clientID"] == ann.client_id and c["state"] == ann_state
                for f in ann.of("awareness-frame")
                for c in f["clients"]
            )
        )
        assert ann.client_id is not None
        async with node_client(node, server, doc_id) as bob:
            # Well under y-protocols' 15 s renewal, well over a localhost round trip.
            await bob.wait(lambda: bob.awareness.get(ann.client_id) == ann_state, 5)

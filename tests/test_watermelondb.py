"""Interop with the real WatermelonDB: `synchronize()` of @nozbe/watermelondb under Node.

Each app is `tests/node/wmdb_app.mjs`, a separate Node process with its own in-memory
LokiJS database, driven by JSON lines on stdin (see the script's header). It syncs through
`tests/node/crdt_sync_watermelon.mjs`, the function docs/REST.md shows, against the real
server. Everything WatermelonDB logs is reported, so a test can assert that it logged nothing.

Most tests run twice (tests/doors.py): on one server, and on three nodes over PostgreSQL, the
apps syncing with nodes B and C while the admin's and live peers' writes enter at node A.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Map, Text

from crdt_sync.schema import DEFAULT_SCHEMA

from .client_helpers import stored
from .conftest import RunningServer, wait_for
from .doors import Doors
from .nodejs import TESTS, node_with_packages
from .peers import record_of, yjs_peer
from .rest_helpers import ids

pytestmark = pytest.mark.node

SCRIPT = TESTS / "node" / "wmdb_app.mjs"
SYNC_MODULE = TESTS / "node" / "crdt_sync_watermelon.mjs"
REST_DOC = Path(__file__).parents[1] / "docs" / "REST.md"
TIMEOUT = 20.0
TABLES = tuple(DEFAULT_SCHEMA.collections)
Row = dict[str, Any]


@pytest.fixture(scope="session")
def node() -> str:
    return node_with_packages(("@nozbe/watermelondb",), "WatermelonDB interop")


class WatermelonApp:
    """One `wmdb_app.mjs` process: a WatermelonDB database and the sync function."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self._ids = itertools.count(1)
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.events.append(json.loads(line))

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = await self.process.stderr.read()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    @property
    def complaints(self) -> list[str]:
        """What WatermelonDB (or LokiJS) printed as a warning or an error."""
        return [e["message"] for e in self.of("console") if e["level"] in ("warn", "error")]

    def requests(self, path_prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.of("http") if e["path"].startswith(path_prefix)]

    def report(self) -> str:
        return (
            f"app {self.name} reported:\n"
            + "\n".join(json.dumps(e) for e in self.events[-30:])
            + f"\nstderr: {self.stderr.decode(errors='replace')}"
        )

    async def send(self, op: str, **fields: Any) -> int:
        """Send a command; its id (see `outcome`)."""
        assert self.process.stdin is not None
        command_id = next(self._ids)
        self.process.stdin.write(
            json.dumps({"op": op, "id": command_id, **fields}).encode() + b"\n"
        )
        await self.process.stdin.drain()
        return command_id

    async def outcome(self, command_id: int, what: str) -> Any:
        """A command's result, or AppError with the script's message."""

        def done() -> list[dict[str, Any]]:
            return [
                e
                for e in self.events
                if e["event"] in ("result", "error") and e["id"] == command_id
            ]

        try:
            await wait_for(lambda: bool(done()), TIMEOUT)
        except AssertionError:
            raise AssertionError(f"{what} did not finish; {self.report()}") from None
        event = done()[0]
        if event["event"] == "error":
            raise AppError(event["message"])
        return event.get("result")

    async def call(self, op: str, **fields: Any) -> Any:
        return await self.outcome(await self.send(op, **fields), op)

    async def create(self, table: str, record_id: str | None = None, **fields: Any) -> str:
        extra = {} if record_id is None else {"recordId": record_id}
        created: str = await self.call("create", table=table, fields=fields, **extra)
        return created

    async def update(self, table: str, record_id: str, **fields: Any) -> Row:
        row: Row = await self.call("update", table=table, recordId=record_id, fields=fields)
        return row

    async def delete(self, table: str, record_id: str) -> None:
        await self.call("delete", table=table, recordId=record_id)

    async def sync(self, server: RunningServer | None = None) -> bool:
        """synchronize() once (more while the server has more); whether changes stay unsynced."""
        extra = (
            {} if server is None else {"server": server.http, "serverToken": server.device_token}
        )
        result: dict[str, bool] = await self.call("sync", **extra)
        return result["unsynced"]

    @asynccontextmanager
    async def sync_held_before_push(self) -> AsyncIterator[dict[str, Any]]:
        """A sync that pulls, then waits before its push: yields the body it is about to send;
        the push goes on when the block ends."""
        holding = len(self.of("holding"))
        command_id = await self.send("sync", holdPush=True)
        try:
            await wait_for(lambda: len(self.of("holding")) > holding, TIMEOUT)
        except AssertionError:
            raise AssertionError(f"the push was not held; {self.report()}") from None
        yield self.of("holding")[-1]["request"]
        await self.call("release")
        await self.outcome(command_id, "held sync")

    async def raw_rows(self, table: str) -> dict[str, Row]:
        answer = await self.call("rows", table=table)
        return {row["id"]: row for row in answer["rows"]}

    async def locally_deleted(self, table: str) -> list[str]:
        answer = await self.call("rows", table=table)
        return sorted(answer["deleted"])

    async def records(self, table: str) -> dict[str, Row]:
        """The app's records as the server shows them: no _status/_changed."""
        return {
            record_id: {k: v for k, v in row.items() if k not in ("_status", "_changed")}
            for record_id, row in (await self.raw_rows(table)).items()
        }

    async def close(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the script finishes its queue and exits
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


class AppError(Exception):
    """A command the app script could not carry out (its message and stack)."""


@asynccontextmanager
async def watermelon_app(
    node: str,
    server: RunningServer,
    client_id: str,
    *,
    token: str | None = None,
    **options: Any,
) -> AsyncIterator[WatermelonApp]:
    """An app syncing as `client_id`; `options` go to syncWithCrdtSync (pageSize,
    sendCreatedAsUpdated)."""
    token = server.device_token if token is None else token
    args = [str(SCRIPT), server.http, token, client_id, json.dumps(options)]
    process = await asyncio.create_subprocess_exec(
        node,
        *args,
        cwd=TESTS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    app = WatermelonApp(process, client_id)
    try:
        yield app
    finally:
        await app.close()


async def server_records(server: RunningServer, table: str) -> dict[str, Row]:
    """Every live record of a collection, through the admin's CRUD listing."""
    out: dict[str, Row] = {}
    cursor: str | None = None
    async with server.client() as admin:
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = (await admin.get(f"/api/{table}", params=params)).raise_for_status().json()
            out.update({row["id"]: row for row in page["items"]})
            cursor = page.get("next")
            if not cursor:
                return out


async def assert_converged(
    server: RunningServer, *apps: WatermelonApp
) -> dict[str, dict[str, Row]]:
    """Every app holds exactly the server's records, all synced, and logged no complaint."""
    everything = {}
    for table in TABLES:
        on_server = await server_records(server, table)
        for app in apps:
            raw = await app.raw_rows(table)
            assert {k: (r["_status"], r["_changed"]) for k, r in raw.items()} == {
                k: ("synced", "") for k in on_server
            }, f"{app.name}.{table}"
            assert await app.records(table) == on_server, f"{app.name}.{table}"
            assert await app.locally_deleted(table) == []
        everything[table] = on_server
    for app in apps:
        assert app.complaints == [], app.name
    return everything


# Timestamps


async def test_first_and_every_later_sync_use_timestamps_watermelondb_accepts(
    node: str,
    doors: Doors,
) -> None:
    async with watermelon_app(node, doors.b, "phone-a") as app:
        assert await app.sync() is False  # synchronize() throws on a timestamp that is not > 0
        contact = await app.create("contacts", name="Ada")
        assert await app.sync() is False
        assert await app.sync() is False
        pulls = app.requests("/api/sync/")
        stamps = [e["body"]["timestamp"] for e in pulls if e["method"] == "GET"]
        assert [e["path"].split("?")[0] for e in pulls] == [
            "/api/sync/initial",
            "/api/sync/incremental",
            "/api/sync/outgoing",
            "/api/sync/incremental",
        ]
        assert all(isinstance(t, int) and t > 0 for t in stamps) and stamps == sorted(stamps)
        assert stamps[0] < stamps[-1]  # the push moved the server on
        assert await app.records("contacts") == {
            contact: {
                "id": contact,
                "name": "Ada",
                "email": None,
                "phone": None,
                "company": None,
                "notes": None,
            }
        }
        await assert_converged(doors.a, app)


async def test_a_timestamp_another_server_issued_is_refused_and_the_app_keeps_its_data(
    node: str,
    server_factory: Callable[..., Awaitable[RunningServer]],
    tmp_path: Path,
) -> None:
    first = await server_factory(tmp_path / "first.db")
    other = await server_factory(tmp_path / "other.db")  # a fresh server: a much shorter log
    for index in range(5):
        await seed(first, "contacts", name=f"C{index}")
    async with watermelon_app(node, first, "phone-a") as app:
        assert await app.sync() is False
        pending = await app.create("contacts", name="Unsynced")
        with pytest.raises(AppError, match="not a timestamp this server issued"):
            await app.sync(other)
        [refused] = app.requests("/api/sync/incremental")
        assert refused["status"] == 400 and refused["body"]["error"]["code"] == "bad_request"
        assert len(await app.records("contacts")) == 6
        assert (await app.raw_rows("contacts"))[pending]["_status"] == "created"
        assert await server_records(other, "contacts") == {}
        # Back on its own server, the app syncs on from where it was.
        assert await app.sync() is False
        await assert_converged(first, app)


async def test_large_pulls_come_in_pages_and_the_app_gets_every_change_once(
    node: str,
    doors: Doors,
) -> None:
    for index in range(10):
        await seed(doors.a, "contacts", id=f"c{index}", name=f"C{index}")
    async with (
        watermelon_app(node, doors.b, "phone-a", pageSize=3) as a,
        watermelon_app(node, doors.c, "phone-b") as b,
    ):
        assert await a.sync() is False
        assert [e["body"]["next"] is None for e in a.requests("/api/sync/initial")] == [
            False,
            False,
            False,
            True,
        ]
        assert len(await a.records("contacts")) == 10
        async with doors.a.client() as admin:
            for index in range(5):
                (
                    await admin.patch(f"/api/contacts/c{index}", json={"phone": str(index)})
                ).raise_for_status()
            for index in range(5, 7):
                (await admin.delete(f"/api/contacts/c{index}")).raise_for_status()
        mine = await a.create("contacts", name="Mine")
        await b.sync()
        await b.create("tasks", title="From B")
        await b.sync()

        assert await a.sync() is False
        pulls = a.requests("/api/sync/incremental")
        # 8 changes, and the first synchronize() pushed Mine, which comes back too: 3+3+3+0.
        assert [e["body"]["next"] is None for e in pulls] == [False, False, False, True]
        pulled = [
            (t, k, item if isinstance(item, str) else item["id"])
            for e in pulls
            for t in TABLES
            for k in ("created", "updated", "deleted")
            for item in e["body"]["changes"][t][k]
        ]
        assert len(pulled) == len(set(pulled)) == 9
        assert ("contacts", "updated", mine) in pulled and ("tasks", "created") in {
            (t, k) for t, k, _ in pulled
        }
        assert await a.sync() is False and await b.sync() is False
        everything = await assert_converged(doors.a, a, b)
        assert {k: r["phone"] for k, r in everything["contacts"].items()} == {
            **{f"c{i}": str(i) for i in range(5)},
            "c7": None,
            "c8": None,
            "c9": None,
            mine: None,
        }


# Convergence


async def seed(server: RunningServer, collection: str, **fields: Any) -> Row:
    async with server.client() as admin:
        response = await admin.post(f"/api/{collection}", json=fields)
        created: Row = response.raise_for_status().json()
        return created


@pytest.mark.parametrize("a_first", [False, True])
async def test_two_apps_the_admin_and_a_live_peer_editing_offline_converge_in_any_sync_order(
    node: str,
    doors: Doors,
    a_first: bool,
) -> None:
    await seed(doors.a, "contacts", id="ada", name="Ada", notes="met at the fair")
    await seed(doors.a, "contacts", id="old", name="Old")
    await seed(doors.a, "deals", id="d1", title="Big deal", amount=100, contact_id="ada")
    await seed(doors.a, "tasks", id="t1", title="Call Ada", contact_id="ada")
    async with (
        watermelon_app(node, doors.b, "phone-a") as a,
        watermelon_app(node, doors.c, "phone-b") as b,
        yjs_peer(doors.a.ws("/yjs/contacts/ada")) as peer,
    ):
        assert await a.sync() is False and await b.sync() is False
        assert set(await b.records("contacts")) == {"ada", "old"}

        # Everyone offline (the apps simply do not sync), each changing things.
        bob = await a.create("contacts", name="Bob", email="bob@example.com")
        await a.update("contacts", "ada", phone="+33 1")
        offer = await a.create(
            "tasks",
            title="Send offer",
            deal_id="d1",
            done=False,
            due_at="2025-03-01T09:00:00+01:00",
        )
        await a.update("deals", "d1", stage="proposal")
        await a.update("contacts", "old", phone="+33 9")  # the admin deletes it meanwhile

        await b.update("contacts", "ada", company="Acme")
        renewal = await b.create(
            "deals",
            title="Renewal",
            amount=50,
            currency="EUR",
            contact_id="ada",
            close_date="2025-06-30",
        )
        await b.delete("tasks", "t1")
        await b.update("deals", "d1", amount=150)

        async with doors.a.client() as admin:
            (
                await admin.patch("/api/contacts/ada", json={"email": "ada@example.com"})
            ).raise_for_status()
            cy = (await admin.post("/api/contacts", json={"name": "Cy"})).raise_for_status().json()
            (await admin.delete("/api/contacts/old")).raise_for_status()
        notes = peer.get("record", type=Map)["notes"]
        assert isinstance(notes, Text)
        notes.insert(len(notes), " [peer]")

        async def peer_edit_stored() -> bool:
            return ((await stored(doors.a, "contacts/ada")) or {}).get(
                "notes"
            ) == "met at the fair [peer]"

        await wait_for(peer_edit_stored)

        first, second = (a, b) if a_first else (b, a)
        for app in (first, second, first, second):  # each pulls the other's, and its own back
            assert await app.sync() is False

        everything = await assert_converged(doors.a, a, b)
        assert everything["contacts"]["ada"] == {
            "id": "ada",
            "name": "Ada",
            "email": "ada@example.com",
            "phone": "+33 1",
            "company": "Acme",
            "notes": "met at the fair [peer]",
        }
        assert set(everything["contacts"]) == {"ada", bob, cy["id"]}
        assert everything["deals"]["d1"]["amount"] == 150
        assert everything["deals"]["d1"]["stage"] == "proposal"
        assert everything["deals"][renewal]["close_date"] == "2025-06-30"
        assert set(everything["tasks"]) == {offer}  # t1 deleted
        # The datetime is stored in its one normal form, and the apps got that form back.
        assert everything["tasks"][offer]["due_at"] == "2025-03-01T08:00:00.000Z"
        assert everything["tasks"][offer]["done"] is False
        # The live peer saw every change to its record as it was pushed.
        await wait_for(
            lambda: (
                record_of(peer).get("phone") == "+33 1" and record_of(peer).get("company") == "Acme"
            )
        )
        assert (await stored(doors.a, "tasks/t1", with_deleted=True) or {}).get("_deleted") is True


async def test_two_apps_changing_different_fields_of_one_record_both_keep_their_change(
    node: str,
    doors: Doors,
) -> None:
    await seed(doors.a, "contacts", id="ada", name="Ada")
    async with (
        watermelon_app(node, doors.b, "phone-a") as a,
        watermelon_app(node, doors.c, "phone-b") as b,
    ):
        await a.sync()
        await b.sync()
        await a.update("contacts", "ada", phone="+33 1")
        await b.update("contacts", "ada", company="Acme", notes="likes tea")

        # B pulls (nothing new yet), then A and the admin change the record before B pushes.
        async with b.sync_held_before_push() as push:
            assert await a.sync() is False
            async with doors.a.client() as admin:
                (
                    await admin.patch("/api/contacts/ada", json={"email": "ada@example.com"})
                ).raise_for_status()
        # What the real WatermelonDB sent: the full row, stale in phone and email, and which
        # columns it changed.
        [row] = push["changes"]["contacts"]["updated"]
        assert row["phone"] is None and row["email"] is None
        assert row["_status"] == "updated"
        assert sorted(row["_changed"].split(",")) == ["company", "notes"]

        assert await a.sync() is False and await b.sync() is False
        everything = await assert_converged(doors.a, a, b)
        assert everything["contacts"]["ada"] == {
            "id": "ada",
            "name": "Ada",
            "email": "ada@example.com",
            "phone": "+33 1",
            "company": "Acme",
            "notes": "likes tea",
        }


async def test_a_delete_wins_over_a_concurrent_update_in_either_sync_order(
    node: str,
    doors: Doors,
) -> None:
    await seed(doors.a, "deals", id="d1", title="First", amount=1)
    await seed(doors.a, "deals", id="d2", title="Second", amount=2)
    async with (
        watermelon_app(node, doors.b, "phone-a") as a,
        watermelon_app(node, doors.c, "phone-b") as b,
    ):
        await a.sync()
        await b.sync()
        await a.delete("deals", "d1")
        await b.update("deals", "d1", amount=10)  # the delete syncs first
        await a.update("deals", "d2", amount=20)  # the update syncs first
        await b.delete("deals", "d2")
        assert await a.locally_deleted("deals") == ["d1"]

        assert await a.sync() is False
        assert await b.sync() is False
        assert await a.sync() is False
        everything = await assert_converged(doors.a, a, b)
        assert everything["deals"] == {}
        for doc_id in ("deals/d1", "deals/d2"):
            assert (await stored(doors.a, doc_id, with_deleted=True) or {}).get("_deleted") is True
        [b_push] = [e for e in b.requests("/api/sync/outgoing")]
        assert [(x["id"], x["action"]) for x in b_push["body"]["applied"]] == [("d2", "deleted")]


# Refused rows


async def test_rows_the_schema_refuses_come_back_rejected_stay_dirty_and_the_rest_syncs(
    node: str,
    doors: Doors,
) -> None:
    await seed(doors.a, "deals", id="d1", title="Big deal", amount=100, stage="lead")
    async with (
        watermelon_app(node, doors.b, "phone-a") as a,
        watermelon_app(node, doors.c, "phone-b") as b,
    ):
        await a.sync()
        good = await a.create("contacts", name="Ada")
        bad_amount = await a.create("deals", title="Refund", amount=-5)
        nameless = await a.create("contacts", email="who@example.com")  # WatermelonDB stores ''
        await a.update("deals", "d1", stage="signed", amount=120)  # not a stage

        assert await a.sync() is True  # hasUnsyncedChanges
        [push] = a.requests("/api/sync/outgoing")
        answer = push["body"]
        assert push["status"] == 200
        assert {t: sorted(ids) for t, ids in answer["experimentalRejectedIds"].items()} == {
            "deals": sorted([bad_amount, "d1"]),
            "contacts": [nameless],
        }
        reasons = {r["id"]: (r["code"], r["message"]) for r in answer["rejected"]}
        assert reasons[bad_amount] == (
            "schema_violation",
            f"deals/{bad_amount}: amount must be a number >= 0, got -5",
        )
        assert reasons["d1"][1].startswith("deals/d1: stage must be one of lead, qualified")
        assert (
            reasons[nameless][1]
            == f"contacts/{nameless}: name is required and cannot be empty, got ''"
        )

        # WatermelonDB kept the refused rows dirty, the accepted one synced.
        contacts, deals = await a.raw_rows("contacts"), await a.raw_rows("deals")
        assert (contacts[good]["_status"], contacts[nameless]["_status"]) == ("synced", "created")
        assert deals[bad_amount]["_status"] == "created"
        assert (deals["d1"]["_status"], deals["d1"]["_changed"]) == ("updated", "stage,amount")
        # A refused row is refused whole: d1's good amount waits with its bad stage.
        assert await stored(doors.a, "deals/d1", with_deleted=True) == {
            "id": "d1",
            "title": "Big deal",
            "amount": 100,
            "stage": "lead",
            "currency": None,
            "contact_id": None,
            "close_date": None,
            "notes": None,
            "_deleted": False,
        }
        assert await stored(doors.a, f"deals/{bad_amount}") is None

        # The next sync sends them again (still refused), and nothing else is lost meanwhile.
        assert await a.sync() is True
        assert sorted(a.requests("/api/sync/outgoing")[-1]["body"]["experimentalRejectedIds"]) == [
            "contacts",
            "deals",
        ]
        assert await b.sync() is False
        assert set(await b.records("contacts")) == {good}

        # Fixed, they go through.
        await a.update("deals", bad_amount, amount=5)
        await a.update("deals", "d1", stage="won")
        await a.update("contacts", nameless, name="Who")
        assert await a.sync() is False
        assert await b.sync() is False
        assert await a.sync() is False
        everything = await assert_converged(doors.a, a, b)
        assert (
            everything["deals"]["d1"]["stage"] == "won"
            and everything["deals"]["d1"]["amount"] == 120
        )
        assert everything["deals"][bad_amount]["amount"] == 5
        assert everything["contacts"][nameless]["name"] == "Who"


# Created or updated: what WatermelonDB expects of each


async def test_an_apps_own_records_come_back_updated_and_others_created_so_it_logs_nothing(
    node: str,
    doors: Doors,
) -> None:
    async with (
        watermelon_app(node, doors.b, "phone-a") as a,
        watermelon_app(node, doors.c, "phone-b") as b,
    ):
        await a.sync()
        await b.sync()
        mine = sorted(
            [await a.create("contacts", name="Ada"), await a.create("contacts", name="Bob")]
        )
        theirs = await b.create("contacts", name="Cy")
        admins = (await seed(doors.a, "contacts", name="Dee"))["id"]
        for app in (a, b, a, b):
            assert await app.sync() is False

        # Each pull before its own push, so: A pulls Dee; B pulls A's and Dee; A pulls its own
        # back and B's; B pulls its own back.
        pulls_of_a, pulls_of_b = (
            a.requests("/api/sync/incremental"),
            b.requests("/api/sync/incremental"),
        )
        assert [
            (ids(p["body"], "contacts", "created"), ids(p["body"], "contacts", "updated"))
            for p in pulls_of_a
        ] == [([admins], []), ([theirs], mine)]
        assert [
            (ids(p["body"], "contacts", "created"), ids(p["body"], "contacts", "updated"))
            for p in pulls_of_b
        ] == [(sorted([*mine, admins]), []), ([], [theirs])]
        await assert_converged(doors.a, a, b)  # includes: neither app logged a complaint


@pytest.mark.parametrize("created_as_updated", [True, False])
async def test_apps_that_make_ids_from_data_pull_everything_as_updated_and_log_nothing(
    node: str,
    doors: Doors,
    created_as_updated: bool,
) -> None:
    """Two apps create one id offline (a settings row, an imported contact). Told `created`,
    the second app logs that it already has the record; with sendCreatedAsUpdated both apps
    pull everything as `updated`, and nothing is logged.

    WatermelonDB resolves the pulled row against its own unpushed create, whose `_changed` is
    empty: the server's columns win, so the first app's values are what both keep."""
    for record_id in ("old1", "old2", "old3"):
        await seed(doors.a, "contacts", id=record_id, name="Old")
    options: dict[str, Any] = {"sendCreatedAsUpdated": created_as_updated}
    async with (
        watermelon_app(node, doors.b, "phone-a", pageSize=2, **options) as a,
        watermelon_app(node, doors.c, "phone-b", **options) as b,
    ):
        await a.sync()
        await b.sync()
        await a.create("contacts", "ada", name="Ada", phone="+33 1")
        await b.create("contacts", "ada", name="Ada L.", company="Acme")
        for app in (a, b, a, b):
            assert await app.sync() is False
        if not created_as_updated:
            [complaint] = b.complaints
            assert (
                "Server wants client to create record contacts#ada, but it already exists"
                in complaint
            )
            b.events = [e for e in b.events if e["event"] != "console"]
        everything = await assert_converged(doors.a, a, b)
        assert everything["contacts"]["ada"] == {
            "id": "ada",
            "name": "Ada",
            "email": None,
            "phone": "+33 1",
            "company": None,
            "notes": None,
        }
        assert len(everything["contacts"]) == 4
        if created_as_updated:
            for pull in a.requests("/api/sync/") + b.requests("/api/sync/"):
                if pull["method"] == "GET":
                    assert all(c["created"] == [] for c in pull["body"]["changes"].values())
            assert [
                len(p["body"]["changes"]["contacts"]["updated"])
                for p in a.requests("/api/sync/initial")
            ] == [2, 1]


# The documented wiring


def test_docs_show_the_sync_function_these_tests_run() -> None:
    """docs/REST.md's example is the tested function, verbatim (import path aside: Node's ESM
    needs the file name that bundlers add themselves)."""
    module = SYNC_MODULE.read_text(encoding="utf-8")
    tested = module.split("// --- docs/REST.md: begin\n")[1].split("// --- docs/REST.md: end")[0]
    blocks = re.findall(r"```js\n(.*?)```", REST_DOC.read_text(encoding="utf-8"), re.DOTALL)
    [shown] = [block for block in blocks if "syncWithCrdtSync" in block]
    assert shown == "import { synchronize } from '@nozbe/watermelondb/sync'\n\n" + tested
    assert "import { synchronize } from '@nozbe/watermelondb/sync/index.js'" in module


async def test_a_record_created_again_under_a_deleted_id_goes_away_as_deletes_are_final(
    node: str,
    doors: Doors,
) -> None:
    await seed(doors.a, "contacts", id="ada", name="Ada")
    async with doors.a.client() as admin:
        (await admin.delete("/api/contacts/ada")).raise_for_status()
    async with (
        watermelon_app(node, doors.b, "phone-a") as a,
        watermelon_app(node, doors.c, "phone-b") as b,
    ):
        await a.sync()
        await b.sync()
        await a.create("contacts", "ada", name="Ada again")
        await a.create("contacts", "bob", name="Bob")
        assert await a.sync() is False
        [push] = a.requests("/api/sync/outgoing")
        assert sorted((x["id"], x["action"]) for x in push["body"]["applied"]) == [
            ("ada", "ignored"),
            ("bob", "created"),
        ]
        assert await b.sync() is False
        everything = await assert_converged(doors.a, a, b)
        assert set(everything["contacts"]) == {"bob"}
    assert (await stored(doors.a, "contacts/ada", with_deleted=True) or {}).get("_deleted") is True

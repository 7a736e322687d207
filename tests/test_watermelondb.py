"""Interop with the real WatermelonDB: `synchronize()` of @nozbe/watermelondb under Node.

Each app is `tests/node/wmdb_app.mjs`, a separate Node process with its own in-memory
LokiJS database, driven by JSON lines on stdin (see the script's header). It syncs through
`tests/node/crdt_sync_watermelon.mjs`, the function docs/REST.md shows, against the real
server. Everything WatermelonDB logs is reported, so a test can assert that it logged nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Map, Text

from crdt_sync.ids import DocId
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.store import SQLiteStore

from .conftest import RunningServer, wait_for
from .nodejs import TESTS, node_with_packages
from .peers import mux_peer, record_of, yjs_peer

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
        self._readers = [asyncio.create_task(self._read_stdout()),
                         asyncio.create_task(self._read_stderr())]

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
        return (f"app {self.name} reported:\n" + "\n".join(json.dumps(e) for e in self.events[-30:])
                + f"\nstderr: {self.stderr.decode(errors='replace')}")

    async def call(self, op: str, **fields: Any) -> Any:
        """Run one command; its result, or AppError with the script's message."""
        assert self.process.stdin is not None
        command_id = next(self._ids)
        self.process.stdin.write(json.dumps({"op": op, "id": command_id, **fields}).encode() + b"\n")
        await self.process.stdin.drain()

        def outcome() -> list[dict[str, Any]]:
            return [e for e in self.events
                    if e["event"] in ("result", "error") and e["id"] == command_id]

        try:
            await wait_for(lambda: bool(outcome()), TIMEOUT)
        except AssertionError:
            raise AssertionError(f"{op} did not finish; {self.report()}") from None
        event = outcome()[0]
        if event["event"] == "error":
            raise AppError(event["message"])
        return event.get("result")

    async def create(self, table: str, record_id: str | None = None, **fields: Any) -> str:
        extra = {} if record_id is None else {"recordId": record_id}
        created: str = await self.call("create", table=table, fields=fields, **extra)
        return created

    async def update(self, table: str, record_id: str, **fields: Any) -> Row:
        row: Row = await self.call("update", table=table, recordId=record_id, fields=fields)
        return row

    async def delete(self, table: str, record_id: str) -> None:
        await self.call("delete", table=table, recordId=record_id)

    async def sync(self) -> bool:
        """synchronize() once (more while the server has more); whether changes stay unsynced."""
        result: dict[str, bool] = await self.call("sync")
        return result["unsynced"]

    async def raw_rows(self, table: str) -> dict[str, Row]:
        answer = await self.call("rows", table=table)
        return {row["id"]: row for row in answer["rows"]}

    async def locally_deleted(self, table: str) -> list[str]:
        answer = await self.call("rows", table=table)
        return sorted(answer["deleted"])

    async def records(self, table: str) -> dict[str, Row]:
        """The app's records as the server shows them: no _status/_changed."""
        return {record_id: {k: v for k, v in row.items() if k not in ("_status", "_changed")}
                for record_id, row in (await self.raw_rows(table)).items()}

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
async def watermelon_app(node: str, server: RunningServer, client_id: str, *,
                         token: str | None = None, page_size: int | None = None,
                         ) -> AsyncIterator[WatermelonApp]:
    token = server.device_token if token is None else token
    args = [str(SCRIPT), server.http, token, client_id] + ([str(page_size)] if page_size else [])
    process = await asyncio.create_subprocess_exec(
        node, *args, cwd=TESTS, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "NODE_NO_WARNINGS": "1"},
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


async def stored(server: RunningServer, doc_id: str) -> dict[str, Any] | None:
    async with SQLiteStore(server.db_path) as store:
        row = await store.get_record(DocId(doc_id))
        return None if row is None else {**row.view, "_deleted": row.is_deleted}


async def assert_converged(server: RunningServer, *apps: WatermelonApp) -> dict[str, dict[str, Row]]:
    """Every app holds exactly the server's records, all synced, and logged no complaint."""
    everything = {}
    for table in TABLES:
        on_server = await server_records(server, table)
        for app in apps:
            raw = await app.raw_rows(table)
            assert {k: (r["_status"], r["_changed"]) for k, r in raw.items()} == {
                k: ("synced", "") for k in on_server}, f"{app.name}.{table}"
            assert await app.records(table) == on_server, f"{app.name}.{table}"
            assert await app.locally_deleted(table) == []
        everything[table] = on_server
    for app in apps:
        assert app.complaints == [], app.name
    return everything


# Timestamps


async def test_first_sync_on_an_empty_server_and_every_later_one_use_timestamps_watermelondb_accepts(
    node: str, server: RunningServer,
) -> None:
    async with watermelon_app(node, server, "phone-a") as app:
        assert await app.sync() is False  # synchronize() throws on a timestamp that is not > 0
        contact = await app.create("contacts", name="Ada")
        assert await app.sync() is False
        assert await app.sync() is False
        pulls = app.requests("/api/sync/")
        stamps = [e["body"]["timestamp"] for e in pulls if e["method"] == "GET"]
        assert [e["path"].split("?")[0] for e in pulls] == [
            "/api/sync/initial", "/api/sync/incremental", "/api/sync/outgoing",
            "/api/sync/incremental"]
        assert all(isinstance(t, int) and t > 0 for t in stamps) and stamps == sorted(stamps)
        assert stamps[0] < stamps[-1]  # the push moved the server on
        assert await app.records("contacts") == {contact: {
            "id": contact, "name": "Ada", "email": None, "phone": None, "company": None,
            "notes": None}}
        await assert_converged(server, app)

"""One write path: the same writes through every door store, show and log the same.

The doors: REST CRUD, a WatermelonDB push, a push of CRDT updates, `/api/docs/.../update`,
the replica over `/ws`, a stock pycrdt client on `/yjs`, and an archive import. Each door
makes one record go through the same steps (create, edits that set "" and null, delete);
after each step every door's record must read the same everywhere a record is read (the
store's view, `/api/docs`, CRUD, a sync pull, the CRDT content itself), and `docs history`
must give each the same lines, which are the fields whose value changed.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Map, Text

from crdt_sync.client import Replica
from crdt_sync.ids import DocId
from crdt_sync.schema import DEFAULT_SCHEMA, FieldKind
from crdt_sync.store import SQLiteStore

from .client_helpers import replica_on
from .clis import invoke_async
from .conftest import RunningServer, wait_for
from .peers import yjs_peer


@dataclass(frozen=True)
class Step:
    action: str  # "create", "edit" or "delete"
    fields: dict[str, Any]


CONTACT_STEPS = [
    Step("create", {"name": "Ada", "email": "ada@example.com", "notes": ""}),
    Step("edit", {"name": "Ada", "email": None, "phone": "", "company": "Acme"}),
    Step("edit", {"notes": None, "company": None}),
    Step("delete", {}),
]
DEAL_STEPS = [
    Step(
        "create",
        {
            "title": "Roof",
            "amount": 1200,
            "currency": "EUR",
            "stage": "lead",
            "contact_id": "ada",
            "close_date": "2026-12-31",
            "notes": "call back",
        },
    ),
    Step(
        "edit",
        {
            "amount": None,
            "currency": None,
            "stage": None,
            "contact_id": None,
            "close_date": None,
            "notes": None,
        },
    ),
    Step("edit", {"amount": 0, "notes": ""}),  # zero and "" are values, not unset fields
    Step("delete", {}),
]
TASK_STEPS = [
    Step(
        "create",
        {
            "title": "Call",
            "done": False,
            "due_at": "2026-12-03T15:00:00.000Z",
            "contact_id": "ada",
            "deal_id": "roof",
        },
    ),
    Step("edit", {"done": None, "due_at": None, "deal_id": None, "notes": ""}),
    Step("edit", {"done": True, "title": "Call"}),
    Step("delete", {}),
]
SCENARIOS = {"contacts": CONTACT_STEPS, "deals": DEAL_STEPS, "tasks": TASK_STEPS}

# What the contact scenario must read as after each step, written out once in full.
CONTACT_VIEWS = [
    {"name": "Ada", "email": "ada@example.com", "phone": None, "company": None, "notes": ""},
    {"name": "Ada", "email": None, "phone": "", "company": "Acme", "notes": ""},
    {"name": "Ada", "email": None, "phone": "", "company": None, "notes": None},
    {"name": "Ada", "email": None, "phone": "", "company": None, "notes": None},
]
CONTACT_HISTORY = [
    (["name", "email", "notes"], False),
    (["email", "phone", "company"], False),
    (["company", "notes"], False),
    ([], True),
]


def expected_views(collection: str, steps: list[Step]) -> list[dict[str, Any]]:
    """The rule: a write sets the fields it names, null unsets; a delete changes no field."""
    view: dict[str, Any] = dict.fromkeys(DEFAULT_SCHEMA.collections[collection].fields)
    views = []
    for step in steps:
        view = {**view, **step.fields}
        views.append(view)
    return views


def expected_history(collection: str, steps: list[Step]) -> list[tuple[list[str], bool]]:
    """A history line names the fields whose value the step changed, in schema order."""
    before: dict[str, Any] = dict.fromkeys(DEFAULT_SCHEMA.collections[collection].fields)
    lines = []
    for step, after in zip(steps, expected_views(collection, steps), strict=True):
        lines.append(([n for n in after if after[n] != before[n]], step.action == "delete"))
        before = after
    return lines


def test_the_rules_give_the_contact_views_and_lines_written_out_in_full() -> None:
    assert expected_views("contacts", CONTACT_STEPS) == CONTACT_VIEWS
    assert expected_history("contacts", CONTACT_STEPS) == CONTACT_HISTORY


def kind_of(collection: str, name: str) -> FieldKind:
    return DEFAULT_SCHEMA.collections[collection].fields[name].kind


def content_of(collection: str, update: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CRDT content of a record: each field's kind as stored and its value; the meta map."""
    document: Doc = Doc()
    document.apply_update(update)
    fields: dict[str, Any] = {}
    for name, value in document.get("record", type=Map).items():
        if isinstance(value, Text):
            fields[name] = ("text", str(value))
        elif isinstance(value, bool):
            fields[name] = ("bool", value)
        elif isinstance(value, int | float):
            fields[name] = ("number", float(value))  # Yjs peers write integers either way
        else:
            fields[name] = (type(value).__name__, value)
    return fields, dict(document.get("meta", type=Map).items())


def expected_content(collection: str, view: dict[str, Any], deleted: bool) -> Any:
    kinds = {FieldKind.TEXT: "text", FieldKind.BOOL: "bool", FieldKind.NUMBER: "number"}
    fields = {
        name: (
            kinds.get(kind_of(collection, name), "str"),
            float(value) if kind_of(collection, name) is FieldKind.NUMBER else value,
        )
        for name, value in view.items()
        if value is not None
    }
    return fields, {"deleted": True} if deleted else {}


class Door:
    """One way in. `write` makes a step; it answers the changed fields, where the door says."""

    name = ""

    def __init__(self, server: RunningServer, doc_id: DocId) -> None:
        self.server = server
        self.doc_id = doc_id
        self.collection, _, self.record_id = doc_id.partition("/")

    async def write(self, step: Step) -> list[str] | None:
        raise NotImplementedError


class Crud(Door):
    name = "crud"

    async def write(self, step: Step) -> list[str] | None:
        path = f"/api/{self.collection}"
        async with self.server.client() as admin:
            if step.action == "create":
                answer = await admin.post(path, json={"id": self.record_id, **step.fields})
                assert answer.status_code == 201, answer.text
            elif step.action == "edit":
                answer = await admin.patch(f"{path}/{self.record_id}", json=step.fields)
                assert answer.status_code == 200, answer.text
            else:
                answer = await admin.delete(f"{path}/{self.record_id}")
                assert answer.status_code == 204, answer.text
        return None


async def push(server: RunningServer, client_id: str, body: dict[str, Any]) -> list[str]:
    """POST /api/sync/outgoing as a device; the one write's reported changed fields."""
    async with server.client(server.device_token) as device:
        device.headers["X-Client-Id"] = client_id
        answer = (await device.post("/api/sync/outgoing", json=body)).json()
    assert answer["rejected"] == [], answer
    [applied] = answer["applied"]
    changed: list[str] = applied["changed"]
    return changed


class WatermelonPush(Door):
    """A WatermelonDB app: full rows, `_changed` naming the columns it changed."""

    name = "push"

    def __init__(self, server: RunningServer, doc_id: DocId) -> None:
        super().__init__(server, doc_id)
        self.row: dict[str, Any] = dict.fromkeys(DEFAULT_SCHEMA.collections[self.collection].fields)

    async def write(self, step: Step) -> list[str] | None:
        self.row.update(step.fields)
        row = {"id": self.record_id, **self.row}
        changes: dict[str, list[Any]] = {"created": [], "updated": [], "deleted": []}
        if step.action == "create":
            changes["created"].append({**row, "_status": "created", "_changed": ""})
        elif step.action == "edit":
            changes["updated"].append(
                {**row, "_status": "updated", "_changed": ",".join(step.fields)}
            )
        else:
            changes["deleted"].append(self.record_id)
        body = {"changes": {self.collection: changes}, "lastPulledAt": None}
        return await push(self.server, "watermelon", body)


class StockDocument:
    """A record edited as a stock Yjs client would: map keys set and deleted, Y.Text for text."""

    def __init__(self, collection: str, document: Doc | None = None) -> None:
        self.collection = collection
        self.document: Doc = document if document is not None else Doc()

    def change(self, step: Step) -> bytes:
        document = self.document
        before = document.get_state()
        fields = document.get("record", type=Map)
        with document.transaction():
            if step.action == "delete":
                document.get("meta", type=Map)["deleted"] = True
            for name, value in step.fields.items():
                if value is None:
                    if name in fields:
                        del fields[name]
                elif kind_of(self.collection, name) is FieldKind.TEXT:
                    fields[name] = Text(value)
                else:
                    fields[name] = value
        return document.get_update(before)


class UpdatePush(Door):
    """A CRDT client without a websocket: its updates through POST /api/sync/outgoing."""

    name = "push-updates"

    def __init__(self, server: RunningServer, doc_id: DocId) -> None:
        super().__init__(server, doc_id)
        self.stock = StockDocument(self.collection)

    async def write(self, step: Step) -> list[str] | None:
        update = base64.b64encode(self.stock.change(step)).decode()
        body = {"updates": [{"doc": self.doc_id, "update": update}], "lastPulledAt": None}
        return await push(self.server, "crdt-phone", body)


class DocumentUpdate(Door):
    """POST /api/docs/{collection}/{id}/update with a binary Yjs update."""

    name = "docs-update"

    def __init__(self, server: RunningServer, doc_id: DocId) -> None:
        super().__init__(server, doc_id)
        self.stock = StockDocument(self.collection)

    async def write(self, step: Step) -> list[str] | None:
        async with self.server.client() as admin:
            answer = await admin.post(
                f"/api/docs/{self.doc_id}/update",
                content=self.stock.change(step),
                headers={"Content-Type": "application/octet-stream"},
            )
        assert answer.status_code == 200, answer.text
        changed: list[str] = answer.json()["changed"]
        return changed


class ReplicaOverWs(Door):
    """The project's offline-first replica, one sync pass over /ws per step."""

    name = "ws-replica"

    def __init__(self, server: RunningServer, doc_id: DocId, replica: Replica) -> None:
        super().__init__(server, doc_id)
        self.replica = replica

    async def write(self, step: Step) -> list[str] | None:
        if step.action == "create":
            await self.replica.create(self.collection, step.fields, id=self.record_id)
        elif step.action == "edit":
            await self.replica.update(self.collection, self.record_id, step.fields)
        else:
            await self.replica.delete(self.collection, self.record_id)
        status = await self.replica.sync()
        assert (status.pending, status.rejected, status.transport) == (0, 0, "websocket")
        return None


class StockYjs(Door):
    """pycrdt's stock Provider on /yjs/{collection}/{id}, kept connected across the steps."""

    name = "yjs"

    def __init__(self, server: RunningServer, doc_id: DocId, document: Doc) -> None:
        super().__init__(server, doc_id)
        self.stock = StockDocument(self.collection, document)

    async def write(self, step: Step) -> list[str] | None:
        store: SQLiteStore = self.server.app.state.store  # type: ignore[attr-defined]
        row = await store.get_record(self.doc_id)
        seq = row.last_seq if row is not None else 0
        self.stock.change(step)  # the provider sends it

        async def stored() -> bool:
            row = await store.get_record(self.doc_id)
            return row is not None and row.last_seq > seq

        await wait_for(stored)
        return None


@dataclass(frozen=True)
class Seen:
    """A record as every read path shows it."""

    stored: tuple[dict[str, Any], bool]  # the store's view and deleted flag
    document_view: tuple[dict[str, Any], bool]  # GET /api/docs/{collection}/{id}
    crud: dict[str, Any] | None  # GET /api/{collection}/{id}; None: 404
    pulled: dict[str, Any] | str  # its row in an incremental pull, or "deleted"
    content: Any  # the committed CRDT: field kinds and values, meta


def without_id(view: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in view.items() if name != "id"}


async def seen(server: RunningServer, admin: httpx.AsyncClient, doc_id: DocId) -> Seen:
    collection, _, record_id = doc_id.partition("/")
    store: SQLiteStore = server.app.state.store  # type: ignore[attr-defined]
    row = await store.get_record(doc_id)
    assert row is not None
    document = (await admin.get(f"/api/docs/{doc_id}")).json()
    crud = await admin.get(f"/api/{collection}/{record_id}")
    assert crud.status_code in (200, 404), crud.text
    pull = await admin.get(
        "/api/sync/incremental", params={"since": 1, "created_as_updated": "true"}
    )
    changes = pull.json()["changes"][collection]
    rows = [item for item in changes["updated"] if item["id"] == record_id]
    state = await admin.get(f"/api/docs/{doc_id}/update")
    return Seen(
        (without_id(row.view), row.is_deleted),
        (without_id(document["record"]), document["is_deleted"]),
        without_id(crud.json()) if crud.status_code == 200 else None,
        without_id(rows[0]) if rows else ("deleted" if record_id in changes["deleted"] else "?"),
        content_of(collection, state.content),
    )


def expected_seen(collection: str, view: dict[str, Any], deleted: bool) -> Seen:
    return Seen(
        (view, deleted),
        (view, deleted),
        None if deleted else view,
        "deleted" if deleted else view,
        expected_content(collection, view, deleted),
    )


async def history_of(db_path: Path, doc_id: DocId) -> list[tuple[list[str], bool]]:
    ran = await invoke_async("docs", "history", doc_id, "--db", str(db_path), "--json")
    assert ran.exit_code == 0, ran.stderr
    return [(line["fields"], line["deleted"]) for line in ran.json()]


@asynccontextmanager
async def doors_for(
    server: RunningServer, collection: str, tmp_path: Path
) -> AsyncIterator[list[Door]]:
    """Every door, for one collection: each writes a record of its own (`{collection}/{door}`)."""

    def doc_id(door: str) -> DocId:
        return DocId(f"{collection}/{door}")

    async with (
        replica_on(server, tmp_path / "phone.db", server.device_token) as replica,
        yjs_peer(server.ws(f"/yjs/{doc_id('yjs')}")) as yjs_document,
    ):
        yield [
            Crud(server, doc_id("crud")),
            WatermelonPush(server, doc_id("push")),
            UpdatePush(server, doc_id("push-updates")),
            DocumentUpdate(server, doc_id("docs-update")),
            ReplicaOverWs(server, doc_id("ws-replica"), replica),
            StockYjs(server, doc_id("yjs"), yjs_document),
        ]


@pytest.mark.parametrize("collection", sorted(SCENARIOS))
async def test_the_same_writes_through_every_door_store_read_and_log_the_same(
    server: RunningServer, tmp_path: Path, collection: str
) -> None:
    steps = SCENARIOS[collection]
    views = expected_views(collection, steps)
    lines = expected_history(collection, steps)
    async with doors_for(server, collection, tmp_path) as doors, server.client() as admin:
        for index, step in enumerate(steps):
            expected = expected_seen(collection, views[index], step.action == "delete")
            for door in doors:
                reported = await door.write(step)
                if reported is not None:  # the doors that answer what changed agree with the log
                    assert (door.name, reported) == (door.name, lines[index][0]), step
                assert (door.name, await seen(server, admin, door.doc_id)) == (
                    door.name,
                    expected,
                ), step
            if index == 0:
                archive = tmp_path / "after-create.cbor"
                ran = await invoke_async("export", str(archive), "--db", str(server.db_path))
                assert ran.exit_code == 0, ran.stderr
    for door in doors:
        assert (door.name, await history_of(server.db_path, door.doc_id)) == (door.name, lines)

    # The import door: every record as it was after the create, into a fresh store.
    imported = tmp_path / "imported.db"
    ran = await invoke_async("import", str(archive), "--db", str(imported))
    assert ran.exit_code == 0, ran.stderr
    async with SQLiteStore(imported) as store:
        for door in doors:
            row = await store.get_record(door.doc_id)
            assert row is not None
            assert (door.name, without_id(row.view), row.is_deleted) == (
                door.name,
                views[0],
                False,
            )
            state = await store.load(door.doc_id)
            assert state is not None
            assert content_of(collection, state) == expected_content(collection, views[0], False)
    for door in doors:
        assert (door.name, await history_of(imported, door.doc_id)) == (door.name, lines[:1])

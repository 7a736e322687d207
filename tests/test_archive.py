"""`crdt-sync export` / `import`: the CBOR archive round trip, merging, and damaged archives."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import cbor2
import pycrdt
import pytest
from pycrdt import Map, Text

from crdt_sync.engine import Engine
from crdt_sync.errors import ArchiveError
from crdt_sync.ids import DocId, Origin
from crdt_sync.record import Records, document_from_state
from crdt_sync.schema import DEFAULT_SCHEMA, load_schema
from crdt_sync.store import SQLiteStore
from crdt_sync.store.archive import ArchiveReader, export_archive, verify_archive

from .client_helpers import stored
from .clis import delete_over_ws, invoke, invoke_async, run, run_async
from .conftest import RunningServer, wait_for
from .peers import mux_peer, record_of, yjs_peer

records = Records(DEFAULT_SCHEMA)
EMPTY_DIFF = b"\x00\x00"


async def crdt_states(path: Path) -> dict[str, tuple[bytes, bool, dict[str, object]]]:
    """Every document's (state, deleted, stored view), deleted ones too."""
    async with SQLiteStore(path) as store:
        rows = await store.snapshot(include_deleted=True, limit=10_000)
        return {
            row.doc_id: (await store.load(row.doc_id) or b"", row.is_deleted, row.view)
            for row in rows
        }


def assert_same_documents(
    left: dict[str, tuple[bytes, bool, dict[str, object]]],
    right: dict[str, tuple[bytes, bool, dict[str, object]]],
) -> None:
    assert sorted(left) == sorted(right)
    for doc_id, (state, is_deleted, view) in left.items():
        other_state, other_deleted, other_view = right[doc_id]
        assert pycrdt.get_state(other_state) == pycrdt.get_state(state), doc_id
        assert pycrdt.get_update(state, pycrdt.get_state(other_state)) == EMPTY_DIFF, doc_id
        assert pycrdt.get_update(other_state, pycrdt.get_state(state)) == EMPTY_DIFF, doc_id
        crdt_view = records.view(DocId(doc_id), document_from_state(state))
        assert records.view(DocId(doc_id), document_from_state(other_state)) == crdt_view
        assert (other_view, other_deleted) == (view, is_deleted) == (crdt_view, is_deleted)


async def test_export_while_serving_then_import_into_an_empty_store_gives_identical_documents(
    server: RunningServer, tmp_path: Path
) -> None:
    async with mux_peer(server.ws("/ws"), client="ann-phone") as ann:
        for n in range(30):
            await ann.wait_ack(await ann.edit(f"contacts/c{n}", name=f"Contact {n}"))
        await ann.wait_ack(await ann.edit("deals/d1", title="Big deal", amount=5000.0))
        await ann.wait_ack(await ann.edit("tasks/t1", title="Call", done=True))
        await delete_over_ws(ann, "contacts/c7")
    # Two stock Yjs clients edit one text field at once: a real merge to carry over.
    url = server.ws("/yjs/contacts/c1")
    async with yjs_peer(url) as alice, yjs_peer(url) as bob:
        alice.get("record", type=Map)["notes"] = Text("met at the fair")
        await wait_for(lambda: record_of(bob).get("notes") == "met at the fair")
        alice.get("record", type=Map)["notes"].insert(0, "Alice: ")
        bob.get("record", type=Map)["notes"].insert(len("met at the fair"), " (Bob)")
        await wait_for(
            lambda: record_of(alice) == record_of(bob) and "Bob" in record_of(alice)["notes"]
        )

    archive = tmp_path / "crm.cbor"
    exported = await run_async("export", str(archive), "--db", str(server.db_path), "--json")
    assert exported.exit_code == 0, exported.stderr
    assert exported.json()["documents"] == 32

    copy = tmp_path / "copy.db"
    imported = await invoke_async("import", str(archive), "--db", str(copy), "--json")
    assert imported.exit_code == 0, imported.stderr
    assert imported.json() | {"file": None} == {
        "file": None,
        "documents": 32,
        "created": 32,
        "merged": 0,
        "unchanged": 0,
        "refused": [],
    }
    original = await crdt_states(server.db_path)
    assert_same_documents(original, await crdt_states(copy))
    assert "Alice: met at the fair (Bob)" == original["contacts/c1"][2]["notes"]
    assert original["contacts/c7"][1] is True

    # Importing the same archive again changes nothing: every document already holds it all.
    again = await run_async("import", str(archive), "--db", str(copy), "--json")
    assert again.json()["unchanged"] == 32
    status = (await invoke_async("status", "--db", str(copy), "--json")).json()
    assert status["cursor"] == 32


async def test_import_into_a_non_empty_store_merges_each_document(
    server: RunningServer, tmp_path: Path
) -> None:
    async with mux_peer(server.ws("/ws"), client="ann-phone") as ann:
        await ann.wait_ack(await ann.edit("contacts/ada", name="Ada"))
        await ann.wait_ack(await ann.edit("contacts/bob", name="Bob"))
    first = tmp_path / "first.cbor"
    assert (await run_async("export", str(first), "--db", str(server.db_path))).exit_code == 0
    other = tmp_path / "other.db"
    assert (await invoke_async("import", str(first), "--db", str(other))).exit_code == 0

    # Both sites go on editing the same records, each on its own.
    async with mux_peer(server.ws("/ws"), client="ann-phone") as ann:
        await ann.wait_ack(await ann.edit("contacts/ada", email="ada@example.com"))
        await ann.wait_ack(await ann.edit("deals/new", title="Only on the server"))
    async with SQLiteStore(other) as store:
        engine = Engine(store, DEFAULT_SCHEMA)
        await engine.patch(DocId("contacts/ada"), {"phone": "+44 1"}, origin=Origin("office"))
        await engine.patch(
            DocId("tasks/mine"), {"title": "Only here"}, origin=Origin("office"), creating=True
        )
        cursor_before = await store.cursor()

    second = tmp_path / "second.cbor"
    assert (await run_async("export", str(second), "--db", str(server.db_path))).exit_code == 0
    merged = await run_async("import", str(second), "--db", str(other), "--json")
    assert merged.exit_code == 0, merged.stderr
    report = merged.json()
    assert (report["created"], report["merged"], report["unchanged"]) == (1, 1, 1)

    states = await crdt_states(other)
    assert sorted(states) == ["contacts/ada", "contacts/bob", "deals/new", "tasks/mine"]
    ada = states["contacts/ada"][2]
    assert (ada["name"], ada["email"], ada["phone"]) == ("Ada", "ada@example.com", "+44 1")
    source = await crdt_states(server.db_path)
    for doc_id, (state, _, _) in source.items():  # the merged store holds all of the source
        assert pycrdt.get_update(state, pycrdt.get_state(states[doc_id][0])) == EMPTY_DIFF
    # The merge went through the write path: new seqs, the view kept, history says who.
    history = (
        await invoke_async("docs", "history", "contacts/ada", "--db", str(other), "--json")
    ).json()
    assert history[-1]["origin"] == "import" and history[-1]["fields"] == ["email"]
    assert history[-1]["seq"] > cursor_before
    listed = (await invoke_async("docs", "list", "--db", str(other), "--json")).json()
    assert {row["doc_id"]: row["title"] for row in listed}["deals/new"] == "Only on the server"


def test_documents_the_schema_refuses_are_reported_and_the_rest_imported(tmp_path: Path) -> None:
    schema_file = tmp_path / "visits.toml"
    schema_file.write_text(
        '[collections.visits]\nfields.place = "string"\n'
        '[collections.contacts]\nfields.name = { kind = "string", required = true }\n'
    )
    source = tmp_path / "visits.db"

    async def seed() -> None:
        async with SQLiteStore(source) as store:
            engine = Engine(store, load_schema(schema_file))
            await engine.patch(DocId("visits/v1"), {"place": "Paris"}, origin=Origin("x"))
            await engine.patch(DocId("contacts/c1"), {"name": "C"}, origin=Origin("x"))

    asyncio.run(seed())
    archive = tmp_path / "visits.cbor"
    assert invoke("export", str(archive), "--db", str(source)).exit_code == 0

    target = tmp_path / "crm.db"
    ran = run("import", str(archive), "--db", str(target))
    assert ran.exit_code == 6, ran.stderr
    assert "1 created" in ran.stdout and "1 refused" in ran.stdout
    assert "visits/v1: unknown collection 'visits'" in ran.stderr
    with_schema = invoke(
        "import", str(archive), "--db", str(target), "--schema", str(schema_file), "--json"
    )
    assert with_schema.exit_code == 0
    assert (with_schema.json()["created"], with_schema.json()["unchanged"]) == (1, 1)


# Damaged and foreign archives: refused whole, before anything is written.


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "good.cbor"
    store_path = tmp_path / "source.db"

    async def make() -> None:
        async with SQLiteStore(store_path) as store:
            engine = Engine(store, DEFAULT_SCHEMA)
            for n in range(5):
                await engine.patch(
                    DocId(f"contacts/c{n}"),
                    {"name": f"C{n}", "notes": "x" * 50},
                    origin=Origin("seed"),
                    creating=True,
                )
            await export_archive(store, path)

    asyncio.run(make())
    return path


def _damaged(archive: Path, kind: str) -> Path:
    data = archive.read_bytes()
    damaged = archive.with_name(f"{kind}.cbor")
    if kind == "truncated":
        damaged.write_bytes(data[: len(data) // 2])
    elif kind == "no-trailer":  # cut just before the trailer map and its "end" key
        damaged.write_bytes(data[: data.rindex(cbor2.dumps("end")) - 1])
    elif kind == "flipped":
        middle = data.index(b"x" * 50) + 10
        damaged.write_bytes(data[:middle] + b"y" + data[middle + 1 :])
    elif kind == "extra":
        damaged.write_bytes(data + b"\x00")
    elif kind == "csv":
        damaged.write_text("name,email\n")
    elif kind == "empty":
        damaged.write_bytes(b"")
    elif kind == "newer":
        damaged.write_bytes(cbor2.dumps({"format": "crdt-sync-archive", "version": 2}) + data)
    return damaged


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "ends early"),
        ("no-trailer", "ends early"),
        ("flipped", "checksum mismatch"),
        ("extra", "after the trailer"),
        ("csv", "not a crdt-sync archive"),
        ("empty", "not a crdt-sync archive"),
        ("newer", "archive version 2 is not supported"),
    ],
)
def test_a_damaged_or_foreign_archive_is_refused_before_anything_is_imported(
    archive: Path, tmp_path: Path, kind: str, message: str
) -> None:
    damaged = _damaged(archive, kind)
    target = tmp_path / "target.db"
    invoke("import", str(damaged), "--db", str(target)).assert_one_line_error(5, message)
    assert not target.exists()
    with pytest.raises(ArchiveError, match=message):
        verify_archive(damaged)


def test_a_missing_archive_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    ran = run("import", str(tmp_path / "nope.cbor"), "--db", str(tmp_path / "t.db"), "--json")
    ran.assert_one_line_error(5, "no archive at")
    assert not (tmp_path / "t.db").exists()


def test_export_never_overwrites_by_accident_and_leaves_no_partial_file(
    archive: Path, tmp_path: Path
) -> None:
    source = str(tmp_path / "source.db")
    before = archive.read_bytes()
    invoke("export", str(archive), "--db", source).assert_one_line_error(2, "pass --force")
    assert archive.read_bytes() == before
    assert invoke("export", str(archive), "--db", source, "--force").exit_code == 0
    assert verify_archive(archive).documents == 5
    invoke("export", str(tmp_path / "no-dir" / "x.cbor"), "--db", source).assert_one_line_error(
        2, "there is no folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.cbor", "source.db"]


def test_an_archive_state_that_is_not_a_crdt_update_is_refused(archive: Path) -> None:
    with ArchiveReader(archive) as reader:
        header = reader.header
        items = list(reader.documents())
    body = cbor2.dumps(
        {
            "format": "crdt-sync-archive",
            "version": 1,
            "created_at": header.created_at,
            "cursor": header.cursor,
            "documents": 1,
        }
    )
    body += cbor2.dumps({"doc_id": items[0].doc_id, "state": b"\xff\xfe garbage"})
    forged = archive.with_name("forged.cbor")
    forged.write_bytes(
        body + cbor2.dumps({"end": True, "documents": 1, "sha256": hashlib.sha256(body).digest()})
    )
    with pytest.raises(ArchiveError, match=r"contacts/c0: its state is not a Yjs update"):
        verify_archive(forged)


async def test_import_into_the_store_of_a_running_server_reaches_its_peers_and_views(
    server: RunningServer, tmp_path: Path
) -> None:
    """The server follows what another process commits: its live documents, peers and views."""
    source = tmp_path / "source.db"
    async with SQLiteStore(source) as store:
        engine = Engine(store, DEFAULT_SCHEMA)
        await engine.patch(
            DocId("contacts/ada"),
            {"name": "Ada", "email": "ada@archive.example"},
            origin=Origin("old-crm"),
            creating=True,
        )
        await engine.patch(
            DocId("contacts/new"), {"name": "New"}, origin=Origin("old-crm"), creating=True
        )
    archive = tmp_path / "crm.cbor"
    assert (await run_async("export", str(archive), "--db", str(source))).exit_code == 0

    async def ada_has(field: str) -> bool:
        view = await stored(server, "contacts/ada")
        return view is not None and bool(view[field])

    async with yjs_peer(server.ws("/yjs/contacts/ada")) as peer:
        fields = peer.get("record", type=Map)
        fields["name"] = "Ada L."
        fields["phone"] = "+44 20 7946 0000"  # the record is live in the server, and watched
        await wait_for(lambda: ada_has("phone"))

        imported = await run_async("import", str(archive), "--db", str(server.db_path), "--json")
        assert imported.exit_code == 0, imported.stderr
        assert (imported.json()["created"], imported.json()["merged"]) == (1, 1)

        # The peer is sent what the import merged, and its next edit keeps it in the view.
        await wait_for(lambda: record_of(peer).get("email") == "ada@archive.example")
        fields["company"] = "Analytical Engines"
        await wait_for(lambda: ada_has("company"))
        view = await stored(server, "contacts/ada")
        assert view is not None
        assert (view["email"], view["phone"], view["company"]) == (
            "ada@archive.example",
            "+44 20 7946 0000",
            "Analytical Engines",
        )
        assert record_of(peer)["email"] == "ada@archive.example"
    assert await stored(server, "contacts/new") == {
        "id": "new",
        "name": "New",
        "email": None,
        "phone": None,
        "company": None,
        "notes": None,
    }

"""`crdt-sync docs|status|compact` against stores a running server writes, and every error case."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path

import pycrdt
import pytest

from crdt_sync.engine import Engine
from crdt_sync.ids import DocId, Origin
from crdt_sync.record import Records, document_from_state
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.store import SCHEMA_VERSION, SQLiteStore

from .clis import delete_over_ws, invoke, invoke_async, run, run_async
from .conftest import RunningServer, make_tokens, spawn_server
from .peers import mux_peer

records = Records(DEFAULT_SCHEMA)


async def write_crm(server: RunningServer) -> None:
    """Three contacts (one deleted), a deal and a task, written over a real /ws connection."""
    async with mux_peer(server.ws("/ws"), client="ann-phone") as peer:
        for doc_id, fields in [
            ("contacts/ada", {"name": "Ada Lovelace", "email": "ada@example.com"}),
            ("contacts/bob", {"name": "Bob"}),
            ("contacts/gone", {"name": "Gone Soon"}),
            ("deals/engine", {"title": "Difference engine", "amount": 12000.0}),
            ("tasks/call", {"title": "Call Ada", "done": False}),
        ]:
            await peer.wait_ack(await peer.edit(doc_id, **fields))
        await delete_over_ws(peer, "contacts/gone")


async def test_docs_list_show_and_status_read_what_a_running_server_wrote(
    server: RunningServer,
) -> None:
    await write_crm(server)
    db = str(server.db_path)

    listed = await run_async("docs", "list", "--db", db, "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [(r["doc_id"], r["title"]) for r in listed.json()] == [
        ("contacts/ada", "Ada Lovelace"),
        ("contacts/bob", "Bob"),
        ("deals/engine", "Difference engine"),
        ("tasks/call", "Call Ada"),
    ]
    assert all(r["size"] > 0 and r["last_seq"] > 0 for r in listed.json())

    with_deleted = await invoke_async("docs", "list", "contacts", "--deleted", "--db", db, "--json")
    assert [(r["doc_id"], r["deleted"]) for r in with_deleted.json()] == [
        ("contacts/ada", False),
        ("contacts/bob", False),
        ("contacts/gone", True),
    ]

    table = await invoke_async("docs", "list", "--db", db)
    assert table.exit_code == 0
    assert "Ada Lovelace" in table.stdout and "4 records" in table.stdout

    shown = await run_async("docs", "show", "contacts/ada", "--db", db, "--json")
    assert shown.json()["view"] == {
        "id": "ada",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": None,
        "company": None,
        "notes": None,
    }
    assert shown.json()["created_by"] == "ann-phone" and shown.json()["deleted"] is False
    plain = await invoke_async("docs", "show", "contacts/gone", "--db", db)
    assert plain.json()["name"] == "Gone Soon"  # stdout is the view alone, as JSON
    assert "(deleted)" in plain.stderr

    status = (await run_async("status", "--db", db, "--json")).json()
    assert status["collections"] == {
        "contacts": {"records": 2, "deleted": 1},
        "deals": {"records": 1, "deleted": 0},
        "tasks": {"records": 1, "deleted": 0},
    }
    assert status["cursor"] == 6 and status["log_entries"] == 6
    assert status["compaction_debt"] == 1  # contacts/gone: its edit and its delete
    assert status["file_bytes"] > 0 and status["schema_version"] == SCHEMA_VERSION
    human = await invoke_async("status", "--db", db)
    assert "contacts" in human.stdout and "compaction debt" in human.stdout


async def test_history_of_a_record_edited_three_times_shows_three_entries_with_their_fields(
    server: RunningServer,
) -> None:
    async with mux_peer(server.ws("/ws"), client="ann-phone") as ann:
        first = await ann.wait_ack(await ann.edit("contacts/h", name="Hedy"))
        second = await ann.wait_ack(await ann.edit("contacts/h", email="hedy@example.com"))
    async with mux_peer(server.ws("/ws"), client="bob-laptop") as bob:
        third = await bob.wait_ack(await bob.edit("contacts/h", phone="+1 555", company="MGM"))
    db = str(server.db_path)

    history = await run_async("docs", "history", "contacts/h", "--db", db, "--json")
    assert history.exit_code == 0, history.stderr
    steps = history.json()
    assert [(s["seq"], s["origin"], s["fields"]) for s in steps] == [
        (first, "ann-phone", ["name"]),
        (second, "ann-phone", ["email"]),
        (third, "bob-laptop", ["phone", "company"]),
    ]
    assert all(s["size"] > 0 and s["time"].endswith("Z") and not s["deleted"] for s in steps)

    at_second = (
        await invoke_async(
            "docs", "history", "contacts/h", "--at", str(second), "--db", db, "--json"
        )
    ).json()
    assert at_second["seq"] == second
    assert at_second["view"]["email"] == "hedy@example.com" and at_second["view"]["phone"] is None
    table = await invoke_async("docs", "history", "contacts/h", "--db", db)
    assert "bob-laptop" in table.stdout and "phone, company" in table.stdout
    assert "3 updates" in table.stdout


async def test_show_gives_the_raw_crdt_state_and_state_vector_for_other_tools(
    server: RunningServer, tmp_path: Path
) -> None:
    await write_crm(server)
    db = str(server.db_path)
    async with SQLiteStore(server.db_path) as store:
        stored = await store.load(DocId("deals/engine"))
    assert stored is not None

    piped = await run_async("docs", "show", "deals/engine", "--format", "update", "--db", db)
    assert piped.exit_code == 0 and piped.stdout_bytes == stored
    document = document_from_state(piped.stdout_bytes)
    assert records.view(DocId("deals/engine"), document)["title"] == "Difference engine"

    as_text = await invoke_async(
        "docs", "show", "deals/engine", "-f", "update", "--db", db, "--json"
    )
    assert base64.b64decode(as_text.json()["base64"]) == stored

    vector_file = tmp_path / "engine.sv"
    written = await invoke_async(
        "docs", "show", "deals/engine", "-f", "state-vector", "-o", str(vector_file), "--db", db
    )
    assert written.exit_code == 0
    assert vector_file.read_bytes() == pycrdt.get_state(stored)
    # The state vector is what a tool sends to ask for what it lacks: nothing, here.
    assert pycrdt.get_update(stored, vector_file.read_bytes()) == b"\x00\x00"


async def test_compact_folds_the_log_and_history_then_starts_at_the_snapshot(
    server: RunningServer,
) -> None:
    async with mux_peer(server.ws("/ws"), client="ann-phone") as ann:
        for n in range(5):
            last = await ann.wait_ack(await ann.edit("contacts/c", name=f"Name {n}"))
        await ann.wait_ack(await ann.edit("contacts/d", name="Dee"))
    db = str(server.db_path)

    one = (await run_async("compact", "contacts/c", "--db", db, "--json")).json()
    assert one["documents"] == 1 and one["updates_before"] == 5 and one["updates_after"] == 1
    assert 0 < one["bytes_after"] < one["bytes_before"]
    history = (await invoke_async("docs", "history", "contacts/c", "--db", db, "--json")).json()
    assert [(s["seq"], s["compacted"], s["fields"]) for s in history] == [(last, True, ["name"])]
    before = await invoke_async("docs", "history", "contacts/c", "--at", str(last - 1), "--db", db)
    before.assert_one_line_error(3, "compacted")

    again = await invoke_async("compact", "--all", "--db", db)
    assert again.exit_code == 0 and "nothing to compact" in again.stdout
    async with mux_peer(server.ws("/ws"), client="ann-phone") as ann:  # still serving, still right
        await ann.wait_ack(await ann.edit("contacts/c", email="c@example.com"))
        await ann.wait_ack(await ann.edit("contacts/d", email="d@example.com"))
        await ann.wait_ack(await ann.edit("contacts/d", phone="+1"))
    everything = await run_async("compact", "--all", "--db", db)
    assert everything.exit_code == 0
    assert "compacted 2 records: 5 updates -> 2" in everything.stdout
    shown = (await invoke_async("docs", "show", "contacts/d", "--db", db, "--json")).json()
    assert shown["view"]["email"] == "d@example.com" and shown["view"]["phone"] == "+1"


async def test_cli_reads_and_compaction_run_while_a_server_process_writes(tmp_path: Path) -> None:
    """A separate server process keeps acknowledging writes while the CLI reads and compacts."""
    db_path = tmp_path / "busy.db"
    _, device = await make_tokens(db_path)
    process = spawn_server(db_path)
    try:
        url = f"ws://127.0.0.1:{process.port}/ws?token={device}"
        async with mux_peer(url, client="busy-phone") as peer:

            async def keep_writing() -> list[int]:
                seqs = []
                for n in range(120):
                    doc_id = f"tasks/t{n % 12}"
                    seqs.append(await peer.wait_ack(await peer.edit(doc_id, title=f"Task {n}")))
                return seqs

            writer = asyncio.create_task(keep_writing())
            cursors = []
            while not writer.done():
                status, listed, compacted, checked = await asyncio.gather(
                    run_async("status", "--db", str(db_path), "--json"),
                    run_async("docs", "list", "tasks", "--db", str(db_path), "--json"),
                    run_async("compact", "--all", "--db", str(db_path), "--json"),
                    run_async("check", "--db", str(db_path), "--json"),
                )
                for ran in (status, listed, compacted, checked):
                    assert ran.exit_code == 0, ran.stderr
                assert checked.json()["ok"] is True
                cursors.append(status.json()["cursor"])
            seqs = await writer
        assert seqs == sorted(seqs) and len(set(seqs)) == 120
        assert cursors == sorted(cursors)
        final = run("docs", "list", "tasks", "--db", str(db_path), "--json").json()
        titles = {row["doc_id"]: row["title"] for row in final}
        assert titles == {f"tasks/t{n}": f"Task {108 + n}" for n in range(12)}
    finally:
        process.process.terminate()
        process.process.wait(15)


# check: is every log row where reads will find it


def seeded(path: Path, *edits: tuple[str, str]) -> Path:
    """A store with each (doc_id, name) patched in, in order, through the engine."""

    async def seed() -> None:
        async with SQLiteStore(path) as store:
            engine = Engine(store, DEFAULT_SCHEMA)
            for n, (doc_id, name) in enumerate(edits):
                is_new = all(earlier != doc_id for earlier, _ in edits[:n])
                await engine.patch(
                    DocId(doc_id), {"name": name}, origin=Origin("seed"), creating=is_new
                )

    asyncio.run(seed())
    return path


@pytest.fixture
def chained_store(tmp_path: Path) -> Path:
    """contacts/a edited three times (seqs 1, 3, 5), contacts/b twice (2, 4)."""
    edits = [(f"contacts/{name}", f"{name} {n}") for n, name in enumerate("ababa")]
    return seeded(tmp_path / "chained.db", *edits)


def test_check_passes_a_sound_store_and_says_what_it_looked_at(chained_store: Path) -> None:
    checked = run("check", "--db", str(chained_store))
    assert checked.exit_code == 0, checked.stderr
    assert checked.stdout.startswith("ok: 2 records, 5 log rows")
    after_compaction = run("compact", "--all", "--db", str(chained_store))
    assert after_compaction.exit_code == 0
    assert run("check", "--db", str(chained_store), "--json").json()["log_rows"] == 2


DAMAGE = {
    # what another program did to the file, and what check must call it
    "orphans": "UPDATE updates SET prev_seq = NULL WHERE seq = 3",  # seq 1 cut off
    "broken_links": "UPDATE updates SET prev_seq = 2 WHERE seq = 3",  # b's row in a's chain
    "forks": "UPDATE updates SET prev_seq = 1 WHERE seq = 5",  # 3 and 5 both follow 1
    "bad_heads": "UPDATE records SET last_seq = 99 WHERE doc_id = 'contacts/b'",
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_check_finds_a_row_reads_would_miss_and_exits_7(chained_store: Path, kind: str) -> None:
    db = sqlite3.connect(chained_store)
    with db:
        db.execute(DAMAGE[kind])
    db.close()
    checked = run("check", "--db", str(chained_store), "--json")
    assert checked.exit_code == 7
    report = checked.json()
    assert report["ok"] is False and report[kind]["count"] >= 1
    assert report[kind]["examples"]
    plain = run("check", "--db", str(chained_store))
    assert plain.exit_code == 7 and f"{kind.replace('_', ' ')}: " in plain.stdout


# Errors: one line on stderr, a meaningful exit code, nothing created or changed.


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A store holding contacts/ada, written through the engine."""
    return seeded(tmp_path / "crm.db", ("contacts/ada", "Ada"))


INSPECTING = [
    ["status"],
    ["docs", "list"],
    ["docs", "show", "contacts/ada"],
    ["docs", "history", "contacts/ada"],
    ["check"],
    ["compact", "--all"],
    ["export", "OUT"],
    ["token", "list"],
]


@pytest.mark.parametrize("command", INSPECTING, ids=lambda c: " ".join(c))
def test_a_missing_store_is_reported_and_not_created(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "typo.db"
    command = [str(tmp_path / "out.cbor") if part == "OUT" else part for part in command]
    invoke(*command, "--db", str(missing)).assert_one_line_error(4, f"no store at {missing}")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_store_in_a_real_process_is_one_line_too(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    run("docs", "list", "--db", str(missing)).assert_one_line_error(4, "no store at")
    run("status", "--db", str(missing), "--json").assert_one_line_error(4, '"code": "no_store"')
    assert not missing.exists()


def _foreign_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "is an empty file, not a crdt-sync store"),
        (lambda p: p.write_text("name,email\nada,ada@example.com\n"), "not an SQLite database"),
        (_foreign_sqlite, "not a crdt-sync store (an SQLite database, but it has invoices)"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["empty", "csv", "other-sqlite", "directory"],
)
@pytest.mark.parametrize("command", INSPECTING[:5], ids=lambda c: " ".join(c))
def test_a_file_that_is_not_a_store_is_refused_and_left_untouched(
    tmp_path: Path, command: list[str], make: object, message: str
) -> None:
    path = tmp_path / "notes.db"
    make(path)  # type: ignore[operator]
    before = sorted(p.name for p in tmp_path.iterdir())
    content = path.read_bytes() if path.is_file() else None
    invoke(*command, "--db", str(path)).assert_one_line_error(4, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (path.read_bytes() if path.is_file() else None) == content


@pytest.mark.parametrize(
    "command",
    [
        ["docs", "show", "contacts/nobody"],
        ["docs", "history", "contacts/nobody"],
        ["compact", "contacts/nobody"],
        ["docs", "show", "deals/ada"],
    ],
    ids=lambda c: " ".join(c),
)
def test_an_unknown_record_exits_3(store_path: Path, command: list[str]) -> None:
    invoke(*command, "--db", str(store_path)).assert_one_line_error(3, "no such record")


@pytest.mark.parametrize(
    ("doc_id", "message"),
    [
        ("contacts", "document id must be 'collection/record_id'"),
        ("contacts/a b", "record id must be 1-64 characters"),
        ("Contacts/ada", "bad collection name"),
        ("contacts/" + "x" * 65, "record id must be 1-64 characters"),
    ],
)
@pytest.mark.parametrize("command", [["docs", "show"], ["docs", "history"], ["compact"]])
def test_a_bad_id_exits_2(store_path: Path, command: list[str], doc_id: str, message: str) -> None:
    invoke(*command, doc_id, "--db", str(store_path)).assert_one_line_error(2, message)


def test_usage_errors_exit_2_with_one_line(store_path: Path) -> None:
    db = str(store_path)
    invoke("docs", "list", "contact", "--db", db).assert_one_line_error(
        2, "unknown collection 'contact' (known: contacts, deals, tasks)"
    )
    invoke("compact", "--db", db).assert_one_line_error(2, "one record (COLLECTION/ID) or --all")
    invoke("compact", "contacts/ada", "--all", "--db", db).assert_one_line_error(2, "not both")
    invoke(
        "docs",
        "history",
        "contacts/ada",
        "--schema",
        str(store_path.with_name("no.toml")),
        "--db",
        db,
    ).assert_one_line_error(2)


def test_history_at_a_seq_before_the_record_existed_exits_3(store_path: Path) -> None:
    ran = run("docs", "history", "contacts/ada", "--at", "0", "--db", str(store_path), "--json")
    ran.assert_one_line_error(3, "did not exist yet at seq 0")


def test_errors_in_a_real_process_carry_no_traceback(store_path: Path) -> None:
    db = str(store_path)
    run("docs", "show", "contacts/nobody", "--db", db).assert_one_line_error(3, "contacts/nobody")
    run("docs", "show", "nobody", "--db", db).assert_one_line_error(2, "nobody")
    shown = run("docs", "show", "contacts/ada", "--db", db)
    assert shown.exit_code == 0 and shown.json()["name"] == "Ada"


def test_inspecting_a_store_changes_nothing_in_it(store_path: Path) -> None:
    def dump() -> list[tuple[object, ...]]:
        db = sqlite3.connect(store_path)
        try:
            return [*db.execute("SELECT * FROM updates"), *db.execute("SELECT * FROM records")]
        finally:
            db.close()

    before = dump()
    for command in INSPECTING[:5]:
        assert invoke(*command, "--db", str(store_path)).exit_code == 0
    assert dump() == before


def test_a_view_written_by_another_schema_still_lists(tmp_path: Path) -> None:
    """A store from a server with its own schema file: list works, history asks for the file."""
    schema_file = tmp_path / "visits.toml"
    schema_file.write_text('[collections.visits]\ntitle = "place"\nfields.place = "string"\n')
    from crdt_sync.schema import load_schema

    path = tmp_path / "visits.db"

    async def seed() -> None:
        async with SQLiteStore(path) as store:
            engine = Engine(store, load_schema(schema_file))
            await engine.patch(DocId("visits/v1"), {"place": "Paris"}, origin=Origin("x"))

    asyncio.run(seed())
    listed = invoke("docs", "list", "--db", str(path), "--json").json()
    assert [(r["doc_id"], r["title"]) for r in listed] == [("visits/v1", "Paris")]
    invoke("docs", "history", "visits/v1", "--db", str(path)).assert_one_line_error(
        2, "pass the server's --schema FILE"
    )
    history = invoke(
        "docs", "history", "visits/v1", "--db", str(path), "--schema", str(schema_file), "--json"
    ).json()
    assert [s["fields"] for s in history] == [["place"]]

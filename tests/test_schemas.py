"""Schemas as users expect them: a file adds collections, the store keeps the schema it is
served with, and switching to another one is an explicit, checked migration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from crdt_sync.engine import Engine
from crdt_sync.errors import ConfigError
from crdt_sync.ids import DocId, Origin
from crdt_sync.schema import DEFAULT_SCHEMA, load_schema, schema_from_tree, schema_to_tree
from crdt_sync.store import SQLiteStore

from .clis import run, serving

VISITS = (
    '[collections.visits]\ntitle = "place"\nfields.place = { kind = "string", required = true }\n'
)
VISITS_RATED = VISITS + 'fields.rating = { kind = "enum", choices = ["good", "bad"] }\n'
ONLY_VISITS = "replace = true\n" + VISITS


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name, text in [("visits", VISITS), ("rated", VISITS_RATED), ("only", ONLY_VISITS)]:
        made[name] = tmp_path / f"{name}.toml"
        made[name].write_text(text)
    return made


def test_a_schema_file_adds_its_collections_to_the_crm_ones(files: dict[str, Path]) -> None:
    schema = load_schema(files["visits"])
    assert list(schema.collections) == ["contacts", "deals", "tasks", "visits"]
    assert schema.collections["contacts"] == DEFAULT_SCHEMA.collections["contacts"]


def test_a_schema_file_that_says_replace_is_the_whole_schema(files: dict[str, Path]) -> None:
    assert list(load_schema(files["only"]).collections) == ["visits"]


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {"replace": "yes", "collections": {"v": {"fields": {"a": "string"}}}},
            "replace: expected",
        ),
        ({"colections": {}, "collections": {"v": {"fields": {"a": "string"}}}}, "'colections'"),
    ],
)
def test_a_wrong_top_level_key_is_refused_naming_it(tree: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        schema_from_tree(tree)


def test_the_stored_form_reads_back_to_the_same_schema(files: dict[str, Path]) -> None:
    schema = load_schema(files["rated"])
    assert schema_from_tree(schema_to_tree(schema)) == schema


def test_the_store_keeps_its_schema_for_every_later_command_and_server(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    db = tmp_path / "crm.db"
    with serving(db, "--schema", str(files["visits"])) as port:
        admin = _admin_token(db)
        created = httpx.post(
            f"http://127.0.0.1:{port}/api/visits",
            json={"id": "v1", "place": "Paris"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert created.status_code == 201, created.text
    shown = run("schema", "show", "--db", str(db), "--json").json()
    assert shown["recorded"] is True and "visits" in shown["collections"]
    # Commands read the store's schema: no --schema needed, the CRM collections still known.
    listed = run("docs", "list", "contacts", "--db", str(db))
    assert listed.exit_code == 0, listed.stderr
    history = run("docs", "history", "visits/v1", "--db", str(db), "--json")
    assert history.exit_code == 0, history.stderr
    assert [step["fields"] for step in history.json()] == [["place"]]
    # A later serve without --schema serves visits as before.
    with serving(db) as port:
        again = httpx.post(
            f"http://127.0.0.1:{port}/api/visits",
            json={"id": "v2", "place": "Rome"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert again.status_code == 201, again.text


def test_another_schema_is_refused_until_told_to_migrate_and_checked_first(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    db = tmp_path / "crm.db"
    with serving(db, "--schema", str(files["visits"]), "--demo"):
        pass
    run(
        "serve", "--db", str(db), "--port", "0", "--schema", str(files["rated"])
    ).assert_one_line_error(12, "is served with another schema")
    # Dropping the CRM collections would orphan the demo records: listed, and refused.
    checked = run("schema", "check", str(files["only"]), "--db", str(db))
    assert checked.exit_code == 12
    assert "contacts/ada: unknown collection 'contacts'" in checked.stdout.splitlines()
    assert len(checked.stdout.splitlines()) == 7 and "7 of 7 records break" in checked.stderr
    run(
        "serve", "--db", str(db), "--port", "0",
        "--schema", str(files["only"]), "--migrate-schema",
    ).assert_one_line_error(12, "7 of 7 records in")  # fmt: skip
    assert "visits" in run("schema", "show", "--db", str(db), "--json").json()["collections"]
    assert "rating" not in run("schema", "show", "--db", str(db)).stdout
    # A compatible one (a field more) passes the check and is the store's from then on.
    assert run("schema", "check", str(files["rated"]), "--db", str(db)).exit_code == 0
    with serving(db, "--schema", str(files["rated"]), "--migrate-schema"):
        pass
    assert "rating" in run("schema", "show", "--db", str(db)).stdout


def test_a_store_of_custom_records_without_a_recorded_schema_asks_for_its_file(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """A store written before stores kept their schema: serving it with the CRM's would refuse
    every write to its visits, so the server says which schema file it needs instead."""
    db = tmp_path / "old.db"

    async def seed() -> None:
        async with SQLiteStore(db) as store:
            engine = Engine(store, load_schema(files["visits"]))
            await engine.patch(DocId("visits/v1"), {"place": "Paris"}, origin=Origin("x"))
            await engine.settle()

    asyncio.run(seed())
    run("serve", "--db", str(db), "--port", "0").assert_one_line_error(
        12, "pass the --schema FILE its records were written with"
    )
    with serving(db, "--schema", str(files["visits"])):
        pass
    assert run("schema", "show", "--db", str(db), "--json").json()["recorded"] is True


def _admin_token(db: Path) -> str:
    made = run("token", "create", "--role", "admin", "--name", "test-admin", "--db", str(db))
    assert made.exit_code == 0, made.stderr
    return made.stdout.strip()


def test_an_archive_carries_its_store_schema_into_a_new_store(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    source, target, archive = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "a.cbor"
    with serving(source, "--schema", str(files["visits"])) as port:
        created = httpx.post(
            f"http://127.0.0.1:{port}/api/visits",
            json={"id": "v1", "place": "Paris"},
            headers={"Authorization": f"Bearer {_admin_token(source)}"},
        )
        assert created.status_code == 201, created.text
    assert run("export", str(archive), "--db", str(source)).exit_code == 0
    imported = run("import", str(archive), "--db", str(target), "--json")
    assert imported.exit_code == 0, imported.stderr
    assert (imported.json()["created"], imported.json()["refused"]) == (1, [])
    assert "visits" in run("schema", "show", "--db", str(target), "--json").json()["collections"]
    with serving(target):  # and a server on the new store serves visits without --schema
        pass

"""The CLI on a PostgreSQL store (`crdt-sync --store URL ...`), and moving a deployment there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .clis import invoke, invoke_async, run_async
from .conftest import RunningServer
from .nodes import Node, spawn_node
from .peers import mux_peer
from .services import postgres, postgres_schema


@pytest.fixture
def url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.kill()


async def test_a_deployment_moves_from_sqlite_to_postgresql_by_export_and_import(
    server: RunningServer, url: str, tmp_path: Path, nodes: list[Node]
) -> None:
    """The sequence docs/NODES.md gives: export the file, import into PostgreSQL, make
    tokens there, serve nodes on it; every record arrives, with its merged state."""
    async with mux_peer(server.ws("/ws"), client="ann-phone") as ann:
        for n in range(5):
            await ann.wait_ack(await ann.edit(f"contacts/c{n}", name=f"Contact {n}"))
        await ann.wait_ack(await ann.edit("deals/d1", title="Big deal", amount=5000.0))
    archive = tmp_path / "crm.cbor"
    exported = await run_async("export", str(archive), "--db", str(server.db_path))
    assert exported.exit_code == 0, exported.stderr

    imported = await run_async("--store", url, "import", str(archive), "--json")
    assert imported.exit_code == 0, imported.stderr
    assert imported.json()["created"] == 6
    status = (await invoke_async("--store", url, "status", "--json")).json()
    assert status["cursor"] == 6 and status["records"] == 6
    token = await run_async("--store", url, "token", "create", "--role", "admin", "--name", "ops")
    assert token.exit_code == 0, token.stderr

    nodes.append(spawn_node(url, tmp_path / "node.log"))
    async with nodes[0].client(token.stdout.strip()) as http:
        answer = await http.get("/api/deals/d1")
        assert answer.status_code == 200, answer.text
        assert answer.json()["amount"] == 5000.0
        contacts = (await http.get("/api/contacts")).json()
        for amount in (6000.0, 7000.0):  # two more rows of d1: debt a compaction would fold
            patched = await http.patch("/api/deals/d1", json={"amount": amount})
            assert patched.status_code == 200, patched.text
    assert sorted(row["name"] for row in contacts["items"]) == [f"Contact {n}" for n in range(5)]
    status = (await invoke_async("--store", url, "status", "--json")).json()
    assert (status["compaction_debt"], status["records_with_debt"], status["snapshots"]) == (
        2,
        1,
        0,
    )
    assert (await run_async("--store", url, "compact", "--all")).exit_code == 0
    status = (await invoke_async("--store", url, "status", "--json")).json()
    assert (status["compaction_debt"], status["records_with_debt"], status["snapshots"]) == (
        0,
        0,
        1,
    )


def test_inspecting_and_operating_a_postgresql_store(url: str) -> None:
    created = invoke("--store", url, "token", "create", "--role", "device", "--name", "p")
    assert created.exit_code == 0, created.stderr
    listed = invoke("--store", url, "token", "list", "--json")
    assert [row["name"] for row in listed.json()] == ["p"]
    assert invoke("--store", url, "token", "revoke", "p").exit_code == 0
    assert postgres(url, "SELECT revoked_at IS NOT NULL FROM tokens") == [(True,)]
    checked = invoke("--store", url, "check", "--json")
    assert checked.exit_code == 0, checked.stderr
    assert checked.json()["ok"] is True and checked.json()["db"].startswith("postgresql://")
    said = invoke("--store", url, "check")
    assert said.exit_code == 0 and "chain" in said.stdout and "SQLite" not in said.stdout
    compacted = invoke("--store", url, "compact", "--all", "--json")
    assert compacted.exit_code == 0, compacted.stderr
    missing = invoke("--store", url, "docs", "show", "contacts/nobody")
    missing.assert_one_line_error(3, "contacts/nobody")


def test_a_store_url_and_a_file_at_once_are_refused(url: str, tmp_path: Path) -> None:
    both = invoke("--store", url, "status", "--db", str(tmp_path / "x.db"))
    both.assert_one_line_error(2, "not both")
    assert not (tmp_path / "x.db").exists()
    not_a_url = invoke("--store", str(tmp_path / "x.db"), "status")
    not_a_url.assert_one_line_error(2, "postgresql:// URL")


def test_an_unreachable_postgresql_store_is_one_line_naming_it_without_its_password() -> None:
    ran = invoke("--store", "postgresql://ops:secret@127.0.0.1:1/crm", "status")
    ran.assert_one_line_error(4, "postgresql://ops:***@127.0.0.1:1/crm")
    assert "secret" not in ran.stderr

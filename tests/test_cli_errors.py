"""Every user mistake on the real `crdt-sync` process: one line on stderr, the README's exit code.

These run `python -m crdt_sync` as a subprocess, as a user's shell does: Typer's test runner
would hide what the console entry point prints for click's own usage errors.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .clis import run
from .conftest import free_socket

README = Path(__file__).parent.parent / "README.md"


def exit_code_table() -> dict[int, str]:
    """The README's exit-code table, the one place the codes are written down for people."""
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", README.read_text(), flags=re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def test_the_readme_table_lists_every_exit_code_the_cli_uses() -> None:
    from crdt_sync.commands.basics import ExitCode

    assert sorted(exit_code_table()) == sorted(int(code) for code in ExitCode)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["serve", "--port", "99999"], 2, "Invalid value for '--port'"),
        (["serve", "--port", "abc"], 2, "Invalid value for '--port'"),
        (["serve", "--colour"], 2, "No such option: --colour"),
        (["token", "create", "--role", "boss", "--name", "x"], 2, "'boss' is not one of"),
        (["token", "create", "--role", "admin"], 2, "Missing option '--name'"),
        (["docs", "history", "contacts/ada", "--at", "-1"], 2, "Invalid value for '--at'"),
        (["docs", "show", "contacts/a b"], 2, "contacts/a b"),
        (["docs", "frobnicate"], 2, "No such command 'frobnicate'"),
        (["compact"], 2, "say what to compact"),
        (["backup"], 2, "Missing argument 'DEST'"),
        (["schema", "check", "nope.toml"], 2, "cannot read schema file"),
        (["client", "watch", "--for", "soon"], 2, "Invalid value for '--for'"),
        (["import", "nope.cbor"], 5, "no archive at nope.cbor"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_bad_argument_is_one_line_and_its_code(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    ran = run(*args, "--db", str(tmp_path / "crm.db"))
    ran.assert_one_line_error(code, message)
    assert list(tmp_path.iterdir()) == []  # nothing created by a command that did not run


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with one admin token named `admin`, made by the CLI itself."""
    path = tmp_path / "crm.db"
    made = run("token", "create", "--role", "admin", "--name", "admin", "--db", str(path))
    assert made.exit_code == 0, made.stderr
    return path


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["token", "create", "--role", "device", "--name", "admin"], 2, "already exists"),
        (["token", "revoke", "nobody"], 3, "no active token named 'nobody'"),
        (["docs", "show", "contact/ada"], 2, "unknown collection 'contact'"),
        (["docs", "history", "contact/ada"], 2, "unknown collection 'contact'"),
        (["docs", "show", "contacts/ada"], 3, "no such record"),
        (["export", "missing-folder/crm.cbor"], 2, "there is no folder missing-folder"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_mistake_on_a_real_store_gets_the_code_of_its_kind(
    store: Path, args: list[str], code: int, message: str
) -> None:
    ran = run(*args, "--db", str(store))
    ran.assert_one_line_error(code, message)
    assert exit_code_table()[code]


def test_a_missing_folder_is_named_and_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "crm.db"
    run("serve", "--db", str(missing), "--port", "0").assert_one_line_error(
        4, f"there is no folder {missing.parent}"
    )
    run("status", "--db", str(missing)).assert_one_line_error(4, "there is no folder")
    run("client", "status", "--db", str(missing)).assert_one_line_error(4, "there is no folder")
    assert list(tmp_path.iterdir()) == []


def test_serve_refuses_a_file_that_is_not_a_store_and_leaves_it_untouched(tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# not a database\n")
    ran = run("serve", "--db", str(notes), "--port", "0")
    ran.assert_one_line_error(4, "not an SQLite database")
    assert notes.read_text() == "# not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """`crdt-sync serve` as a user starts it (port 0): its store and the port it says it got."""
    db, log = tmp_path / "crm.db", tmp_path / "serve.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "crdt_sync", "serve", "--db", str(db), "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        port = _announced_port(log, process)
        yield db, port
    finally:
        process.terminate()
        process.wait(15)


def _announced_port(log: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"serving .* on http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return int(found.group(1))
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"serve said nothing within 30 s: {log.read_text()}")


def test_serve_prints_its_url_only_once_bound_and_the_url_answers(
    serving: tuple[Path, int],
) -> None:
    _, port = serving
    # Printed after the bind: the port it names is already listening, nothing to wait for.
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json() == {"status": "ok"}


def test_a_second_server_on_the_same_store_is_refused(
    serving: tuple[Path, int], tmp_path: Path
) -> None:
    db, port = serving
    ran = run("serve", "--db", str(db), "--port", "0")
    ran.assert_one_line_error(9, f"{db} is already being served by another crdt-sync server")
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    # The store stays readable by every other command while its server runs.
    assert run("status", "--db", str(db), "--json").exit_code == 0


def test_a_port_in_use_is_one_line_exit_8_and_leaves_no_store_behind(tmp_path: Path) -> None:
    with free_socket() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "crm.db"
        ran = run("serve", "--db", str(db), "--port", str(port))
    ran.assert_one_line_error(8, f"127.0.0.1:{port} is already in use")
    assert "serving" not in ran.stderr
    assert not db.exists()


def test_an_address_not_of_this_machine_is_exit_8(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to a host.
    ran = run("serve", "--db", str(tmp_path / "crm.db"), "--host", "192.0.2.7", "--port", "0")
    ran.assert_one_line_error(8, "not one of this machine's")


def test_client_read_commands_never_create_a_replica(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    for args in (["status"], ["list", "contacts"], ["edit", "contacts", "ada", "name=A"]):
        run("client", *args, "--db", str(typo)).assert_one_line_error(4, f"no replica at {typo}")
    assert list(tmp_path.iterdir()) == []


def test_a_replica_and_a_store_name_each_other(store: Path, tmp_path: Path) -> None:
    replica = tmp_path / "phone.db"
    added = run("client", "add", "contacts", "name=Ada", "--id", "ada", "--db", str(replica))
    assert added.exit_code == 0, added.stderr
    run("status", "--db", str(replica)).assert_one_line_error(
        4, f"{replica} is a crdt-sync client replica, not a server store"
    )
    run("client", "status", "--db", str(store)).assert_one_line_error(
        4, f"{store} is a crdt-sync server store, not a client replica"
    )


def test_a_server_that_cannot_be_reached_is_exit_10(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    ran = run(
        "client", "sync", "--server", f"127.0.0.1:{port}", "--token", "cs_x",
        "--db", str(tmp_path / "phone.db"),
    )  # fmt: skip
    ran.assert_one_line_error(10, f"127.0.0.1:{port}")


def test_a_replica_in_a_missing_folder_is_one_line_without_thread_tracebacks(
    tmp_path: Path,
) -> None:
    """SQLite's failed open used to end in aiosqlite's 'Event loop is closed' thread traces."""
    db = tmp_path / "gone" / "phone.db"
    ran = run("client", "add", "contacts", "name=Ada", "--db", str(db))
    ran.assert_one_line_error(4, f"there is no folder {db.parent}")


def test_client_add_of_an_id_the_replica_holds_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    replica = tmp_path / "phone.db"
    added = run("client", "add", "contacts", "name=Ada", "--id", "ada", "--db", str(replica))
    assert added.exit_code == 0, added.stderr
    again = run("client", "add", "contacts", "name=Bob", "--id", "ada", "--db", str(replica))
    again.assert_one_line_error(2, "contacts/ada: already in this replica")
    assert "crdt-sync client edit contacts ada" in again.stderr
    shown = run("client", "list", "contacts", "--db", str(replica), "--json")
    assert [(r["id"], r["name"]) for r in shown.json()] == [("ada", "Ada")]

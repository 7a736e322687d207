"""`crdt-sync client ...` as a user runs it: offline edits, sync, status, watch, bad input."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from crdt_sync.cli import app

from .client_helpers import admin_patch, server_view
from .conftest import RunningServer

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["client", *args])
    return result.exit_code, result.stdout, result.stderr


def test_offline_add_edit_delete_list_and_status(tmp_path: Path) -> None:
    db = str(tmp_path / "phone.db")
    code, out, _ = cli("add", "deals", "title=Engine", "amount=12000", "--id", "engine", "--db", db)
    assert code == 0 and json.loads(out)["amount"] == 12000
    code, out, _ = cli("edit", "deals", "engine", "stage=won", "amount=", "--db", db)
    assert code == 0
    assert (json.loads(out)["stage"], json.loads(out)["amount"]) == ("won", None)
    cli("add", "deals", "title=Compiler", "--id", "cobol", "--db", db)
    cli("delete", "deals", "cobol", "--db", db)
    code, out, _ = cli("list", "deals", "--db", db)
    assert code == 0 and out.split() == ["engine", "Engine"]
    code, out, _ = cli("list", "deals", "--where", "stage=won", "--json", "--db", db)
    assert [d["id"] for d in json.loads(out)] == ["engine"]
    code, out, _ = cli("status", "--json", "--db", db)
    status = json.loads(out)
    assert (status["state"], status["pending"], status["last_sync_at"]) == ("offline", 4, None)


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path) -> None:
    db = str(tmp_path / "phone.db")
    for args, message in [
        (("add", "deals", "colour=red"), "deals: unknown field 'colour'"),
        (("add", "deals", "title=X", "amount=ten"), "'amount=ten': expected a number"),
        (("add", "planets", "name=Mars"), "unknown collection 'planets'"),
        (("add", "deals", "title"), "expected field=value, got 'title'"),
        (("edit", "deals", "ghost", "title=Boo"), "deals/ghost: no such record here"),
        (("sync",), "syncing needs a server URL and a token"),
    ]:
        code, _, err = cli(*args, "--db", db)
        assert code == 1, args
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    code, out, _ = cli("status", "--json", "--db", db)
    assert json.loads(out)["pending"] == 0


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crdt_sync",
        "client",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_sync_and_watch_against_a_running_server(
    server: RunningServer, tmp_path: Path
) -> None:
    await admin_patch(server, "contacts/ada", {"name": "Ada"}, creating=True)
    db = str(tmp_path / "phone.db")
    auth = ["--server", server.http, "--token", server.device_token, "--db", db]
    code, _, err = await run_cli("add", "contacts", "name=Grace", "--id", "grace", "--db", db)
    assert code == 0, err
    code, out, err = await run_cli("sync", "--json", *auth)
    assert code == 0, err
    synced = json.loads(out)
    assert (synced["state"], synced["pending"], synced["transport"]) == ("synced", 0, "websocket")
    assert (await server_view(server, "contacts/grace") or {})["name"] == "Grace"
    code, out, _ = await run_cli("list", "contacts", "--db", db)
    assert [line.split()[0] for line in out.splitlines()] == ["ada", "grace"]

    code, out, err = await run_cli("watch", "--json", "--for", "2", *auth)
    assert code == 0, err
    states = [json.loads(line)["state"] for line in out.splitlines()]
    assert states[:3] == ["offline", "connecting", "syncing"] and "synced" in states

    code, _, err = await run_cli("sync", "--server", server.http, "--token", "cs_bad", "--db", db)
    assert code == 1 and "4401" in err

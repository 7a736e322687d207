"""`crdt-sync client ...` as a user runs it: offline edits, sync, status, watch, bad input."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from crdt_sync.commands.basics import ExitCode

from .client_helpers import admin_patch, server_view
from .clis import Ran, invoke, run_async
from .conftest import RunningServer


def test_offline_add_edit_delete_list_and_status(tmp_path: Path) -> None:
    db = str(tmp_path / "phone.db")
    added = invoke(
        "client", "add", "deals", "title=Engine", "amount=12000", "--id", "engine", "--db", db
    )
    assert added.exit_code == 0 and added.json()["amount"] == 12000
    edited = invoke("client", "edit", "deals", "engine", "stage=won", "amount=", "--db", db)
    assert edited.exit_code == 0
    assert (edited.json()["stage"], edited.json()["amount"]) == ("won", None)
    added = invoke("client", "add", "deals", "title=Compiler", "--id", "cobol", "--db", db)
    assert added.exit_code == 0, added.stderr
    deleted = invoke("client", "delete", "deals", "cobol", "--db", db)
    assert deleted.exit_code == 0, deleted.stderr
    listed = invoke("client", "list", "deals", "--db", db)
    assert listed.exit_code == 0 and listed.stdout.split() == ["engine", "Engine"]
    listed = invoke("client", "list", "deals", "--where", "stage=won", "--json", "--db", db)
    assert listed.exit_code == 0
    assert [d["id"] for d in listed.json()] == ["engine"]
    status = invoke("client", "status", "--json", "--db", db)
    assert status.exit_code == 0
    state = status.json()
    assert (state["state"], state["pending"], state["last_sync_at"]) == ("offline", 4, None)


def test_bad_input_is_one_line_and_the_exit_code_of_the_readme_table(tmp_path: Path) -> None:
    db = str(tmp_path / "phone.db")
    assert invoke("client", "add", "deals", "title=Kept", "--id", "kept", "--db", db).exit_code == 0
    for args, code, message in [
        (("add", "deals", "colour=red"), 2, "deals: unknown field 'colour'"),
        (("add", "deals", "title=X", "amount=ten"), 2, "'amount=ten': expected a number"),
        (("add", "planets", "name=Mars"), 2, "unknown collection 'planets'"),
        (("add", "deals", "title"), 2, "expected field=value, got 'title'"),
        (("edit", "deals", "ghost", "title=Boo"), 3, "deals/ghost: no such record here"),
        (("sync",), 2, "syncing needs a server URL and a token"),
        (("sync", "--server", "ftp://x", "--token", "t"), 2, "--server: expected http://"),
    ]:
        ran = invoke("client", *args, "--db", db)
        assert ran.exit_code == code, (args, ran.stderr)
        err = ran.stderr
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    status = invoke("client", "status", "--json", "--db", db)
    assert status.exit_code == 0 and status.json()["pending"] == 1


async def watch_until_synced(*args: str) -> tuple[list[str], Ran]:
    """`client watch --json ARGS` until it prints the synced state, then Ctrl-C as a user would."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "crdt_sync", "client", "watch", "--json", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    states: list[str] = []
    try:
        async with asyncio.timeout(60):
            while "synced" not in states and (line := await process.stdout.readline()):
                states.append(json.loads(line)["state"])
            process.send_signal(signal.SIGINT)
            out, err = await process.communicate()
            exit_code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    states += [json.loads(line)["state"] for line in out.splitlines()]
    return states, Ran(exit_code, out.decode(), err.decode(), out)


async def test_sync_and_watch_against_a_running_server(
    server: RunningServer, tmp_path: Path
) -> None:
    await admin_patch(server, "contacts/ada", {"name": "Ada"}, creating=True)
    db = str(tmp_path / "phone.db")
    # host:port without a scheme, as one types it after reading the server's URL
    auth = ["--server", f"127.0.0.1:{server.port}", "--token", server.device_token, "--db", db]
    added = await run_async("client", "add", "contacts", "name=Grace", "--id", "grace", "--db", db)
    assert added.exit_code == 0, added.stderr
    synced = await run_async("client", "sync", "--json", *auth)
    assert synced.exit_code == 0, synced.stderr
    status = synced.json()
    assert (status["state"], status["pending"], status["transport"]) == ("synced", 0, "websocket")
    assert (await server_view(server, "contacts/grace") or {})["name"] == "Grace"
    listed = await run_async("client", "list", "contacts", "--db", db)
    assert listed.exit_code == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["ada", "grace"]

    states, watched = await watch_until_synced(*auth)
    assert (watched.exit_code, watched.stderr) == (0, "")  # Ctrl-C ends a watch quietly
    assert states[:3] == ["offline", "connecting", "syncing"] and "synced" in states

    refused = await run_async(
        "client", "sync", "--server", server.http, "--token", "cs_bad", "--db", db
    )
    assert refused.exit_code == 11 and "4401" in refused.stderr  # the token was refused


async def test_watch_exits_non_zero_within_2_s_of_its_token_being_revoked(
    server: RunningServer, tmp_path: Path
) -> None:
    """Revoked from another process (the server notices within its 1 s sweep), watch stops
    with the server's reason on one line instead of hanging."""
    db = str(tmp_path / "phone.db")
    auth = ["--server", server.http, "--token", server.device_token, "--db", db]
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "crdt_sync", "client", "watch", "--json", *auth),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    states: list[str] = []
    try:
        async with asyncio.timeout(60):
            while "synced" not in states and (line := await process.stdout.readline()):
                states.append(json.loads(line)["state"])
        assert "synced" in states
        revoked = await run_async("token", "revoke", "phone", "--db", str(server.db_path))
        assert revoked.exit_code == 0, revoked.stderr
        async with asyncio.timeout(2):
            exit_code = await process.wait()
        out, err = await process.stdout.read(), await process.stderr.read()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert exit_code == ExitCode.TOKEN_REFUSED
    assert err.decode().splitlines() == [
        f"error: ws://127.0.0.1:{server.port}/ws: closed by the server with 4401 (token revoked)"
    ]
    last = json.loads(out.splitlines()[-1])
    assert last["state"] == "error" and "4401" in last["last_error"]

"""The CLI's rough edges a new user met first, each as the real process shows it."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import typer.core
import typer.main

from crdt_sync.cli import app, serve
from crdt_sync.commands import quick_serve
from crdt_sync.engine import Engine
from crdt_sync.ids import DocId, Origin
from crdt_sync.store import SQLiteStore

from .clis import run, run_async
from .conftest import RunningServer


def test_version_prints_the_installed_version() -> None:
    ran = run("--version")
    assert (ran.exit_code, ran.stdout, ran.stderr) == (0, f"crdt-sync {version('crdt-sync')}\n", "")


def test_flags_are_shown_as_flags_in_help() -> None:
    ran = run("serve", "--help")
    assert ran.exit_code == 0
    demo = next(line for line in ran.stdout.splitlines() if line.strip().startswith("--demo"))
    assert "<bool>" not in demo and "Seed a few" in demo
    assert "<bool>" not in ran.stdout  # --help, --json, --deleted: none takes a value


async def test_token_list_on_a_store_without_tokens_says_so(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    async with SQLiteStore(db):
        pass  # a store with no token yet (as `import` into a new file leaves one)
    listed = await run_async("token", "list", "--db", str(db))
    assert (listed.exit_code, listed.stdout) == (0, "")
    assert listed.stderr.startswith(f"no tokens in {db} ") and "token create" in listed.stderr


async def test_token_list_shows_when_each_token_was_made_and_last_used(
    server: RunningServer,
) -> None:
    db = str(server.db_path)
    before = await run_async("token", "list", "--db", db, "--json")
    assert before.exit_code == 0, before.stderr
    assert {t["name"]: t["last_used_at"] for t in before.json()} == {"admin": None, "phone": None}
    async with server.client(server.device_token) as http:
        assert (await http.get("/api/sync/initial")).status_code == 200
    after = await run_async("token", "list", "--db", db, "--json")
    used = {t["name"]: t["last_used_at"] for t in after.json()}
    assert used["admin"] is None and used["phone"] is not None
    assert all(t["created_at"] > 0 and t["created"].endswith("Z") for t in after.json())
    table = await run_async("token", "list", "--db", db)
    phone = next(line for line in table.stdout.splitlines() if "phone" in line)
    assert "device" in phone and "active" in phone and "never" not in phone
    admin = next(line for line in table.stdout.splitlines() if "admin" in line)
    assert admin.rstrip(" │").endswith("never")


async def test_tables_show_whole_ids_and_titles(server: RunningServer) -> None:
    record_id = "ada-lovelace-the-first-programmer-of-the-analytical-engine"
    title = "Ada Lovelace, Countess of Lovelace, the first programmer of all"
    engine: Engine = server.app.state.engine  # type: ignore[attr-defined]
    await engine.patch(
        DocId(f"contacts/{record_id}"), {"name": title}, origin=Origin("t"), creating=True
    )
    listed = await run_async("docs", "list", "--db", str(server.db_path))
    assert listed.exit_code == 0, listed.stderr
    assert f"contacts/{record_id}" in listed.stdout and title in listed.stdout
    assert "…" not in listed.stdout


async def test_a_post_without_an_id_that_breaks_the_schema_names_no_invented_id(
    server: RunningServer,
) -> None:
    async with server.client() as http:
        answer = await http.post("/api/contacts", json={"email": "no-name@example.com"})
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert re.fullmatch(r"contacts: .*name.*", error["message"]), error
        assert (await http.get("/api/contacts")).json()["items"] == []
        # With an id of its own, the error names it.
        named = await http.post("/api/contacts", json={"id": "ann", "email": "a@example.com"})
        assert named.json()["error"]["message"].startswith("contacts/ann: ")


def _typer_parses_serve(args: list[str]) -> dict[str, object]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    context = group.make_context("crdt-sync", list(args))
    name, command, rest = group.resolve_command(context, [*context._protected_args, *context.args])
    assert name == "serve" and command is not None
    return dict(command.make_context("serve", rest, parent=context).params)


def test_the_quick_serve_table_names_every_option_typer_gives_serve() -> None:
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    assert options == {*quick_serve.VALUES, *quick_serve.FLAGS, *quick_serve.REPEATABLE}
    environment = {p.envvar for p in command.params if p.envvar}
    assert environment == set(quick_serve.ENVIRONMENT)


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["serve", "--db", "crm.db", "--port", "0", "--demo", "--log-level", "warning"],
        ["serve", "--port=65535", "--host", "0.0.0.0", "--no-compact", "--migrate-schema"],
        ["serve", "--compact", "--compact-rows", "2", "--compact-bytes=1", "--schema", "s.toml"],
        ["serve", "--cors-origin", "https://app.example.com", "--cors-origin=*"],
        ["serve", "--store", "postgresql://u@h/db", "--bus", "redis://h:6379/0"],
        ["serve", "--lock-timeout", "20", "--idle-timeout=2.5"],
    ],
)
def test_serve_with_plain_options_is_parsed_as_typer_parses_it(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in quick_serve.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert quick_serve.parse_serve(args, serve) == _typer_parses_serve(args)


@pytest.mark.parametrize(
    "args",
    [
        ["--store", "postgresql://u@h/db", "serve"],  # a global option: typer's
        ["serve", "--help"],
        ["serve", "--port", "65536"],
        ["serve", "--port", "-1"],
        ["serve", "--port", "8_765"],
        ["serve", "--port"],
        ["serve", "--port", "1", "--port", "2"],
        ["serve", "--compact-rows", "1"],
        ["serve", "--lock-timeout", "0"],
        ["serve", "--lock-timeout", "1e3"],
        ["serve", "--demo=yes"],
        ["serve", "--db", ""],
        ["serve", "--what"],
        ["serve", "extra"],
        ["token", "list"],
    ],
)
def test_anything_else_is_left_to_typer(args: list[str]) -> None:
    assert quick_serve.parse_serve(args, serve) is None


def test_an_environment_variable_of_serve_leaves_the_parse_to_typer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRDT_SYNC_LOCK_TIMEOUT", "30")
    assert quick_serve.parse_serve(["serve"], serve) is None


def test_the_typer_free_serve_has_the_typer_commands_options_and_defaults() -> None:
    from crdt_sync.commands import serving

    def defaults(function: object) -> dict[str, object]:
        return {n: p.default for n, p in inspect.signature(function).parameters.items()}  # type: ignore[arg-type]

    assert defaults(serving.serve) == defaults(serve)

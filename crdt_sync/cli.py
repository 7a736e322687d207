"""The `crdt-sync` command: parse options, call the library, print; one line per error."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from .commands import archive as _archive
from .commands import docs as _docs
from .commands import ops as _ops
from .commands.client import client_app
from .commands.common import DEFAULT_DB, DbOption, ExitCode
from .commands.plain import fail, run, schema_from
from .errors import CrdtSyncError

T = TypeVar("T")

app = typer.Typer(
    name="crdt-sync",
    help="CRDT sync engine for a small CRM: serve, inspect and operate the store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(help="Create, list and revoke access tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _store(db: Path, *, must_exist: bool = True):  # type: ignore[no-untyped-def]
    from .store import SQLiteStore
    from .store.files import require_store

    if must_exist:
        try:
            require_store(db)  # never create or migrate a file that was only to be read
        except CrdtSyncError as exc:
            fail(exc.message, ExitCode.NO_STORE)
    return SQLiteStore(db)


@app.command()
def serve(
    db: DbOption = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    demo: Annotated[
        bool, typer.Option("--demo", help="Seed a few contacts, deals, tasks.")
    ] = False,
    schema: Annotated[Path | None, typer.Option(help="Schema file (TOML or JSON).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the sync server on an embedded SQLite store (created if missing)."""
    import uvicorn

    from .server.app import Settings, create_app
    from .server.bootstrap import prepare_store

    parsed = schema_from(schema)
    admin_token = run(lambda: prepare_store(db, parsed, demo=demo))
    if admin_token is not None:
        typer.echo("Created the first admin token (shown once; keep it safe):", err=True)
        typer.echo(admin_token)
    typer.echo(f"crdt-sync serving {db} on http://{host}:{port}", err=True)
    uvicorn.run(
        create_app(Settings(db_path=db, schema=parsed, tune_gc=True)),
        host=host,
        port=port,
        log_level=log_level,
        ws_max_size=2 << 20,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
    )


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin or device.")],
    name: Annotated[str, typer.Option(help="Who the token is for (shown in history).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Create a token and print it alone on stdout (it is stored hashed, never shown again)."""
    from .server.auth import create_token

    async def work() -> str:
        async with _store(db, must_exist=False) as store:
            return await create_token(store, name=name, role=role)

    typer.echo(run(work))


@token_app.command("list")
def token_list(
    db: DbOption = DEFAULT_DB,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List tokens: name, role, created, revoked."""

    async def work() -> list[dict[str, object]]:
        async with _store(db) as store:
            return [
                {
                    "name": t.name,
                    "role": t.role,
                    "created_at": t.created_at,
                    "revoked_at": t.revoked_at,
                }
                for t in await store.list_tokens()
            ]

    rows = run(work)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "revoked" if row["revoked_at"] else "active"
        typer.echo(f"{row['name']:<24} {row['role']:<7} {state}")


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="Token name.")], db: DbOption = DEFAULT_DB
) -> None:
    """Revoke a token; a running server closes its connections within a second."""

    async def work() -> bool:
        async with _store(db) as store:
            return bool(await store.revoke_token(name))

    if not run(work):
        fail(f"no active token named {name!r}")
    typer.echo(f"revoked {name}")


# Inspecting and operating the store, and the client replica: each group in commands/.
app.add_typer(_docs.app, name="docs")
app.command("status")(_ops.status)
app.command("compact")(_ops.compact)
app.command("check")(_ops.check)
app.command("backup")(_ops.backup)
app.command("export")(_archive.export)
app.command("import")(_archive.import_)
app.add_typer(client_app, name="client")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

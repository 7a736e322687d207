"""The `crdt-sync` command: parse options, call the library, print; one line per error."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from .commands import archive as _archive
from .commands import docs as _docs
from .commands import ops as _ops
from .commands import schemas as _schemas
from .commands.basics import DEFAULT_DB, BadArgument, ExitCode, choose_store
from .commands.client import client_app
from .commands.common import DbOption, StoreOption, open_store
from .commands.plain import fail, run

if TYPE_CHECKING:
    from .store import TokenRow

T = TypeVar("T")

app = typer.Typer(
    name="crdt-sync",
    help="CRDT sync engine for a small CRM: serve, inspect and operate the store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help, as click prints it: rich's shows every flag as `--demo <bool>`, as if it
    # took a value, and keeps the docstrings' line breaks mid-sentence.
    rich_markup_mode=None,
)
token_app = typer.Typer(
    help="Create, list and revoke access tokens.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(token_app, name="token")


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        typer.echo(f"crdt-sync {version('crdt-sync')}")
        raise typer.Exit()


@app.callback()
def main_options(
    store: StoreOption = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """CRDT sync engine for a small CRM: serve, inspect and operate the store."""
    choose_store(store)  # read by every command that opens the store (commands.common)


@app.command()
def serve(
    db: DbOption = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).")
    ] = 8765,
    demo: Annotated[
        bool, typer.Option("--demo", help="Seed a few contacts, deals, tasks.")
    ] = False,
    schema: Annotated[
        Path | None,
        typer.Option(
            help="Schema file (TOML or JSON): collections added to the CRM's. Recorded in the"
            " store; later runs and commands use it without this option."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    compact: Annotated[
        bool,
        typer.Option(
            "--compact/--no-compact", help="Compact much-edited records in the background."
        ),
    ] = True,
    # The defaults are CompactionPolicy's (not imported here: `--help` should stay quick).
    compact_rows: Annotated[
        int, typer.Option(min=2, help="Compact a record once this many rows follow its snapshot.")
    ] = 100,
    compact_bytes: Annotated[
        int, typer.Option(min=1, help="... or once those rows hold this many bytes.")
    ] = 64 * 1024,
    store: StoreOption = None,
    bus: Annotated[
        str | None,
        typer.Option(
            envvar="CRDT_SYNC_BUS",
            help="Redis (redis://host:port/db) telling nodes of each other's commits.",
            show_default=False,
        ),
    ] = None,
    lock_timeout: Annotated[
        float,
        typer.Option(
            envvar="CRDT_SYNC_LOCK_TIMEOUT",
            min=0.001,
            help="PostgreSQL store: seconds a commit waits for the seq lock before it fails"
            " (longer than --idle-timeout).",
        ),
    ] = 15.0,
    idle_timeout: Annotated[
        float,
        typer.Option(
            envvar="CRDT_SYNC_IDLE_TIMEOUT",
            min=0.001,
            help="PostgreSQL store: seconds a node's transaction may idle (the node stopped)"
            " before PostgreSQL ends it, freeing the seq lock for the other nodes.",
        ),
    ] = 5.0,
    migrate_schema: Annotated[
        bool,
        typer.Option(
            "--migrate-schema",
            help="Serve with --schema although the store was served with another one, once"
            " every stored record satisfies it.",
        ),
    ] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            metavar="ORIGIN",
            help="Let browser apps on this origin (https://app.example.com, or *) call the"
            " API with their token; repeatable. Off by default.",
        ),
    ] = None,
) -> None:
    """Run the sync server on an embedded SQLite store (created if missing), or as one node
    of several on a PostgreSQL store (--store) with a Redis bus between them (--bus).

    One server per SQLite store: a second `serve` on the same file is refused (exit 9). The
    port is bound before anything is printed, so a taken one is an error line (exit 8).
    """
    from .commands.serving import serve as serving

    serving(
        db=db,
        host=host,
        port=port,
        demo=demo,
        schema=schema,
        log_level=log_level,
        compact=compact,
        compact_rows=compact_rows,
        compact_bytes=compact_bytes,
        store=store,
        bus=bus,
        lock_timeout=lock_timeout,
        idle_timeout=idle_timeout,
        migrate_schema=migrate_schema,
        cors_origin=cors_origin,
    )


class TokenRole(StrEnum):
    ADMIN = "admin"
    DEVICE = "device"


@token_app.command("create")
def token_create(
    role: Annotated[TokenRole, typer.Option(help="admin (everything) or device (sync only).")],
    name: Annotated[str, typer.Option(help="Who the token is for (shown in history).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Create a token and print it alone on stdout (it is stored hashed, never shown again)."""
    from .errors import AuthError
    from .server.auth import create_token

    async def work() -> str:
        async with open_store(db, must_exist=False) as store:
            try:
                return await create_token(store, name=name, role=role.value)
            except AuthError as exc:  # a bad name is the caller's argument, not a credential
                raise BadArgument(exc.message) from None

    typer.echo(run(work))


@token_app.command("list")
def token_list(
    db: DbOption = DEFAULT_DB,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List tokens: name, role, state, when created and when last used (to the minute)."""
    from rich.table import Table

    from .commands.common import Output, iso_time, local_time

    output = Output(as_json)

    async def work() -> list[TokenRow]:
        async with open_store(db) as store:
            return await store.list_tokens()

    tokens = output.run(work)
    if as_json:
        output.json(
            [
                {
                    "name": t.name,
                    "role": t.role,
                    "created_at": t.created_at,
                    "created": iso_time(t.created_at),
                    "last_used_at": t.last_used_at,
                    "revoked_at": t.revoked_at,
                }
                for t in tokens
            ]
        )
        return
    if not tokens:
        output.note(f"no tokens in {db} (`crdt-sync token create --role device --name NAME`)")
        return
    table = Table(header_style="bold", caption=f"{len(tokens)} token{'s' * (len(tokens) != 1)}")
    for column in ("name", "role", "state", "created", "last used"):
        table.add_column(column, overflow="fold")
    for t in tokens:
        state = f"revoked {local_time(t.revoked_at)}" if t.revoked_at else "active"
        used = local_time(t.last_used_at) if t.last_used_at else "never"
        table.add_row(t.name, t.role, state, local_time(t.created_at), used)
    output.out.print(table)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="Token name.")], db: DbOption = DEFAULT_DB
) -> None:
    """Revoke a token; a running server closes its connections within a second."""

    async def work() -> bool:
        async with open_store(db) as store:
            return bool(await store.revoke_token(name))

    if not run(work):
        fail(f"no active token named {name!r}", ExitCode.NOT_FOUND)
    typer.echo(f"revoked {name}")


# Inspecting and operating the store, and the client replica: each group in commands/.
app.add_typer(_docs.app, name="docs")
app.add_typer(_schemas.app, name="schema")
app.command("status")(_ops.status)
app.command("compact")(_ops.compact)
app.command("check")(_ops.check)
app.command("backup")(_ops.backup)
app.command("export")(_archive.export)
app.command("import")(_archive.import_)
app.add_typer(client_app, name="client")


def main() -> int:
    """The console entry point (commands/quick_serve.py: `serve` with plain options skips typer)."""
    from .commands.quick_serve import main as quick_main

    return quick_main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

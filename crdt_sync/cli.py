"""The `crdt-sync` command: parse options, call the library, print; one line per error."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from .commands import archive as _archive
from .commands import docs as _docs
from .commands import ops as _ops
from .commands.client import client_app
from .commands.common import (
    DEFAULT_DB,
    BadArgument,
    DbOption,
    ExitCode,
    StoreOption,
    StoreUnavailable,
    choose_store,
    open_store,
)
from .commands.entry import run_cli
from .commands.plain import fail, run, run_checked, schema_from

T = TypeVar("T")

app = typer.Typer(
    name="crdt-sync",
    help="CRDT sync engine for a small CRM: serve, inspect and operate the store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(help="Create, list and revoke access tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@app.callback()
def main_options(store: StoreOption = None) -> None:
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
    schema: Annotated[Path | None, typer.Option(help="Schema file (TOML or JSON).")] = None,
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
) -> None:
    """Run the sync server on an embedded SQLite store (created if missing), or as one node
    of several on a PostgreSQL store (--store) with a Redis bus between them (--bus).

    One server per SQLite store: a second `serve` on the same file is refused (exit 9). The
    port is bound before anything is printed, so a taken one is an error line (exit 8).
    """
    import uvicorn

    from .commands.common import chosen_store
    from .compactor import CompactionPolicy
    from .server.app import Server, Settings, create_app
    from .server.bootstrap import prepare_store
    from .server.listen import bind, url_of
    from .store.opening import redacted

    parsed = schema_from(schema)
    policy = CompactionPolicy(rows=compact_rows, bytes=compact_bytes) if compact else None
    url = run_checked(lambda: chosen_store(db, store))
    with ExitStack() as held:
        # Bound first: a taken port must not leave a new, empty store file behind.
        sock = held.enter_context(run_checked(lambda: bind(host, port)))
        if url is None:  # nodes on PostgreSQL are many by design
            run_checked(lambda: _claim(db, held))
        admin_token = run(lambda: prepare_store(url if url is not None else db, parsed, demo=demo))
        if admin_token is not None:
            typer.echo("Created the first admin token (shown once; keep it safe):", err=True)
            typer.echo(admin_token)
        where = db if url is None else redacted(url)
        typer.echo(f"crdt-sync serving {where} on {url_of(sock)}", err=True)
        settings = Settings(
            db_path=db,
            store_url=url,
            bus_url=bus,
            schema=parsed,
            tune_gc=True,
            compaction=policy,
        )
        config = uvicorn.Config(
            create_app(settings),
            log_level=log_level,
            ws_max_size=2 << 20,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            timeout_graceful_shutdown=10,  # a stuck request must not keep the server up
        )
        Server(config).run(sockets=[sock])  # ends the admin change feeds first


def _claim(db: Path, held: ExitStack) -> None:
    """Refuse a file that is not a store, untouched; then keep other servers off it."""
    from .errors import StoreError, StoreInUse
    from .store.files import hold_for_serving, require_store

    try:
        if db.is_file() and db.stat().st_size:
            require_store(db)
        held.enter_context(hold_for_serving(db))
    except StoreInUse:
        raise
    except StoreError as exc:
        raise StoreUnavailable(exc.message) from None


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
    """List tokens: name, role, created, revoked."""

    async def work() -> list[dict[str, object]]:
        async with open_store(db) as store:
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
        async with open_store(db) as store:
            return bool(await store.revoke_token(name))

    if not run(work):
        fail(f"no active token named {name!r}", ExitCode.NOT_FOUND)
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


def main() -> int:
    """The console entry point: usage mistakes too are one line on stderr (commands/entry.py)."""
    return run_cli(app)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

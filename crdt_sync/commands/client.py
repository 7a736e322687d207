"""`crdt-sync client ...`: the sync screen in a terminal, over a local replica file (CLI layer).

Parse options, call `crdt_sync.client.Replica`, print. Record values are given as
``field=value`` and read by the field's kind in the schema (``amount=12`` is a number,
``done=true`` a bool, ``phone=+33 1`` a string); an empty value clears the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from ..errors import CrdtSyncError
from ..schema import FieldKind, Schema
from .basics import StoreUnavailable, exit_code
from .plain import fail, run, schema_from

if TYPE_CHECKING:
    from ..client import Replica, SyncStatus

# `crdt_sync.client` (websockets, httpx, the protocol, the store) is imported inside the
# functions that use it: cli.py registers these commands at start-up, for every command.

T = TypeVar("T")

client_app = typer.Typer(
    help="An offline-first replica in a local file: edit records offline, sync, watch.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as cli.py's app
)

ReplicaDb = Annotated[Path, typer.Option("--db", help="The replica's local SQLite file.")]
Server = Annotated[
    str | None,
    typer.Option("--server", envvar="CRDT_SYNC_SERVER", help="Server URL, e.g. http://host:8765."),
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="CRDT_SYNC_TOKEN", help="A device token.")
]
SchemaFile = Annotated[Path | None, typer.Option("--schema", help="Schema file (TOML or JSON).")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Assignments = Annotated[list[str] | None, typer.Argument(help="field=value pairs.")]
DEFAULT_REPLICA = Path("replica.db")


def _with_replica(
    db: Path,
    schema: Schema,
    work: Callable[[Replica], Awaitable[T]],
    server: str | None = None,
    token: str | None = None,
    *,
    must_exist: bool = False,
) -> T:
    """Run `work` on the replica at `db`; with `must_exist`, a missing file is refused, not made.

    A file that cannot be opened as a replica is exit 4 ("no store there"), as for the server's
    store; what goes wrong after it opened keeps its own code.
    """
    from ..client import Replica
    from ..errors import StoreError
    from ..store.files import require_replica

    async def main() -> T:
        replica = Replica(db, server=_server_url(server), token=token, schema=schema)
        try:
            if must_exist:
                require_replica(db)  # a read must not leave a new replica behind a typo
            await replica.__aenter__()
        except StoreError as exc:
            raise StoreUnavailable(exc.message) from None
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_exit(replica)
            return await work(replica)

    return run(main)


def _server_url(server: str | None) -> str | None:
    """`host:port` means `http://host:port`, as curl reads it; other schemes are refused."""
    if server is None:
        return None
    scheme, sep, rest = server.partition("://")
    if not sep:
        return f"http://{server}"
    if scheme.lower() not in ("http", "https") or not rest:
        fail(f"--server: expected http://HOST:PORT or https://HOST, got {server!r}")
    return server


@client_app.command()
def status(
    db: ReplicaDb = DEFAULT_REPLICA, schema: SchemaFile = None, as_json: AsJson = False
) -> None:
    """The replica's sync status (from its file; no server needed) and its rejected changes."""

    async def work(replica: Replica) -> dict[str, Any]:
        rejected = await replica.rejected()
        return replica.status.to_json() | {
            "replica_id": replica.replica_id,
            "rejected_changes": [
                {
                    "doc": c.doc_id,
                    "change": c.intent.operation.value,
                    "patch": c.intent.patch,
                    "code": c.code,
                    "reason": c.reason,
                }
                for c in rejected
            ],
        }

    report = _with_replica(db, schema_from(schema), work, must_exist=True)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"replica   {report['replica_id']} ({db})")
    typer.echo(f"pending   {report['pending']}")
    typer.echo(f"rejected  {report['rejected']}")
    typer.echo(f"last sync {_when(report['last_sync_at'])}")
    typer.echo(f"cursor    {report['cursor']}")
    for change in report["rejected_changes"]:
        typer.echo(f"  rejected {change['change']} {change['doc']}: {change['reason']}")


@client_app.command()
def sync(
    db: ReplicaDb = DEFAULT_REPLICA,
    server: Server = None,
    token: Token = None,
    schema: SchemaFile = None,
    as_json: AsJson = False,
) -> None:
    """One sync pass: catch up from the server, push the offline queue, wait for the answers."""
    result = _with_replica(db, schema_from(schema), lambda replica: replica.sync(), server, token)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(_line(result))


@client_app.command()
def watch(
    db: ReplicaDb = DEFAULT_REPLICA,
    server: Server = None,
    token: Token = None,
    schema: SchemaFile = None,
    as_json: AsJson = False,
    seconds: Annotated[
        float | None, typer.Option("--for", help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
) -> None:
    """Stay connected and print the state and pending count each time they change."""

    async def work(replica: Replica) -> None:
        async with replica.live():
            try:
                async with asyncio.timeout(seconds):
                    async for state in replica.watch():
                        typer.echo(json.dumps(state.to_json()) if as_json else _line(state))
            except TimeoutError:
                pass  # --for elapsed

    try:
        _with_replica(db, schema_from(schema), work, server, token)
    except KeyboardInterrupt:
        pass


@client_app.command()
def add(
    collection: Annotated[str, typer.Argument(help="contacts, deals, tasks, ...")],
    assignments: Assignments = None,
    record_id: Annotated[str | None, typer.Option("--id", help="Record id (default: new).")] = None,
    db: ReplicaDb = DEFAULT_REPLICA,
    schema: SchemaFile = None,
) -> None:
    """Create a record offline (queued for the next sync); prints it as JSON.

    An `--id` this replica already holds is refused (exit 2): `add` would otherwise quietly
    become an edit of somebody else's record. `client edit` changes one.
    """
    from ..errors import RecordExists

    parsed = schema_from(schema)
    fields = _assignments(parsed, collection, assignments or [])

    async def create(replica: Replica) -> dict[str, Any]:
        if record_id is not None and await replica.get(collection, record_id) is not None:
            raise RecordExists(
                f"{collection}/{record_id}",
                "already in this replica: change it with "
                f"`crdt-sync client edit {collection} {record_id} field=value`",
            )
        return await replica.create(collection, fields, id=record_id)

    view = _with_replica(db, parsed, create)
    typer.echo(json.dumps(view))


@client_app.command()
def edit(
    collection: Annotated[str, typer.Argument()],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    assignments: Assignments = None,
    db: ReplicaDb = DEFAULT_REPLICA,
    schema: SchemaFile = None,
) -> None:
    """Change fields of a record offline; ``field=`` clears an optional field."""
    parsed = schema_from(schema)
    patch = _assignments(parsed, collection, assignments or [])
    if not patch:
        fail("nothing to change: give field=value pairs")
    view = _with_replica(
        db, parsed, lambda r: r.update(collection, record_id, patch), must_exist=True
    )
    typer.echo(json.dumps(view))


@client_app.command()
def delete(
    collection: Annotated[str, typer.Argument()],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    db: ReplicaDb = DEFAULT_REPLICA,
    schema: SchemaFile = None,
) -> None:
    """Delete a record offline (a tombstone, synced like any change)."""
    _with_replica(
        db, schema_from(schema), lambda r: r.delete(collection, record_id), must_exist=True
    )
    typer.echo(f"deleted {collection}/{record_id}")


@client_app.command("list")
def list_records(
    collection: Annotated[str, typer.Argument()],
    where: Annotated[list[str] | None, typer.Option("--where", help="field=value filter.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many records.")] = None,
    db: ReplicaDb = DEFAULT_REPLICA,
    schema: SchemaFile = None,
    as_json: AsJson = False,
) -> None:
    """The records of a collection held by the replica, by id."""
    parsed = schema_from(schema)
    filters = _assignments(parsed, collection, where or [])
    views = _with_replica(
        db, parsed, lambda r: r.query(collection, filters, limit=limit), must_exist=True
    )
    if as_json:
        typer.echo(json.dumps(views, indent=2))
        return
    title = parsed.collection(collection).title_field
    for view in views:
        typer.echo(f"{view['id']:<24} {view.get(title) or ''}")


def _assignments(schema: Schema, collection: str, pairs: list[str]) -> dict[str, Any]:
    """``["amount=12", "done=true"]`` -> values of the fields' kinds; errors name the pair."""
    try:
        spec = schema.collection(collection)
    except CrdtSyncError as exc:
        fail(exc.message, exit_code(exc))
    out: dict[str, Any] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals:
            fail(f"expected field=value, got {pair!r}")
        if name not in spec.fields:
            fail(f"{collection}: unknown field {name!r} (fields: {', '.join(spec.fields)})")
        out[name] = _value(spec.fields[name].kind, text, pair)
    return out


def _value(kind: FieldKind, text: str, pair: str) -> Any:
    if text == "":
        return None
    if kind is FieldKind.NUMBER:
        try:
            number = float(text)
        except ValueError:
            fail(f"{pair!r}: expected a number")
            raise
        return int(number) if number.is_integer() else number
    if kind is FieldKind.BOOL:
        if text.lower() not in ("true", "false"):
            fail(f"{pair!r}: expected true or false")
        return text.lower() == "true"
    return text


def _line(status: SyncStatus) -> str:
    from ..client import SyncState

    transport = f" via {status.transport.value}" if status.transport else ""
    line = (
        f"{time.strftime('%H:%M:%S')} {status.state.value:<10} pending {status.pending:<6}"
        f" rejected {status.rejected:<4} last sync {_when(status.last_sync_at)}{transport}"
    )
    if status.state is SyncState.ERROR and status.last_error:
        line += f"  error: {status.last_error}"
    return line


def _when(moment: float | None) -> str:
    return "never" if moment is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))

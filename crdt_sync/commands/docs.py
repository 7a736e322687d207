"""`crdt-sync docs list|show|history`: look inside records, as JSON views or raw CRDT state."""

from __future__ import annotations

import base64
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import RecordNotFound, UnknownCollection
from ..ids import COLLECTION_NAME, DocId, Origin, split_doc_id
from ..schema import Schema
from ..served_schema import schema_in_use
from .basics import DEFAULT_DB, ExitCode
from .common import (
    DbOption,
    JsonOption,
    Output,
    SchemaOption,
    iso_time,
    load_schema_option,
    local_time,
    open_store,
)

if TYPE_CHECKING:
    from ..history import Step
    from ..record import View
    from ..store import RecordRow, Store

# pycrdt, the record codec and the store are imported inside the commands that use them:
# cli.py registers every command at start-up, and `crdt-sync --help` should not pay for them.

app = typer.Typer(
    help="Inspect records: list them, show one, walk its history.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as cli.py's app
)

PAGE = 500


class Format(StrEnum):
    JSON = "json"
    UPDATE = "update"
    STATE_VECTOR = "state-vector"


DocIdArgument = Annotated[
    str, typer.Argument(metavar="COLLECTION/ID", help="The record, e.g. contacts/42.")
]


@app.command("list")
def list_records(
    collection: Annotated[str | None, typer.Argument(help="Only this collection.")] = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Include deleted records.")] = False,
    db: DbOption = DEFAULT_DB,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Records with their title, last sequence number and stored size, by id."""
    from rich.filesize import decimal
    from rich.markup import escape
    from rich.table import Table

    output = Output(as_json)
    given = None if schema is None else load_schema_option(schema, output)
    if collection is not None and not COLLECTION_NAME.fullmatch(collection):
        output.fail(f"bad collection name {collection!r}", ExitCode.USAGE)

    async def work() -> tuple[list[tuple[RecordRow, int]], Schema]:
        async with open_store(db) as store:
            parsed = await schema_in_use(store, given)
            rows = await _all_records(store, collection, deleted)
        if collection is not None and not rows and collection not in parsed.collections:
            parsed.collection(collection)  # raises UnknownCollection, naming the known ones
        return rows, parsed

    rows, parsed = output.run(work)
    if as_json:
        output.json([_listed(row, size, parsed) for row, size in rows])
        return
    table = Table(caption=f"{len(rows)} record{'s' * (len(rows) != 1)}", header_style="bold")
    # On a narrow terminal ids and titles fold onto more lines; they are never cut.
    table.add_column("document", overflow="fold")
    table.add_column("title", overflow="fold")
    table.add_column("last seq", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    for row, size in rows:
        style = "dim strike" if row.is_deleted else None
        title = _title(row, parsed) or ""
        table.add_row(
            row.doc_id,
            escape(title) + (" (deleted)" if row.is_deleted else ""),
            str(row.last_seq),
            decimal(size),
            local_time(row.updated_at),
            style=style,
        )
    output.out.print(table)


async def _all_records(
    store: Store, collection: str | None, include_deleted: bool
) -> list[tuple[RecordRow, int]]:
    collections = None if collection is None else [collection]
    rows: list[tuple[RecordRow, int]] = []
    after: DocId | None = None
    while page := await store.snapshot(
        collections=collections, after=after, limit=PAGE, include_deleted=include_deleted
    ):
        sizes = await store.record_sizes([row.doc_id for row in page])
        rows.extend((row, sizes.get(row.doc_id, 0)) for row in page)
        after = page[-1].doc_id
    return rows


def _title(row: RecordRow, schema: Schema) -> str | None:
    known = schema.collections.get(row.collection)
    if known is not None:
        value = row.view.get(known.title_field)
        return None if value is None else str(value)
    # A collection this schema does not know: its first text value reads best.
    return next((v for k, v in row.view.items() if k != "id" and isinstance(v, str)), None)


def _listed(row: RecordRow, size: int, schema: Schema) -> dict[str, Any]:
    return {
        "doc_id": row.doc_id,
        "collection": row.collection,
        "id": row.record_id,
        "title": _title(row, schema),
        "last_seq": row.last_seq,
        "size": size,
        "deleted": row.is_deleted,
        "updated_at": iso_time(row.updated_at),
    }


@app.command("show")
def show(
    doc_id: DocIdArgument,
    format: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            help="json: the merged view; update: "
            "the whole CRDT state (Yjs update v1); state-vector: its state vector.",
        ),
    ] = Format.JSON,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write bytes to this file.")
    ] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """One record: its merged JSON view, or its raw CRDT state for other tools."""
    output = Output(as_json)

    async def work() -> tuple[RecordRow, bytes]:
        checked = _checked_id(doc_id)
        async with open_store(db) as store:
            row = await _existing(store, checked, db)
            state = b"" if format is Format.JSON else await store.load(checked) or b""
        return row, state

    row, state = output.run(work)
    if format is Format.JSON:
        _print_view(output, row.doc_id, row.view, row.is_deleted, _row_facts(row))
        return
    import pycrdt

    data = state if format is Format.UPDATE else pycrdt.get_state(state)
    if as_json:
        output.json(
            {
                "doc_id": row.doc_id,
                "format": format.value,
                "base64": base64.b64encode(data).decode(),
            }
        )
    elif out is not None:
        out.write_bytes(data)
        output.note(f"wrote {len(data)} bytes ({format.value} of {row.doc_id}) to {out}")
    elif sys.stdout.isatty():
        output.fail(
            "binary output; redirect it to a file, or use -o FILE or --json (base64)",
            ExitCode.USAGE,
        )
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


@app.command("history")
def history(
    doc_id: DocIdArgument,
    at: Annotated[
        int | None,
        typer.Option(
            "--at",
            min=0,
            metavar="SEQ",
            help="Show the record as it was after this sequence number.",
        ),
    ] = None,
    db: DbOption = DEFAULT_DB,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Each stored update of a record: seq, time, who (origin, door, token), size, and fields."""
    from rich.filesize import decimal
    from rich.markup import escape
    from rich.table import Table

    from ..history import replay, step_at
    from ..record import Records

    output = Output(as_json)
    given = None if schema is None else load_schema_option(schema, output)

    async def work() -> list[Step]:
        checked = _checked_id(doc_id)
        async with open_store(db) as store:
            records = Records(await schema_in_use(store, given))
            await _existing(store, checked, db, records.schema)
            log = await store.history(checked)
        try:
            return replay(records, checked, log)
        except UnknownCollection as exc:
            raise UnknownCollection(
                exc.doc_id, f"{exc.reason}; pass the server's --schema FILE"
            ) from None

    steps = output.run(work)
    checked = DocId(doc_id)
    if at is not None:
        try:
            step = step_at(checked, steps, at)
        except RecordNotFound as exc:
            output.fail(exc.message, ExitCode.NOT_FOUND, error_code=exc.code)
        facts = {"seq": step.seq, "time": iso_time(step.at), "origin": step.origin}
        _print_view(output, checked, step.view, step.is_deleted, facts)
        return
    if as_json:
        output.json([_step_json(step) for step in steps])
        return
    caption = f"{len(steps)} update{'s' * (len(steps) != 1)}"
    table = Table(title=checked, header_style="bold", caption=caption)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("origin", overflow="fold")
    table.add_column("via", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("fields", overflow="fold")
    for step in steps:
        table.add_row(
            str(step.seq),
            local_time(step.at),
            escape(step.origin),
            escape(_via(step.origin)),
            decimal(step.size),
            _touched(step),
        )
    output.out.print(table)


def _checked_id(doc_id: str) -> DocId:
    split_doc_id(doc_id)  # SchemaViolation: exit 2 with what a document id looks like
    return DocId(doc_id)


async def _existing(
    store: Store, doc_id: DocId, db: Path, schema: Schema | None = None
) -> RecordRow:
    """The record's row. A misspelt collection is named as one, not as a missing record."""
    row = await store.get_record(doc_id)
    if row is not None:
        return row
    schema = schema or await schema_in_use(store, None)
    collection = doc_id.partition("/")[0]
    if collection not in schema.collections and not await store.snapshot(
        collections=[collection], limit=1, include_deleted=True
    ):
        schema.collection(collection, doc_id)  # raises UnknownCollection, naming the known ones
    raise RecordNotFound(doc_id, f"no such record in {db}")


def _row_facts(row: RecordRow) -> dict[str, Any]:
    return {
        "first_seq": row.first_seq,
        "last_seq": row.last_seq,
        "created_by": row.created_by,
        "updated_at": iso_time(row.updated_at),
    }


def _print_view(
    output: Output, doc_id: str, view: View, is_deleted: bool, facts: dict[str, Any]
) -> None:
    from rich.markup import escape

    if output.as_json:
        output.json({"doc_id": doc_id, "deleted": is_deleted, **facts, "view": view})
        return
    described = escape(", ".join(f"{key} {value}" for key, value in facts.items()))
    deleted = " [red](deleted)[/]" if is_deleted else ""
    output.err.print(f"[bold]{doc_id}[/]{deleted}  [dim]{described}[/]", soft_wrap=True)
    if output.out.is_terminal:
        output.out.print_json(json.dumps(view, ensure_ascii=False))
    else:
        sys.stdout.write(json.dumps(view, ensure_ascii=False, indent=2) + "\n")


def _touched(step: Step) -> str:
    parts = list(step.touched)
    if step.deletes:
        parts.append("[red]deleted[/]")
    if step.is_snapshot:
        parts.append("[dim](compacted: earlier updates folded in)[/]")
    return ", ".join(parts) or "[dim](no field changed)[/]"


def _via(origin: Origin) -> str:
    """The door, and the token when the origin is a device's own id: `ws (token phone)`."""
    token = f" (token {origin.token})" if origin.token and origin.token != origin else ""
    return f"{origin.door or '?'}{token}"


def _step_json(step: Step) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "at": step.at,
        "time": iso_time(step.at),
        "origin": step.origin,
        "token": step.origin.token,
        "door": step.origin.door,
        "size": step.size,
        "fields": list(step.touched),
        "deleted": step.deletes,
        "compacted": step.is_snapshot,
    }

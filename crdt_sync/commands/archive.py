"""`crdt-sync export FILE` and `crdt-sync import FILE`: the whole store as one CBOR archive."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .basics import DEFAULT_DB, ExitCode
from .common import DbOption, JsonOption, Output, SchemaOption, load_schema_option, open_store

if TYPE_CHECKING:
    from ..importing import ImportReport
    from ..schema import Schema
    from ..store.archive import ArchiveSummary
    from ..store.base import Store

# The engine, the store and the archive codec are imported inside the commands that use them:
# cli.py registers every command at start-up, and `crdt-sync --help` should not pay for them.

FileArgument = Annotated[Path, typer.Argument(metavar="FILE", help="The archive file.")]


def export(
    file: FileArgument,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Write every record (deleted ones too) with its whole CRDT state to a CBOR archive.

    Safe while a server runs: the store is read a page at a time, never locked. The file
    appears whole or not at all.
    """
    from rich.filesize import decimal
    from rich.markup import escape

    from ..store.archive import export_archive

    output = Output(as_json)
    if file.exists() and not force:
        output.fail(f"{file} exists; pass --force to replace it", ExitCode.USAGE)
    folder = file.parent
    if not folder.is_dir():
        output.fail(f"{file}: there is no folder {folder}; create it first", ExitCode.USAGE)
    if not os.access(folder, os.W_OK):
        output.fail(f"{file}: cannot write in {folder} (permission denied)", ExitCode.USAGE)

    async def work() -> ArchiveSummary:
        async with open_store(db) as store:
            with output.progress("exporting") as update:
                return await export_archive(store, file, progress=update)

    summary = output.run(work)
    if as_json:
        output.json(
            {
                "file": str(file),
                "documents": summary.documents,
                "bytes": summary.bytes,
                "cursor": summary.header.cursor,
            }
        )
        return
    output.say(
        f"exported {summary.documents} record{'s' * (summary.documents != 1)} to "
        f"{escape(str(file))} ({decimal(summary.bytes)}), cursor {summary.header.cursor}"
    )


def import_(
    file: FileArgument,
    db: DbOption = DEFAULT_DB,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Merge an archive into the store (created if missing) through the normal write path.

    Into an empty store this gives the same documents; into a non-empty one, every record is
    the CRDT merge of both. The archive is checked whole before anything is written. A server
    running on the same store picks the imported updates up within a second and sends them to
    its peers (see "Other processes" in docs/ARCHITECTURE.md).
    """
    from rich.markup import escape

    from ..engine import Engine, Limits
    from ..importing import import_archive
    from ..store.archive import verify_archive

    output = Output(as_json)
    given = None if schema is None else load_schema_option(schema, output)
    # Unlimited single updates here: an archived state is a whole document, up to its limit.
    limits = Limits(max_update_bytes=Limits().max_document_bytes)

    async def work() -> ImportReport:
        with output.progress("checking", unit_bytes=True) as update:
            summary = verify_archive(file, progress=update)
        async with open_store(db, must_exist=False) as store:
            engine = Engine(store, await _import_schema(store, given, summary), limits=limits)
            with output.progress("importing") as update:
                return await import_archive(
                    engine, file, progress=lambda done: update(done, summary.documents)
                )

    report = output.run(work)
    refused = [{"doc_id": doc_id, "message": message} for doc_id, message in report.refused]
    if as_json:
        output.json(
            {
                "file": str(file),
                "documents": report.documents,
                "created": report.created,
                "merged": report.merged,
                "unchanged": report.unchanged,
                "refused": refused,
            }
        )
    else:
        output.say(
            f"imported {report.documents} record{'s' * (report.documents != 1)} from "
            f"{escape(str(file))}: {report.created} created, {report.merged} merged, "
            f"{report.unchanged} unchanged, {len(refused)} refused"
        )
    if report.refused:
        for doc_id, message in report.refused[:20]:
            output.note(f"[red]refused[/] {escape(message)}")
        if len(report.refused) > 20:
            output.note(f"... and {len(report.refused) - 20} more (--json lists them all)")
        raise typer.Exit(int(ExitCode.REFUSED))


async def _import_schema(store: Store, given: Schema | None, summary: ArchiveSummary) -> Schema:
    """--schema if given; else the target's recorded schema; else the archive's, recorded in
    the target (after checking the records it holds), so a later `serve` needs no --schema."""
    import json

    from ..errors import ConfigError
    from ..schema import schema_from_tree
    from ..served_schema import served_schema, settle_schema

    if given is not None:
        return given
    recorded = await served_schema(store)
    if recorded is not None:
        return recorded
    archived = None
    if summary.header.schema is not None:
        try:
            archived = schema_from_tree(json.loads(summary.header.schema), where="the archive")
        except ValueError as exc:
            raise ConfigError(f"the archive's schema is not JSON: {exc}") from None
    return await settle_schema(store, archived, migrate=False)

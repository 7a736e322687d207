"""`crdt-sync status` and `crdt-sync compact`: how the store is doing, and folding its log."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.filesize import decimal
from rich.table import Table

from ..errors import RecordNotFound
from ..ids import DocId, split_doc_id
from ..store import CompactionReport, StoreStatistics
from .common import DEFAULT_DB, DbOption, ExitCode, JsonOption, Output, open_store


def status(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """Records per collection, deleted, log length and compaction debt, file size, cursor."""
    output = Output(as_json)

    async def work() -> StoreStatistics:
        async with open_store(db) as store:
            return await store.statistics()

    statistics = output.run(work)
    summary = _status_json(statistics, str(db))
    if as_json:
        output.json(summary)
        return
    table = Table(title=f"crdt-sync store {db}", header_style="bold", show_footer=True)
    table.add_column("collection", footer="total")
    table.add_column("records", justify="right", footer=str(summary["records"]))
    table.add_column("deleted", justify="right", footer=str(summary["deleted"]))
    for name, counts in summary["collections"].items():
        table.add_row(name, str(counts["records"]), str(counts["deleted"]))
    output.out.print(table)
    debt = statistics.compaction_debt
    facts = Table.grid(padding=(0, 2))
    facts.add_row("cursor", f"[bold]{statistics.cursor}[/]")
    facts.add_row("log", f"{statistics.log_entries} updates")
    hint = " [yellow](crdt-sync compact --all folds them)[/]" if debt else ""
    facts.add_row("compaction debt", f"{debt} updates{hint}")
    facts.add_row("file", f"{decimal(statistics.file_bytes)} (with its write-ahead log)")
    facts.add_row("schema version", str(summary["schema_version"]))
    output.out.print(facts)


def _status_json(statistics: StoreStatistics, db: str) -> dict[str, Any]:
    names = sorted(set(statistics.records) | set(statistics.deleted))
    collections = {
        name: {
            "records": statistics.records.get(name, 0),
            "deleted": statistics.deleted.get(name, 0),
        }
        for name in names
    }
    return {
        "db": db,
        "cursor": statistics.cursor,
        "collections": collections,
        "records": sum(statistics.records.values()),
        "deleted": sum(statistics.deleted.values()),
        "log_entries": statistics.log_entries,
        "compaction_debt": statistics.compaction_debt,
        "file_bytes": statistics.file_bytes,
        "schema_version": statistics.extra.get("schema_version"),
    }


def compact(
    doc_id: Annotated[
        str | None, typer.Argument(metavar="[COLLECTION/ID]", help="The one record to compact.")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Compact every record that needs it.")
    ] = False,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Fold records' logs into one garbage-collected snapshot each; prints bytes before and after.

    Safe while a server runs: each record is one short transaction, and writes racing it are kept.
    """
    output = Output(as_json)
    if doc_id is None and not every:
        output.fail("say what to compact: one record (COLLECTION/ID) or --all", ExitCode.USAGE)
    if doc_id is not None and every:
        output.fail("give one record (COLLECTION/ID) or --all, not both", ExitCode.USAGE)

    async def work() -> CompactionReport:
        async with open_store(db) as store:
            if doc_id is not None:
                split_doc_id(doc_id)
                if await store.get_record(DocId(doc_id)) is None:
                    raise RecordNotFound(doc_id, f"no such record in {db}")
                return await store.compact(DocId(doc_id))
            with output.progress("compacting") as update:
                return await store.compact_all(progress=update)

    report = output.run(work)
    if as_json:
        output.json(
            {
                "documents": report.documents,
                "updates_before": report.updates_before,
                "updates_after": report.updates_after,
                "bytes_before": report.bytes_before,
                "bytes_after": report.bytes_after,
            }
        )
        return
    if not report.documents:
        output.say("nothing to compact: every record is already one snapshot")
        return
    saved = report.bytes_before - report.bytes_after
    share = f" ({saved / report.bytes_before:.0%} smaller)" if report.bytes_before else ""
    output.say(
        f"compacted {report.documents} record{'s' * (report.documents != 1)}: "
        f"{report.updates_before} updates -> {report.updates_after}, "
        f"{decimal(report.bytes_before)} -> {decimal(report.bytes_after)}{share}"
    )

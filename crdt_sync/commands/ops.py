"""`crdt-sync status`, `check`, `compact` and `backup`: how the store is doing, is it whole, fold
its log, copy it while it runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import RecordNotFound
from ..ids import DocId, split_doc_id
from .basics import DEFAULT_DB, ExitCode
from .common import DbOption, JsonOption, Output, open_store

if TYPE_CHECKING:  # the store is imported when a command opens it (common.open_store)
    from ..store import CompactionReport, StoreStatistics
    from ..store.backup import BackupReport
    from ..store.checks import CheckReport, Finding


def status(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """Records per collection, deleted, log length, compaction debt and snapshots, file size.

    A server compacts in the background (`serve --no-compact` turns it off): debt stays low and
    snapshots grow; its own counters are in /api/sync/status and /metrics.
    """
    from rich.filesize import decimal
    from rich.table import Table

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
    indebted = summary["records_with_debt"]
    facts.add_row("compaction debt", f"{debt} updates in {indebted} records{hint}")
    facts.add_row("compacted", f"{summary['snapshots']} records start at a snapshot")
    if statistics.extra.get("backend") == "postgresql":
        facts.add_row("tables", f"{decimal(statistics.file_bytes)} (with their indexes)")
    else:
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
        "records_with_debt": statistics.extra.get("records_with_debt"),
        "snapshots": statistics.extra.get("snapshots"),
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

    Safe while a server runs: each record is short transactions (a long log is folded 1,000 rows
    per transaction), and writes racing it are kept.
    """
    from rich.filesize import decimal

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
                with output.progress("compacting (log rows)") as update:  # a long log: steps
                    return await store.compact(DocId(doc_id), progress=update)
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


def check(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """Check the store: every log row is in its record's chain (and SQLite's quick_check).

    Reads the whole file in one read transaction; safe while a server runs. Exit code 7 when
    it finds problems (listed, with a few examples of each).
    """
    output = Output(as_json)

    from ..store import SQLiteStore

    async def work() -> tuple[CheckReport, str, bool]:
        async with open_store(db) as store:
            on_sqlite = isinstance(store, SQLiteStore)
            name = str(store.path) if isinstance(store, SQLiteStore) else store.name
            return await store.check(), name, on_sqlite

    with output.progress("checking the store"):  # no total: a pulsing bar on a terminal
        report, name, on_sqlite = output.run(work)
    findings = {
        "broken_links": report.broken_links,
        "bad_heads": report.bad_heads,
        "forks": report.forks,
        "orphans": report.orphans,
    }
    if as_json:
        output.json(
            {
                "db": name,
                "ok": report.is_ok,
                "records": report.records,
                "log_rows": report.log_rows,
                "sqlite": report.sqlite,
                **{name: _finding_json(f) for name, f in findings.items()},
            }
        )
    elif report.is_ok:
        output.say(
            f"ok: {report.records} records, {report.log_rows} log rows, each row in its"
            " record's chain" + ("; SQLite's quick_check found nothing" if on_sqlite else "")
        )
    else:
        for line in report.sqlite:
            output.say(f"sqlite: {line}")
        for name, finding in findings.items():
            if finding.count:
                output.say(f"{name.replace('_', ' ')}: {finding.count}")
                for example in finding.examples:
                    output.say(f"  {example}")
    if not report.is_ok:
        raise typer.Exit(int(ExitCode.DAMAGED))


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {"count": finding.count, "examples": finding.examples}


def backup(
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="The file to write the copy to.")],
    force: Annotated[bool, typer.Option("--force", help="Replace DEST if it exists.")] = False,
    step_pages: Annotated[
        int, typer.Option(min=1, help="Pages (4 KiB) copied between progress reports.")
    ] = 1024,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Copy the store to DEST while a server may write to it; the copy is checked before use.

    The copy holds every write committed before the backup began (SQLite's online backup, in
    one read transaction: writers never wait for it). DEST appears only once the copy passed
    `crdt-sync check` (exit code 7 if it did not). To restore: stop the server, put DEST in
    place of the store (README, "Back up and restore").
    """
    from rich.filesize import decimal
    from rich.markup import escape

    from ..errors import StoreError
    from ..store.backup import BackupDamaged, check_destination

    output = Output(as_json)
    try:
        check_destination(db, dest, replace=force)
    except StoreError as exc:
        output.fail(exc.message, ExitCode.USAGE, error_code=exc.code)

    async def work() -> BackupReport | BackupDamaged:
        from ..errors import ConfigError
        from ..store import SQLiteStore

        async with open_store(db) as store:
            if not isinstance(store, SQLiteStore):
                raise ConfigError("backup copies an SQLite store; back up PostgreSQL with pg_dump")
            with output.progress("copying") as update:
                try:
                    return await store.backup(
                        dest, replace=force, progress=update, step_pages=step_pages
                    )
                except BackupDamaged as exc:
                    return exc

    report = output.run(work)
    if isinstance(report, BackupDamaged):
        output.fail(report.message, ExitCode.DAMAGED, error_code=report.code)
    if as_json:
        output.json(
            {
                "db": str(db),
                "dest": str(report.path),
                "cursor": report.cursor,
                "bytes": report.bytes,
                "pages": report.pages,
                "steps": report.steps,
                "records": report.check.records,
                "log_rows": report.check.log_rows,
                "ok": report.check.is_ok,
            }
        )
        return
    output.say(
        f"backed up {escape(str(db))} to {escape(str(report.path))} ({decimal(report.bytes)}),"
        f" cursor {report.cursor}; checked: {report.check.records} records,"
        f" {report.check.log_rows} log rows, each in its record's chain"
    )

"""Import an archive into a store: every document merged through the engine's one write path.

An archived document is its whole CRDT state, so writing it with `Engine.write_many` merges it into
whatever the store holds: into an empty store it gives the same document, into a non-empty one
the CRDT merge of both, with views, seqs and fan-out exactly as for any other write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .batches import BatchWrite
from .engine import Engine
from .ids import DocId, Origin
from .store.archive import ArchivedDocument, ArchiveReader

IMPORT_ORIGIN = Origin("import", door="import")
WINDOW = 64  # documents per transaction: memory and live records held stay bounded


@dataclass(slots=True)
class ImportReport:
    documents: int = 0  # read from the archive
    created: int = 0  # new in the store
    merged: int = 0  # already there, and changed by the merge
    unchanged: int = 0  # already there with everything the archive holds
    refused: list[tuple[DocId, str]] = field(default_factory=list)  # (doc_id, why)


async def import_archive(
    engine: Engine,
    path: Path,
    *,
    origin: Origin = IMPORT_ORIGIN,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Merge every document of the archive at `path` into `engine`'s store.

    Check the archive with `verify_archive` first: this reads it as it goes, so a damaged
    file is only found out where the damage is. A document the schema refuses (an unknown
    collection, a value of the wrong kind) is reported in `refused` and the others still go
    in. `progress(documents_done)` is called as documents are written.

    Raises:
        ArchiveError: the archive is not readable. StoreError: a commit failed (documents
            already written stay written; importing again is harmless, it merges).
    """
    report = ImportReport()
    with ArchiveReader(path) as reader:
        window: list[ArchivedDocument] = []
        for document in reader.documents():
            window.append(document)
            if len(window) == WINDOW:
                await _import_window(engine, window, origin, report)
                window = []
                if progress is not None:
                    progress(report.documents)
        await _import_window(engine, window, origin, report)
        if progress is not None:
            progress(report.documents)
    await engine.settle()  # views this process wrote while a server wrote the same records
    report.refused.sort()
    return report


async def _import_window(
    engine: Engine, window: list[ArchivedDocument], origin: Origin, report: ImportReport
) -> None:
    """One `write_many`: the window commits in one transaction, a refused document alone."""
    if not window:
        return
    writes = [BatchWrite(document.doc_id, update=document.state) for document in window]
    for outcome in await engine.write_many(writes, origin=origin):
        report.documents += 1
        if outcome.error is not None:
            report.refused.append((outcome.write.doc_id, outcome.error.message))
        elif outcome.result is None or outcome.result.seq is None:
            report.unchanged += 1
        elif outcome.result.is_new:
            report.created += 1
        else:
            report.merged += 1

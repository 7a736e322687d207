"""A store's self-check: SQLite's own, and that every log row sits in its record's chain (I/O).

The chains (chains.py) are what loads follow, so a row outside them would be an edit no reader
sees. Together these four findings are empty exactly when every log row belongs to exactly one
record's chain, and every record's chain ends at a first row:

- a *broken link*: a row whose prev_seq names no earlier row of the same record;
- a *bad head*: a record whose last_seq names no row of its own;
- a *fork*: two rows that name the same previous row;
- an *orphan*: a row that no record's chain reaches (neither a head nor anyone's previous row).

Each is one pass over the log by primary key or one sort, so a check costs O(n log n) in the
log's size; it runs in one read transaction, beside a running server.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

PROBLEMS_KEPT = 20  # of each kind, as examples; the counts are complete

BROKEN_LINKS = """
    SELECT seq, doc_id, prev_seq FROM updates AS u
    WHERE prev_seq IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM updates AS p
        WHERE p.seq = u.prev_seq AND p.doc_id = u.doc_id AND p.seq < u.seq
    )
"""
BAD_HEADS = """
    SELECT records.doc_id, records.last_seq FROM records
    LEFT JOIN updates ON updates.seq = records.last_seq
    WHERE updates.seq IS NULL OR updates.doc_id != records.doc_id
"""
FORKS = """
    SELECT prev_seq, COUNT(*) FROM updates WHERE prev_seq IS NOT NULL
    GROUP BY prev_seq HAVING COUNT(*) > 1
"""
ORPHANS = """
    SELECT seq FROM updates
    EXCEPT SELECT prev_seq FROM updates WHERE prev_seq IS NOT NULL
    EXCEPT SELECT last_seq FROM records
"""


@dataclass(slots=True)
class Finding:
    """One kind of problem: how many, and the first few, each described in words."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < PROBLEMS_KEPT:
            self.examples.append(example)


@dataclass(slots=True)
class CheckReport:
    records: int
    log_rows: int
    sqlite: list[str]  # what PRAGMA quick_check reported, empty when "ok"
    broken_links: Finding
    bad_heads: Finding
    forks: Finding
    orphans: Finding

    @property
    def is_ok(self) -> bool:
        return not self.sqlite and not any(
            finding.count
            for finding in (self.broken_links, self.bad_heads, self.forks, self.orphans)
        )


def check(db: sqlite3.Connection) -> CheckReport:
    """Run on a read-only connection's thread; one read transaction for every query."""
    db.execute("BEGIN")
    try:
        sqlite = [line for (line,) in db.execute("PRAGMA quick_check") if line != "ok"]
        (records,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
        (log_rows,) = db.execute("SELECT COUNT(*) FROM updates").fetchone()
        report = CheckReport(records, log_rows, sqlite, Finding(), Finding(), Finding(), Finding())
        for seq, doc_id, prev_seq in db.execute(BROKEN_LINKS):
            report.broken_links.add(f"seq {seq} of {doc_id} follows seq {prev_seq}, not its own")
        for doc_id, last_seq in db.execute(BAD_HEADS):
            report.bad_heads.add(f"{doc_id} ends at seq {last_seq}, which is not one of its rows")
        for prev_seq, count in db.execute(FORKS):
            report.forks.add(f"{count} rows follow seq {prev_seq}")
        for (seq,) in db.execute(ORPHANS):
            report.orphans.add(f"seq {seq} is in no record's chain")
        return report
    finally:
        db.execute("COMMIT")

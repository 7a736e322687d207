"""Background compaction: a running server folds records' logs itself, once they pass a threshold.

Rule 1: scheduling lives here, above the Store protocol; folding is `Store.compact`, whose rules
hold (store/compaction.py): it replaces exactly the rows it read, rows appended meanwhile are
untouched, and its one write transaction queues behind appends like any other write.
Rule 2: low priority. One record at a time, a rest after each as long as it took, and a record
is due only once its rows since its snapshot pass `rows` or their bytes pass `bytes`, so each
compaction folds a bounded amount. A record with a long backlog (written before the server
started, or by a process without a compactor) is folded by the store a bounded prefix per
transaction (store/compaction.py, rule 2): never a long hold of the write lock either way.
Rule 3: what is due is learnt from commits (a commit listener: this process's and other
processes' writes alike), plus one paged read of the log at start for what was written before.
The counts are an estimate that errs early: rows that commit while a record is being compacted
count again after it, and a record compacted by another process (`crdt-sync compact`) is found
already folded, which costs one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from .errors import ConfigError, CrdtSyncError
from .ids import DocId, Seq
from .store.base import Committed, CompactionReport, Store

LOG = logging.getLogger(__name__)

SCAN_PAGE = 1000  # log entries per read of the start-up scan
MAX_TRACKED = 100_000  # records whose debt is counted; past it, the oldest not due are forgotten


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """When the server compacts a record, and how gently.

    Args:
        rows: compact a record once this many log rows followed its snapshot (or its first row).
        bytes: ... or once those rows hold this many bytes of updates.
        pause: most seconds of rest after each record compacted; the rest is as long as the
            compaction took, so writes always get the store at least half the time.
        idle: seconds between looks when nothing is due.
    """

    rows: int = 100
    bytes: int = 64 * 1024
    pause: float = 0.02
    idle: float = 1.0

    def __post_init__(self) -> None:
        if self.rows < 2:
            raise ConfigError(f"compaction rows must be at least 2, got {self.rows}")
        if self.bytes < 1:
            raise ConfigError(f"compaction bytes must be at least 1, got {self.bytes}")
        if self.pause < 0 or self.idle <= 0:
            raise ConfigError(
                f"compaction pause must be >= 0 and idle > 0, got {self.pause}, {self.idle}"
            )


@dataclass(slots=True)
class Debt:
    """Log rows of one record since its last snapshot, and their bytes, as commits showed them."""

    rows: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class CurrentCompaction:
    doc_id: DocId
    rows_folded: int  # of the rows read, those the committed steps replaced so far
    rows: int  # 0 until the first step committed


@dataclass(frozen=True, slots=True)
class CompactorStatistics:
    """A snapshot of what the compactor knows and did since the server started."""

    rows_threshold: int
    bytes_threshold: int
    is_scanning: bool  # still reading the log for debt left from before the start
    due: int  # records over a threshold, waiting their turn
    tracked_rows: int  # log rows since the snapshot, summed over the records it tracks
    compactions: int  # records folded
    rows_folded: int  # log rows those compactions removed
    bytes_before: int
    bytes_after: int
    steps: int  # transactions those compactions committed (more than one for a long backlog)
    current: CurrentCompaction | None  # the record being folded now, if any
    skipped: int  # due records found with nothing to fold (already compacted elsewhere)
    failures: int  # compactions that failed (logged); the record is retried later
    last_compaction_at: float | None  # unix seconds


class Compactor:
    """Compacts due records in a task of its own; use as `async with Compactor(store) as c:`."""

    def __init__(
        self,
        store: Store,
        policy: CompactionPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy if policy is not None else CompactionPolicy()
        self._clock = clock
        self._debts: dict[DocId, Debt] = {}
        self._due: dict[DocId, None] = {}  # an ordered set: the first due is served first
        self._wake = asyncio.Event()
        self._scanned_up_to: Seq | None = None  # commits above it are counted by `observe`
        self._is_open = False
        self._compacting: DocId | None = None
        self._progress = (0, 0)  # (rows folded, rows) of the record being compacted
        self._task: asyncio.Task[None] | None = None
        self._compactions = self._rows_folded = self._bytes_before = self._bytes_after = 0
        self._skipped = self._failures = self._steps = 0
        self._last_compaction_at: float | None = None
        store.add_commit_listener(self.observe)

    async def __aenter__(self) -> Self:
        self._is_open = True
        self._task = asyncio.create_task(self._run(), name="crdt-sync compactor")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop; a compaction already submitted to the store still commits (or not) whole."""
        self._is_open = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def observe(self, committed: Sequence[Committed]) -> None:
        """The commit listener: count each record's new rows; wake the task when one is due."""
        if not self._is_open:
            return
        scanned = self._scanned_up_to
        for update in committed:
            if scanned is not None and update.seq <= scanned:
                continue  # the start-up scan counted it
            self._count(update.doc_id, len(update.update))
        if self._due:
            self._wake.set()

    def _count(self, doc_id: DocId, size: int) -> None:
        debt = self._debts.get(doc_id)
        if debt is None:
            if len(self._debts) >= MAX_TRACKED:
                self._forget_some()
            debt = self._debts[doc_id] = Debt()
        debt.rows += 1
        debt.bytes += size
        if debt.rows >= self.policy.rows or debt.bytes >= self.policy.bytes:
            self._due[doc_id] = None

    def _forget_some(self) -> None:
        """Drop the oldest tenth of the records not due: a bounded table, at the price of
        compacting those records later than their threshold says."""
        victims = [doc_id for doc_id in self._debts if doc_id not in self._due]
        for doc_id in victims[: max(1, len(victims) // 10)]:
            del self._debts[doc_id]

    def statistics(self) -> CompactorStatistics:
        return CompactorStatistics(
            rows_threshold=self.policy.rows,
            bytes_threshold=self.policy.bytes,
            is_scanning=self._is_open and self._scanned_up_to is None,
            due=len(self._due),
            tracked_rows=sum(debt.rows for debt in self._debts.values()),
            compactions=self._compactions,
            rows_folded=self._rows_folded,
            bytes_before=self._bytes_before,
            bytes_after=self._bytes_after,
            steps=self._steps,
            current=(
                None
                if self._compacting is None
                else CurrentCompaction(self._compacting, *self._progress)
            ),
            skipped=self._skipped,
            failures=self._failures,
            last_compaction_at=self._last_compaction_at,
        )

    async def wait_idle(self) -> None:
        """Return once nothing is due and the start-up scan is done (for tests and shutdown)."""
        while self._due or self._compacting is not None or self._scanned_up_to is None:
            if self._task is None or self._task.done():
                return
            await asyncio.sleep(self.policy.pause + 0.01)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await self._scan_backlog()
        while True:
            if not self._due:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.policy.idle)
                continue
            doc_id = next(iter(self._due))
            started = loop.time()
            await self._compact(doc_id)
            # Rest as long as the work took (capped): at most half the store's time goes to
            # compaction however many records are due, and quick ones are not held back.
            await asyncio.sleep(min(self.policy.pause, loop.time() - started))

    async def _scan_backlog(self) -> None:
        """Count the rows written before this process started, one page of the log at a time."""
        while True:
            try:
                end = await self.store.cursor()
                stats = await self.store.statistics()
                if stats.compaction_debt > 0:
                    await self._scan_log(end)
                self._scanned_up_to = end
                return
            except CrdtSyncError as exc:
                LOG.warning("compactor: reading the log failed; retrying: %s", exc)
                self._debts.clear()
                self._due.clear()
                await asyncio.sleep(self.policy.idle)

    async def _scan_log(self, end: Seq) -> None:
        cursor = Seq(0)
        while cursor < end:
            page = await self.store.log_since(cursor, limit=SCAN_PAGE)
            for entry in page:
                if entry.seq > end:
                    return
                if entry.is_snapshot:  # a record's first row after compaction: debt starts
                    self._debts.pop(entry.doc_id, None)
                    self._due.pop(entry.doc_id, None)
                self._count(entry.doc_id, len(entry.update))
            if not page:
                return
            cursor = page[-1].seq
            if self._due:
                self._wake.set()
            await asyncio.sleep(self.policy.pause)  # a scan of a big log yields to writes

    async def _compact(self, doc_id: DocId) -> None:
        del self._due[doc_id]
        debt = self._debts.pop(doc_id, Debt())
        self._compacting = doc_id
        self._progress = (0, 0)
        try:
            report = await self.store.compact(doc_id, progress=self._step_done)
        except CrdtSyncError as exc:
            self._failures += 1
            LOG.warning("compactor: %s failed; retrying later: %s", doc_id, exc)
            self._restore(doc_id, debt)
            await asyncio.sleep(self.policy.idle)  # a failing disk is not retried in a loop
            return
        finally:
            self._compacting = None
        if report.documents:
            self._note(report)
            if report.updates_after > 1:  # stopped part way (rows changed under a step)
                self._restore(doc_id, Debt(report.updates_after - 1, report.bytes_after))
        elif report.updates_before > 1:  # its rows kept changing under it: try again later
            self._restore(doc_id, debt)
        else:
            self._skipped += 1

    def _step_done(self, rows_folded: int, rows: int) -> None:
        self._progress = (rows_folded, rows)

    def _restore(self, doc_id: DocId, debt: Debt) -> None:
        now = self._debts.setdefault(doc_id, Debt())
        now.rows += debt.rows
        now.bytes += debt.bytes
        if now.rows >= self.policy.rows or now.bytes >= self.policy.bytes:
            self._due[doc_id] = None

    def _note(self, report: CompactionReport) -> None:
        self._compactions += report.documents
        self._rows_folded += report.updates_before - report.updates_after
        self._bytes_before += report.bytes_before
        self._bytes_after += report.bytes_after
        self._steps += report.steps
        self._last_compaction_at = self._clock()

"""Group commit: one task turns every queued write into as few transactions as it can (I/O layer).

Rule 1: jobs are committed in the order they were submitted, and seqs are handed out in that
order, so two appends submitted A then B get seq(A) < seq(B).
Rule 2: a caller's future resolves only after its transaction committed; commit listeners run
after the commit and before any future resolves, with the committed updates in seq order.
Rule 3: listeners see the whole log: updates other processes committed on the same file are
read back (with every commit, and by `FollowJob`s while idle) and handed over marked foreign,
before this writer's own updates of higher seq.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from ..errors import StoreError
from ..ids import Seq
from .base import CommitListener, Committed
from .chains import Heads
from .connection import Connection
from .reads import cursor
from .transactions import (
    AppendJob,
    ExclusiveJob,
    FollowJob,
    Outcome,
    commit_appends,
    read_foreign,
    run_exclusive,
)

Job = AppendJob | ExclusiveJob | FollowJob

LOG = logging.getLogger(__name__)


@dataclass(slots=True)
class WriterStatistics:
    commits: int = 0  # transactions that committed appends
    appends: int = 0  # updates committed
    largest_batch: int = 0  # most updates in one transaction
    foreign: int = 0  # updates other processes committed, read back


class CommitBackend(Protocol):
    """The transactions a writer runs on its database, one at a time, in the order given."""

    @property
    def name(self) -> str:
        """Names the store in error messages (a file, a database)."""
        ...

    async def last_seq(self) -> Seq:
        """The highest seq committed so far."""
        ...

    async def commit_appends(
        self, batch: list[AppendJob], now: float, expired_before: float, known: Seq
    ) -> tuple[list[Outcome], list[Committed]]:
        """The batch in one transaction (see `transactions.commit_appends`), and the foreign
        updates committed after seq `known` (all below the batch's seqs)."""
        ...

    async def read_foreign(self, known: Seq) -> list[Committed]:
        """What others committed after seq `known`, in seq order."""
        ...

    async def run_exclusive(self, job: ExclusiveJob) -> object:
        """`job.work` alone in its own write transaction."""
        ...


class SQLiteCommits:
    """The writer's transactions on an SQLite file, each run whole on the connection's thread."""

    def __init__(self, connection: Connection, schema_version: int) -> None:
        self._connection = connection
        self._schema_version = schema_version
        self._heads = Heads()  # touched only by the transaction in flight, on the thread

    @property
    def name(self) -> str:
        return str(self._connection.path)

    async def last_seq(self) -> Seq:
        return await self._connection.run(cursor)

    async def commit_appends(
        self, batch: list[AppendJob], now: float, expired_before: float, known: Seq
    ) -> tuple[list[Outcome], list[Committed]]:
        return await self._connection.run(
            commit_appends, batch, now, expired_before, known, self._heads, self._schema_version
        )

    async def read_foreign(self, known: Seq) -> list[Committed]:
        return await self._connection.run(read_foreign, known, self._heads)

    async def run_exclusive(self, job: ExclusiveJob) -> object:
        return await self._connection.run(run_exclusive, job.work, self._schema_version)


class CommitWriter:
    """The one writer of a store: `submit()` queues, a task drains the queue into transactions.

    The queue holds at most one job per caller still waiting for its commit, so it is bounded
    by the callers. Cancelling a caller does not withdraw its write once submitted.
    """

    def __init__(
        self,
        backend: CommitBackend,
        *,
        max_batch: int,
        idempotency_ttl: float,
        clock: Callable[[], float],
        commit_window: float = 0.0,
    ) -> None:
        self._backend = backend
        self._max_batch = max_batch
        self._window = commit_window
        self._last_batch_jobs = 0
        self._idempotency_ttl = idempotency_ttl
        self._clock = clock
        self._pending: deque[Job] = deque()
        self._in_flight: Sequence[Job] = []
        self._wake = asyncio.Event()
        self._is_closing = False
        self._task: asyncio.Task[None] | None = None
        self._known = Seq(0)  # the last seq this writer has handed to listeners
        self.listeners: list[CommitListener] = []
        self.statistics = WriterStatistics()

    async def __aenter__(self) -> Self:
        name = f"crdt-sync writer {self._backend.name}"
        self._known = await self._backend.last_seq()
        self._task = asyncio.create_task(self._run(), name=name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Commit everything already submitted, then stop."""
        self._is_closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def submit(self, job: Job) -> None:
        """Queue `job` now, without awaiting: the order of submits is the order of commits."""
        if self._is_closing or self._task is None or self._task.done():
            raise StoreError(f"{self._backend.name}: the store is closed")
        self._pending.append(job)
        self._wake.set()

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    if self._last_batch_jobs > 1 and self._window:
                        await self._wait_for_company()
                    await self._commit_next()
                if self._is_closing:
                    return
        finally:
            # Only reached with jobs left if this task was cancelled: nobody may wait forever.
            path = self._backend.name
            for job in self._in_flight:
                error = StoreError(f"{path}: closed while committing; the outcome is unknown")
                _fail(job.future, error)
            for job in self._pending:
                _fail(job.future, StoreError(f"{path}: closed before commit; nothing stored"))
            self._pending.clear()

    async def _wait_for_company(self) -> None:
        """Group commit under concurrency: wait the commit window before a batch of appends
        when the last batch held more than one job.

        Writers that wait for their commit (an editor's round trip after every edit) answer
        it one after another, each a little later: without the wait, the first of their next
        updates starts a commit of its own and the rest queue behind it, at two to five
        updates a commit where ten writers could share one. The window lets them come: half
        the commits, so a third less CPU an update (a commit's fixed cost, its fsync's most
        of all, shared by more) and a shorter wait for all of them. A lone writer's batches
        hold one job: it never waits. Only when a write is committed changes, not what is
        promised: its outcome still comes after its COMMIT.
        """
        if isinstance(self._pending[0], AppendJob) and not self._is_closing:
            await asyncio.sleep(self._window)

    async def _commit_next(self) -> None:
        job = self._pending[0]
        if isinstance(job, ExclusiveJob):
            self._pending.popleft()
            self._in_flight = [job]
            await self._commit_exclusive(job)
        elif isinstance(job, FollowJob):
            self._pending.popleft()
            self._in_flight = [job]
            await self._follow(job)
        else:
            self._in_flight = batch = self._take_batch()
            self._last_batch_jobs = len(batch)
            await self._commit_appends(batch)
        self._in_flight = []

    async def _commit_exclusive(self, job: ExclusiveJob) -> None:
        try:
            result = await self._backend.run_exclusive(job)
        except Exception as exc:
            _fail(job.future, exc)
        else:
            if not job.future.done():
                job.future.set_result(result)

    async def _follow(self, job: FollowJob) -> None:
        try:
            foreign = await self._backend.read_foreign(self._known)
        except Exception as exc:
            _fail(job.future, exc)
            return
        self._notify(self._record_foreign(foreign))
        if not job.future.done():
            job.future.set_result(len(foreign))

    def _take_batch(self) -> list[AppendJob]:
        batch: list[AppendJob] = []
        size = 0
        while self._pending:
            job = self._pending[0]
            if not isinstance(job, AppendJob) or (batch and size + len(job.rows) > self._max_batch):
                break
            self._pending.popleft()
            batch.append(job)
            size += len(job.rows)
        return batch

    async def _commit_appends(self, batch: list[AppendJob]) -> None:
        now = self._clock()
        try:
            outcomes, foreign = await self._backend.commit_appends(
                batch, now, now - self._idempotency_ttl, self._known
            )
        except StoreError as exc:
            for job in batch:  # one fresh error per caller, all caused by the same sqlite error
                error = StoreError(exc.message)
                error.__cause__ = exc.__cause__
                _fail(job.future, error)
            return
        except Exception as exc:
            for job in batch:
                _fail(job.future, exc)
            return
        committed = self._record_foreign(foreign) + self._record(batch, outcomes)
        self._notify(committed)
        for job, outcome in zip(batch, outcomes):
            if isinstance(outcome, BaseException):
                _fail(job.future, outcome)
            elif not job.future.done():
                job.future.set_result(outcome)

    def _record_foreign(self, foreign: list[Committed]) -> list[Committed]:
        if foreign:
            self._known = max(self._known, foreign[-1].seq)
            self.statistics.foreign += len(foreign)
        return foreign

    def _record(self, batch: list[AppendJob], outcomes: list[Outcome]) -> list[Committed]:
        """Count the commit; the committed updates in seq order, if anyone listens."""
        appends = 0
        for outcome in outcomes:
            if outcome and not isinstance(outcome, BaseException):
                appends += len(outcome)
                self._known = outcome[-1]  # seqs rise through the batch
        self.statistics.commits += 1
        self.statistics.appends += appends
        self.statistics.largest_batch = max(self.statistics.largest_batch, appends)
        if not self.listeners:
            return []
        return [
            Committed(seq, row.doc_id, row.update, row.origin)
            for job, outcome in zip(batch, outcomes)
            if not isinstance(outcome, BaseException)
            for seq, row in zip(outcome, job.rows)
        ]

    def _notify(self, committed: Sequence[Committed]) -> None:
        if not committed:
            return
        for listener in self.listeners:
            try:
                listener(committed)
            except Exception:  # the commit stands; a failing listener is a bug to log, not raise
                LOG.exception("commit listener %r failed", listener)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():  # a cancelled caller no longer waits
        future.set_exception(exc)

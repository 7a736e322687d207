"""The stores: durable log, per-record views, group commit, compaction, cursors.

Every test of the Store's behaviour runs on both backends (the `backend` fixture): SQLite and
PostgreSQL. Tests of one backend's own machinery (SQLite's query plans, chains, migrations,
files) take `sqlite_store` or `path`; PostgreSQL's own are in test_store_postgres.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from crdt_sync.errors import ConfigError, SchemaViolation, StoreError
from crdt_sync.ids import DocId, Origin, Seq
from crdt_sync.store import (
    COMPACTION_ORIGIN,
    SCHEMA_VERSION,
    Append,
    Committed,
    SQLiteStore,
    Store,
    chains,
    compaction,
)
from crdt_sync.store import writer as writer_module
from crdt_sync.store.postgres import PostgresStore
from crdt_sync.store.reads import COLLECTIONS, changes_query, log_query, snapshot_query

from .clis import run
from .services import postgres, postgres_schema

ANN = Origin("ann-phone")
BOB = Origin("bob-laptop")


class Contact:
    """A record's CRDT document whose every edit is captured as one update."""

    def __init__(self) -> None:
        self.document: Doc[Any] = Doc()
        self.record = self.document.get("record", type=Map)
        self.updates: list[bytes] = []
        self._subscription = self.document.observe(lambda event: self.updates.append(event.update))

    def set(self, **fields: Any) -> bytes:
        with self.document.transaction():
            for name, value in fields.items():
                self.record[name] = value
        return self.updates[-1]

    def view(self) -> dict[str, Any]:
        return self.record.to_py() or {}


def view_of(update: bytes) -> dict[str, Any]:
    document: Doc[Any] = Doc()
    document.apply_update(update)
    return document.get("record", type=Map).to_py() or {}


async def put(
    store: Store, doc_id: str, contact: Contact, origin: Origin = ANN, **fields: Any
) -> Seq:
    update = contact.set(**fields)
    return await store.append(
        DocId(doc_id), update, view=contact.view(), is_deleted=False, origin=origin
    )


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the file, as another program would open it."""
    db = sqlite3.connect(path)
    try:
        with db:  # commits on success
            yield db
    finally:
        db.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


class Backend:
    """Where a test's stores live (an SQLite file, a PostgreSQL schema) and how to reach it."""

    def __init__(self, name: str, location: str) -> None:
        self.name = name
        self.location = location

    def open(self, *, fail_fast: bool = False, **options: Any) -> SQLiteStore | PostgresStore:
        """A new store on the backend's one location; `fail_fast`: give up at once on a lock."""
        if self.name == "sqlite":
            return SQLiteStore(self.location, busy_timeout_ms=0 if fail_fast else 5000, **options)
        if fail_fast:  # the lock timeout must exceed the idle one (PostgresStore)
            return PostgresStore(
                self.location, lock_timeout_ms=1000, idle_timeout_ms=900, **options
            )
        return PostgresStore(self.location, **options)

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """One statement, as another program would run it on the store's database."""
        if self.name == "postgresql":
            return postgres(self.location, statement)
        with raw(Path(self.location)) as db:
            return db.execute(statement).fetchall()

    @contextmanager
    def holding_the_write_lock(self) -> Iterator[None]:
        """Another process holds the lock every commit needs (SQLite's, or the seq lock)."""
        if self.name == "sqlite":
            blocker = sqlite3.connect(self.location, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            return
        import psycopg

        with psycopg.connect(self.location) as db:  # a transaction until the block ends
            db.execute("SELECT seq FROM seq_head FOR UPDATE")
            yield
            db.rollback()

    @property
    def lock_failure(self) -> str:
        """What a commit that could not get the write lock says."""
        return "locked" if self.name == "sqlite" else "lock timeout"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", str(path))
        return
    with postgres_schema() as url:
        yield Backend("postgresql", url)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with backend.open() as store:
        yield store


@pytest.fixture
async def sqlite_store(path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(path) as store:
        yield store


def test_both_stores_implement_the_store_protocol(path: Path) -> None:
    stores: list[Store] = [SQLiteStore(path), PostgresStore("postgresql://nowhere/none")]
    assert all(stores)


# Appends and loads


async def test_appended_updates_load_back_as_the_same_document(store: Store) -> None:
    contact = Contact()
    await put(store, "contacts/1", contact, name="Ann", email="ann@example.com")
    await put(store, "contacts/1", contact, phone="+33 1 23 45 67 89")
    loaded = await store.load(DocId("contacts/1"))
    assert loaded is not None
    assert (
        view_of(loaded)
        == contact.view()
        == {
            "name": "Ann",
            "email": "ann@example.com",
            "phone": "+33 1 23 45 67 89",
        }
    )


async def test_a_document_without_updates_loads_as_none(store: Store) -> None:
    assert await store.load(DocId("contacts/nobody")) is None
    assert await store.history(DocId("contacts/nobody")) == []
    assert await store.get_record(DocId("contacts/nobody")) is None
    assert await store.cursor() == 0


async def test_a_bad_document_id_is_refused_before_anything_is_queued(store: Store) -> None:
    with pytest.raises(SchemaViolation, match="collection/record_id"):
        await store.append(DocId("no-slash"), b"\x00\x00", view={}, is_deleted=False, origin=ANN)
    assert await store.cursor() == 0


async def test_seqs_strictly_increase_in_call_order_across_concurrent_appends(
    store: Store,
) -> None:
    contacts = [Contact() for _ in range(10)]
    updates = [(f"contacts/{i % 10}", contacts[i % 10], i) for i in range(200)]
    seqs = await asyncio.gather(
        *(put(store, doc_id, contact, n=n) for doc_id, contact, n in updates)
    )
    assert seqs == list(range(1, 201))
    assert await store.cursor() == 200


async def test_concurrent_appends_share_transactions(store: Store) -> None:
    contact = Contact()
    await asyncio.gather(*(put(store, f"contacts/{i}", contact, n=i) for i in range(200)))
    extra = (await store.statistics()).extra
    assert extra["appends"] == 200
    assert extra["commits"] < 200


async def test_a_store_with_max_batch_one_commits_each_append_alone(backend: Backend) -> None:
    async with backend.open(max_batch=1) as store:
        contact = Contact()
        await asyncio.gather(*(put(store, "contacts/1", contact, n=i) for i in range(20)))
        assert (await store.statistics()).extra["commits"] == 20


async def test_the_record_row_keeps_its_first_write_and_follows_its_last(
    backend: Backend,
) -> None:
    now = [1000.0]
    async with backend.open(clock=lambda: now[0]) as store:
        contact = Contact()
        first = await put(store, "contacts/7", contact, ANN, name="Ann")
        now[0] = 2000.0
        last = await store.append(
            DocId("contacts/7"),
            contact.set(name="Ann B"),
            view={"name": "Ann B"},
            is_deleted=True,
            origin=BOB,
        )
        record = await store.get_record(DocId("contacts/7"))
    assert record is not None
    assert (record.collection, record.record_id) == ("contacts", "7")
    assert (record.first_seq, record.created_by) == (first, ANN)
    assert (record.last_seq, record.updated_at) == (last, 2000.0)
    assert record.view == {"name": "Ann B"}
    assert record.is_deleted


async def test_history_lists_each_update_in_seq_order(store: Store) -> None:
    contact = Contact()
    await put(store, "contacts/1", contact, ANN, name="Ann")
    await put(store, "contacts/1", contact, BOB, name="Ann B")
    history = await store.history(DocId("contacts/1"))
    assert [(e.seq, e.origin, e.is_snapshot) for e in history] == [(1, ANN, False), (2, BOB, False)]
    assert [e.update for e in history] == contact.updates


async def test_commit_listeners_get_committed_updates_in_seq_order(store: Store) -> None:
    heard: list[Committed] = []
    seen_before_return: list[int] = []
    store.add_commit_listener(heard.extend)
    contact = Contact()

    async def put_and_check(n: int) -> Seq:
        seq = await put(store, f"contacts/{n}", contact, n=n)
        seen_before_return.append(int(any(c.seq == seq for c in heard)))
        return seq

    seqs = await asyncio.gather(*(put_and_check(n) for n in range(50)))
    assert [c.seq for c in heard] == sorted(seqs) == list(range(1, 51))
    assert [c.update for c in heard] == contact.updates
    assert all(seen_before_return)


async def test_statistics_scan_the_store_without_holding_up_the_reads_behind_them(
    sqlite_store: SQLiteStore,
) -> None:
    """The counts read every record and log row (the compactor asks at every start); a
    join's read of one record, asked meanwhile, is answered without waiting for them."""
    contact = Contact()
    update = contact.set(name="Ann")
    for batch in range(30):
        await sqlite_store.append_many(
            [
                Append(DocId(f"contacts/{batch}-{n}"), update, contact.view(), False, ANN)
                for n in range(1000)
            ]
        )
    counting = asyncio.create_task(sqlite_store.statistics())
    await asyncio.sleep(0)  # the scan is under way on its connection
    assert await sqlite_store.load(DocId("contacts/7-7")) == update
    assert not counting.done()  # the read came back first
    assert (await counting).log_entries == 30_000


async def test_a_removed_commit_listener_hears_no_later_commit(store: Store) -> None:
    """`crdt-sync serve --demo` seeds with an engine of its own, detached before the
    server's engine serves the same open store."""
    kept: list[Committed] = []
    removed: list[Committed] = []
    store.add_commit_listener(kept.extend)
    store.add_commit_listener(removed.extend)
    contact = Contact()
    await put(store, "contacts/1", contact, n=1)
    store.remove_commit_listener(removed.extend)
    await put(store, "contacts/1", contact, n=2)
    assert [c.seq for c in kept] == [1, 2]
    assert [c.seq for c in removed] == [1]
    with pytest.raises(ValueError):
        store.remove_commit_listener(removed.extend)


async def test_writers_that_wait_for_each_commit_are_committed_batch_after_batch_in_order(
    backend: Backend,
) -> None:
    """Round-trip writers: each append submitted once the last resolved, so new batches queue
    while one commits, with other writes (tokens: exclusive jobs) between them."""
    async with backend.open(max_batch=3) as store:
        heard: list[Committed] = []
        store.add_commit_listener(heard.extend)
        contacts = [Contact() for _ in range(8)]

        async def writer(j: int) -> None:
            for n in range(15):
                seq = await put(store, f"contacts/{j}", contacts[j], n=n)
                assert any(c.seq == seq for c in heard)  # heard before its caller returned

        async def tokens() -> None:
            for n in range(5):
                await store.add_token(f"t{n}", "device", f"hash-{n}")

        await asyncio.gather(*(writer(j) for j in range(8)), tokens())
        assert [c.seq for c in heard] == list(range(1, 121))
        assert [c.update for c in heard if c.doc_id == "contacts/3"] == contacts[3].updates
        assert (await store.statistics()).extra["commits"] >= 40
        assert len(await store.list_tokens()) == 5
        assert await store.cursor() == 120


async def test_a_failing_commit_listener_is_logged_and_the_append_stands(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(committed: Sequence[Committed]) -> None:
        raise RuntimeError("listener bug")

    store.add_commit_listener(broken)
    seq = await put(store, "contacts/1", Contact(), name="Ann")
    assert seq == 1
    assert "listener bug" in caplog.text


# Atomicity and failures


async def test_append_many_stores_all_its_updates_in_one_transaction(store: Store) -> None:
    a, b = Contact(), Contact()
    appends = [
        Append(DocId("contacts/a"), a.set(name="A"), {"name": "A"}, False, ANN),
        Append(DocId("contacts/b"), b.set(name="B"), {"name": "B"}, False, ANN),
    ]
    assert await store.append_many(appends) == [1, 2]
    assert (await store.statistics()).extra["commits"] == 1


async def test_append_many_with_a_used_key_stores_nothing_of_its_batch(store: Store) -> None:
    a, b = Contact(), Contact()
    first = [Append(DocId("contacts/a"), a.set(name="A"), {"name": "A"}, False, ANN)]
    await store.append_many(first, idempotency_key="req-1", answer=lambda seqs: b"ok")
    again = [
        Append(DocId("contacts/b"), b.set(name="B"), {"name": "B"}, False, ANN),
        Append(DocId("contacts/a"), a.set(name="A2"), {"name": "A2"}, False, ANN),
    ]
    other = Contact()
    failed, alone = await asyncio.gather(
        store.append_many(again, idempotency_key="req-1", answer=lambda seqs: b"no"),
        put(store, "contacts/c", other, name="C"),
        return_exceptions=True,
    )
    assert isinstance(failed, StoreError)
    assert "'req-1' was already used" in failed.message
    assert alone == 2  # a neighbour in the same group commit is unaffected
    assert await store.get_record(DocId("contacts/b")) is None
    record_a = await store.get_record(DocId("contacts/a"))
    assert record_a is not None and record_a.view == {"name": "A"}
    assert await store.recall("req-1") == b"ok"


async def test_append_many_whose_answer_raises_stores_nothing_and_raises_it(
    store: Store,
) -> None:
    def broken_answer(seqs: list[Seq]) -> bytes:
        raise ValueError("cannot encode the answer")

    appends = [Append(DocId("contacts/a"), Contact().set(n=1), {"n": 1}, False, ANN)]
    with pytest.raises(ValueError, match="cannot encode"):
        await store.append_many(appends, idempotency_key="req-2", answer=broken_answer)
    assert await store.cursor() == 0
    assert await store.recall("req-2") is None
    assert await store.get_record(DocId("contacts/a")) is None


async def test_a_failed_transaction_fails_every_caller_of_its_batch_and_stores_nothing(
    backend: Backend,
) -> None:
    async with backend.open(fail_fast=True) as store:
        await put(store, "contacts/0", Contact(), name="before")
        with backend.holding_the_write_lock():
            results = await asyncio.gather(
                *(put(store, f"contacts/{n}", Contact(), n=n) for n in range(1, 11)),
                store.append_many(
                    [Append(DocId("contacts/m"), Contact().set(n=1), {"n": 1}, False, ANN)]
                ),
                return_exceptions=True,
            )
        assert all(
            isinstance(r, StoreError) and backend.lock_failure in r.message for r in results
        ), results
        assert isinstance(results[0], StoreError)
        assert results[0].__cause__ is not None  # the database's own error
        assert await store.cursor() == 1
        assert (await store.statistics()).records == {"contacts": 1}
        assert await put(store, "contacts/1", Contact(), name="after") == 2


async def test_appending_to_a_closed_store_raises_store_error(backend: Backend) -> None:
    async with backend.open() as store:
        pass
    with pytest.raises(StoreError, match="closed"):
        await put(store, "contacts/1", Contact(), name="Ann")
    with pytest.raises(StoreError, match="closed"):
        await store.cursor()


async def test_closing_commits_appends_already_submitted(backend: Backend) -> None:
    async with backend.open() as store:
        *seqs, _ = await asyncio.gather(
            *(put(store, f"contacts/{n}", Contact(), n=n) for n in range(30)), store.close()
        )
    assert seqs == list(range(1, 31))
    async with backend.open() as store:
        assert await store.cursor() == 30


# Idempotency


async def test_recall_returns_the_answer_kept_with_the_key(store: Store) -> None:
    contact = Contact()
    appends = [Append(DocId("contacts/1"), contact.set(name="Ann"), {"name": "Ann"}, False, ANN)]
    seqs = await store.append_many(
        appends, idempotency_key="req-9", answer=lambda seqs: json.dumps(seqs).encode()
    )
    assert await store.recall("req-9") == json.dumps(seqs).encode()
    assert await store.recall("req-unknown") is None


async def test_recall_forgets_answers_older_than_the_ttl_and_the_key_is_free_again(
    backend: Backend,
) -> None:
    now = [1000.0]
    async with backend.open(idempotency_ttl=60.0, clock=lambda: now[0]) as store:
        contact = Contact()
        appends = [Append(DocId("contacts/1"), contact.set(n=1), {"n": 1}, False, ANN)]
        await store.append_many(appends, idempotency_key="k", answer=lambda seqs: b"first")
        now[0] = 1061.0
        assert await store.recall("k") is None
        appends = [Append(DocId("contacts/1"), contact.set(n=2), {"n": 2}, False, ANN)]
        await store.append_many(appends, idempotency_key="k", answer=lambda seqs: b"second")
        assert await store.recall("k") == b"second"


# Compaction


async def test_compaction_preserves_the_document(store: Store) -> None:
    contact = Contact()
    for n in range(10):
        await put(store, "contacts/1", contact, name=f"Ann {n}", n=n)
    report = await store.compact(DocId("contacts/1"))
    assert (report.documents, report.updates_before, report.updates_after) == (1, 10, 1)
    loaded = await store.load(DocId("contacts/1"))
    assert loaded is not None and view_of(loaded) == contact.view()
    [snapshot] = await store.history(DocId("contacts/1"))
    assert (snapshot.seq, snapshot.is_snapshot, snapshot.origin) == (10, True, COMPACTION_ORIGIN)


async def test_compaction_drops_the_content_of_deleted_text(store: Store) -> None:
    contact = Contact()
    notes = Text("x" * 5000)
    with contact.document.transaction():
        contact.record["notes"] = notes
    await store.append(
        DocId("contacts/1"), contact.updates[-1], view={}, is_deleted=False, origin=ANN
    )
    with contact.document.transaction():
        del notes[0:4990]
    await store.append(
        DocId("contacts/1"), contact.updates[-1], view={}, is_deleted=False, origin=ANN
    )

    report = await store.compact(DocId("contacts/1"))
    assert report.bytes_before > 5000
    assert report.bytes_after < 200
    loaded = await store.load(DocId("contacts/1"))
    assert loaded is not None and view_of(loaded) == {"notes": "x" * 10}


async def test_compaction_keeps_the_record_size_equal_to_its_stored_bytes(
    store: Store, backend: Backend
) -> None:
    contact = Contact()
    for n in range(5):
        await put(store, "contacts/1", contact, n=n)
    await store.compact(DocId("contacts/1"))
    [(size,)] = backend.sql("SELECT size FROM records WHERE doc_id = 'contacts/1'")
    [(stored,)] = backend.sql("SELECT SUM(length(data)) FROM updates")
    assert size == stored


async def test_compaction_skips_a_document_with_one_update(store: Store) -> None:
    await put(store, "contacts/1", Contact(), name="Ann")
    report = await store.compact(DocId("contacts/1"))
    assert (report.documents, report.updates_before, report.updates_after) == (0, 1, 1)
    assert not (await store.history(DocId("contacts/1")))[0].is_snapshot


async def test_compaction_loses_no_append_racing_it(store: Store) -> None:
    contacts = [Contact() for _ in range(5)]
    for n in range(20):
        await put(store, f"contacts/{n % 5}", contacts[n % 5], n=n)

    async def write_more() -> None:
        await asyncio.gather(
            *(put(store, f"contacts/{n % 5}", contacts[n % 5], m=n) for n in range(100))
        )

    async def compact_repeatedly() -> None:
        for _ in range(3):
            await store.compact_all()

    await asyncio.gather(compact_repeatedly(), write_more())
    for n, contact in enumerate(contacts):
        loaded = await store.load(DocId(f"contacts/{n}"))
        assert loaded is not None and view_of(loaded) == contact.view()
    assert await store.cursor() == 120


async def test_compaction_keeps_rows_another_writer_appended_after_its_read(
    sqlite_store: SQLiteStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (the CLI) commits between compaction's read and its swap."""
    contact = Contact()
    for n in range(3):
        await put(sqlite_store, "contacts/1", contact, n=n)
    late = contact.set(late=True)
    read_chain = compaction.read_chain

    def read_then_other_process_writes(
        db: sqlite3.Connection, doc_id: DocId, *steps: int
    ) -> object:
        fold = read_chain(db, doc_id, *steps)
        with raw(path) as other:
            other.execute(  # as a store appends: the row chained to the head, the head moved
                "INSERT INTO updates (seq, doc_id, collection, data, origin, at, is_snapshot,"
                " prev_seq) VALUES (4, 'contacts/1', 'contacts', ?, 'cli', 0, 0, 3)",
                (late,),
            )
            other.execute("UPDATE records SET last_seq = 4 WHERE doc_id = 'contacts/1'")
        return fold

    monkeypatch.setattr(compaction, "read_chain", read_then_other_process_writes)
    report = await sqlite_store.compact(DocId("contacts/1"))
    assert report.updates_before == 3
    history = await sqlite_store.history(DocId("contacts/1"))
    assert [(e.seq, e.is_snapshot) for e in history] == [(3, True), (4, False)]
    loaded = await sqlite_store.load(DocId("contacts/1"))
    assert loaded is not None and view_of(loaded) == contact.view()


async def test_a_long_log_is_compacted_a_bounded_prefix_per_transaction(path: Path) -> None:
    """95 rows, steps of 10: ten transactions, each replacing the last snapshot and the next
    rows; an append submitted after the first step commits before the compaction ends."""
    contact, other = Contact(), Contact()
    async with SQLiteStore(path, compaction_step=10) as store:
        for n in range(95):
            await put(store, "contacts/long", contact, n=n)
        await put(store, "contacts/other", other, n=0)
        steps: list[tuple[int, int, bool]] = []  # (rows folded, rows, racing append done)
        racing: list[asyncio.Task[Seq]] = []

        def progress(done: int, total: int) -> None:
            if not racing:  # after the first step: an append queued behind it, not behind all
                racing.append(asyncio.create_task(put(store, "contacts/long", contact, late=1)))
            steps.append((done, total, racing[0].done()))

        report = await store.compact(DocId("contacts/long"), progress=progress)
        assert [(done, total) for done, total, _ in steps] == [
            (10 * n, 95) for n in range(1, 10)
        ] + [(95, 95)]
        assert not steps[0][2] and steps[-1][2]  # the append landed between two steps
        assert report.steps == 10
        assert (report.documents, report.updates_before, report.updates_after) == (1, 95, 1)
        late_seq = await racing[0]
        history = await store.history(DocId("contacts/long"))
        assert [(e.seq, e.is_snapshot) for e in history] == [(95, True), (late_seq, False)]
        loaded = await store.load(DocId("contacts/long"))
        assert loaded is not None and view_of(loaded) == contact.view()
        assert (await store.check()).is_ok
    with raw(path) as db:
        [(size,)] = db.execute("SELECT size FROM records WHERE doc_id = 'contacts/long'")
        [(stored,)] = db.execute(
            "SELECT SUM(length(data)) FROM updates WHERE doc_id = 'contacts/long'"
        )
    assert size == stored


async def test_a_stepped_compaction_overtaken_by_another_process_stops_and_leaves_a_whole_chain(
    path: Path,
) -> None:
    """`crdt-sync compact` (another process) folds the record between two of this store's steps:
    the next step finds its rows gone, writes nothing, and the record is whole."""
    contact = Contact()
    async with SQLiteStore(path, compaction_step=10) as store:
        for n in range(45):
            await put(store, "contacts/long", contact, n=n)
        cli_exit_codes: list[int] = []

        def progress(done: int, total: int) -> None:
            if not cli_exit_codes:  # blocks the loop for the CLI's run: no step is in flight
                cli_exit_codes.append(run("compact", "contacts/long", "--db", str(path)).exit_code)

        report = await store.compact(DocId("contacts/long"), progress=progress)
        assert cli_exit_codes == [0]
        assert (report.documents, report.steps, report.updates_before) == (1, 1, 45)
        assert report.updates_after == 1 + 35  # what this store did not fold itself
        history = await store.history(DocId("contacts/long"))
        assert [(e.seq, e.is_snapshot) for e in history] == [(45, True)]
        loaded = await store.load(DocId("contacts/long"))
        assert loaded is not None and view_of(loaded) == contact.view()
        assert (await store.check()).is_ok


async def test_a_compaction_that_lost_the_race_to_another_leaves_the_snapshot_alone(
    store: Store,
) -> None:
    contact = Contact()
    for n in range(4):
        await put(store, "contacts/1", contact, n=n)
    reports = await asyncio.gather(*(store.compact(DocId("contacts/1")) for _ in range(2)))
    assert sorted(r.documents for r in reports) == [0, 1]
    history = await store.history(DocId("contacts/1"))
    assert [(e.seq, e.is_snapshot) for e in history] == [(4, True)]


async def test_compact_all_reports_progress_and_totals(store: Store) -> None:
    contacts = [Contact() for _ in range(3)]
    for n in range(9):
        await put(store, f"contacts/{n % 3}", contacts[n % 3], n=n)
    await put(store, "contacts/single", Contact(), n=0)
    progress: list[tuple[int, int]] = []
    report = await store.compact_all(progress=lambda done, total: progress.append((done, total)))
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert (report.documents, report.updates_before, report.updates_after) == (3, 9, 3)
    assert (await store.statistics()).compaction_debt == 0


# Cursors and paging


async def test_changes_since_returns_each_changed_record_once_by_last_seq(
    store: Store,
) -> None:
    a, b, c = Contact(), Contact(), Contact()
    await put(store, "contacts/a", a, n=1)
    cursor = await put(store, "deals/b", b, n=1)
    await put(store, "contacts/a", a, n=2)
    await put(store, "contacts/c", c, n=1)
    await put(store, "deals/b", b, n=2)
    changes = await store.changes_since(cursor)
    assert [(r.doc_id, r.last_seq) for r in changes] == [
        ("contacts/a", 3),
        ("contacts/c", 4),
        ("deals/b", 5),
    ]
    limited = await store.changes_since(cursor, collections=["contacts"], limit=1)
    assert [r.doc_id for r in limited] == ["contacts/a"]


def query_plan(path: Path, query: tuple[str, tuple[Any, ...]]) -> str:
    sql, params = query
    with raw(path) as db:
        return " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))


@pytest.mark.parametrize("collections", [["contacts"], ["contacts", "deals"]])
async def test_changes_since_is_served_from_an_index_not_a_scan_of_records(
    sqlite_store: SQLiteStore, path: Path, collections: list[str]
) -> None:
    plan = query_plan(path, changes_query(Seq(10), collections, 100))
    index = "records_by_collection (collection=? AND last_seq>?)"
    assert plan.count(f"SEARCH records USING INDEX {index}") == len(collections)
    assert "SCAN records" not in plan
    if len(collections) == 1:  # one range comes in order: nothing to merge or sort
        assert "TEMP B-TREE" not in plan


async def test_changes_in_every_collection_find_the_collections_by_index_lookups(
    sqlite_store: SQLiteStore, path: Path
) -> None:
    """changes_since without collections first lists them: one MIN() lookup per collection."""
    plan = query_plan(path, (COLLECTIONS, ()))
    assert "SEARCH records USING COVERING INDEX records_by_collection" in plan
    assert "SCAN records" not in plan
    for name in ["deals", "contacts", "tasks", "contacts"]:
        await put(sqlite_store, f"{name}/1", Contact(), n=name)
    with raw(path) as db:
        assert [name for (name,) in db.execute(COLLECTIONS)] == ["contacts", "deals", "tasks"]
    changed = await sqlite_store.changes_since(Seq(1))
    # deals/1 changed at seq 1, the cursor; contacts/1 at 2 and again at 4
    assert [(r.doc_id, r.last_seq) for r in changed] == [("tasks/1", 3), ("contacts/1", 4)]


@pytest.mark.parametrize(
    ("query", "search"),
    [
        (log_query(Seq(10), None, 100), "updates USING INTEGER PRIMARY KEY (rowid>?)"),
        (log_query(Seq(10), ["a", "b"], 100), "updates USING INTEGER PRIMARY KEY (rowid>?)"),
        (snapshot_query(None, DocId("a/1"), 100, False), "records USING INDEX sqlite_autoindex"),
        (snapshot_query(["a", "b"], None, 100, True), "records USING INDEX sqlite_autoindex"),
    ],
)
async def test_log_since_and_snapshot_search_index_ranges(
    sqlite_store: SQLiteStore, path: Path, query: tuple[str, tuple[Any, ...]], search: str
) -> None:
    plan = query_plan(path, query)
    assert f"SEARCH {search}" in plan
    assert "SCAN records" not in plan and "SCAN updates" not in plan


async def test_pages_over_several_collections_merge_in_order(store: Store) -> None:
    contacts = {name: Contact() for name in ["a/1", "b/1", "c/1", "a/2", "b/2"]}
    for name, contact in contacts.items():
        await put(store, name, contact, n=1)
    await put(store, "a/1", contacts["a/1"], n=2)
    changes = await store.changes_since(Seq(0), collections=["b", "a"], limit=3)
    assert [(r.doc_id, r.last_seq) for r in changes] == [("b/1", 2), ("a/2", 4), ("b/2", 5)]
    log = await store.log_since(Seq(1), collections=["a", "b"], limit=10)
    assert [e.seq for e in log] == [2, 4, 5, 6]
    page = await store.snapshot(collections=["b", "a"], after=DocId("a/1"), limit=2)
    assert [r.doc_id for r in page] == ["a/2", "b/1"]
    assert await store.changes_since(Seq(0), collections=[]) == []
    assert await store.log_since(Seq(0), collections=[]) == []
    assert await store.snapshot(collections=[]) == []


async def test_log_since_returns_updates_after_the_cursor_by_seq(store: Store) -> None:
    a, b = Contact(), Contact()
    await put(store, "contacts/a", a, n=1)
    await put(store, "deals/b", b, n=1)
    await put(store, "contacts/a", a, n=2)
    log = await store.log_since(Seq(1))
    assert [(e.seq, e.doc_id) for e in log] == [(2, "deals/b"), (3, "contacts/a")]
    assert [e.seq for e in await store.log_since(Seq(0), collections=["contacts"])] == [1, 3]
    assert [e.seq for e in await store.log_since(Seq(0), limit=2)] == [1, 2]


async def test_a_client_behind_a_compaction_catches_up_from_the_snapshot(
    store: Store,
) -> None:
    contact = Contact()
    for n in range(5):
        await put(store, "contacts/1", contact, n=n)
    await store.compact(DocId("contacts/1"))
    [entry] = await store.log_since(Seq(2))
    assert entry.is_snapshot and view_of(entry.update) == contact.view()


async def test_snapshot_pages_records_by_doc_id(store: Store) -> None:
    for name in ["contacts/c", "contacts/a", "deals/x", "contacts/b"]:
        await put(store, name, Contact(), n=1)
    await store.append(
        DocId("contacts/d"), Contact().set(n=1), view={}, is_deleted=True, origin=ANN
    )
    first = await store.snapshot(collections=["contacts"], limit=2)
    assert [r.doc_id for r in first] == ["contacts/a", "contacts/b"]
    rest = await store.snapshot(collections=["contacts"], after=first[-1].doc_id, limit=10)
    assert [r.doc_id for r in rest] == ["contacts/c"]
    everything = await store.snapshot(include_deleted=True)
    assert [r.doc_id for r in everything] == [
        "contacts/a",
        "contacts/b",
        "contacts/c",
        "contacts/d",
        "deals/x",
    ]


# Chains: a document's rows are found by following prev_seq back from its record's last_seq


async def test_loading_a_document_follows_its_chain_by_primary_key_not_a_scan(
    sqlite_store: SQLiteStore, path: Path
) -> None:
    plan = query_plan(path, chains.newest_first_query(DocId("contacts/a"), "data"))
    assert "SEARCH records USING INDEX sqlite_autoindex_records_1 (doc_id=?)" in plan
    assert plan.count("SEARCH updates USING INTEGER PRIMARY KEY (rowid=?)") == 2
    assert "SCAN updates" not in plan and "SCAN records" not in plan


async def test_a_job_refused_in_a_group_commit_leaves_no_link_in_its_documents_chain(
    sqlite_store: SQLiteStore, path: Path
) -> None:
    a = Contact()
    await sqlite_store.append_many(
        [Append(DocId("contacts/a"), a.set(name="A"), a.view(), False, ANN)], idempotency_key="k"
    )
    refused = Contact()  # its update is rolled back with its savepoint, seq 2 included
    refused_update = refused.set(name="never")
    again = [Append(DocId("contacts/a"), refused_update, {"name": "never"}, False, ANN)]
    failed, seq = await asyncio.gather(
        sqlite_store.append_many(again, idempotency_key="k"),
        put(sqlite_store, "contacts/a", a, phone="1"),  # same commit, after the refused job
        return_exceptions=True,
    )
    assert isinstance(failed, StoreError) and seq == 2
    assert [e.seq for e in await sqlite_store.history(DocId("contacts/a"))] == [1, 2]
    assert view_of(await sqlite_store.load(DocId("contacts/a"))) == {"name": "A", "phone": "1"}
    with raw(path) as db:
        assert db.execute("SELECT seq, prev_seq FROM updates").fetchall() == [(1, None), (2, 1)]


async def test_two_processes_editing_one_record_keep_one_history(backend: Backend) -> None:
    async with backend.open() as server, backend.open() as cli:
        contact = Contact()
        seqs = [await put(server if n % 3 else cli, "contacts/1", contact, n=n) for n in range(30)]
        for store in (server, cli):
            assert [e.seq for e in await store.history(DocId("contacts/1"))] == seqs
            assert view_of(await store.load(DocId("contacts/1"))) == contact.view()


async def test_documents_the_writer_forgot_are_chained_from_their_record(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one head, nearly every append asks SQL for its document's head."""
    monkeypatch.setattr(writer_module, "Heads", lambda: chains.Heads(capacity=1))
    contacts = {name: Contact() for name in "abc"}
    expected: dict[str, list[int]] = {name: [] for name in contacts}
    async with SQLiteStore(path) as store:
        for n in range(12):
            name = "abcab"[n % 5]
            expected[name].append(await put(store, f"contacts/{name}", contacts[name], n=n))
        for name, contact in contacts.items():
            doc_id = DocId(f"contacts/{name}")
            assert [e.seq for e in await store.history(doc_id)] == expected[name]
            assert view_of(await store.load(doc_id)) == contact.view()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["edit", "edit", "edit", "compact", "reopen"]),
            st.integers(0, 2),
            st.booleans(),
        ),
        max_size=25,
    )
)
def test_any_mix_of_writers_compactions_and_reopens_keeps_every_documents_history(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, bool]]
) -> None:
    """Two stores on one file (a server and the CLI) edit three records, compact, reopen."""
    path = tmp_path_factory.mktemp("chains") / "store.db"

    async def run() -> None:
        contacts = [Contact() for _ in range(3)]
        seqs: list[list[int]] = [[], [], []]
        stores = [SQLiteStore(path), SQLiteStore(path)]
        for store in stores:
            await store.__aenter__()
        try:
            for n, (action, which, by_cli) in enumerate(steps):
                store = stores[by_cli]
                doc_id = DocId(f"contacts/{which}")
                if action == "edit":
                    seqs[which].append(await put(store, doc_id, contacts[which], n=n))
                elif action == "compact":
                    await store.compact(doc_id)
                    seqs[which][:-1] = []  # the snapshot takes the seq of the last row it folds
                else:
                    await store.close()
                    stores[by_cli] = SQLiteStore(path)
                    await stores[by_cli].__aenter__()
            for which, contact in enumerate(contacts):
                doc_id = DocId(f"contacts/{which}")
                for store in stores:
                    assert (await store.check()).is_ok
                    assert [e.seq for e in await store.history(doc_id)] == seqs[which]
                    loaded = await store.load(doc_id)
                    assert (loaded is None and not seqs[which]) or view_of(
                        loaded or b""
                    ) == contact.view()
        finally:
            for store in stores:
                await store.close()

    asyncio.run(run())


# Files: opening, refusing, reopening, sharing


async def test_reopening_the_store_keeps_everything(backend: Backend) -> None:
    contact = Contact()
    async with backend.open() as store:
        for n in range(5):
            await put(store, "contacts/1", contact, n=n)
        await store.add_token("admin", "admin", "hash-1")
    async with backend.open() as store:
        assert await store.cursor() == 5
        loaded = await store.load(DocId("contacts/1"))
        assert loaded is not None and view_of(loaded) == contact.view()
        record = await store.get_record(DocId("contacts/1"))
        assert record is not None and record.view == contact.view()
        assert await store.find_token("hash-1") is not None
        assert await put(store, "contacts/1", contact, n=99) == 6


async def test_opening_a_store_with_a_newer_schema_names_both_versions(backend: Backend) -> None:
    async with backend.open() as store:
        known = store.schema_version
    backend.sql(f"UPDATE schema_version SET version = {known + 1}")
    with pytest.raises(StoreError, match=rf"schema version {known + 1}.* {known} "):
        async with backend.open():
            pass


async def test_opening_a_file_that_is_not_sqlite_is_refused(path: Path) -> None:
    path.write_bytes(b"name,email\nAnn,ann@example.com\n" * 100)
    with pytest.raises(StoreError, match="not an SQLite database"):
        async with SQLiteStore(path):
            pass
    assert path.read_bytes().startswith(b"name,email")


async def test_opening_another_programs_database_is_refused_and_leaves_it_unchanged(
    path: Path,
) -> None:
    with raw(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match="not a crdt-sync store"):
        async with SQLiteStore(path):
            pass
    with raw(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_an_unknown_synchronous_setting_is_refused(path: Path) -> None:
    with pytest.raises(ConfigError, match="synchronous must be one of OFF, NORMAL, FULL, EXTRA"):
        SQLiteStore(path, synchronous="SOMETIMES")


async def test_an_empty_file_is_initialised_in_wal_mode(path: Path) -> None:
    path.touch()
    async with SQLiteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
    with raw(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_listeners_see_what_another_process_committed_in_seq_order(
    backend: Backend,
) -> None:
    async with backend.open() as server, backend.open() as cli:
        seen: list[Committed] = []
        server.add_commit_listener(seen.extend)
        imported = Contact()
        for n in range(3):
            await put(cli, "contacts/imported", imported, origin=Origin("import"), n=n)
        assert seen == []  # nothing is pushed between processes: the server looks
        assert await server.follow() == 3
        assert [(c.seq, c.doc_id, c.origin, c.foreign) for c in seen] == [
            (1, "contacts/imported", "import", True),
            (2, "contacts/imported", "import", True),
            (3, "contacts/imported", "import", True),
        ]
        assert [c.update for c in seen] == imported.updates  # the bytes the other process wrote
        assert await server.follow() == 0  # each foreign update is reported once

        # A foreign commit found by an append comes before the append's own update.
        await put(cli, "contacts/imported", imported, origin=Origin("import"), n=3)
        await put(server, "contacts/own", Contact(), origin=ANN, n=0)
        assert [(c.seq, c.foreign) for c in seen[3:]] == [(4, True), (5, False)]


async def test_interleaved_writers_on_one_store_each_see_the_whole_log_once(
    backend: Backend,
) -> None:
    async with backend.open() as one, backend.open() as two:
        seen: dict[str, list[Seq]] = {"one": [], "two": []}
        one.add_commit_listener(lambda batch: seen["one"].extend(c.seq for c in batch))
        two.add_commit_listener(lambda batch: seen["two"].extend(c.seq for c in batch))
        contacts = [Contact() for _ in range(10)]
        await asyncio.gather(
            *(
                put(one if n % 3 else two, f"contacts/{n % 10}", contacts[n % 10], n=n)
                for n in range(60)
            )
        )
        await one.follow()
        await two.follow()
        assert seen["one"] == seen["two"] == list(range(1, 61))


async def test_a_version_1_file_is_migrated_with_its_data_intact(path: Path) -> None:
    from crdt_sync.store import migrations

    ann, bob = Contact(), Contact()
    edits = [("a", ann, {"name": "Ann"}), ("b", bob, {"name": "Bob"}), ("a", ann, {"phone": "1"})]
    with raw(path) as db:  # a store as the first release wrote it: two records, interleaved edits
        db.isolation_level = None
        db.execute("PRAGMA journal_mode = WAL")
        migrations._apply(db, migrations.MIGRATIONS[0])
        for seq, (record_id, contact, fields) in enumerate(edits, start=1):
            update = contact.set(**fields)
            db.execute(
                "INSERT INTO updates (seq, doc_id, collection, data, origin, at)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                (seq, f"contacts/{record_id}", "contacts", update, ANN),
            )
            db.execute(
                "INSERT INTO records VALUES (?, 'contacts', ?, ?, 0, ?, ?, ?, 0, ?)"
                " ON CONFLICT (doc_id) DO UPDATE"
                " SET view = excluded.view, last_seq = excluded.last_seq",
                (
                    f"contacts/{record_id}",
                    record_id,
                    json.dumps(contact.view()),
                    seq,
                    seq,
                    ANN,
                    len(update),
                ),
            )
    async with SQLiteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION > 1
        assert view_of(await store.load(DocId("contacts/a"))) == {"name": "Ann", "phone": "1"}
        assert view_of(await store.load(DocId("contacts/b"))) == {"name": "Bob"}
        assert [e.seq for e in await store.history(DocId("contacts/a"))] == [1, 3]
        assert [r.doc_id for r in await store.changes_since(Seq(0), collections=["contacts"])] == [
            "contacts/b",
            "contacts/a",
        ]
        assert [e.seq for e in await store.log_since(Seq(0), collections=["contacts"])] == [1, 2, 3]
        assert await put(store, "contacts/a", ann, name="Ann B.") == 4
        assert [e.seq for e in await store.history(DocId("contacts/a"))] == [1, 3, 4]
        report = await store.compact_all()
        assert (report.documents, report.updates_before) == (1, 3)
        assert view_of(await store.load(DocId("contacts/a"))) == ann.view()
    with raw(path) as db:
        indexes = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        chain = db.execute("SELECT seq, prev_seq FROM updates ORDER BY seq").fetchall()
    assert not {"updates_by_collection", "updates_by_doc", "records_by_last_seq"} & indexes
    assert chain == [(2, None), (4, None)]  # contacts/a folded into one snapshot at seq 4


async def test_a_store_migrated_by_a_newer_version_meanwhile_is_not_written(
    sqlite_store: SQLiteStore, path: Path
) -> None:
    """A newer crdt-sync (the CLI, say) opened the file and migrated it under a running server."""
    contact = Contact()
    await put(sqlite_store, "contacts/1", contact, name="first")
    await put(sqlite_store, "contacts/1", contact, name="before")
    with raw(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"migrated from schema version {SCHEMA_VERSION} to"):
        await put(sqlite_store, "contacts/1", contact, name="after")
    with pytest.raises(StoreError, match="restart this one"):
        await sqlite_store.compact(DocId("contacts/1"))
    assert await sqlite_store.cursor() == 2
    assert [e.is_snapshot for e in await sqlite_store.history(DocId("contacts/1"))] == [
        False,
        False,
    ]
    record = await sqlite_store.get_record(DocId("contacts/1"))
    assert record is not None and record.view == {"name": "before"}


async def test_two_stores_on_one_database_hand_out_distinct_seqs(backend: Backend) -> None:
    async with backend.open() as server, backend.open() as cli:
        contact = Contact()
        seqs = await asyncio.gather(
            *(put(server if n % 2 else cli, f"contacts/{n}", contact, n=n) for n in range(100))
        )
        assert sorted(seqs) == list(range(1, 101))
        assert await cli.cursor() == await server.cursor() == 100


# Tokens and statistics


async def test_tokens_are_found_by_hash_until_revoked(store: Store) -> None:
    await store.add_token("ci", "writer", "hash-ci")
    await store.add_token("admin", "admin", "hash-admin")
    found = await store.find_token("hash-ci")
    assert found is not None and (found.name, found.role, found.revoked_at) == (
        "ci",
        "writer",
        None,
    )
    assert await store.revoke_token("ci") is True
    assert await store.revoke_token("ci") is False
    assert await store.find_token("hash-ci") is None
    assert [t.name for t in await store.list_tokens()] == ["admin", "ci"]


async def test_adding_a_token_with_a_taken_name_is_refused(store: Store) -> None:
    await store.add_token("ci", "writer", "hash-1")
    with pytest.raises(StoreError, match="name 'ci'"):
        await store.add_token("ci", "reader", "hash-2")
    assert await store.find_token("hash-2") is None


async def test_statistics_count_records_log_entries_and_compaction_debt(store: Store) -> None:
    contact = Contact()
    for n in range(3):
        await put(store, "contacts/1", contact, n=n)
    await put(store, "deals/1", Contact(), n=0)
    await store.append(DocId("deals/2"), Contact().set(n=0), view={}, is_deleted=True, origin=ANN)
    stats = await store.statistics()
    assert stats.cursor == 5
    assert stats.records == {"contacts": 1, "deals": 1}
    assert stats.deleted == {"deals": 1}
    assert (stats.log_entries, stats.compaction_debt) == (5, 2)
    assert stats.file_bytes > 0
    assert stats.extra["schema_version"] >= 1

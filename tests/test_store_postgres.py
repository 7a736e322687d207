"""The PostgreSQL store's own rules: seqs become visible as a prefix, whatever commits first.

The rest of its behaviour is the Store's, tested on both backends in test_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.rows import TupleRow

from crdt_sync.errors import ConfigError, StoreError
from crdt_sync.ids import DocId, Origin, Seq
from crdt_sync.store.postgres import PostgresStore, redacted
from crdt_sync.store.postgres.schema import SCHEMA_VERSION

from .conftest import wait_for
from .services import postgres, postgres_schema

# Every row inserted into a table with this trigger waits, inside its transaction, for the
# seconds its origin names ("delay-0.013"): a commit that is slow after taking its seq. An
# origin "gate-K" waits instead until the test lets go of advisory lock K (random per test:
# advisory locks are database-wide and other sessions share the database), so a schedule
# can be forced whatever the machine's load.
DELAY_TRIGGER = """
    CREATE FUNCTION delay_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.origin LIKE 'delay-%' THEN
            PERFORM pg_sleep(substr(NEW.origin, 7)::float);
        ELSIF NEW.origin LIKE 'gate-%' THEN
            PERFORM pg_advisory_xact_lock_shared(substr(NEW.origin, 6)::bigint);
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER delay_commit BEFORE INSERT ON {table}
        FOR EACH ROW EXECUTE FUNCTION delay_commit();
"""
# What a naive store does: a BIGSERIAL column, its value taken when the row is inserted.
NAIVE_LOG = "CREATE TABLE naive_log (seq bigserial PRIMARY KEY, origin text NOT NULL)"

Write = Callable[[float], Awaitable[None]]


@pytest.fixture
def url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def empty_update() -> bytes:
    return b"\x00\x00"


class Tailer:
    """A reader of `seq > cursor`, as every cursor of crdt-sync is."""

    def __init__(self, db: psycopg.AsyncConnection[TupleRow], table: str) -> None:
        self.db, self.table = db, table
        self.cursor = 0
        self.seen: set[int] = set()

    async def read(self) -> None:
        query = f"SELECT seq FROM {self.table} WHERE seq > %s ORDER BY seq"
        rows = await (await self.db.execute(query.encode(), (self.cursor,))).fetchall()
        self.seen.update(seq for (seq,) in rows)
        if rows:
            self.cursor = rows[-1][0]

    async def skipped(self) -> set[int]:
        """Seqs committed but never read: below a cursor the tailer had already passed."""
        await self.read()
        every = await (await self.db.execute(f"SELECT seq FROM {self.table}".encode())).fetchall()
        return {seq for (seq,) in every} - self.seen


async def tail_while_writing(url: str, table: str, writes: Sequence[Awaitable[object]]) -> set[int]:
    """Run `writes` at once while a tailer reads `table`; returns the seqs it skipped."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        tailer = Tailer(db, table)
        writing = asyncio.gather(*writes)
        while not writing.done():
            await tailer.read()
            await asyncio.sleep(0.001)
        await writing
        return await tailer.skipped()


@dataclass
class Gate:
    """Rows of origin `origin` wait in the trigger until `release()` is awaited."""

    url: str
    key: int
    db: psycopg.AsyncConnection[TupleRow]

    @property
    def origin(self) -> str:
        return f"gate-{self.key}"

    async def release(self) -> None:
        await self.db.execute("SELECT pg_advisory_unlock(%s)", (self.key,))

    def waiting(self) -> int:
        """How many sessions wait at the gate now."""
        rows = postgres(
            self.url,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = %s",
            (self.key,),
        )
        return int(str(rows[0][0]))


@contextlib.asynccontextmanager
async def gate(url: str) -> AsyncIterator[Gate]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        key = secrets.randbelow(1 << 31)
        await db.execute("SELECT pg_advisory_lock(%s)", (key,))
        yield Gate(url, key, db)


async def store_writes(url: str, nodes: int, delays: list[list[float]]) -> set[int]:
    """`nodes` stores on one schema, each appending with the given delays before commit."""
    stores = [PostgresStore(url, readers=1) for _ in range(nodes)]
    try:
        for store in stores:
            await store.__aenter__()
        postgres(url, DELAY_TRIGGER.format(table="updates"))
        writes = [
            stores[node % nodes].append(
                DocId(f"contacts/{node}-{n}"),
                empty_update(),
                view={},
                is_deleted=False,
                origin=Origin(f"delay-{delay:.4f}"),
            )
            for node, node_delays in enumerate(delays)
            for n, delay in enumerate(node_delays)
        ]
        return await tail_while_writing(url, "updates", writes)
    finally:
        for store in stores:
            await store.close()


async def naive_writes(url: str, fast: int) -> set[int]:
    """One write takes the first seq and is held before its commit while `fast` others take
    later seqs, commit and are read; then it commits. What the tailer skipped."""
    postgres(url, NAIVE_LOG)
    postgres(url, DELAY_TRIGGER.format(table="naive_log"))

    async def write(origin: str) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
            await db.execute("INSERT INTO naive_log (origin) VALUES (%s)", (origin,))

    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as db,
        gate(url) as held,
    ):
        tailer = Tailer(db, "naive_log")
        slow = asyncio.create_task(write(held.origin))
        try:
            # The column default (nextval) is taken before the BEFORE INSERT trigger waits.
            await wait_for(lambda: held.waiting() == 1, 30)
            await asyncio.gather(*(write("fast") for _ in range(fast)))
            await tailer.read()
            assert tailer.seen == set(range(2, fast + 2))
        finally:
            await held.release()
            await slow
        return await tailer.skipped()


delays_per_node = st.lists(
    st.lists(st.floats(0.0, 0.03), min_size=1, max_size=6), min_size=2, max_size=3
)


@settings(max_examples=12, deadline=None)
@given(delays_per_node)
def test_a_tailer_only_ever_sees_a_prefix_of_the_log_whatever_the_commit_delays(
    delays: list[list[float]],
) -> None:
    """Several nodes commit with random delays after taking their seqs; a reader of
    `seq > cursor` never passes a row that commits later with a smaller seq."""
    with postgres_schema() as url:
        skipped = asyncio.run(store_writes(url, len(delays), delays))
    assert skipped == set()


def test_the_same_tailer_skips_rows_of_a_plain_bigserial_log(url: str) -> None:
    """What the seq lock prevents: seq 1 is taken first but commits last, and the reader,
    having seen 2, never reads 1."""
    skipped = asyncio.run(naive_writes(url, fast=2))
    assert skipped == {1}


async def test_the_seq_lock_makes_a_later_seq_wait_for_the_slow_commit_before_it(
    url: str,
) -> None:
    """The same schedule on the store: the first commit is held after taking its seq; the
    other nodes' commits wait for it, so the tailer sees nothing until it commits."""
    stores = [PostgresStore(url, readers=1) for _ in range(3)]
    try:
        for store in stores:
            await store.__aenter__()
        postgres(url, DELAY_TRIGGER.format(table="updates"))

        def append(store: PostgresStore, doc: str, origin: str) -> Awaitable[Seq]:
            return store.append(
                DocId(doc), empty_update(), view={}, is_deleted=False, origin=Origin(origin)
            )

        async with (
            await psycopg.AsyncConnection.connect(url, autocommit=True) as db,
            gate(url) as held,
        ):
            tailer = Tailer(db, "updates")
            slow = asyncio.ensure_future(append(stores[0], "contacts/slow", held.origin))
            try:
                await wait_for(lambda: held.waiting() == 1, 30)
                fast = [
                    asyncio.ensure_future(append(store, f"contacts/{n}", "fast"))
                    for n, store in enumerate(stores[1:])
                ]
                await wait_for(lambda: len(seq_lock_waiters(url)) == 2, 30)
                await tailer.read()
                assert tailer.seen == set() and not any(f.done() for f in fast)
            finally:
                await held.release()
            assert await slow == 1
            assert sorted([await f for f in fast]) == [2, 3]
            assert await tailer.skipped() == set()
    finally:
        for store in stores:
            await store.close()


def seq_lock_waiters(url: str) -> list[tuple[object, ...]]:
    """Sessions of this schema's store waiting for a row lock (the seq lock: nothing else
    in the store locks rows) behind another session; not the gated one, which waits for an
    advisory lock."""
    return postgres(
        url,
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND wait_event IN ('transactionid', 'tuple') AND query LIKE '%%seq_head%%'"
        " AND datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0"
        " AND pid IN (SELECT pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        "   JOIN pg_namespace n ON n.oid = c.relnamespace"
        "   WHERE c.relname = 'seq_head' AND n.nspname = current_schema())",
    )


async def test_an_unreachable_database_is_a_store_error_without_the_password() -> None:
    url = "postgresql://crdt:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StoreError, match=r"^postgresql://crdt:\*\*\*@127.0.0.1:1/nowhere: ") as e:
        async with PostgresStore(url):
            pass
    assert "s3cret" not in e.value.message
    assert redacted(url) == "postgresql://crdt:***@127.0.0.1:1/nowhere"


async def test_a_schema_of_another_program_is_refused_and_left_unchanged(url: str) -> None:
    postgres(url, "CREATE TABLE invoices (id integer PRIMARY KEY)")
    with pytest.raises(StoreError, match="not a crdt-sync store.*invoices"):
        async with PostgresStore(url):
            pass
    tables = postgres(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    assert tables == [("invoices",)]


async def test_nodes_starting_together_create_the_schema_once(url: str) -> None:
    stores = [PostgresStore(url, readers=1) for _ in range(3)]
    await asyncio.gather(*(store.__aenter__() for store in stores))
    try:
        assert {store.schema_version for store in stores} == {SCHEMA_VERSION}
        assert postgres(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert len({store.identity for store in stores}) == 1
    finally:
        for store in stores:
            await store.close()


async def test_a_retried_push_on_another_node_waits_for_the_first_and_is_refused(url: str) -> None:
    """An idempotency key is unique across nodes: the second try waits, then finds it used."""
    from crdt_sync.store import Append

    async with PostgresStore(url) as one, PostgresStore(url) as two:
        batch = [Append(DocId("contacts/1"), empty_update(), {}, False, Origin("phone"))]
        results = await asyncio.gather(
            one.append_many(batch, idempotency_key="k", answer=lambda seqs: b"one"),
            two.append_many(batch, idempotency_key="k", answer=lambda seqs: b"two"),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, StoreError)]
        assert len(failures) == 1 and "already used" in failures[0].message
        assert await two.cursor() == 1
        assert await two.recall("k") in (b"one", b"two")


async def test_an_idempotency_key_with_a_nul_is_kept_and_recalled(url: str) -> None:
    """The server scopes keys by token with a NUL, which PostgreSQL text cannot hold."""
    from crdt_sync.store import Append

    async with PostgresStore(url) as store:
        batch = [Append(DocId("contacts/1"), empty_update(), {}, False, Origin("phone"))]
        await store.append_many(batch, idempotency_key="phone\x00k", answer=lambda s: b"first")
        assert await store.recall("phone\x00k") == b"first"
        assert await store.recall("phone\\0k") is None  # escaped one to one: no collision


async def test_the_writer_opens_a_new_connection_once_the_server_ended_its_session(
    url: str,
) -> None:
    """As after a node was stopped holding the seq lock and PostgreSQL ended its session: the
    batch in flight fails, and the next commit runs on a new connection."""
    async with PostgresStore(url, readers=1) as store:
        await store.append(
            DocId("contacts/1"), empty_update(), view={}, is_deleted=False, origin=Origin("a")
        )
        ended = postgres(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"crdt-sync writer {os.getpid()}",),
        )
        assert ended == [(True,)]
        with contextlib.suppress(StoreError):  # the write that finds the connection gone
            await store.append(
                DocId("contacts/2"), empty_update(), view={}, is_deleted=False, origin=Origin("b")
            )
        seq = await store.append(
            DocId("contacts/3"), empty_update(), view={}, is_deleted=False, origin=Origin("c")
        )
        assert await store.cursor() == seq
        assert [e.origin for e in await store.log_since(Seq(0))][-1] == "c"


async def test_a_lock_timeout_no_longer_than_the_idle_timeout_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="lock timeout must be longer than the idle timeout"):
        PostgresStore(url, lock_timeout_ms=5000, idle_timeout_ms=5000)

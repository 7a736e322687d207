"""The PostgreSQL store's schema as ordered migrations, and the check that a schema is ours (I/O).

Rule: as for SQLite (store/migrations.py), a released migration is never edited; a change is a
new entry at the end. The tables live in the connection's first `search_path` schema, so one
database can hold several stores (tests give each its own schema).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from ...errors import StoreError

DB = AsyncConnection[TupleRow]

# Keys of the transaction-scoped advisory locks the store takes (the two-int form, class 7361).
LOCK_CLASS = 7361
MIGRATION_LOCK = 1


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "update log, seq head, records, idempotency keys, tokens",
        (
            # The last seq handed out, one row. Its row lock is the seq lock (docs/ARCHITECTURE.md,
            # "Many nodes"): taken last in every commit, held until the commit is visible.
            """CREATE TABLE seq_head (
                is_the_one boolean PRIMARY KEY DEFAULT true CHECK (is_the_one),
                seq bigint NOT NULL
            )""",
            "INSERT INTO seq_head (seq) VALUES (0)",
            # doc_id sorts by bytes (COLLATE "C"), as in SQLite: keyset pages and the
            # "deals/" < id < "deals0" ranges of a collection depend on it.
            """CREATE TABLE updates (
                seq bigint PRIMARY KEY,
                doc_id text COLLATE "C" NOT NULL,
                collection text NOT NULL,
                data bytea NOT NULL,
                origin text NOT NULL,
                at double precision NOT NULL,
                is_snapshot boolean NOT NULL DEFAULT false
            )""",
            "CREATE INDEX updates_by_doc ON updates (doc_id, seq)",
            # view is `json`, not `jsonb`: kept as written, so its keys keep their order.
            """CREATE TABLE records (
                doc_id text COLLATE "C" PRIMARY KEY,
                collection text NOT NULL,
                record_id text NOT NULL,
                view json NOT NULL,
                is_deleted boolean NOT NULL,
                first_seq bigint NOT NULL,
                last_seq bigint NOT NULL,
                created_by text NOT NULL,
                updated_at double precision NOT NULL,
                size bigint NOT NULL
            )""",
            "CREATE INDEX records_by_last_seq ON records (last_seq)",
            """CREATE TABLE idempotency (
                key text PRIMARY KEY,
                answer bytea NOT NULL,
                at double precision NOT NULL
            )""",
            "CREATE INDEX idempotency_by_at ON idempotency (at)",
            """CREATE TABLE tokens (
                name text PRIMARY KEY,
                role text NOT NULL,
                token_hash text NOT NULL UNIQUE,
                created_at double precision NOT NULL,
                revoked_at double precision
            )""",
        ),
    ),
    Migration(
        2,
        "the store's identity",
        (
            # Names this store wherever it is reached from (the bus's stream, say).
            "CREATE TABLE store_identity (id text NOT NULL)",
            "INSERT INTO store_identity (id) VALUES (gen_random_uuid()::text)",
        ),
    ),
    Migration(
        3,
        "tokens.last_used_at; store_meta, holding the schema the store is served with",
        (
            # As SQLite's migration 5 (store/migrations.py): see served_schema.py.
            "ALTER TABLE tokens ADD COLUMN last_used_at double precision",
            "CREATE TABLE store_meta (key text PRIMARY KEY, value text NOT NULL)",
        ),
    ),
    Migration(
        4,
        "updates.door and updates.token: how a write came in, and with which token",
        (
            # As SQLite's migration 6 (ids.Origin).
            "ALTER TABLE updates ADD COLUMN door text NOT NULL DEFAULT ''",
            "ALTER TABLE updates ADD COLUMN token text NOT NULL DEFAULT ''",
        ),
    ),
    Migration(
        5,
        "nodes: one heartbeat row per serving node, for /api/sync/status",
        (
            # last_seen is the database's clock, so ages compare across hosts whatever theirs.
            """CREATE TABLE nodes (
                id text PRIMARY KEY,
                address text NOT NULL,
                started_at double precision NOT NULL,
                last_seen double precision NOT NULL,
                connections integer NOT NULL
            )""",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


async def prepare(db: DB, name: str) -> int:
    """Check that the schema is a crdt-sync store (or empty) and migrate it; its version.

    Nodes starting together migrate one at a time (an advisory lock), each seeing what the
    previous one did.

    Raises:
        StoreError: the schema holds other tables, or a newer crdt-sync's schema.
    """
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
        version = await _identify(db, name)
        for migration in MIGRATIONS:
            if migration.version > version:
                if migration.version == 1:
                    await db.execute("CREATE TABLE schema_version (version integer NOT NULL)")
                    await db.execute("INSERT INTO schema_version (version) VALUES (0)")
                for statement in migration.statements:
                    await db.execute(statement.encode())
                await db.execute("UPDATE schema_version SET version = %s", (migration.version,))
                version = migration.version
    return version


async def _identify(db: DB, name: str) -> int:
    cursor = await db.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() ORDER BY table_name"
    )
    tables = [str(table) for (table,) in await cursor.fetchall()]
    if not tables:
        return 0
    if "schema_version" not in tables:
        raise StoreError(
            f"{name}: not a crdt-sync store (a schema without a schema_version table,"
            f" it has {', '.join(tables[:5])})"
        )
    cursor = await db.execute("SELECT MAX(version) FROM schema_version")
    row = await cursor.fetchone()
    version = int(row[0] or 0) if row is not None else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{name}: the store has schema version {version}, newer than version"
            f" {SCHEMA_VERSION} that this crdt-sync knows; upgrade crdt-sync to open it"
        )
    return version

"""The schema a store is served with: recorded in the store, so every command and every later
`serve` uses it without being told, and a different one needs an explicit migration.

A store remembers its schema because its records were checked against it: a server started
with another (or with none, on a store of custom collections) would refuse every write to
records it does not know, and an archive of them would import as "refused". Switching is
`serve --schema NEW --migrate-schema`, which first checks that every stored record satisfies
NEW (`crdt-sync schema check NEW` lists the ones that do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError, SchemaMismatch
from .ids import DocId
from .schema import DEFAULT_SCHEMA, Schema, schema_from_tree, schema_to_json, view_problem

if TYPE_CHECKING:  # the store package loads aiosqlite; the CLI imports this module at start-up
    from .store.base import Store

PAGE = 1000
EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class SchemaCheck:
    records: int  # live records checked
    problems: list[str]  # every record that breaks the schema: "doc_id: why"

    @property
    def is_ok(self) -> bool:
        return not self.problems


async def served_schema(store: Store) -> Schema | None:
    """The schema recorded in the store, or None if no server recorded one yet."""
    import json

    text = await store.served_schema()
    if text is None:
        return None
    try:
        return schema_from_tree(
            json.loads(text), where=f"the schema recorded in {store_name(store)}"
        )
    except (ValueError, ConfigError) as exc:
        raise ConfigError(
            f"the schema recorded in {store_name(store)} is unreadable: {exc}"
        ) from exc


async def schema_in_use(store: Store, given: Schema | None) -> Schema:
    """What a command works with: the schema it was given, else the store's, else the CRM's."""
    if given is not None:
        return given
    return await served_schema(store) or DEFAULT_SCHEMA


async def check_records(store: Store, schema: Schema) -> SchemaCheck:
    """Every live record's view against `schema`; reads the store a page at a time."""
    problems: list[str] = []
    records = 0
    after: DocId | None = None
    while page := await store.snapshot(after=after, limit=PAGE):
        for row in page:
            records += 1
            problem = view_problem(schema, row.doc_id, row.view)
            if problem is not None:
                problems.append(problem)
        after = page[-1].doc_id
    return SchemaCheck(records, problems)


async def settle_schema(store: Store, given: Schema | None, *, migrate: bool) -> Schema:
    """The schema a server starts with, recorded in the store.

    Without `given`, the recorded one (or the CRM's, recorded now). With one that differs
    from the recorded schema, only if `migrate`; a schema is recorded only once every stored
    record satisfies it.

    Raises:
        SchemaMismatch: `given` differs and `migrate` is false, or records break the schema
            about to be recorded (the message counts them and names the first few).
    """
    recorded = await served_schema(store)
    wanted = given or recorded or DEFAULT_SCHEMA
    if recorded is not None and schema_to_json(recorded) == schema_to_json(wanted):
        return recorded
    if recorded is not None and not migrate:
        raise SchemaMismatch(
            f"{store_name(store)} is served with another schema (collections:"
            f" {', '.join(recorded.collections)}); to switch, check the records with"
            " `crdt-sync schema check FILE`, then serve with --schema FILE --migrate-schema"
        )
    check = await check_records(store, wanted)
    if not check.is_ok:
        first = "; ".join(check.problems[:EXAMPLES])
        hint = (
            "pass the --schema FILE its records were written with"
            if recorded is None
            else ("fix them, or change the new schema")
        )
        raise SchemaMismatch(
            f"{len(check.problems)} of {check.records} records in {store_name(store)} break"
            f" this schema ({first}); {hint} (`crdt-sync schema check` lists them all)"
        )
    await store.record_served_schema(schema_to_json(wanted))
    return wanted


def store_name(store: Store) -> str:
    return str(getattr(store, "path", "the store"))

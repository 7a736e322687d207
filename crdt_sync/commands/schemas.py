"""`crdt-sync schema show|check`: the schema the store is served with, and whether its records
satisfy another one before `serve --schema FILE --migrate-schema` switches to it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .basics import DEFAULT_DB, ExitCode
from .common import DbOption, JsonOption, Output, open_store

if TYPE_CHECKING:
    from ..schema import Schema
    from ..served_schema import SchemaCheck

app = typer.Typer(
    help="The store's schema: show it, check records against another.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as cli.py's app
)


@app.command("show")
def show(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """The collections and fields the store is served with (the CRM's until a server ran)."""
    from ..schema import DEFAULT_SCHEMA, schema_to_tree
    from ..served_schema import served_schema

    output = Output(as_json)

    async def work() -> Schema | None:
        async with open_store(db) as store:
            return await served_schema(store)

    recorded = output.run(work)
    schema = recorded or DEFAULT_SCHEMA
    if as_json:
        output.json({"recorded": recorded is not None, **schema_to_tree(schema)})
        return
    if recorded is None:
        output.note(f"no schema recorded in {db} yet: a server would start with the CRM's")
    for collection in schema.collections.values():
        fields = ", ".join(
            f.name + (" (required)" if f.required else "") + f" {f.kind.value}"
            for f in collection.fields.values()
        )
        output.say(f"{collection.name}: {fields}")


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The schema file to check.")],
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """List every stored record that FILE's schema would refuse; exit 12 if there is one."""
    from ..served_schema import check_records
    from .common import load_schema_option

    output = Output(as_json)
    schema = load_schema_option(file, output)

    async def work() -> SchemaCheck:
        async with open_store(db) as store:
            return await check_records(store, schema)

    report = output.run(work)
    if as_json:
        output.json({"records": report.records, "ok": report.is_ok, "problems": report.problems})
    elif report.is_ok:
        output.say(f"ok: all {report.records} records satisfy {file}")
    else:
        for problem in report.problems:
            output.say(problem)
        output.note(f"{len(report.problems)} of {report.records} records break {file}")
    if not report.is_ok:
        raise typer.Exit(int(ExitCode.SCHEMA_MISMATCH))

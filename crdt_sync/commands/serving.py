"""`crdt-sync serve`'s work, without typer: the server starts as soon as its modules are in.

`cli.serve` is the typer command (its options, `--help`, the environment); it calls `serve`
here. `crdt-sync serve` with plain options (commands/quick_serve.py) calls it directly, and
then nothing on the way to the first record synced imports typer (~15-25 ms of a restart,
benchmarks/README.md, live_bench (l)): errors still become one line and the README's exit
code, through commands/plain.py, imported only when there is an error to print.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from ..errors import CrdtSyncError
from .basics import DEFAULT_DB, BadArgument, ExitCode, StoreUnavailable, chosen_store, exit_code

if TYPE_CHECKING:
    from ..ids import DocId
    from ..schema import Schema

T = TypeVar("T")


def serve(
    db: Path = DEFAULT_DB,
    host: str = "127.0.0.1",
    port: int = 8765,
    demo: bool = False,
    schema: Path | None = None,
    log_level: str = "info",
    compact: bool = True,
    compact_rows: int = 100,
    compact_bytes: int = 64 * 1024,
    store: str | None = None,
    bus: str | None = None,
    lock_timeout: float = 15.0,
    idle_timeout: float = 5.0,
    migrate_schema: bool = False,
    cors_origin: list[str] | None = None,
) -> None:
    """What `crdt-sync serve` does (cli.serve tells its options); the defaults are cli.serve's."""
    import gc

    # What starts now lives as long as the server: the collector would scan it again and
    # again while the modules import. Off until the HTTP app is built, when
    # runtime.tune_garbage_collector freezes it all and turns the collector back on.
    gc.disable()
    import uvicorn

    from ..compactor import CompactionPolicy

    # Not server.app: the record doors serve before FastAPI is imported (server/front.py).
    from ..server.bootstrap import prepare_store
    from ..server.cors import checked_origins
    from ..server.front import WEBSOCKET_COMPRESSION, WEBSOCKET_IMPLEMENTATION, Front, Server
    from ..server.listen import bind, url_of
    from ..server.logs import redact_tokens_in_server_logs
    from ..server.runtime import Settings, opening
    from ..store.opening import redacted

    parsed = None if schema is None else _schema_from(schema)
    origins = _checked(lambda: checked_origins(cors_origin or ()))
    policy = CompactionPolicy(rows=compact_rows, bytes=compact_bytes) if compact else None
    url = _checked(lambda: chosen_store(db, store))
    if lock_timeout <= idle_timeout:  # checked here too: the store opens after the port
        _checked(lambda: _refuse_timeouts(lock_timeout, idle_timeout))
    settings = Settings(
        db_path=db,
        store_url=url,
        bus_url=bus,
        lock_timeout=lock_timeout,
        idle_timeout=idle_timeout,
        tune_gc=True,
        cors_origins=origins,
        compaction=policy,
    )
    front = Front(settings)
    config = uvicorn.Config(
        front,
        log_level=log_level,
        ws=WEBSOCKET_IMPLEMENTATION,
        ws_per_message_deflate=WEBSOCKET_COMPRESSION,
        ws_max_size=2 << 20,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        timeout_graceful_shutdown=10,  # a stuck request must not keep the server up
    )
    redact_tokens_in_server_logs()  # uvicorn.Config configured its loggers just now
    server = Server(config)

    async def serving(sock: socket.socket) -> None:
        # One event loop and one open store from the first admin token to the last request:
        # opening the store, closing it and opening it again in the lifespan was ~6-9 ms of
        # a restart's first record synced (benchmarks/README.md, live_bench (l)).
        async with AsyncExitStack() as stack:
            try:  # plain.run's errors: one line and the exit code, before anything serves
                store = await stack.enter_async_context(opening(settings))
                prepared = await prepare_store(
                    store, parsed, demo=demo, migrate_schema=migrate_schema
                )
            except CrdtSyncError as exc:
                _fail(exc.message, exit_code(exc))
            if prepared.admin_token is not None:
                _say("Created the first admin token (shown once; keep it safe):", err=True)
                _say(prepared.admin_token)
            if demo:
                _say_seeded(prepared.seeded)
            where = db if url is None else redacted(url)
            _say(f"crdt-sync serving {where} on {url_of(sock)}", err=True)
            front.settings = replace(settings, address=url_of(sock), schema=prepared.schema)
            front.store = store
            await server.serve(sockets=[sock])  # ends the admin change feeds first

    with ExitStack() as held:
        # Bound first: a taken port must not leave a new, empty store file behind.
        sock = held.enter_context(_checked(lambda: bind(host, port)))
        if url is None:  # nodes on PostgreSQL are many by design
            _checked(lambda: _claim(db, held))
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # as uvicorn's
            runner.run(serving(sock))


def _refuse_timeouts(lock_timeout: float, idle_timeout: float) -> None:
    raise BadArgument(
        f"--lock-timeout ({lock_timeout:g} s) must be longer than --idle-timeout"
        f" ({idle_timeout:g} s): a stopped node's seq lock is freed only after the idle timeout"
    )


def _say_seeded(seeded: list[DocId]) -> None:
    """What --demo put in the store, so the walkthrough's ids are ones that exist."""
    if not seeded:
        _say("Demo records: already there from an earlier --demo.", err=True)
        return
    _say(f"Seeded {len(seeded)} demo records:", err=True)
    by_collection: dict[str, list[str]] = {}
    for doc_id in seeded:
        by_collection.setdefault(doc_id.partition("/")[0], []).append(doc_id)
    for collection, doc_ids in by_collection.items():
        _say(f"  {collection:<9} {', '.join(doc_ids)}", err=True)


def _claim(db: Path, held: ExitStack) -> None:
    """Refuse a file that is not a store, untouched; then keep other servers off it."""
    from ..errors import StoreError, StoreInUse
    from ..store.files import hold_for_serving, require_store

    try:
        if db.is_file() and db.stat().st_size:
            require_store(db)
        held.enter_context(hold_for_serving(db))
    except StoreInUse:
        raise
    except StoreError as exc:
        raise StoreUnavailable(exc.message) from None


def _say(message: str, *, err: bool = False) -> None:
    """A line on stdout (or stderr), as typer.echo prints a str."""
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


def _fail(message: str, code: ExitCode) -> NoReturn:
    from .plain import fail  # typer, to print the error as every command does

    fail(message, code)


def _checked(work: Callable[[], T]) -> T:
    """plain.run_checked: `work()`; a CrdtSyncError becomes one line and its exit code."""
    try:
        return work()
    except CrdtSyncError as exc:
        _fail(exc.message, exit_code(exc))


def _schema_from(path: Path) -> Schema:
    """plain.schema_from: a schema file that does not load is a usage error."""
    from ..schema import load_schema

    try:
        return load_schema(path)
    except CrdtSyncError as exc:
        _fail(exc.message, ExitCode.USAGE)

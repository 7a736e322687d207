"""What a running server holds, without its HTTP app: store, engine, hub, their jobs (server layer).

`running(settings)` opens the store and everything the record doors (`/yjs`, `/ws`) serve
from, and closes it all in order. No FastAPI or pydantic here, so `crdt-sync serve` can open
these doors before the HTTP app is built (front.py); `create_app` runs the same context in
its lifespan when it owns the store itself (tests, embedding).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..bus import CommitBus
from ..compactor import CompactionPolicy, Compactor
from ..engine import Engine, Limits
from ..errors import CrdtSyncError
from ..ids import DocId
from ..protocol.close import CloseCode
from ..schema import DEFAULT_SCHEMA, Schema
from ..store import Store, store_at
from .admission import Admission
from .live import Hub
from .nodes import ThisNode, commit_news, heartbeat

if TYPE_CHECKING:
    from .mux import AwarenessRooms
    from .yjs import Room

LOG = logging.getLogger("crdt_sync.server.app")


@dataclass(frozen=True, slots=True)
class Settings:
    db_path: Path = Path("crdt-sync.db")
    store_url: str | None = None  # a PostgreSQL store (postgresql://...) instead of db_path
    bus_url: str | None = None  # Redis Streams between nodes (redis://...): see server/bus.py
    # PostgreSQL only (docs/NODES.md): how long a commit waits for the seq lock, and how long
    # a node's transaction may idle (the node stopped) before the server ends it.
    lock_timeout: float = 15.0
    idle_timeout: float = 5.0
    address: str = ""  # where this node serves (http://host:port), for /api/sync/status
    heartbeat_interval: float = 1.0  # a shared store's row for this node (server/nodes.py)
    schema: Schema = DEFAULT_SCHEMA
    limits: Limits = Limits()
    cache_size: int = 2048
    max_connections: int = 10_000
    # New websocket connections admitted per second, sustained (server/admission.py): above
    # what the server can join (~1,200/s on one core, a join ~1 ms of CPU), so the bucket
    # refuses storms, not a load it could serve (at 500/s it refused 2,220 of 5,000 joins
    # that it had the time for: benchmarks/README.md, live_bench (c)).
    admission_rate: float = 2000.0
    admission_burst: float = 1000.0
    revocation_interval: float = 1.0
    follow_interval: float = 0.5  # how often to look for updates other processes committed
    # Tune the process's garbage collector at startup: for a process that is the server
    # (`crdt-sync serve`), not for one that merely embeds an app (a test run, say).
    tune_gc: bool = False
    synchronous: str = "FULL"
    max_body_bytes: int = 16 << 20  # REST request bodies; larger ones are answered 413
    cors_origins: tuple[str, ...] = ()  # browser apps on these origins may call the API
    # Background compaction (compactor.py); None: off. `crdt-sync serve` turns it on with the
    # defaults unless told otherwise; an app embedded elsewhere (a test) opts in.
    compaction: CompactionPolicy | None = None


@dataclass(eq=False, slots=True)
class Runtime:
    """The running server's parts, as the doors and the HTTP app's handlers reach them."""

    node: ThisNode
    store: Store
    compactor: Compactor | None
    bus: CommitBus | None
    engine: Engine
    hub: Hub
    rooms: dict[DocId, Room] = field(default_factory=dict)  # /yjs awareness, per record
    mux_rooms: AwarenessRooms = field(default_factory=dict)  # /ws awareness, per document


@contextlib.asynccontextmanager
async def running(settings: Settings, opened: Store | None = None) -> AsyncIterator[Runtime]:
    """Open the store, start the engine, the hub and their jobs; on exit close every live
    connection (1001), let queued work settle and close the store.

    With `opened` (a store already open: `crdt-sync serve` settled its schema and tokens in
    it first), serve from that one and leave it open for its owner to close.
    """
    node = ThisNode(settings.address)
    async with (
        (contextlib.nullcontext(opened) if opened is not None else opening(settings)) as store,
        compacting(store, settings.compaction) as compactor,
        commit_news(store, settings.bus_url, node) as bus,
    ):
        engine = Engine(
            store, settings.schema, cache_size=settings.cache_size, limits=settings.limits
        )
        admission = Admission(
            settings.max_connections, settings.admission_rate, settings.admission_burst
        )
        hub = Hub(store, engine, admission)
        runtime = Runtime(node, store, compactor, bus, engine, hub)
        # Every append notices other processes' commits (`crdt-sync import`) too; following
        # bounds how long they wait when nobody writes here.
        jobs = [
            asyncio.create_task(
                repeat(settings.revocation_interval, hub.sweep_revoked, "revocation sweep")
            ),
            asyncio.create_task(
                repeat(settings.follow_interval, store.follow, "following other processes")
            ),
        ]
        try:
            async with heartbeat(
                store, node, lambda: len(hub.connections), settings.heartbeat_interval
            ):
                yield runtime
        finally:
            for job in jobs:
                job.cancel()
            hub.close_all(CloseCode.GOING_AWAY, "server shutting down")
            for job in jobs:
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            await engine.settle()  # view repairs still queued, before the store closes


def opening(settings: Settings) -> contextlib.AbstractAsyncContextManager[Store]:
    """The store `settings` name, opened when entered."""
    return store_at(
        settings.store_url or settings.db_path,
        synchronous=settings.synchronous,
        lock_timeout=settings.lock_timeout,
        idle_timeout=settings.idle_timeout,
    )


def compacting(
    store: Store, policy: CompactionPolicy | None
) -> contextlib.AbstractAsyncContextManager[Compactor | None]:
    """The background compactor, or nothing when compaction is off."""
    return Compactor(store, policy) if policy is not None else contextlib.nullcontext(None)


async def repeat(interval: float, job: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `job` every `interval` seconds until cancelled.

    A CrdtSyncError (a busy or failing disk) is logged, naming `what`; the next round tries again.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except CrdtSyncError as exc:
            LOG.warning("%s failed; retrying: %s", what, exc)


def tune_garbage_collector() -> None:
    """Let the cyclic collector stop scanning what lives as long as the server does.

    Each update allocates a few dozen short-lived objects (frames, futures waiting on a
    commit); with the default thresholds the collector ran ~450 times per 3,000 updates and
    took ~20% of the event loop's time, mostly rescanning objects made at startup. Those are
    frozen (never scanned again) and young collections run every 10,000 allocations; the
    collector is on again if startup turned it off.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    gc.enable()

"""What the server counts since start, and the one snapshot `/api/sync/status` and `/metrics`
both report from (server layer)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..compactor import Compactor, CompactorStatistics
from .live import Hub


@dataclass(slots=True)
class DeviceSync:
    """The last REST pull of one device (websocket clients are tracked by their connection)."""

    device: str  # the token's name
    client_id: str | None
    cursor: int  # log cursor the last answer covered
    last_sync: float
    pulls: int = 0


@dataclass(slots=True)
class Telemetry:
    started_at: float = field(default_factory=time.time)
    errors: Counter[int] = field(default_factory=Counter)  # HTTP answers >= 400, by status
    pulls: Counter[str] = field(default_factory=Counter)  # "initial", "incremental"
    pushes: int = 0
    # By client id, least recently seen first. Any token holder can make up client ids, so
    # only the `max_devices` most recently seen are kept.
    devices: dict[str, DeviceSync] = field(default_factory=dict)
    max_devices: int = 1000

    def note_pull(self, kind: str, device: str, origin: str, cursor: int) -> None:
        """A REST pull by token `device`, identified as `origin` (its client id, or `device`)."""
        self.pulls[kind] += 1
        seen = self.devices.pop(origin, None)
        if seen is None:
            client_id = origin if origin != device else None
            seen = DeviceSync(device, client_id, cursor, time.time())
        self.devices[origin] = seen  # last: the most recently seen
        seen.cursor, seen.last_sync = cursor, time.time()
        seen.pulls += 1
        while len(self.devices) > self.max_devices:
            del self.devices[next(iter(self.devices))]


class CountErrors:
    """ASGI middleware: count every HTTP answer of status >= 400 (and unhandled errors as 500)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400:
                    self.telemetry.errors[message["status"]] += 1
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not started:  # answered 500 by the outermost error middleware
                self.telemetry.errors[500] += 1
            raise


@dataclass(frozen=True, slots=True)
class Figures:
    """Everything status and metrics report, read at one moment."""

    cursor: int
    records: dict[str, int]
    deleted: dict[str, int]
    log_entries: int
    compaction_debt: int
    file_bytes: int
    store_commits: int
    connections: dict[str, int]  # open websocket connections by endpoint ("ws", "yjs")
    queue_depth: int  # items waiting in every connection's outgoing queue
    queue_depth_max: int
    writes: int
    refused_writes: dict[str, int]  # by error code
    errors: dict[int, int]  # HTTP answers by status
    refused_connections: int
    pulls: dict[str, int]
    pushes: int
    uptime: float
    compactor: CompactorStatistics | None  # None: background compaction is off


async def gather(
    hub: Hub, telemetry: Telemetry, collections: list[str], compactor: Compactor | None = None
) -> Figures:
    stats = await hub.store.statistics()
    depths = [c.subscriber.queue.qsize() for c in hub.connections]
    endpoints: Counter[str] = Counter(c.endpoint for c in hub.connections)
    refused: Counter[str] = Counter()
    for key, count in hub.engine.counters.items():
        if key.startswith("refused:"):
            refused[_code_of(key.removeprefix("refused:"))] += count
    return Figures(
        cursor=int(stats.cursor),
        records={name: stats.records.get(name, 0) for name in collections},
        deleted={name: stats.deleted.get(name, 0) for name in collections},
        log_entries=stats.log_entries,
        compaction_debt=stats.compaction_debt,
        file_bytes=stats.file_bytes,
        store_commits=int(stats.extra.get("commits", 0)),
        connections=dict(endpoints),
        queue_depth=sum(depths),
        queue_depth_max=max(depths, default=0),
        writes=hub.engine.counters["writes"],
        refused_writes=dict(refused),
        errors=dict(telemetry.errors),
        refused_connections=hub.admission.refused,
        pulls=dict(telemetry.pulls),
        pushes=telemetry.pushes,
        uptime=time.time() - telemetry.started_at,
        compactor=compactor.statistics() if compactor is not None else None,
    )


def _code_of(class_name: str) -> str:
    """`SchemaViolation` -> `schema_violation`: the error's stable code."""
    from .. import errors

    cls: Any = getattr(errors, class_name, None)
    return str(cls.code) if cls is not None else class_name

"""`GET /api/sync/status` (JSON) and `GET /metrics` (Prometheus): one set of figures, two shapes.

The Prometheus side uses prometheus_client with a registry per app (tests run several apps in
one process) and a collector that reports the figures gathered for the scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..compactor import CompactorStatistics
from ..store.base import NodeRoster, NodeRow
from .access import AdminOnly, Authenticated
from .live import Hub
from .nodes import ThisNode, is_alive
from .telemetry import Figures, Telemetry, gather

router = APIRouter()


async def figures_of(request: Request) -> Figures:
    hub: Hub = request.app.state.hub
    telemetry: Telemetry = request.app.state.telemetry
    compactor = request.app.state.compactor  # None when compaction is off
    return await gather(hub, telemetry, list(hub.engine.schema.collections), compactor)


@router.get("/api/sync/status", tags=["sync"])
async def sync_status(request: Request, who: Authenticated) -> dict[str, Any]:
    """The server's sync state: cursor, records per collection, clients, queues, refusals."""
    hub: Hub = request.app.state.hub
    telemetry: Telemetry = request.app.state.telemetry
    figures = await figures_of(request)
    return {
        "node": request.app.state.node.id,
        "nodes": await nodes_json(request),
        "cursor": figures.cursor,
        "timestamp": figures.cursor + 1,
        "collections": {
            name: {"records": figures.records[name], "deleted": figures.deleted[name]}
            for name in figures.records
        },
        "log_entries": figures.log_entries,
        "compaction_debt": figures.compaction_debt,
        "compactor": compactor_json(figures.compactor),
        "connections": len(hub.connections),
        "clients": [
            {
                "device": c.principal.name,
                "client_id": c.client_id or None,
                "endpoint": c.endpoint,
                "cursor": c.cursor,
                "last_sync": c.last_sync,
                "queue_depth": c.subscriber.queue.qsize(),
            }
            for c in sorted(hub.connections, key=lambda c: c.principal.name)
        ],
        "rest_devices": [
            {
                "device": d.device,
                "client_id": d.client_id,
                "cursor": d.cursor,
                "last_sync": d.last_sync,
                "pulls": d.pulls,
            }
            for d in reversed(telemetry.devices.values())  # the most recently seen first
        ],
        "queues": {"outgoing_total": figures.queue_depth, "outgoing_max": figures.queue_depth_max},
        "writes": figures.writes,
        "refused_writes": figures.refused_writes,
        "errors": {str(status): count for status, count in sorted(figures.errors.items())},
        "refused_connections": figures.refused_connections,
        "pulls": figures.pulls,
        "pushes": figures.pushes,
        "counters": dict(hub.engine.counters),
        "uptime": figures.uptime,
        "time": time.time(),
    }


async def nodes_json(request: Request) -> list[dict[str, Any]]:
    """Every node of the deployment: the shared store's roster, or this process alone."""
    hub: Hub = request.app.state.hub
    node: ThisNode = request.app.state.node
    interval = request.app.state.settings.heartbeat_interval
    if isinstance(hub.store, NodeRoster):
        rows = await hub.store.list_nodes()
    else:  # one process on its SQLite file
        now = time.time()
        rows = [NodeRow(node.id, node.address, node.started_at, now, len(hub.connections), 0.0)]
    return [
        {
            "id": row.id,
            "address": row.address or None,
            "started_at": row.started_at,
            "last_seen": row.last_seen,
            "seconds_since_seen": round(row.age, 3),
            "alive": is_alive(row, interval),
            # This node's own figure is live; the others' are as of their last heartbeat.
            "connections": len(hub.connections) if row.id == node.id else row.connections,
            "this": row.id == node.id,
        }
        for row in rows
    ]


def compactor_json(statistics: CompactorStatistics | None) -> dict[str, Any] | None:
    """What the background compactor knows and did; None when it is off (`serve --no-compact`)."""
    if statistics is None:
        return None
    return {
        "thresholds": {"rows": statistics.rows_threshold, "bytes": statistics.bytes_threshold},
        "scanning": statistics.is_scanning,
        "due": statistics.due,
        "tracked_rows": statistics.tracked_rows,
        "compactions": statistics.compactions,
        "rows_folded": statistics.rows_folded,
        "bytes_before": statistics.bytes_before,
        "bytes_after": statistics.bytes_after,
        "steps": statistics.steps,
        "current": (
            None
            if (current := statistics.current) is None
            else {
                "record": current.doc_id,
                "rows_folded": current.rows_folded,
                "rows": current.rows,
            }
        ),
        "skipped": statistics.skipped,
        "failures": statistics.failures,
        "last_compaction_at": statistics.last_compaction_at,
    }


class FiguresCollector(Collector):
    """Reports the `figures` set just before each `generate_latest` (no await in between)."""

    def __init__(self) -> None:
        self.figures: Figures | None = None

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        if f is None:
            return
        yield _gauge("crdt_sync_cursor", "Last sequence number in the update log.", f.cursor)
        records = GaugeMetricFamily(
            "crdt_sync_records", "Records per collection.", labels=["collection", "state"]
        )
        for name, count in f.records.items():
            records.add_metric([name, "live"], count)
            records.add_metric([name, "deleted"], f.deleted[name])
        yield records
        yield _gauge("crdt_sync_log_entries", "Rows in the update log.", f.log_entries)
        yield _gauge(
            "crdt_sync_compaction_debt", "Log rows compaction would fold away.", f.compaction_debt
        )
        if f.compactor is not None:
            yield from _compactor_metrics(f.compactor)
        yield _gauge("crdt_sync_store_bytes", "Size of the store file and its WAL.", f.file_bytes)
        connections = GaugeMetricFamily(
            "crdt_sync_connections", "Open websocket connections.", labels=["endpoint"]
        )
        for endpoint in ("ws", "yjs"):
            connections.add_metric([endpoint], f.connections.get(endpoint, 0))
        yield connections
        yield _gauge(
            "crdt_sync_queue_depth",
            "Items waiting in outgoing queues, all connections.",
            f.queue_depth,
        )
        yield _gauge(
            "crdt_sync_queue_depth_max",
            "Longest outgoing queue of one connection.",
            f.queue_depth_max,
        )
        yield _counter("crdt_sync_writes", "Updates committed since start.", f.writes)
        yield _counter(
            "crdt_sync_store_commits", "Store transactions since start.", f.store_commits
        )
        yield _labelled_counter(
            "crdt_sync_refused_writes", "Writes refused since start.", "code", f.refused_writes
        )
        yield _labelled_counter(
            "crdt_sync_http_errors",
            "HTTP answers >= 400 since start.",
            "status",
            {str(k): v for k, v in f.errors.items()},
        )
        yield _counter(
            "crdt_sync_refused_connections", "Websocket connections refused.", f.refused_connections
        )
        yield _labelled_counter("crdt_sync_pulls", "REST pulls since start.", "kind", f.pulls)
        yield _counter("crdt_sync_pushes", "REST pushes since start.", f.pushes)
        yield _gauge("crdt_sync_uptime_seconds", "Seconds since the server started.", f.uptime)


def _compactor_metrics(c: CompactorStatistics) -> Iterator[Metric]:
    yield _gauge("crdt_sync_compactor_due", "Records waiting to be compacted.", c.due)
    yield _counter("crdt_sync_compactions", "Records compacted in the background.", c.compactions)
    yield _counter(
        "crdt_sync_compaction_rows_folded", "Log rows background compaction removed.", c.rows_folded
    )
    yield _counter(
        "crdt_sync_compaction_bytes_saved",
        "Bytes of log background compaction removed.",
        c.bytes_before - c.bytes_after,
    )
    yield _counter(
        "crdt_sync_compaction_failures", "Background compactions that failed.", c.failures
    )
    yield _counter(
        "crdt_sync_compaction_steps",
        "Compaction transactions committed (a long log takes several).",
        c.steps,
    )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _labelled_counter(
    name: str, documentation: str, label: str, values: dict[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, count in sorted(values.items()):
        family.add_metric([key], count)
    return family


def metrics_registry() -> tuple[CollectorRegistry, FiguresCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = FiguresCollector()
    registry.register(collector)
    return registry, collector


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(request: Request, who: AdminOnly) -> Response:
    """The status figures in the Prometheus text format (admin token, like every ops route)."""
    registry, collector = request.app.state.metrics
    collector.figures = await figures_of(request)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

"""Helpers for the replica tests: replicas on a running server, admin edits, stored views."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crdt_sync.client import Backoff, Replica
from crdt_sync.engine import Engine
from crdt_sync.ids import DocId, Origin
from crdt_sync.store import SQLiteStore

from .conftest import RunningServer

FAST_BACKOFF = dict(initial=0.05, maximum=0.5)


def replica_on(server: RunningServer | str, path: Path, token: str, **options: Any) -> Replica:
    url = server if isinstance(server, str) else server.http
    options.setdefault("backoff", Backoff(**FAST_BACKOFF))  # type: ignore[arg-type]
    return Replica(path, server=url, token=token, **options)


async def admin_patch(
    server: RunningServer, doc_id: str, patch: Mapping[str, Any], *, creating: bool = False
) -> None:
    """An admin's edit, through the engine's one write path (what REST CRUD calls)."""
    engine: Engine = server.app.state.engine  # type: ignore[attr-defined]
    await engine.patch(DocId(doc_id), patch, origin=Origin("admin"), creating=creating)


async def admin_delete(server: RunningServer, doc_id: str) -> None:
    engine: Engine = server.app.state.engine  # type: ignore[attr-defined]
    await engine.delete(DocId(doc_id), origin=Origin("admin"))


async def server_view(server: RunningServer, doc_id: str) -> dict[str, Any] | None:
    """The record as the server's store holds it; None if absent or deleted."""
    engine: Engine = server.app.state.engine  # type: ignore[attr-defined]
    view, deleted = await engine.view(DocId(doc_id))
    return None if deleted or all(v is None for k, v in view.items() if k != "id") else view


async def stored_rows(db_path: Path) -> dict[str, tuple[dict[str, Any], bool]]:
    """Every record in a server store file: doc id -> (view, is_deleted)."""
    out: dict[str, tuple[dict[str, Any], bool]] = {}
    async with SQLiteStore(db_path) as store:
        after: DocId | None = None
        while page := await store.snapshot(after=after, limit=1000, include_deleted=True):
            for row in page:
                out[row.doc_id] = (dict(row.view), row.is_deleted)
            after = page[-1].doc_id
    return out

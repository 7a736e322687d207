"""Replica: an offline-first copy of the CRM's records in a local SQLite file (client layer).

Every change works offline: it is made on the local record document (with the server's own
`record.py` code) and queued, in one transaction. `sync()` makes one pass over `/ws` (catch-up
from the replica's cursor, push of the queue, acks dequeue); `live()` keeps a connection,
reconnecting with capped exponential backoff and jitter, and falls back to the REST sync API
(`/api/sync/*`) when websockets are refused, going back to them when they work again.

    async with Replica("phone.db", server="http://127.0.0.1:8765", token=token) as replica:
        await replica.create("contacts", {"name": "Ada"}, id="ada")
        await replica.sync()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ..errors import AuthError, ConfigError, CrdtSyncError, ProtocolError, WebsocketUnavailable
from ..ids import DocId, make_doc_id
from ..record import Records, View
from ..schema import DEFAULT_SCHEMA, Schema
from .backoff import Backoff
from .context import SyncContext
from .intent import Intent, Operation
from .local import LocalStore, QueuedChange
from .mux import MuxLink
from .rest import RestLink
from .status import StatusBoard, SyncState, SyncStatus


class Replica:
    """An offline-first replica; use as ``async with Replica(path, ...) as replica:``.

    Args:
        path: the local SQLite file (created if missing); it holds records, queue and cursor.
        server: the server's base URL (``http://host:port``); None for a replica that only
            works offline until one is given.
        token: a device (or admin) token for that server.
        schema: the collections; must match the server's for changes to be accepted.
        backoff: reconnect delays (capped exponential with jitter by default).
        rest_interval: seconds between REST passes while websockets are unavailable.
        websocket_retry: seconds on REST before websockets are tried again.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        server: str | None = None,
        token: str | None = None,
        schema: Schema = DEFAULT_SCHEMA,
        backoff: Backoff | None = None,
        rest_interval: float = 5.0,
        websocket_retry: float = 30.0,
        synchronous: str = "FULL",
    ) -> None:
        self.path = Path(path)
        self.server = server
        self.token = token
        self.schema = schema
        self.records = Records(schema)
        self.backoff = backoff or Backoff()
        self.rest_interval = rest_interval
        self.websocket_retry = websocket_retry
        # A fresh Yjs client id per open: two processes on one file never share one.
        self._local = LocalStore(
            self.path, self.records, random.getrandbits(32), synchronous=synchronous
        )
        self._board = StatusBoard(SyncStatus())
        self._context: SyncContext | None = None
        self._live_task: asyncio.Task[None] | None = None
        self._use_rest_until = 0.0

    async def __aenter__(self) -> Self:
        await self._local.__aenter__()
        try:
            meta = await self._local.meta()
            self._context = SyncContext(
                self._local, self._board, meta["replica_id"], tuple(self.schema.collections)
            )
            last = meta.get("last_sync_at")
            self._board.update(last_sync_at=float(last) if last else None)
            await self._context.refresh()
        except BaseException:
            await self._local.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_live()
        await self._local.__aexit__(exc_type, exc, tb)

    @property
    def replica_id(self) -> str:
        return self._ctx.replica_id

    @property
    def _ctx(self) -> SyncContext:
        if self._context is None:
            raise CrdtSyncError(f"{self.path}: the replica is not open (use 'async with')")
        return self._context

    # -- records, all offline -----------------------------------------------------------------

    async def create(
        self, collection: str, fields: Mapping[str, Any], *, id: str | None = None
    ) -> View:
        """Create a record (with a fresh id unless `id` is given) and queue it; its view.

        Creating an id that exists updates it, as the server's REST API does.

        Raises:
            SchemaViolation / UnknownCollection: nothing is written.
            RecordNotFound: the record was deleted (deletes are final).
        """
        record_id = id if id is not None else secrets.token_urlsafe(12)
        return await self._change(collection, record_id, Intent(Operation.CREATE, dict(fields)))

    async def update(self, collection: str, id: str, patch: Mapping[str, Any]) -> View:
        """Change some fields (None clears an optional one); raises RecordNotFound if absent."""
        return await self._change(collection, id, Intent(Operation.UPDATE, dict(patch)))

    async def delete(self, collection: str, id: str) -> None:
        """Tombstone the record; raises RecordNotFound if this replica does not hold it."""
        await self._change(collection, id, Intent(Operation.DELETE))

    async def get(self, collection: str, id: str) -> View | None:
        """The record's view, or None if absent or deleted."""
        found = await self._local.get(self._doc_id(collection, id))
        return None if found is None or found[1] else found[0]

    async def query(
        self,
        collection: str,
        where: Mapping[str, Any] | None = None,
        *,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> list[View]:
        """Records of `collection` whose fields equal `where`'s values, by id."""
        spec = self.schema.collection(collection)
        for name in where or {}:
            spec.field(name, collection)
        return await self._local.query(
            collection, dict(where or {}), include_deleted=include_deleted, limit=limit
        )

    async def pending(self, *, limit: int = 1000) -> list[QueuedChange]:
        """Local changes not yet acknowledged, oldest first."""
        return await self._local.queued("pending", limit=limit)

    async def rejected(self, *, limit: int = 1000) -> list[QueuedChange]:
        """Changes the server refused, with its code and reason; they are never resent."""
        return await self._local.queued("rejected", limit=limit)

    async def forget_rejected(self) -> int:
        count = await self._local.forget_rejected()
        await self._ctx.refresh()
        return count

    async def _change(self, collection: str, record_id: str, intent: Intent) -> View:
        change = await self._local.change(self._doc_id(collection, record_id), intent)
        if change.cseq is not None:
            await self._ctx.refresh()
            self._ctx.wake.set()
        return change.view

    def _doc_id(self, collection: str, record_id: str) -> DocId:
        doc_id = make_doc_id(collection, record_id)
        self.schema.collection(collection, doc_id)
        return doc_id

    # -- status -------------------------------------------------------------------------------

    @property
    def status(self) -> SyncStatus:
        return self._board.status

    def watch(self) -> AsyncIterator[SyncStatus]:
        """The current status, then every change of it, as an async stream."""
        return self._board.changes()

    async def wait_status(
        self, condition: Callable[[SyncStatus], bool], timeout: float | None = None
    ) -> SyncStatus:
        """Wait until the status meets `condition`; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            async for status in self.watch():
                if condition(status):
                    return status
        raise AssertionError("unreachable: the status stream does not end")

    async def wait_synced(self, timeout: float | None = None) -> SyncStatus:
        return await self.wait_status(
            lambda s: s.state is SyncState.SYNCED and s.pending == 0, timeout
        )

    # -- sync ---------------------------------------------------------------------------------

    async def sync(self) -> SyncStatus:
        """One pass: catch up from the cursor, push the queue, wait for every answer.

        Over `/ws`, or the REST API if the websocket upgrade is refused. While `live()` runs,
        waits for the live connection to be synced instead.

        Raises:
            ConnectionFailed: the server could not be reached or the connection dropped.
            AuthError: the token was refused.
            ProtocolError: the server broke the protocol.
            ConfigError: no server or token was given.
        """
        if self._live_task is not None:
            return await self.wait_synced()
        server, token = self._server_and_token()
        try:
            try:
                await MuxLink(self._ctx, server, token, live=False).run()
            except WebsocketUnavailable as exc:
                self._board.update(last_error=exc.message)
                await RestLink(self._ctx, server, token, live=False).run()
        except CrdtSyncError as exc:
            await self._ctx.refresh()  # what arrived before the failure is kept: show it
            self._board.update(state=SyncState.ERROR, last_error=exc.message)
            raise
        except BaseException:
            self._board.update(state=SyncState.OFFLINE)
            raise
        synced = self.status  # the pass is complete; the connection is closed again
        self._board.update(state=SyncState.OFFLINE)
        return synced

    @contextlib.asynccontextmanager
    async def live(self) -> AsyncIterator[Self]:
        """Keep the replica synced while the block runs: live updates both ways, reconnects.

        A server that says not to retry (a refused or revoked token, 4401/4403; a protocol
        error, 4400) stops it: the status turns to error with the reason, and `watch()`,
        `wait_status()`, `wait_synced()` and `sync()` raise that error (AuthError,
        Forbidden, ProtocolError) instead of waiting for a sync that will not come.
        """
        self._server_and_token()
        if self._live_task is not None:
            raise ConfigError(f"{self.path}: live sync is already running")
        self._board.resume()
        self._live_task = asyncio.create_task(self._run_live())
        try:
            yield self
        finally:
            await self._stop_live()

    async def _stop_live(self) -> None:
        task, self._live_task = self._live_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._board.update(state=SyncState.OFFLINE)

    async def _run_live(self) -> None:
        server, token = self._server_and_token()
        loop = asyncio.get_running_loop()
        while True:
            on_rest = loop.time() < self._use_rest_until
            link: MuxLink | RestLink = (
                RestLink(
                    self._ctx,
                    server,
                    token,
                    live=True,
                    interval=self.rest_interval,
                    until=self._use_rest_until,
                )
                if on_rest
                else MuxLink(self._ctx, server, token, live=True)
            )
            try:
                await link.run()
                continue  # a REST stint ended: time to try websockets again
            except WebsocketUnavailable as exc:
                self._use_rest_until = loop.time() + self.websocket_retry
                self._board.update(last_error=exc.message)
                continue
            except (AuthError, ProtocolError) as exc:
                # The server said do not retry (4401, 4403, 4400, 1008), or broke the protocol:
                # the same attempt would get the same answer, so retrying only hammers it.
                self._board.update(state=SyncState.ERROR, last_error=exc.message)
                self._board.stop(exc)
                return
            except CrdtSyncError as exc:
                self._board.update(state=SyncState.ERROR, last_error=exc.message)
            if link.reached_live:
                self.backoff.reset()
            await asyncio.sleep(self.backoff.next_delay())

    def _server_and_token(self) -> tuple[str, str]:
        if not self.server or not self.token:
            raise ConfigError(
                f"{self.path}: syncing needs a server URL and a token (--server, --token)"
            )
        return self.server, self.token


__all__ = ["Replica"]

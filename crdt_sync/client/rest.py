"""The replica's REST fallback: the same sync over `/api/sync/*` when websockets are refused.

A pass pulls, then pushes, with the guarantees of `/ws`:

- **Pull.** `GET /api/sync/updates?since=` (the replica's log cursor + 1: REST timestamps are
  the position *after* what they cover) answers the log entries after the cursor, in seq order,
  as CBOR: what `/ws` catch-up sends, a page per answer. Each page's updates and the cursor it
  covers are applied in one transaction, through the code `/ws` catch-up uses. A server too old
  for that endpoint (403/404 there) is pulled the slow way instead: `GET /api/sync/incremental`
  names the records changed since the cursor, and `GET /api/docs/{collection}/{id}/update?sv=`
  fetches each one's diff against the state vector held here.
- **Push.** `POST /api/sync/outgoing` with `{"updates": [{"doc", "update": base64}]}`: every
  pending document's changes merged into one update, as on `/ws`. The `Idempotency-Key` is
  derived from the queue entries the batch carries, so a retry after a lost answer replays the
  server's first answer; and a CRDT update applied twice changes nothing anyway. `applied`
  dequeues, `rejected` marks rejected (a merged write is split first, as on `/ws`), and a
  refused document starts over from `GET .../update` (the server's whole state).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import httpx

from ..cbor import load_one
from ..errors import AuthError, ConnectionFailed, DocumentError, Forbidden, ProtocolError
from ..ids import DocId, split_doc_id
from .context import SyncContext
from .local import Outgoing
from .status import SyncState, Transport

UPDATES_PAGE = 2000  # log entries per bulk answer (as many as /ws applies in one transaction)
PULL_PAGE = 1000  # records named per incremental answer (servers without /api/sync/updates)
PUSH_BATCH = 500  # documents per push
FETCHES_IN_FLIGHT = 16  # document diffs fetched at once
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# What a server without /api/sync/updates answers there: 404 (no such route, or "unknown
# collection 'sync'" to an admin token), 403 (its admin-only catch-all, to a device token).
# The endpoint itself never answers 403 to a token the other sync views take.
_NO_ENDPOINT = (403, 404, 405)


class RestLink:
    """REST passes for one replica: once (`live=False`), or every `interval` seconds and on
    each local change until the loop's clock reaches `until` (then websockets are tried again).

    Raises (from run): ConnectionFailed (unreachable, 5xx, no REST API), AuthError/Forbidden
    (401/403), ProtocolError (an answer that is not what the API promises).
    """

    def __init__(
        self,
        context: SyncContext,
        server: str,
        token: str,
        *,
        live: bool,
        interval: float = 5.0,
        until: float = 0.0,
    ) -> None:
        self.context = context
        self.server = server.rstrip("/")
        self.token = token
        self.live = live
        self.interval = interval
        self.until = until
        self.reached_live = False
        self.singles: set[DocId] = set()
        self.has_bulk_pull = True  # until the server shows it lacks /api/sync/updates

    async def run(self) -> None:
        board = self.context.board
        board.update(state=SyncState.CONNECTING, transport=Transport.REST)
        headers = {"Authorization": f"Bearer {self.token}", "X-Client-Id": self.context.replica_id}
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(
            base_url=self.server, headers=headers, timeout=TIMEOUT
        ) as http:
            while True:
                self.context.wake.clear()
                await self._pass(http)
                self.reached_live = True
                if not self.live or loop.time() >= self.until:
                    return
                wait = min(self.interval, max(0.0, self.until - loop.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self.context.wake.wait()

    async def _pass(self, http: httpx.AsyncClient) -> None:
        self.context.board.update(state=SyncState.SYNCING)
        await self._pull(http)
        while await self._push(http):
            pass
        await self.context.mark_synced()

    # -- pull -----------------------------------------------------------------------------------

    async def _pull(self, http: httpx.AsyncClient) -> None:
        if self.has_bulk_pull and await self._pull_updates(http):
            return
        self.has_bulk_pull = False
        await self._pull_documents(http)

    async def _pull_updates(self, http: httpx.AsyncClient) -> bool:
        """The log after the cursor, a page at a time; False if the server lacks the endpoint."""
        path = "/api/sync/updates"
        local = self.context.local
        while True:
            since = await self.context.cursor() + 1
            response = await _send(
                http,
                "GET",
                path,
                params={
                    "since": since,
                    "collections": ",".join(self.context.collections),
                    "limit": UPDATES_PAGE,
                },
            )
            if response.status_code in _NO_ENDPOINT:
                return False
            if _is_behind(response, since):
                await local.reset_cursor()  # the server's log was replaced: start over, as /ws does
                continue
            _check(response, "GET", path)
            updates, cursor, more = _log_page(response.content, since)
            await local.apply_remote(updates, cursor)
            await self.context.refresh()
            if not more:
                return True

    async def _pull_documents(self, http: httpx.AsyncClient) -> None:
        collections = ",".join(self.context.collections)
        while True:
            since = await self.context.cursor() + 1
            answer = await _json(
                http,
                "GET",
                "/api/sync/incremental",
                params={"since": since, "collections": collections, "limit": PULL_PAGE},
            )
            doc_ids, timestamp, more = _changed_documents(answer)
            updates = await self._fetch_diffs(http, doc_ids)
            await self.context.local.apply_remote(updates, timestamp - 1)
            await self.context.refresh()
            if not more:
                return

    async def _fetch_diffs(
        self, http: httpx.AsyncClient, doc_ids: Sequence[DocId]
    ) -> list[tuple[DocId, bytes]]:
        vectors = await self.context.local.state_vectors(doc_ids)
        gate = asyncio.Semaphore(FETCHES_IN_FLIGHT)

        async def fetch(doc_id: DocId) -> tuple[DocId, bytes]:
            async with gate:
                return doc_id, await _document_update(http, doc_id, vectors.get(doc_id))

        return list(await asyncio.gather(*(fetch(doc_id) for doc_id in doc_ids)))

    # -- push -----------------------------------------------------------------------------------

    async def _push(self, http: httpx.AsyncClient) -> bool:
        """One batch of the queue; False when there was nothing to send."""
        batch = await self.context.local.outgoing(
            exclude=frozenset(), singles=frozenset(self.singles), limit=PUSH_BATCH
        )
        if not batch:
            return False
        body = {
            "updates": [
                {"doc": w.doc_id, "update": base64.b64encode(w.update).decode()} for w in batch
            ]
        }
        answer = await _json(
            http,
            "POST",
            "/api/sync/outgoing",
            json=body,
            headers={"Idempotency-Key": self._batch_key(batch)},
        )
        applied, refused = _push_outcome(answer)
        local = self.context.local
        await local.settle([(w.doc_id, w.cseq) for w in batch if w.doc_id in applied])
        for write in batch:
            if write.doc_id in refused:
                await self._refused(http, write, *refused[write.doc_id])
            elif write.doc_id not in applied:
                raise ProtocolError(f"the push answer says nothing of {write.doc_id}")
        await self.context.refresh()
        return True

    async def _refused(
        self, http: httpx.AsyncClient, write: Outgoing, code: str, message: str
    ) -> None:
        if write.changes > 1:
            self.singles.add(write.doc_id)  # which of the merged changes is bad? one by one
        else:
            await self.context.local.reject(write.doc_id, write.cseq, code, message)
        await self.context.local.rebuild(
            write.doc_id, await _document_update(http, write.doc_id, None)
        )

    def _batch_key(self, batch: Sequence[Outgoing]) -> str:
        digest = hashlib.sha256()
        for write in batch:
            digest.update(f"{write.doc_id}\x00{write.cseq}\x00{write.changes}\x00".encode())
        return f"{self.context.replica_id}-{digest.hexdigest()[:32]}"


async def _document_update(http: httpx.AsyncClient, doc_id: DocId, vector: bytes | None) -> bytes:
    collection, record_id = split_doc_id(doc_id)
    params = {} if vector is None else {"sv": base64.b64encode(vector).decode()}
    response = await _request(
        http, "GET", f"/api/docs/{collection}/{record_id}/update", params=params
    )
    return response.content


async def _json(http: httpx.AsyncClient, method: str, path: str, **options: Any) -> Any:
    response = await _request(http, method, path, **options)
    try:
        return response.json()
    except ValueError:
        raise ProtocolError(f"{method} {path}: the answer is not JSON") from None


async def _request(
    http: httpx.AsyncClient, method: str, path: str, **options: Any
) -> httpx.Response:
    return _check(await _send(http, method, path, **options), method, path)


async def _send(http: httpx.AsyncClient, method: str, path: str, **options: Any) -> httpx.Response:
    try:
        return await http.request(method, path, **options)
    except httpx.TransportError as exc:
        raise ConnectionFailed(f"{http.base_url}{path}: {exc or type(exc).__name__}") from None


def _check(response: httpx.Response, method: str, path: str) -> httpx.Response:
    """The response if it succeeded; else the error its status means to the replica."""
    if response.is_success:
        return response
    said = f"{method} {path}: HTTP {response.status_code}: {_error_message(response)}"
    if response.status_code == 401:
        raise AuthError(said)
    if response.status_code == 403:
        raise Forbidden(said)
    if response.status_code >= 500 or response.status_code in (404, 405, 408, 429):
        raise ConnectionFailed(said)  # no REST API here (yet), or a server in trouble: retry
    raise ProtocolError(said)


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


def _is_behind(response: httpx.Response, since: int) -> bool:
    """A 400 saying the server's current timestamp is before `since`: its log was replaced."""
    if response.status_code != 400:
        return False
    try:
        timestamp = response.json()["error"]["details"]["timestamp"]
    except (ValueError, KeyError, TypeError):
        return False
    return type(timestamp) is int and timestamp < since


def _log_page(content: bytes, since: int) -> tuple[list[tuple[DocId, bytes]], int, bool]:
    """The updates of a `/api/sync/updates` answer, the cursor they cover, and whether more follow.

    Raises ProtocolError unless it is the promised CBOR map, its seqs rising from `since`.
    """
    try:
        answer, trailing = load_one(content, max_depth=4)
        if trailing or not isinstance(answer, dict):
            raise TypeError
        cursor, more, entries = answer["cursor"], answer["more"], answer["updates"]
        if type(cursor) is not int or type(more) is not bool or not isinstance(entries, list):
            raise TypeError
        updates: list[tuple[DocId, bytes]] = []
        last = since - 1
        for entry in entries:
            doc_id, update, seq = entry["doc"], entry["update"], entry["seq"]
            if type(seq) is not int or not last < seq <= cursor or not isinstance(update, bytes):
                raise TypeError
            split_doc_id(doc_id)
            updates.append((DocId(doc_id), update))
            last = seq
        if cursor < since - 1:
            raise TypeError
    except (KeyError, TypeError, ValueError) as exc:  # cbor2's decode errors are ValueErrors
        raise ProtocolError(
            f"an update log answer of the wrong shape ({len(content)} bytes)"
        ) from exc
    except DocumentError as exc:
        raise ProtocolError(f"an update log answer names a bad document: {exc}") from exc
    return updates, cursor, more


def _changed_documents(answer: Any) -> tuple[list[DocId], int, bool]:
    """The documents an incremental answer names, its timestamp, and whether more follow."""
    try:
        timestamp = answer["timestamp"]
        changes = answer["changes"]
        if type(timestamp) is not int or timestamp < 1 or not isinstance(changes, dict):
            raise TypeError
        doc_ids: list[DocId] = []
        for collection, buckets in changes.items():
            for kind in ("created", "updated"):
                doc_ids += [DocId(f"{collection}/{row['id']}") for row in buckets[kind]]
            doc_ids += [DocId(f"{collection}/{record_id}") for record_id in buckets["deleted"]]
        for doc_id in doc_ids:
            split_doc_id(doc_id)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(
            f"an incremental pull answer of the wrong shape: {_short(answer)}"
        ) from exc
    except DocumentError as exc:
        raise ProtocolError(f"an incremental pull answer names a bad record: {exc}") from exc
    return doc_ids, timestamp, answer.get("next") is not None


def _push_outcome(answer: Any) -> tuple[set[DocId], dict[DocId, tuple[str, str]]]:
    try:
        applied = {DocId(f"{item['collection']}/{item['id']}") for item in answer["applied"]}
        refused = {
            DocId(f"{item['collection']}/{item['id']}"): (str(item["code"]), str(item["message"]))
            for item in answer["rejected"]
        }
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"a push answer of the wrong shape: {_short(answer)}") from exc
    return applied, refused


def _short(value: Any) -> str:
    return json.dumps(value, default=repr)[:120]

"""Test peers that speak to the real server over real websockets.

`YjsPeer` is pycrdt's own stock `Provider` (the y-websocket protocol, unchanged) on a
websocket channel; `MuxPeer` drives our PeerSession over `/ws` as a client would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from pycrdt import Doc, Map, Provider, Text

from crdt_sync.ids import DocId
from crdt_sync.protocol import (
    Acked,
    AwarenessReceived,
    AwarenessUpdate,
    CaughtUpReceived,
    ErrorReceived,
    Hello,
    PeerSession,
    RemoteUpdate,
    Role,
    SyncUpdate,
    Welcomed,
)


class WebsocketChannel:
    """pycrdt's Channel protocol over a `websockets` client connection."""

    def __init__(self, websocket: Any, path: str) -> None:
        self._websocket = websocket
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WebsocketChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except websockets.ConnectionClosed:
            raise StopAsyncIteration() from None

    async def send(self, message: bytes) -> None:
        await self._websocket.send(message)

    async def recv(self) -> bytes:
        return bytes(await self._websocket.recv())


@asynccontextmanager
async def yjs_peer(url: str, doc: Doc | None = None) -> AsyncIterator[Doc]:
    """A stock pycrdt Provider syncing `doc` with the server; yields once synced."""
    doc = doc if doc is not None else Doc()
    async with websockets.connect(url) as websocket:
        async with Provider(doc, WebsocketChannel(websocket, url)) as provider:
            await asyncio.wait_for(provider.synced.wait(), 10)
            yield doc


def record_of(doc: Doc) -> dict[str, Any]:
    fields = doc.get("record", type=Map)
    return {k: (str(v) if isinstance(v, Text) else v) for k, v in fields.items()}


class MuxPeer:
    """A minimal /ws client: one document per record, driven by PeerSession."""

    def __init__(self, websocket: Any, client: str) -> None:
        self.websocket = websocket
        self.session = PeerSession(Role.CLIENT)
        self.client = client
        self.documents: dict[str, Doc] = {}
        self.acks: dict[int, int] = {}
        self.errors: list[ErrorReceived] = []
        self.awareness: list[AwarenessReceived] = []
        self.seqs: list[int] = []
        self.caught_up = asyncio.Event()
        self.welcome: Welcomed | None = None
        self._cseq = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None

    def document(self, doc_id: str) -> Doc:
        return self.documents.setdefault(doc_id, Doc())

    async def hello(self, cursor: int = 0, collections: tuple[str, ...] | None = None) -> None:
        self.session.send(Hello(self.client, cursor, collections))
        await self._flush()
        self._reader = asyncio.create_task(self._read())

    async def write(self, doc_id: str, update: bytes) -> int:
        cseq = next(self._cseq)
        self.session.send(SyncUpdate(DocId(doc_id), update, cseq=cseq))
        await self._flush()
        return cseq

    async def send_awareness(self, doc_id: str, data: bytes) -> None:
        self.session.send(AwarenessUpdate(DocId(doc_id), data))
        await self._flush()

    async def edit(self, doc_id: str, **fields: Any) -> int:
        doc = self.document(doc_id)
        before = doc.get_state()
        record = doc.get("record", type=Map)
        with doc.transaction():
            for key, value in fields.items():
                record[key] = value
        return await self.write(doc_id, doc.get_update(before))

    async def wait_ack(self, cseq: int, timeout: float = 10.0) -> int:
        async def acked() -> int:
            while cseq not in self.acks:
                if any(e.cseq == cseq for e in self.errors):
                    raise AssertionError(f"write {cseq} refused: {self.errors}")
                await asyncio.sleep(0.005)
            return self.acks[cseq]

        return await asyncio.wait_for(acked(), timeout)

    async def _flush(self) -> None:
        for frame in self.session.frames_to_send():
            await self.websocket.send(frame)

    async def _read(self) -> None:
        try:
            async for frame in self.websocket:
                for event in self.session.receive(bytes(frame)):
                    if isinstance(event, Welcomed):
                        self.welcome = event
                    elif isinstance(event, RemoteUpdate):
                        self.document(event.doc).apply_update(event.update)
                        if event.seq is not None:
                            self.seqs.append(event.seq)
                    elif isinstance(event, CaughtUpReceived):
                        self.caught_up.set()
                    elif isinstance(event, Acked):
                        self.acks[event.cseq] = event.seq
                    elif isinstance(event, ErrorReceived):
                        self.errors.append(event)
                    elif isinstance(event, AwarenessReceived):
                        self.awareness.append(event)
                await self._flush()
        except websockets.ConnectionClosed:
            pass

    async def close(self) -> None:
        await self.websocket.close()
        if self._reader is not None:
            await self._reader


@asynccontextmanager
async def mux_peer(
    url: str,
    client: str = "test-client",
    cursor: int = 0,
    collections: tuple[str, ...] | None = None,
) -> AsyncIterator[MuxPeer]:
    async with websockets.connect(url) as websocket:
        peer = MuxPeer(websocket, client)
        await peer.hello(cursor, collections)
        await asyncio.wait_for(peer.caught_up.wait(), 10)
        try:
            yield peer
        finally:
            await peer.close()

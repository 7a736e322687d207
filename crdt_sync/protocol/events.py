"""What `PeerSession.receive` hands back: one typed event per frame the peer sent (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from ..errors import DocumentError
from ..ids import DocId
from .awareness import AwarenessState

__all__ = [
    "Acked",
    "AwarenessReceived",
    "ByeReceived",
    "CaughtUpReceived",
    "DocumentRefused",
    "ErrorReceived",
    "Event",
    "HelloReceived",
    "PingReceived",
    "PongReceived",
    "RemoteUpdate",
    "SyncStep1Received",
    "SyncStep2Received",
    "UpdateReceived",
    "Welcomed",
]

# -- the server receives ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """Answer with ``send(Welcome(...))``, then catch up from ``session.cursor``."""

    client: str
    cursor: int
    collections: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    """A client write (sync update or step 2): commit it, then ``send(Ack(doc, cseq, seq))``,
    or ``send(Error(..., cseq=cseq))`` if it is refused."""

    doc: DocId
    update: bytes
    cseq: int


@dataclass(frozen=True, slots=True)
class DocumentRefused:
    """A frame about a document whose id is not ``collection/record_id``; the frame was fine.

    Answer with ``send(Error.for_document(error, doc=doc, cseq=cseq))``; the connection stays up.
    With a `cseq` the answer is owed (the write is in ``session.unacked`` until then).
    """

    doc: str
    cseq: int | None
    error: DocumentError


@dataclass(frozen=True, slots=True)
class ByeReceived:
    """The client is leaving: close the websocket with 1000."""


# -- the client receives ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The server's cursor now (the catch-up target) and its name; catch-up frames follow."""

    cursor: int
    server: str


@dataclass(frozen=True, slots=True)
class RemoteUpdate:
    """An update to apply; `seq` is its place in the server's log (None: not a log entry)."""

    doc: DocId
    update: bytes
    seq: int | None


@dataclass(frozen=True, slots=True)
class SyncStep2Received:
    """The server's answer to a step 1: apply `update` like any other."""

    doc: DocId
    update: bytes
    seq: int | None


@dataclass(frozen=True, slots=True)
class CaughtUpReceived:
    """Every update up to `cursor` has arrived; what follows is live."""

    cursor: int


@dataclass(frozen=True, slots=True)
class Acked:
    """The write `cseq` is committed at `seq`: drop it from the offline queue."""

    doc: DocId
    cseq: int
    seq: int


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """An error about `doc`; with a `cseq`, that write was refused and will never be acked."""

    doc: str | None
    cseq: int | None
    code: str
    message: str


# -- either side receives ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncStep1Received:
    """The peer's state vector of `doc`: answer with ``send(SyncStep2(doc, missing_update))``
    (a client's step 2 is a write and takes a cseq)."""

    doc: DocId
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class AwarenessReceived:
    """An awareness update that decodes as every stock y-protocols client decodes it."""

    doc: DocId
    data: bytes
    states: tuple[AwarenessState, ...]


@dataclass(frozen=True, slots=True)
class PingReceived:
    """Informational: the session has already queued the Pong."""

    n: int | None


@dataclass(frozen=True, slots=True)
class PongReceived:
    n: int | None


Event: TypeAlias = (
    HelloReceived
    | UpdateReceived
    | DocumentRefused
    | ByeReceived
    | Welcomed
    | RemoteUpdate
    | SyncStep2Received
    | CaughtUpReceived
    | Acked
    | ErrorReceived
    | SyncStep1Received
    | AwarenessReceived
    | PingReceived
    | PongReceived
)

"""The ``/ws`` messages: one frozen dataclass per frame type, checking its own fields (pure).

A message that is built is a message that may go on the wire: the decoder builds these from the
peer's CBOR map, and the checks in ``__post_init__`` are the one place field types and ranges are
enforced, for what comes in and for what goes out. Document ids are checked by the session, since
a bad one is an error about one document, not a broken frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from ..errors import DocumentError, ProtocolError
from ..ids import COLLECTION_NAME, DocId

__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "AwarenessUpdate",
    "Bye",
    "CaughtUp",
    "Error",
    "Hello",
    "Message",
    "Ping",
    "Pong",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "Welcome",
]

PROTOCOL_VERSION = 1
MAX_INT = 2**63 - 1  # seqs, cursors and cseqs must fit a signed 64-bit column
MAX_CLIENT_ID = 128


def fail(frame_type: str, key: str, expected: str, value: object) -> ProtocolError:
    return ProtocolError(f"{frame_type} frame: {key!r} must be {expected}, got {show(value)}")


def show(value: object) -> str:
    """A short picture of a peer's value: never echo a megabyte back in an error message."""
    if isinstance(value, str | bytes | list | dict) and len(value) > 24:
        return f"{type(value).__name__} of length {len(value)}"
    shown = "null" if value is None else repr(value)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


def _check_int(frame_type: str, key: str, value: object, minimum: int = 0) -> None:
    if type(value) is not int or not minimum <= value <= MAX_INT:
        raise fail(frame_type, key, f"an integer >= {minimum}", value)


def _check_optional_int(frame_type: str, key: str, value: object, minimum: int = 0) -> None:
    if value is not None:
        _check_int(frame_type, key, value, minimum)


def check_str(frame_type: str, key: str, value: object) -> None:
    if type(value) is not str:
        raise fail(frame_type, key, "a text string", value)


def check_bytes(frame_type: str, key: str, value: object) -> None:
    if type(value) is not bytes:
        raise fail(frame_type, key, "a byte string", value)


@dataclass(frozen=True, slots=True)
class Hello:
    """Client, first frame: who it is, the highest seq it has, which collections it follows.

    `collections` None means every collection the token may read; an empty tuple, none
    (a client that only pushes).
    """

    client: str
    cursor: int
    collections: tuple[str, ...] | None = None
    frame_type: ClassVar[str] = "hello"

    def __post_init__(self) -> None:
        if type(self.client) is not str or not 1 <= len(self.client) <= MAX_CLIENT_ID:
            raise fail("hello", "client", f"a string of 1-{MAX_CLIENT_ID} characters", self.client)
        _check_int("hello", "cursor", self.cursor)
        if self.collections is not None:
            if not isinstance(self.collections, tuple | list):
                raise fail("hello", "collections", "an array of strings or null", self.collections)
            object.__setattr__(self, "collections", tuple(self.collections))
            for name in self.collections:
                if type(name) is not str or not COLLECTION_NAME.fullmatch(name):
                    raise fail("hello", "collections[]", "a collection name", name)


@dataclass(frozen=True, slots=True)
class Welcome:
    """Server, answer to hello: its cursor now (the catch-up target) and its name."""

    cursor: int
    server: str
    frame_type: ClassVar[str] = "welcome"

    def __post_init__(self) -> None:
        _check_int("welcome", "cursor", self.cursor)
        check_str("welcome", "server", self.server)


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """Either side: "here is my state vector of `doc`; send me what I miss" (a step 2 answers)."""

    doc: DocId
    state_vector: bytes
    frame_type: ClassVar[str] = "sync"

    def __post_init__(self) -> None:
        check_str("sync", "doc", self.doc)
        check_bytes("sync", "state_vector", self.state_vector)


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """The answer to a step 1. From a client it is a write and carries `cseq`; from the server
    it may carry `seq` (only when in log order, see PeerSession)."""

    doc: DocId
    update: bytes
    seq: int | None = None
    cseq: int | None = None
    frame_type: ClassVar[str] = "sync"

    def __post_init__(self) -> None:
        _check_update_fields(self.doc, self.update, self.seq, self.cseq)


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An update to `doc`: from a client a write with `cseq`; from the server one log entry with
    its `seq` (catch-up and live)."""

    doc: DocId
    update: bytes
    seq: int | None = None
    cseq: int | None = None
    frame_type: ClassVar[str] = "sync"

    def __post_init__(self) -> None:
        _check_update_fields(self.doc, self.update, self.seq, self.cseq)


def _check_update_fields(doc: object, update: object, seq: object, cseq: object) -> None:
    check_str("sync", "doc", doc)
    check_bytes("sync", "update", update)
    _check_optional_int("sync", "seq", seq, minimum=1)
    _check_optional_int("sync", "cseq", cseq)


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    """Either side: an awareness update (presence, cursors) for `doc`, relayed opaque."""

    doc: DocId
    data: bytes
    frame_type: ClassVar[str] = "awareness"

    def __post_init__(self) -> None:
        check_str("awareness", "doc", self.doc)
        check_bytes("awareness", "data", self.data)


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Server: every update up to `cursor` the client follows has been sent; live from here."""

    cursor: int
    frame_type: ClassVar[str] = "caught_up"

    def __post_init__(self) -> None:
        _check_int("caught_up", "cursor", self.cursor)


@dataclass(frozen=True, slots=True)
class Ack:
    """Server: the client's write `cseq` to `doc` is committed at `seq`."""

    doc: DocId
    cseq: int
    seq: int
    frame_type: ClassVar[str] = "ack"

    def __post_init__(self) -> None:
        check_str("ack", "doc", self.doc)
        _check_int("ack", "cseq", self.cseq)
        _check_int("ack", "seq", self.seq)  # 0: a no-op write on a server whose log is empty


@dataclass(frozen=True, slots=True)
class Error:
    """Server: an error about one document (or none); the connection stays up.

    With a `cseq` it settles that write: it was refused and will never be acked.
    """

    doc: str | None
    cseq: int | None
    code: str
    message: str
    frame_type: ClassVar[str] = "error"

    def __post_init__(self) -> None:
        if self.doc is not None:
            check_str("error", "doc", self.doc)
        _check_optional_int("error", "cseq", self.cseq)
        check_str("error", "code", self.code)
        check_str("error", "message", self.message)

    @classmethod
    def for_document(
        cls, error: DocumentError, *, doc: str | None = None, cseq: int | None = None
    ) -> Error:
        """The error frame for `error`; `doc` overrides ``error.doc_id`` (which may be cut)."""
        return cls(
            doc if doc is not None else error.doc_id or None, cseq, error.code, error.message
        )


@dataclass(frozen=True, slots=True)
class Ping:
    """Either side: keep-alive; the session answers it with a Pong carrying the same `n`."""

    n: int | None = None
    frame_type: ClassVar[str] = "ping"

    def __post_init__(self) -> None:
        _check_optional_int("ping", "n", self.n)


@dataclass(frozen=True, slots=True)
class Pong:
    n: int | None = None
    frame_type: ClassVar[str] = "pong"

    def __post_init__(self) -> None:
        _check_optional_int("pong", "n", self.n)


@dataclass(frozen=True, slots=True)
class Bye:
    """Client: it is leaving; the server closes with 1000."""

    frame_type: ClassVar[str] = "bye"


Message: TypeAlias = (
    Hello
    | Welcome
    | SyncStep1
    | SyncStep2
    | SyncUpdate
    | AwarenessUpdate
    | CaughtUp
    | Ack
    | Error
    | Ping
    | Pong
    | Bye
)

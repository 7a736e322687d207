"""The ``/ws`` envelope: each websocket binary frame is one CBOR map, key ``t`` its type (pure).

Rule: unknown keys are ignored (room to grow within version 1); a known key that is missing or of
the wrong type is a ProtocolError. An optional key may be absent or null. Which role may send
which frame, and when, is the session's business (`session.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import cbor2

from ..cbor import load_one
from ..errors import ProtocolError
from .messages import (
    PROTOCOL_VERSION,
    Ack,
    AwarenessUpdate,
    Bye,
    CaughtUp,
    Error,
    Hello,
    Message,
    Ping,
    Pong,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    Welcome,
    check_bytes,
    check_str,
    fail,
    show,
)
from .ysync import (
    YjsSyncStep1,
    YjsSyncStep2,
    YjsUpdate,
    decode_sync_message,
    encode_sync_message,
)

__all__ = ["decode_frame", "encode_frame"]


# -- encoding ---------------------------------------------------------------------------------


def encode_frame(message: Message) -> bytes:
    """One message as the bytes of one websocket binary frame."""
    fields: dict[str, object] = {"t": message.frame_type}
    if isinstance(message, Hello):
        fields |= {"v": PROTOCOL_VERSION, "client": message.client, "cursor": message.cursor}
        fields["collections"] = None if message.collections is None else list(message.collections)
    elif isinstance(message, Welcome):
        fields |= {"v": PROTOCOL_VERSION, "cursor": message.cursor, "server": message.server}
    elif isinstance(message, SyncStep1 | SyncStep2 | SyncUpdate):
        fields |= _sync_fields(message)
    elif isinstance(message, AwarenessUpdate):
        fields |= {"doc": message.doc, "data": message.data}
    elif isinstance(message, CaughtUp):
        fields["cursor"] = message.cursor
    elif isinstance(message, Ack):
        fields |= {"doc": message.doc, "cseq": message.cseq, "seq": message.seq}
    elif isinstance(message, Error):
        fields |= {"doc": message.doc, "cseq": message.cseq}
        fields |= {"code": message.code, "message": message.message}
    elif isinstance(message, Ping | Pong) and message.n is not None:
        fields["n"] = message.n
    return cbor2.dumps(fields)


def _sync_fields(message: SyncStep1 | SyncStep2 | SyncUpdate) -> dict[str, object]:
    if isinstance(message, SyncStep1):
        return {"doc": message.doc, "y": encode_sync_message(YjsSyncStep1(message.state_vector))}
    inner = YjsSyncStep2 if isinstance(message, SyncStep2) else YjsUpdate
    fields: dict[str, object] = {
        "doc": message.doc,
        "y": encode_sync_message(inner(message.update)),
    }
    if message.seq is not None:
        fields["seq"] = message.seq
    if message.cseq is not None:
        fields["cseq"] = message.cseq
    return fields


# -- decoding ---------------------------------------------------------------------------------


def decode_frame(frame: bytes) -> Message:
    """One websocket binary frame as a message, whoever sent it.

    Raises:
        ProtocolError: not one CBOR map, an unknown ``t``, a known key missing or of the wrong
            type, an unsupported ``v``, a ``y`` that is not a y-sync message. Nothing else.
    """
    fields = _load_map(frame)
    frame_type = fields.get("t")
    if type(frame_type) is not str:
        raise ProtocolError(
            f"frame: 't' must be a text string naming the frame, got {show(frame_type)}"
        )
    reader = _READERS.get(frame_type)
    if reader is None:
        raise ProtocolError(f"frame: unknown type {show(frame_type)}")
    return reader(fields)


def _load_map(frame: bytes) -> Mapping[object, object]:
    try:
        value, trailing = load_one(frame, max_depth=4)
    except cbor2.CBORDecodeError as exc:
        raise ProtocolError(f"frame: not valid CBOR: {exc}") from exc
    if trailing:
        raise ProtocolError(f"frame: {trailing} bytes after the CBOR map")
    if not isinstance(value, dict):
        raise ProtocolError(f"frame: must be a CBOR map, got {type(value).__name__}")
    return value


def _version(frame_type: str, fields: Mapping[object, object]) -> None:
    version = fields.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{frame_type} frame: protocol version {show(version)} is not supported "
            f"(this side speaks {PROTOCOL_VERSION})"
        )


def _hello(fields: Mapping[object, object]) -> Message:
    _version("hello", fields)
    collections = fields.get("collections")
    if collections is not None and not isinstance(collections, list):
        raise fail("hello", "collections", "an array of strings or null", collections)
    return Hello(fields.get("client"), fields.get("cursor"), collections)  # type: ignore[arg-type]


def _welcome(fields: Mapping[object, object]) -> Message:
    _version("welcome", fields)
    return Welcome(fields.get("cursor"), fields.get("server"))  # type: ignore[arg-type]


def _sync(fields: Mapping[object, object]) -> Message:
    doc, y, seq, cseq = (fields.get(key) for key in ("doc", "y", "seq", "cseq"))
    check_str("sync", "doc", doc)
    check_bytes("sync", "y", y)
    try:
        inner = decode_sync_message(y)  # type: ignore[arg-type]
    except ProtocolError as exc:
        problem = exc.message.removeprefix("y-sync message: ")
        raise ProtocolError(f"sync frame: bad 'y': {problem}") from exc
    if isinstance(inner, YjsSyncStep1):
        if seq is not None or cseq is not None:
            raise ProtocolError("sync frame: a step 1 carries neither 'seq' nor 'cseq'")
        return SyncStep1(doc, inner.state_vector)  # type: ignore[arg-type]
    kind = SyncStep2 if isinstance(inner, YjsSyncStep2) else SyncUpdate
    return kind(doc, inner.update, seq, cseq)  # type: ignore[arg-type]


def _awareness(fields: Mapping[object, object]) -> Message:
    return AwarenessUpdate(fields.get("doc"), fields.get("data"))  # type: ignore[arg-type]


def _caught_up(fields: Mapping[object, object]) -> Message:
    return CaughtUp(fields.get("cursor"))  # type: ignore[arg-type]


def _ack(fields: Mapping[object, object]) -> Message:
    return Ack(fields.get("doc"), fields.get("cseq"), fields.get("seq"))  # type: ignore[arg-type]


def _error(fields: Mapping[object, object]) -> Message:
    doc, cseq, code, message = (fields.get(key) for key in ("doc", "cseq", "code", "message"))
    return Error(doc, cseq, code, message)  # type: ignore[arg-type]


_READERS: dict[str, Callable[[Mapping[object, object]], Message]] = {
    "hello": _hello,
    "welcome": _welcome,
    "sync": _sync,
    "awareness": _awareness,
    "caught_up": _caught_up,
    "ack": _ack,
    "error": _error,
    "ping": lambda fields: Ping(fields.get("n")),  # type: ignore[arg-type]
    "pong": lambda fields: Pong(fields.get("n")),  # type: ignore[arg-type]
    "bye": lambda fields: Bye(),
}

"""The y-websocket wire codec: y-protocols' sync, awareness and auth messages, byte for byte (pure).

One websocket frame holds one message: a varUint outer type, then its body, written with lib0's
``encoding`` (varUint: 7 bits a byte, low bits first; varBytes: varUint length, then the bytes;
varString: varBytes of UTF-8). The layouts are those of y-protocols ``sync.js``, ``auth.js`` and
y-websocket's client:

    sync            [0, 0, varBytes(state_vector)]   step 1
                    [0, 1, varBytes(update)]         step 2
                    [0, 2, varBytes(update)]         update
    awareness       [1, varBytes(awareness update)]
    auth            [2, 0, varString(reason)]        permission denied
    query awareness [3]

pycrdt has helpers for these, but its ``Decoder`` asserts, raises RuntimeError or IndexError on
short input and its ``write_var_string`` counts characters, not bytes; every byte a peer sends
goes through the reader below instead, which raises ProtocolError and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from ..errors import ProtocolError

__all__ = [
    "YjsAwareness",
    "YjsMessage",
    "YjsMessageType",
    "YjsPermissionDenied",
    "YjsQueryAwareness",
    "YjsSyncMessage",
    "YjsSyncMessageType",
    "YjsSyncStep1",
    "YjsSyncStep2",
    "YjsUpdate",
    "decode_sync_message",
    "decode_yjs_message",
    "encode_awareness",
    "encode_permission_denied",
    "encode_query_awareness",
    "encode_sync_message",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_sync_update",
    "encode_yjs_message",
]


class YjsMessageType(IntEnum):
    """The outer message type (y-websocket ``messageSync`` ... ``messageQueryAwareness``)."""

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class YjsSyncMessageType(IntEnum):
    """The sync sub-type (y-protocols ``sync.js``)."""

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


_UPDATE_TYPES = (1, 2)  # YjsSyncMessageType.STEP2, .UPDATE
AUTH_PERMISSION_DENIED = 0  # y-protocols auth.js: messagePermissionDenied
MAX_SAFE_INTEGER = 2**53 - 1  # lib0 decoding.readVarUint refuses anything larger


@dataclass(frozen=True, slots=True)
class YjsSyncStep1:
    """ "Here is my state vector; send me what I miss" (answered by a step 2)."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class YjsSyncStep2:
    """The answer to a step 1: everything the asker misses, as one update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class YjsUpdate:
    """An incremental update, as it happens."""

    update: bytes


@dataclass(frozen=True, slots=True)
class YjsAwareness:
    """An awareness update (y-protocols ``awareness.js``), relayed opaque."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class YjsQueryAwareness:
    """ "Send me every awareness state you know"."""


@dataclass(frozen=True, slots=True)
class YjsPermissionDenied:
    """The auth message a server sends when it refuses a write; the client stays connected."""

    reason: str


YjsSyncMessage: TypeAlias = YjsSyncStep1 | YjsSyncStep2 | YjsUpdate
YjsMessage: TypeAlias = YjsSyncMessage | YjsAwareness | YjsQueryAwareness | YjsPermissionDenied


class _Reader:
    """lib0 ``decoding`` over untrusted bytes: every short read is a ProtocolError naming `what`."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.position = 0
        self.what = what

    def error(self, problem: str) -> ProtocolError:
        return ProtocolError(f"{self.what}: {problem}")

    def read_var_uint(self, name: str) -> int:
        # As lib0 readVarUint: any number of continuation bytes, refused past 2**53 - 1.
        number, shift, start = 0, 0, self.position
        while self.position < len(self.data):
            byte = self.data[self.position]
            self.position += 1
            number |= (byte & 0x7F) << shift
            shift += 7
            if number > MAX_SAFE_INTEGER:
                raise self.error(f"{name} at offset {start} is larger than 2**53 - 1")
            if byte < 0x80:
                return number
        raise self.error(f"truncated: {name} at offset {start} ends with the frame")

    def read_var_bytes(self, name: str) -> bytes:
        length = self.read_var_uint(f"length of {name}")
        left = len(self.data) - self.position
        if length > left:
            raise self.error(f"truncated: {name} declares {length} bytes, {left} left in the frame")
        start = self.position
        self.position += length
        return bytes(self.data[start : self.position])

    def read_var_string(self, name: str) -> str:
        # lib0 reads with a non-fatal TextDecoder: bad UTF-8 becomes U+FFFD, not an error.
        return self.read_var_bytes(name).decode("utf-8", errors="replace")

    def expect_end(self) -> None:
        left = len(self.data) - self.position
        if left:
            raise self.error(
                f"{left} trailing bytes after the message at offset {self.position} "
                "(one message per frame)"
            )


def decode_yjs_message(frame: bytes | str) -> YjsMessage:
    """Decode one y-websocket frame (hand it text frames too: they are refused here).

    Raises:
        ProtocolError: a text or empty frame, an unknown message or sync type, a length running past
            the end, or bytes left after the message. Nothing else escapes, whatever the bytes.
    """
    if isinstance(frame, str):
        raise ProtocolError("y-websocket message: a text frame (y-websocket frames are binary)")
    # Most frames are a step 2 or an update of under 16 KiB: read those without a _Reader.
    if len(frame) > 3 and frame[0] == YjsMessageType.SYNC and frame[1] in _UPDATE_TYPES:
        length, start = frame[2], 3
        if length & 0x80:
            length, start = (length & 0x7F) | (frame[3] << 7), 4
        if length < 0x4000 and start + length == len(frame):
            update = bytes(frame[start:])
            return (
                YjsUpdate(update) if frame[1] == YjsSyncMessageType.UPDATE else YjsSyncStep2(update)
            )
    reader = _Reader(frame, "y-websocket message")
    if not frame:
        raise reader.error("empty frame")
    message_type = reader.read_var_uint("message type")
    message: YjsMessage
    if message_type == YjsMessageType.SYNC:
        message = _read_sync_body(reader)
    elif message_type == YjsMessageType.AWARENESS:
        message = YjsAwareness(reader.read_var_bytes("awareness update"))
    elif message_type == YjsMessageType.AUTH:
        auth_type = reader.read_var_uint("auth message type")
        if auth_type != AUTH_PERMISSION_DENIED:
            raise reader.error(f"unknown auth message type {auth_type} (only 0, permission denied)")
        message = YjsPermissionDenied(reader.read_var_string("reason"))
    elif message_type == YjsMessageType.QUERY_AWARENESS:
        message = YjsQueryAwareness()
    else:
        raise reader.error(f"unknown message type {message_type} (expected 0, 1, 2 or 3)")
    reader.expect_end()
    return message


def decode_sync_message(data: bytes) -> YjsSyncMessage:
    """Decode a y-sync message without the outer type: ``[sub-type, varBytes]`` (the /ws ``y``).

    Raises:
        ProtocolError: as `decode_yjs_message`.
    """
    reader = _Reader(data, "y-sync message")
    if not data:
        raise reader.error("empty")
    message = _read_sync_body(reader)
    reader.expect_end()
    return message


def _read_sync_body(reader: _Reader) -> YjsSyncMessage:
    sync_type = reader.read_var_uint("sync message type")
    if sync_type == YjsSyncMessageType.STEP1:
        return YjsSyncStep1(reader.read_var_bytes("state vector"))
    if sync_type == YjsSyncMessageType.STEP2:
        return YjsSyncStep2(reader.read_var_bytes("update"))
    if sync_type == YjsSyncMessageType.UPDATE:
        return YjsUpdate(reader.read_var_bytes("update"))
    raise reader.error(f"unknown sync message type {sync_type} (expected 0, 1 or 2)")


def var_uint(number: int) -> bytes:
    """lib0 writeVarUint."""
    out = bytearray()
    while number > 0x7F:
        out.append(0x80 | (number & 0x7F))
        number >>= 7
    out.append(number)
    return bytes(out)


def _var_bytes(data: bytes) -> bytes:
    return var_uint(len(data)) + data


def encode_sync_message(message: YjsSyncMessage) -> bytes:
    """The inverse of `decode_sync_message`: ``[sub-type, varBytes]``, no outer type."""
    if isinstance(message, YjsSyncStep1):
        return bytes([YjsSyncMessageType.STEP1]) + _var_bytes(message.state_vector)
    if isinstance(message, YjsSyncStep2):
        return bytes([YjsSyncMessageType.STEP2]) + _var_bytes(message.update)
    return bytes([YjsSyncMessageType.UPDATE]) + _var_bytes(message.update)


def encode_yjs_message(message: YjsMessage) -> bytes:
    """The inverse of `decode_yjs_message`."""
    if isinstance(message, YjsAwareness):
        return bytes([YjsMessageType.AWARENESS]) + _var_bytes(message.payload)
    if isinstance(message, YjsQueryAwareness):
        return bytes([YjsMessageType.QUERY_AWARENESS])
    if isinstance(message, YjsPermissionDenied):
        reason = message.reason.encode("utf-8")
        return bytes([YjsMessageType.AUTH, AUTH_PERMISSION_DENIED]) + _var_bytes(reason)
    return bytes([YjsMessageType.SYNC]) + encode_sync_message(message)


def encode_sync_step1(state_vector: bytes) -> bytes:
    return encode_yjs_message(YjsSyncStep1(state_vector))


def encode_sync_step2(update: bytes) -> bytes:
    return encode_yjs_message(YjsSyncStep2(update))


def encode_sync_update(update: bytes) -> bytes:
    return encode_yjs_message(YjsUpdate(update))


def encode_awareness(payload: bytes) -> bytes:
    return encode_yjs_message(YjsAwareness(payload))


def encode_query_awareness() -> bytes:
    return encode_yjs_message(YjsQueryAwareness())


def encode_permission_denied(reason: str) -> bytes:
    """``[2, 0, varString(reason)]``: y-websocket clients call their permission-denied handler."""
    return encode_yjs_message(YjsPermissionDenied(reason))

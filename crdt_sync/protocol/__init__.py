"""The sans-I/O wire protocol: the y-websocket codec, the ``/ws`` envelope, PeerSession (pure).

Nothing here awaits, sleeps, reads the clock or opens a file, and nothing imports asyncio or a
web framework (a test checks ``sys.modules``). docs/PROTOCOL.md is the prose version.

    ysync.py     y-websocket messages, byte for byte as y-protocols writes them (``/yjs/...``)
    messages.py  ``/ws`` messages, one frozen dataclass per frame type
    envelope.py  ``/ws`` frames: one CBOR map each, to and from messages
    events.py    what PeerSession.receive() returns
    session.py   PeerSession, the state machine both the server and the client replica drive
    close.py     close codes of both endpoints
    awareness.py awareness updates, decoded as y-protocols does, and who owns which client id
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .close import CloseCode, close_reason
from .ysync import (
    YjsAwareness,
    YjsMessage,
    YjsMessageType,
    YjsPermissionDenied,
    YjsQueryAwareness,
    YjsSyncMessage,
    YjsSyncMessageType,
    YjsSyncStep1,
    YjsSyncStep2,
    YjsUpdate,
    decode_sync_message,
    decode_yjs_message,
    encode_awareness,
    encode_permission_denied,
    encode_query_awareness,
    encode_sync_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    encode_yjs_message,
)

if TYPE_CHECKING:
    from .envelope import decode_frame, encode_frame
    from .events import (
        Acked,
        AwarenessReceived,
        ByeReceived,
        CaughtUpReceived,
        DocumentRefused,
        ErrorReceived,
        Event,
        HelloReceived,
        PingReceived,
        PongReceived,
        RemoteUpdate,
        SyncStep1Received,
        SyncStep2Received,
        UpdateReceived,
        Welcomed,
    )
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
    )
    from .session import ClientWrite, PeerSession, Role, SessionState, SessionStatistics

# The /ws protocol's names (those of `__all__` imported above only for type checkers), each
# imported from its module when first asked for (PEP 562): `crdt-sync serve`'s /yjs door needs
# close and ysync only, and making the /ws frames, events and PeerSession (26 frozen
# dataclasses) took ~10 ms of a restart's first record synced (benchmarks/README.md, live_bench
# (l)). `from crdt_sync.protocol import PeerSession` works as before.
_LAZY_MODULES = ("envelope", "events", "messages", "session")
_MISSING = object()


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _LAZY_MODULES:
            value = getattr(importlib.import_module(f".{module}", __name__), name, _MISSING)
            if value is not _MISSING:
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "Acked",
    "AwarenessReceived",
    "AwarenessUpdate",
    "Bye",
    "ByeReceived",
    "CaughtUp",
    "CaughtUpReceived",
    "ClientWrite",
    "CloseCode",
    "DocumentRefused",
    "Error",
    "ErrorReceived",
    "Event",
    "Hello",
    "HelloReceived",
    "Message",
    "PeerSession",
    "Ping",
    "PingReceived",
    "Pong",
    "PongReceived",
    "RemoteUpdate",
    "Role",
    "SessionState",
    "SessionStatistics",
    "SyncStep1",
    "SyncStep1Received",
    "SyncStep2",
    "SyncStep2Received",
    "SyncUpdate",
    "UpdateReceived",
    "Welcome",
    "Welcomed",
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
    "close_reason",
    "decode_frame",
    "decode_sync_message",
    "decode_yjs_message",
    "encode_awareness",
    "encode_frame",
    "encode_permission_denied",
    "encode_query_awareness",
    "encode_sync_message",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_sync_update",
    "encode_yjs_message",
]

"""PeerSession: the sans-I/O state machine of one ``/ws`` connection, for either end (pure).

Shaped like h11's ``Connection`` and websockets' sans-I/O ``Protocol``: bytes in, events out;
messages in, bytes out. It never awaits, sleeps, reads the clock or touches a socket. The server's
``/ws`` endpoint and the client replica drive the same class, one with ``Role.SERVER``, the other
with ``Role.CLIENT``.

The session models the *connection*, not one end: a frame runs through the same rules and the same
bookkeeping whether this end sends it or receives it; the role only says which direction is which.
So a server that would break the protocol is stopped by its own ``send()``, before the bytes leave.

Rule 1 (order). hello -> welcome -> catch-up -> caught_up -> live; the table `_LEGAL` says who may
send what in which state. A client sends writes only once welcomed; a server acks only once live
(it holds acks, like live updates, until caught_up).

Rule 2 (cursor). The client's cursor is the highest seq it has received in a sync frame, an ack or
caught_up. Every sync frame that carries a seq must carry one above the cursor: the server sends
its log in order, so a client that reconnects with its cursor gets exactly what it missed.

Rule 3 (writes). A client write (sync update or step 2) carries a cseq not already in flight; it
stays in `unacked` until an ack or an error with that cseq settles it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from ..errors import DocumentError, ProtocolError, UnexpectedMessage
from ..ids import split_doc_id
from .awareness import AwarenessState, decode_awareness_update
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

__all__ = ["ClientWrite", "PeerSession", "Role", "SessionState", "SessionStatistics"]


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class SessionState(Enum):
    AWAITING_HELLO = "awaiting_hello"  # nothing yet: the client's first frame must be hello
    AWAITING_WELCOME = "awaiting_welcome"  # hello is through; the server owes welcome
    CATCHING_UP = "catching_up"  # welcomed: catch-up sync frames until caught_up
    LIVE = "live"  # caught up: updates, acks and errors both ways
    CLOSED = "closed"  # the client said bye


_TALKING = frozenset({SessionState.AWAITING_WELCOME, SessionState.CATCHING_UP, SessionState.LIVE})
_SYNCING = frozenset({SessionState.CATCHING_UP, SessionState.LIVE})
_CLIENT, _SERVER = Role.CLIENT, Role.SERVER

# Rule 1: (sender, message) -> the states in which it may be sent. Absent: that role never sends it.
_LEGAL: dict[tuple[Role, type[Message]], frozenset[SessionState]] = {
    (_CLIENT, Hello): frozenset({SessionState.AWAITING_HELLO}),
    (_CLIENT, SyncStep1): _SYNCING,
    (_CLIENT, SyncStep2): _SYNCING,
    (_CLIENT, SyncUpdate): _SYNCING,
    (_CLIENT, AwarenessUpdate): _SYNCING,
    (_CLIENT, Ping): _TALKING,
    (_CLIENT, Pong): _TALKING,
    (_CLIENT, Bye): _TALKING,
    (_SERVER, Welcome): frozenset({SessionState.AWAITING_WELCOME}),
    (_SERVER, SyncStep1): _SYNCING,
    (_SERVER, SyncStep2): _SYNCING,
    (_SERVER, SyncUpdate): _SYNCING,
    (_SERVER, AwarenessUpdate): _SYNCING,
    (_SERVER, CaughtUp): frozenset({SessionState.CATCHING_UP}),
    (_SERVER, Ack): frozenset({SessionState.LIVE}),
    (_SERVER, Error): _TALKING,
    (_SERVER, Ping): _TALKING,
    (_SERVER, Pong): _TALKING,
}


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    role: Role
    state: SessionState
    cursor: int
    unacked: int  # writes in flight
    frames_received: int  # frames that decoded, legal or not
    frames_sent: int  # frames queued, pongs included


ClientWrite: TypeAlias = SyncUpdate | SyncStep2
"""A client write: it carries a cseq and is settled by an ack or an error."""


class PeerSession:
    """One end of one ``/ws`` connection.

    Calling contract:

    - Client: ``send(Hello(...))`` first. Server: ``receive()`` the hello, then
      ``send(Welcome(...))``, the catch-up ``SyncUpdate``s with their seq (above
      ``session.cursor``, in seq order), then ``CaughtUp``.
    - Feed every binary frame the peer sends to `receive`, in order, and act on each event.
    - After every `receive` and every `send`, write every frame of `frames_to_send`, in order
      (`receive` may queue some itself: a Pong for each Ping).
    - A ProtocolError from `receive` means the peer broke the protocol: close with 4400 and the
      message as reason. Anything `send` raises means this end's code is wrong (a bug: 1011).
    - Nothing changes when `receive` or `send` raises.
    """

    def __init__(self, role: Role) -> None:
        self.role = role
        self._peer = _SERVER if role is _CLIENT else _CLIENT
        self._phase = SessionState.AWAITING_HELLO
        self._said_bye = False
        self._heard_bye = False
        self._cursor = 0
        self._unacked: dict[int, ClientWrite] = {}
        self._outgoing: list[bytes] = []
        self._frames_received = 0
        self._frames_sent = 0

    @property
    def state(self) -> SessionState:
        return SessionState.CLOSED if self._said_bye or self._heard_bye else self._phase

    @property
    def cursor(self) -> int:
        """The client's cursor (Rule 2), as this end knows it.

        On the client: the highest seq received; reconnect with it. On the server: the cursor
        the client announced, or 0 once welcomed if it was ahead of the server's (whose log was
        replaced); right after ``send(Welcome(...))`` it is where catch-up starts, and it then
        follows what has been sent.
        """
        return self._cursor

    @property
    def unacked(self) -> dict[int, ClientWrite]:
        """Client writes in flight, by cseq, in the order sent: on the client, what to send again
        after a reconnect; on the server, what still owes an ack or an error. A copy."""
        return dict(self._unacked)

    def receive(self, frame: bytes | str) -> list[Event]:
        """Take one frame from the peer; returns its events (then write `frames_to_send`).

        Hand it text frames too: they are refused here, like any other malformed frame.

        Raises:
            ProtocolError: a text frame, a malformed frame, a frame this role may not send now
                (UnexpectedMessage, naming the state), one that breaks Rule 2 or 3, or an
                awareness update a stock y-protocols client could not decode (awareness.py).
        """
        if isinstance(frame, str):
            raise ProtocolError("text frame: /ws frames are binary, one CBOR map each")
        message = decode_frame(frame)
        self._frames_received += 1
        if self._heard_bye:
            raise UnexpectedMessage(
                f"{_describe(message)} from the {self._peer.value} after bye in state CLOSED"
            )
        refusal = self._check(message, self._peer)
        # Awareness is decoded as it comes in, never relayed opaque (a stock client that cannot
        # decode it exits); what this end sends on was decoded when it came in.
        states = (
            decode_awareness_update(message.data)
            if isinstance(message, AwarenessUpdate) and refusal is None
            else ()
        )
        self._apply(message, self._peer)
        if isinstance(message, Ping) and not self._said_bye:
            self._queue(Pong(message.n))
        return [_event(message, refusal, states)]

    def send(self, message: Message) -> None:
        """Queue `message` for the peer; then write `frames_to_send`.

        Raises:
            UnexpectedMessage: this role may not send it in this state.
            ProtocolError: it would break Rule 2 or 3 (e.g. an ack for a cseq not in flight).
            DocumentError: its doc is not a ``collection/record_id`` id.
        """
        if self._said_bye:
            raise UnexpectedMessage(f"cannot send {_describe(message)}: bye sent, state CLOSED")
        refusal = self._check(message, self.role)
        if refusal is not None:
            raise refusal
        self._apply(message, self.role)
        self._queue(message)

    def frames_to_send(self) -> list[bytes]:
        """Drain the encoded frames queued since the last call, each one websocket binary frame."""
        frames, self._outgoing = self._outgoing, []
        return frames

    def statistics(self) -> SessionStatistics:
        """A frozen snapshot for status pages and debugging."""
        return SessionStatistics(
            self.role,
            self.state,
            self._cursor,
            len(self._unacked),
            self._frames_received,
            self._frames_sent,
        )

    def _queue(self, message: Message) -> None:
        self._outgoing.append(encode_frame(message))
        self._frames_sent += 1

    # -- checks: raise, or return the refusal of a bad doc id; change nothing ------------------

    def _check(self, message: Message, sender: Role) -> DocumentError | None:
        legal = _LEGAL.get((sender, type(message)))
        if legal is None:
            raise UnexpectedMessage(
                f"a {sender.value} never sends {_describe(message)} (state {self._phase.name})"
            )
        if self._phase not in legal:
            raise UnexpectedMessage(
                f"{_describe(message)} from the {sender.value} in state {self._phase.name}"
            )
        if isinstance(message, SyncUpdate | SyncStep2):
            self._check_update(message, sender)
        elif isinstance(message, Ack):
            self._check_settles("ack", message.cseq)
            if self._unacked[message.cseq].doc != message.doc:
                raise ProtocolError(
                    f"ack for cseq {message.cseq} names {message.doc!r}, "
                    f"the write was to {self._unacked[message.cseq].doc!r}"
                )
        elif isinstance(message, Error) and message.cseq is not None:
            self._check_settles("error", message.cseq)
        elif isinstance(message, CaughtUp) and message.cursor < self._cursor:
            raise ProtocolError(
                f"caught_up cursor {message.cursor} is behind seq {self._cursor} already sent"
            )
        return self._check_doc(message, sender)

    def _check_update(self, message: ClientWrite, sender: Role) -> None:
        what = _describe(message)
        if sender is _CLIENT:
            if message.cseq is None or message.seq is not None:
                raise ProtocolError(f"a client's {what} carries a cseq and no seq")
            if message.cseq in self._unacked:
                raise ProtocolError(f"{what}: cseq {message.cseq} is already in flight")
        elif message.cseq is not None:
            raise ProtocolError(f"a server's {what} carries no cseq")
        elif message.seq is not None and message.seq <= self._cursor:
            raise ProtocolError(
                f"{what} for {message.doc!r} has seq {message.seq}, not above the client's "
                f"cursor {self._cursor}: the server must send its log in seq order"
            )

    def _check_settles(self, what: str, cseq: int) -> None:
        if cseq not in self._unacked:
            raise ProtocolError(f"{what} for cseq {cseq}, which is not in flight")

    def _check_doc(self, message: Message, sender: Role) -> DocumentError | None:
        if not isinstance(message, SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate | Ack):
            return None
        try:
            split_doc_id(message.doc)
        except DocumentError as exc:
            if sender is _CLIENT or sender is self.role:
                return exc  # the server answers with an error frame; a sender raises it
            raise ProtocolError(f"{_describe(message)} from the server: {exc.message}") from exc
        return None

    # -- bookkeeping: only after every check passed -------------------------------------------

    def _apply(self, message: Message, sender: Role) -> None:
        if isinstance(message, Hello):
            self._phase = SessionState.AWAITING_WELCOME
            self._cursor = message.cursor
        elif isinstance(message, Welcome):
            self._phase = SessionState.CATCHING_UP
            if message.cursor < self._cursor:
                self._cursor = 0  # the server's log is not the one the client followed
        elif isinstance(message, SyncUpdate | SyncStep2):
            if sender is _CLIENT:
                self._unacked[message.cseq] = message  # type: ignore[index]
            elif message.seq is not None:
                self._cursor = message.seq
        elif isinstance(message, Ack):
            del self._unacked[message.cseq]
            self._cursor = max(self._cursor, message.seq)
        elif isinstance(message, Error) and message.cseq is not None:
            del self._unacked[message.cseq]
        elif isinstance(message, CaughtUp):
            self._phase = SessionState.LIVE
            self._cursor = message.cursor
        elif isinstance(message, Bye):
            self._said_bye = self._said_bye or sender is self.role
            self._heard_bye = self._heard_bye or sender is not self.role


def _describe(message: Message) -> str:
    if isinstance(message, SyncStep1):
        return "sync step 1"
    if isinstance(message, SyncStep2):
        return "sync step 2"
    if isinstance(message, SyncUpdate):
        return "sync update"
    return message.frame_type


def _event(
    message: Message, refusal: DocumentError | None, states: tuple[AwarenessState, ...]
) -> Event:
    """The event for a message the peer sent (its checks passed)."""
    if refusal is not None and isinstance(
        message, SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate
    ):
        cseq = message.cseq if isinstance(message, SyncUpdate | SyncStep2) else None
        return DocumentRefused(message.doc, cseq, refusal)
    match message:
        case Hello(client, cursor, collections):
            return HelloReceived(client, cursor, collections)
        case Welcome(cursor, server):
            return Welcomed(cursor, server)
        case SyncUpdate(doc, update, seq, cseq) | SyncStep2(doc, update, seq, cseq) if (
            cseq is not None
        ):
            return UpdateReceived(doc, update, cseq)
        case SyncUpdate(doc, update, seq):
            return RemoteUpdate(doc, update, seq)
        case SyncStep2(doc, update, seq):
            return SyncStep2Received(doc, update, seq)
        case SyncStep1(doc, state_vector):
            return SyncStep1Received(doc, state_vector)
        case AwarenessUpdate(doc, data):
            return AwarenessReceived(doc, data, states)
        case CaughtUp(cursor):
            return CaughtUpReceived(cursor)
        case Ack(doc, cseq, seq):
            return Acked(doc, cseq, seq)
        case Error(doc, cseq, code, text):
            return ErrorReceived(doc, cseq, code, text)
        case Ping(n):
            return PingReceived(n)
        case Pong(n):
            return PongReceived(n)
        case _:
            return ByeReceived()

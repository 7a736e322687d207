"""The wire protocol: the y-websocket codec, the /ws envelope, and PeerSession's rules."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import (
    Doc,
    Map,
    Text,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)

from crdt_sync.errors import ProtocolError, SchemaViolation, UnexpectedMessage
from crdt_sync.ids import DocId
from crdt_sync.protocol import (
    Ack,
    Acked,
    AwarenessReceived,
    AwarenessUpdate,
    Bye,
    ByeReceived,
    CaughtUp,
    CaughtUpReceived,
    ClientWrite,
    CloseCode,
    DocumentRefused,
    Error,
    ErrorReceived,
    Event,
    Hello,
    HelloReceived,
    Message,
    PeerSession,
    Ping,
    PingReceived,
    Pong,
    PongReceived,
    RemoteUpdate,
    Role,
    SessionState,
    SessionStatistics,
    SyncStep1,
    SyncStep1Received,
    SyncStep2,
    SyncStep2Received,
    SyncUpdate,
    UpdateReceived,
    Welcome,
    Welcomed,
    YjsAwareness,
    YjsMessage,
    YjsPermissionDenied,
    YjsQueryAwareness,
    YjsSyncStep1,
    YjsSyncStep2,
    YjsUpdate,
    close_reason,
    decode_frame,
    decode_sync_message,
    decode_yjs_message,
    encode_awareness,
    encode_frame,
    encode_permission_denied,
    encode_query_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    encode_yjs_message,
)
from crdt_sync.protocol.awareness import AwarenessState, encode_awareness_update

DEAL = DocId("deals/7")
CONTACT = DocId("contacts/42")


def edited_document(text: str = "hello") -> Doc[Any]:
    document: Doc[Any] = Doc()
    document["record"] = record = Map[str]()
    record["name"] = "Ann"
    document["notes"] = notes = Text()
    notes += text
    return document


# -- y-websocket codec ------------------------------------------------------------------------


def test_encoders_match_pycrdt_byte_for_byte() -> None:
    document = edited_document("x" * 300)  # an update longer than 127 bytes: a 2-byte length
    update = document.get_update()
    assert len(update) > 127
    step1 = encode_sync_step1(document.get_state())
    assert step1 == create_sync_message(document)
    assert encode_sync_update(update) == create_update_message(update)
    assert encode_awareness(b"\x01\x02") == create_awareness_message(b"\x01\x02")
    other: Doc[Any] = Doc()
    reply = handle_sync_message(create_sync_message(other)[1:], document)
    assert reply is not None
    assert encode_sync_step2(document.get_update(other.get_state())) == reply


def test_pycrdt_messages_decode_to_typed_messages() -> None:
    document = edited_document()
    update = document.get_update()
    assert decode_yjs_message(create_sync_message(document)) == YjsSyncStep1(document.get_state())
    assert decode_yjs_message(create_update_message(update)) == YjsUpdate(update)
    assert decode_yjs_message(create_awareness_message(b"aw")) == YjsAwareness(b"aw")
    reply = handle_sync_message(create_sync_message(Doc())[1:], document)
    assert reply is not None
    assert decode_yjs_message(reply) == YjsSyncStep2(document.get_update(Doc().get_state()))


def test_two_pycrdt_documents_converge_through_the_codec() -> None:
    alice, bob = edited_document("from alice"), Doc[Any]()
    bob["notes"] = Text("from bob")
    for first, second in ((alice, bob), (bob, alice)):
        asked = decode_yjs_message(encode_sync_step1(second.get_state()))
        assert isinstance(asked, YjsSyncStep1)
        answer = decode_yjs_message(encode_sync_step2(first.get_update(asked.state_vector)))
        assert isinstance(answer, YjsSyncStep2)
        second.apply_update(answer.update)
    assert str(alice["notes"]) == str(bob["notes"])
    assert "from alice" in str(bob["notes"]) and "from bob" in str(bob["notes"])


def test_auth_and_query_awareness_have_the_y_protocols_layout() -> None:
    assert encode_query_awareness() == b"\x03"
    # auth.js: [messageAuth=2, messagePermissionDenied=0, varString(reason)]; lib0 counts the
    # UTF-8 bytes (pycrdt's Encoder.write_var_string counts characters, so it is not used).
    assert encode_permission_denied("read-only") == b"\x02\x00\x09read-only"
    assert encode_permission_denied("é") == b"\x02\x00\x02\xc3\xa9"
    assert decode_yjs_message(b"\x02\x00\x02\xc3\xa9") == YjsPermissionDenied("é")
    assert decode_yjs_message(b"\x03") == YjsQueryAwareness()


def test_a_text_frame_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match=r"^y-websocket message: a text frame"):
        decode_yjs_message("\x00\x00\x00")
    with pytest.raises(ProtocolError, match=r"^text frame: /ws frames are binary"):
        PeerSession(Role.SERVER).receive('{"t": "hello"}')


def test_decoding_is_as_lenient_as_lib0_where_lib0_is() -> None:
    # lib0 readVarUint accepts non-minimal varints; its TextDecoder replaces bad UTF-8.
    assert decode_yjs_message(b"\x80\x00\x00\x80\x00") == YjsSyncStep1(b"")
    assert decode_yjs_message(b"\x02\x00\x01\xff") == YjsPermissionDenied("\ufffd")


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (b"", r"empty frame"),
        (b"\x04", r"unknown message type 4"),
        (b"\x00\x03\x00", r"unknown sync message type 3"),
        (b"\x00", r"truncated: sync message type at offset 1"),
        (b"\x00\x02\x05abc", r"truncated: update declares 5 bytes, 3 left"),
        (b"\x00\x02\x80", r"truncated: length of update at offset 2"),
        (b"\x01\x02ab!", r"1 trailing bytes after the message at offset 4"),
        (b"\x03\x03", r"1 trailing bytes"),
        (b"\x02\x01\x00", r"unknown auth message type 1"),
        (b"\xff" * 9 + b"\x01", r"message type at offset 0 is larger than 2\*\*53 - 1"),
    ],
)
def test_malformed_y_websocket_frames_raise_protocol_error(frame: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=rf"^y-websocket message: {problem}"):
        decode_yjs_message(frame)


yjs_messages: st.SearchStrategy[YjsMessage] = st.one_of(
    st.builds(YjsSyncStep1, st.binary()),
    st.builds(YjsSyncStep2, st.binary(max_size=400)),
    st.builds(YjsUpdate, st.binary(max_size=400)),
    st.builds(YjsAwareness, st.binary()),
    st.just(YjsQueryAwareness()),
    st.builds(YjsPermissionDenied, st.text()),
)


@given(yjs_messages)
def test_y_websocket_messages_round_trip(message: YjsMessage) -> None:
    assert decode_yjs_message(encode_yjs_message(message)) == message


# Random bytes, and random bytes behind every valid prefix, to reach the deep branches too.
prefixed_bytes = st.one_of(
    st.binary(),
    st.tuples(
        st.sampled_from([b"\x00", b"\x00\x00", b"\x00\x02", b"\x01", b"\x02\x00"]), st.binary()
    ).map(b"".join),
)


@given(prefixed_bytes)
def test_any_bytes_decode_or_raise_protocol_error(frame: bytes) -> None:
    try:
        message = decode_yjs_message(frame)
    except ProtocolError:
        return
    assert decode_yjs_message(encode_yjs_message(message)) == message


@given(prefixed_bytes)
def test_any_bytes_decode_as_a_sync_message_or_raise_protocol_error(data: bytes) -> None:
    try:
        decode_sync_message(data)
    except ProtocolError as exc:
        assert exc.message.startswith("y-sync message: ")


# -- the /ws envelope ---------------------------------------------------------------------------


def test_frames_are_cbor_maps_with_the_documented_keys() -> None:
    update = b"\x01\x00"
    assert cbor2.loads(encode_frame(Hello("phone-1", 12, ("deals",)))) == {
        "t": "hello", "v": 1, "client": "phone-1", "cursor": 12, "collections": ["deals"],
    }  # fmt: skip
    assert cbor2.loads(encode_frame(Hello("phone-1", 0)))["collections"] is None
    assert cbor2.loads(encode_frame(Welcome(40, "crdt-sync"))) == {
        "t": "welcome", "v": 1, "cursor": 40, "server": "crdt-sync",
    }  # fmt: skip
    # y is the y-websocket message without its leading 0: sub-type, then varBytes.
    assert cbor2.loads(encode_frame(SyncUpdate(DEAL, update, cseq=3))) == {
        "t": "sync", "doc": "deals/7", "y": b"\x02\x02\x01\x00", "cseq": 3,
    }  # fmt: skip
    assert cbor2.loads(encode_frame(SyncUpdate(DEAL, update, seq=41)))["seq"] == 41
    assert cbor2.loads(encode_frame(SyncStep1(DEAL, b"\x00")))["y"] == b"\x00\x01\x00"
    assert cbor2.loads(encode_frame(SyncStep2(DEAL, update)))["y"] == b"\x01\x02\x01\x00"
    assert cbor2.loads(encode_frame(AwarenessUpdate(DEAL, b"aw"))) == {
        "t": "awareness", "doc": "deals/7", "data": b"aw",
    }  # fmt: skip
    assert cbor2.loads(encode_frame(CaughtUp(40))) == {"t": "caught_up", "cursor": 40}
    assert cbor2.loads(encode_frame(Ack(DEAL, 3, 41))) == {
        "t": "ack", "doc": "deals/7", "cseq": 3, "seq": 41,
    }  # fmt: skip
    assert cbor2.loads(encode_frame(Error(None, None, "unknown_collection", "no such"))) == {
        "t": "error", "doc": None, "cseq": None, "code": "unknown_collection", "message": "no such",
    }  # fmt: skip
    assert cbor2.loads(encode_frame(Ping(5))) == {"t": "ping", "n": 5}
    assert cbor2.loads(encode_frame(Pong())) == {"t": "pong"}
    assert cbor2.loads(encode_frame(Bye())) == {"t": "bye"}


def test_a_frame_far_larger_than_a_read_buffer_round_trips() -> None:
    # cbor2 6.1.0 corrupted streamed payloads over 4096 bytes; the decoder reads from a stream.
    update = bytes(range(256)) * 400
    assert decode_frame(encode_frame(SyncUpdate(DEAL, update, seq=1))) == SyncUpdate(
        DEAL, update, seq=1
    )


def test_unknown_keys_are_ignored_and_null_optionals_mean_absent() -> None:
    frame = cbor2.dumps({"t": "sync", "doc": "deals/7", "y": b"\x02\x00", "seq": None, "x": 1})
    assert decode_frame(frame) == SyncUpdate(DEAL, b"")
    assert decode_frame(cbor2.dumps({"t": "error", "code": "c", "message": "m"})) == Error(
        None, None, "c", "m"
    )


def frame_of(fields: object) -> bytes:
    return cbor2.dumps(fields)


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (b"\xff", r"^frame: not valid CBOR"),
        (frame_of([1, 2]), r"^frame: must be a CBOR map, got list"),
        (frame_of({"t": "ping"}) + b"\x00", r"^frame: 1 bytes after the CBOR map"),
        (frame_of({"x": 1}), r"^frame: 't' must be a text string naming the frame, got null"),
        (frame_of({"t": "shout"}), r"^frame: unknown type 'shout'"),
        (frame_of({"t": "hello", "client": "a", "cursor": 0}), r"protocol version null"),
        (frame_of({"t": "hello", "v": 2, "client": "a", "cursor": 0}), r"version 2 is not"),
        (frame_of({"t": "hello", "v": 1, "cursor": 0}), r"^hello frame: 'client' must be"),
        (frame_of({"t": "hello", "v": 1, "client": "a" * 129, "cursor": 0}), r"1-128 char"),
        (frame_of({"t": "hello", "v": 1, "client": "a", "cursor": -1}), r"'cursor' must be an"),
        (frame_of({"t": "hello", "v": 1, "client": "a", "cursor": True}), r"got True"),
        (frame_of({"t": "hello", "v": 1, "client": "a", "cursor": 1.0}), r"got 1.0"),
        (
            frame_of({"t": "hello", "v": 1, "client": "a", "cursor": 0, "collections": "x"}),
            r"array",
        ),
        (
            frame_of({"t": "hello", "v": 1, "client": "a", "cursor": 0, "collections": ["X"]}),
            r"name",
        ),
        (frame_of({"t": "sync", "doc": "deals/7"}), r"^sync frame: 'y' must be a byte string"),
        (frame_of({"t": "sync", "doc": 7, "y": b"\x02\x00"}), r"^sync frame: 'doc' must be a text"),
        (
            frame_of({"t": "sync", "doc": "deals/7", "y": b"\x02\x05"}),
            r"^sync frame: bad 'y': truncated: update declares 5",
        ),
        (frame_of({"t": "sync", "doc": "deals/7", "y": b"\x00\x00", "cseq": 1}), r"step 1 carries"),
        (frame_of({"t": "sync", "doc": "deals/7", "y": b"\x02\x00", "seq": 0}), r"'seq' must be"),
        (frame_of({"t": "ack", "doc": "deals/7", "cseq": 1}), r"^ack frame: 'seq' must be"),
        (frame_of({"t": "ack", "doc": "deals/7", "cseq": 1, "seq": -1}), r"^ack frame: 'seq'"),
        (frame_of({"t": "ping", "n": -1}), r"^ping frame: 'n' must be an integer >= 0"),
        (frame_of({"t": "ping", "n": 2**64 - 1}), r"^ping frame: 'n'"),
        (frame_of({"t": "ping", "n": cbor2.CBORTag(1, 0)}), r"not valid CBOR.*tag 1"),  # a date
        (frame_of({"t": "ping", "n": 2**70}), r"not valid CBOR.*tag 2"),  # a bignum
        (frame_of({"t": "ping", "n": cbor2.CBORTag(9999, 0)}), r"not valid CBOR.*tag 9999"),
        (b"\xa2\x61t\x64ping\x61t\x64pong", r"not valid CBOR.*[Dd]uplicate"),
        (frame_of({"t": "ping", "n": [[[[[1]]]]]}), r"not valid CBOR.*depth"),
    ],
)
def test_malformed_frames_raise_protocol_error(frame: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_frame(frame)


doc_ids = st.one_of(st.sampled_from([DEAL, CONTACT]), st.text(max_size=20).map(DocId))
ints = st.integers(min_value=0, max_value=2**63 - 1)
seqs = st.integers(min_value=1, max_value=2**63 - 1)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Hello,
        st.text(min_size=1, max_size=128),
        ints,
        st.none() | st.lists(st.sampled_from(["deals", "contacts", "a_b9"])).map(tuple),
    ),
    st.builds(Welcome, ints, st.text()),
    st.builds(SyncStep1, doc_ids, st.binary()),
    st.builds(SyncStep2, doc_ids, st.binary(), st.none() | seqs, st.none() | ints),
    st.builds(SyncUpdate, doc_ids, st.binary(), st.none() | seqs, st.none() | ints),
    st.builds(AwarenessUpdate, doc_ids, st.binary()),
    st.builds(CaughtUp, ints),
    st.builds(Ack, doc_ids, ints, ints),
    st.builds(Error, st.none() | st.text(), st.none() | ints, st.text(), st.text()),
    st.builds(Ping, st.none() | ints),
    st.builds(Pong, st.none() | ints),
    st.just(Bye()),
)


@given(messages)
def test_every_message_round_trips_through_its_frame(message: Message) -> None:
    assert decode_frame(encode_frame(message)) == message


# -- PeerSession --------------------------------------------------------------------------------


@dataclass
class SessionPair:
    """A client and a server PeerSession joined in memory (h11's ConnectionPair)."""

    client: PeerSession = field(default_factory=lambda: PeerSession(Role.CLIENT))
    server: PeerSession = field(default_factory=lambda: PeerSession(Role.SERVER))

    def to_server(self) -> list[Event]:
        return [
            event for frame in self.client.frames_to_send() for event in self.server.receive(frame)
        ]

    def to_client(self) -> list[Event]:
        return [
            event for frame in self.server.frames_to_send() for event in self.client.receive(frame)
        ]

    def exchange(self) -> tuple[list[Event], list[Event]]:
        """Pump frames both ways until both are quiet: (server's events, client's events)."""
        server_events: list[Event] = []
        client_events: list[Event] = []
        while True:
            got_server, got_client = self.to_server(), self.to_client()
            if not got_server and not got_client:
                return server_events, client_events
            server_events += got_server
            client_events += got_client


def states(pair: SessionPair) -> tuple[SessionState, SessionState]:
    return pair.client.state, pair.server.state


def live_pair(cursor: int = 0, server_cursor: int = 0) -> SessionPair:
    pair = SessionPair()
    pair.client.send(Hello("phone-1", cursor, None))
    pair.exchange()
    pair.server.send(Welcome(server_cursor, "test-server"))
    pair.server.send(CaughtUp(server_cursor))
    pair.exchange()
    return pair


def test_hello_welcome_catch_up_caught_up_then_live() -> None:
    pair = SessionPair()
    assert states(pair) == (SessionState.AWAITING_HELLO, SessionState.AWAITING_HELLO)
    pair.client.send(Hello("phone-1", 10, ("deals",)))
    assert pair.to_server() == [HelloReceived("phone-1", 10, ("deals",))]
    assert states(pair) == (SessionState.AWAITING_WELCOME, SessionState.AWAITING_WELCOME)
    pair.server.send(Welcome(12, "test-server"))
    pair.server.send(SyncUpdate(DEAL, b"u11", seq=11))
    pair.server.send(SyncUpdate(DEAL, b"u12", seq=12))
    assert pair.to_client() == [
        Welcomed(12, "test-server"),
        RemoteUpdate(DEAL, b"u11", 11),
        RemoteUpdate(DEAL, b"u12", 12),
    ]
    assert states(pair) == (SessionState.CATCHING_UP, SessionState.CATCHING_UP)
    pair.server.send(CaughtUp(12))
    assert pair.to_client() == [CaughtUpReceived(12)]
    assert states(pair) == (SessionState.LIVE, SessionState.LIVE)
    pair.client.send(SyncUpdate(CONTACT, b"mine", cseq=1))
    assert pair.to_server() == [UpdateReceived(CONTACT, b"mine", 1)]
    pair.server.send(Ack(CONTACT, 1, 13))
    assert pair.to_client() == [Acked(CONTACT, 1, 13)]
    assert pair.client.cursor == pair.server.cursor == 13


def test_the_cursor_is_the_highest_seq_received_in_sync_frames_acks_and_caught_up() -> None:
    pair = SessionPair()
    pair.client.send(Hello("phone-1", 3, None))
    pair.exchange()
    pair.server.send(Welcome(20, "s"))
    pair.server.send(SyncUpdate(DEAL, b"", seq=5))
    pair.server.send(SyncStep1(DEAL, b"sv"))  # no seq: the cursor stays
    pair.exchange()
    assert pair.client.cursor == 5
    pair.server.send(CaughtUp(20))  # nothing else the client follows up to 20
    pair.exchange()
    assert pair.client.cursor == 20
    pair.client.send(SyncUpdate(DEAL, b"", cseq=1))
    pair.exchange()
    pair.server.send(SyncUpdate(CONTACT, b"", seq=21))
    pair.server.send(Ack(DEAL, 1, 22))
    pair.exchange()
    assert pair.client.cursor == 22


def test_the_server_must_send_its_log_in_seq_order() -> None:
    pair = live_pair(server_cursor=30)
    with pytest.raises(ProtocolError, match=r"seq 30, not above the client's cursor 30"):
        pair.server.send(SyncUpdate(DEAL, b"", seq=30))
    assert pair.server.frames_to_send() == []
    forged = encode_frame(SyncUpdate(DEAL, b"", seq=29))
    with pytest.raises(ProtocolError, match=r"must send its log in seq order"):
        pair.client.receive(forged)
    assert pair.client.cursor == 30


def test_a_client_ahead_of_the_server_is_caught_up_from_zero() -> None:
    """The server's log was replaced (restored from a backup): the client's cursor means
    nothing there, so both ends agree to start over from 0."""
    pair = SessionPair()
    pair.client.send(Hello("phone-1", 50, None))
    pair.exchange()
    assert pair.server.cursor == 50
    pair.server.send(Welcome(7, "s"))
    assert pair.server.cursor == 0  # where catch-up starts
    pair.server.send(SyncUpdate(DEAL, b"", seq=1))
    pair.exchange()
    assert pair.client.cursor == 1


@dataclass
class Scenario:
    """A server with a log, a replica following it, and a wire that loses what is on it when the
    connection drops. The server catches up a page at a time and, until caught_up, holds live
    updates and acks in commit order (as the server's per-connection queue does)."""

    log: list[int] = field(default_factory=list)
    pair: SessionPair = field(default_factory=SessionPair)
    wire: list[bytes] = field(default_factory=list)  # server -> client, not yet delivered
    backlog: list[int] = field(default_factory=list)  # catch-up seqs not yet sent
    held: list[Message] = field(default_factory=list)  # live frames held during catch-up
    committed: set[int] = field(default_factory=set)  # cseqs committed on this connection
    received: set[int] = field(default_factory=set)  # seqs the client got in sync frames or acks
    queue: dict[int, ClientWrite] = field(default_factory=dict)  # the replica's offline queue
    saved_cursor: int = 0  # what the replica stores between connections
    next_cseq: int = 0
    is_welcomed: bool = False
    head: int = 0  # the server's cursor when it welcomed this connection

    def connect(self) -> None:
        self.pair, self.wire, self.held, self.committed = SessionPair(), [], [], set()
        self.is_welcomed = False
        self.pair.client.send(Hello("phone-1", self.saved_cursor, None))
        self.pair.to_server()
        self.head = len(self.log)
        self.pair.server.send(Welcome(self.head, "s"))
        self.backlog = self.log[self.pair.server.cursor :]
        self.flush()

    def reconnect(self) -> None:
        self.saved_cursor = self.pair.client.cursor
        self.connect()

    def flush(self) -> None:
        self.wire += self.pair.server.frames_to_send()

    def server_sends_live(self, message: Message) -> None:
        if self.pair.server.state is SessionState.LIVE:
            self.pair.server.send(message)
            self.flush()
        else:
            self.held.append(message)

    def server_sends_a_page(self) -> None:
        server = self.pair.server
        if server.state is not SessionState.CATCHING_UP:
            return
        if self.backlog:
            server.send(SyncUpdate(DEAL, b"", seq=self.backlog.pop(0)))
        else:
            server.send(CaughtUp(self.head))
            for message in self.held:
                server.send(message)
            self.held = []
        self.flush()

    def someone_else_writes(self) -> None:
        self.log.append(len(self.log) + 1)
        self.server_sends_live(SyncUpdate(DEAL, b"", seq=len(self.log)))

    def replica_writes(self) -> None:
        self.next_cseq += 1
        self.queue[self.next_cseq] = SyncUpdate(CONTACT, b"", cseq=self.next_cseq)
        if self.is_welcomed:  # otherwise it goes with the resend after welcome
            self.pair.client.send(self.queue[self.next_cseq])
            self.commit_writes()

    def commit_writes(self) -> None:
        self.pair.to_server()
        for cseq, write in self.pair.server.unacked.items():
            if cseq not in self.committed:
                self.committed.add(cseq)
                self.log.append(len(self.log) + 1)
                self.server_sends_live(Ack(write.doc, cseq, len(self.log)))

    def deliver(self) -> None:
        if not self.wire:
            return
        for event in self.pair.client.receive(self.wire.pop(0)):
            if isinstance(event, RemoteUpdate) and event.seq is not None:
                self.received.add(event.seq)
            elif isinstance(event, Acked):
                self.received.add(event.seq)
                del self.queue[event.cseq]
            elif isinstance(event, Welcomed):
                self.is_welcomed = True
                for write in self.queue.values():  # the replica resends what was never acked
                    self.pair.client.send(write)
                self.commit_writes()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(["other", "own", "page", "deliver", "deliver", "drop"]), max_size=60)
)
def test_reconnecting_with_the_cursor_gets_exactly_what_was_missed(steps: list[str]) -> None:
    """However often the connection drops, every seq up to the client's cursor has reached it,
    a reconnect with that cursor brings the rest, and every write is acked in the end."""
    scenario = Scenario()
    scenario.connect()
    for step in steps:
        if step == "other":
            scenario.someone_else_writes()
        elif step == "own":
            scenario.replica_writes()
        elif step == "page":
            scenario.server_sends_a_page()
        elif step == "deliver":
            scenario.deliver()
        else:
            scenario.reconnect()
        assert set(range(1, scenario.pair.client.cursor + 1)) <= scenario.received
    scenario.reconnect()
    while scenario.wire or scenario.pair.server.state is SessionState.CATCHING_UP:
        scenario.server_sends_a_page()
        scenario.deliver()
    assert scenario.received == set(scenario.log)
    assert scenario.queue == {}


def test_the_server_holds_acks_until_caught_up() -> None:
    pair = SessionPair()
    pair.client.send(Hello("phone-1", 0, None))
    pair.exchange()
    pair.server.send(Welcome(5, "s"))
    pair.exchange()
    pair.client.send(SyncUpdate(DEAL, b"offline edit", cseq=1))  # writes may go during catch-up
    assert pair.to_server() == [UpdateReceived(DEAL, b"offline edit", 1)]
    with pytest.raises(UnexpectedMessage, match=r"^ack from the server in state CATCHING_UP$"):
        pair.server.send(Ack(DEAL, 1, 6))
    pair.server.send(CaughtUp(5))
    pair.server.send(Ack(DEAL, 1, 6))
    assert pair.to_client() == [CaughtUpReceived(5), Acked(DEAL, 1, 6)]


@pytest.mark.parametrize(
    ("receiver", "state", "frame", "problem"),
    [
        (
            Role.SERVER,
            "new",
            SyncUpdate(DEAL, b"", cseq=1),
            r"^sync update from the client in state AWAITING_HELLO$",
        ),
        (Role.SERVER, "new", Ping(), r"^ping from the client in state AWAITING_HELLO$"),
        (Role.SERVER, "live", Hello("phone-1", 0), r"^hello from the client in state LIVE$"),
        (Role.SERVER, "live", Ack(DEAL, 1, 1), r"^a client never sends ack \(state LIVE\)$"),
        (Role.SERVER, "live", Welcome(1, "s"), r"^a client never sends welcome"),
        (Role.CLIENT, "new", Welcome(1, "s"), r"^welcome from the server in state AWAITING_HELLO$"),
        (Role.CLIENT, "live", Welcome(1, "s"), r"^welcome from the server in state LIVE$"),
        (Role.CLIENT, "live", CaughtUp(1), r"^caught_up from the server in state LIVE$"),
        (Role.CLIENT, "live", Hello("x", 0), r"^a server never sends hello \(state LIVE\)$"),
        (Role.CLIENT, "live", Bye(), r"^a server never sends bye"),
    ],
)
def test_a_frame_out_of_order_raises_unexpected_message_naming_the_state(
    receiver: Role, state: str, frame: Message, problem: str
) -> None:
    pair = live_pair() if state == "live" else SessionPair()
    session = pair.server if receiver is Role.SERVER else pair.client
    before = (session.state, session.cursor, session.unacked)
    with pytest.raises(UnexpectedMessage, match=problem):
        session.receive(encode_frame(frame))
    assert (session.state, session.cursor, session.unacked) == before
    assert session.frames_to_send() == []


@pytest.mark.parametrize(
    ("sender", "message", "problem"),
    [
        (
            Role.CLIENT,
            SyncUpdate(DEAL, b"", cseq=1),
            r"^sync update from the client in state AWAITING_HELLO$",
        ),
        (Role.CLIENT, Bye(), r"^bye from the client in state AWAITING_HELLO$"),
        (Role.SERVER, Welcome(0, "s"), r"^welcome from the server in state AWAITING_HELLO$"),
        (Role.SERVER, Hello("s", 0), r"^a server never sends hello"),
    ],
)
def test_sending_out_of_order_raises_unexpected_message(
    sender: Role, message: Message, problem: str
) -> None:
    session = PeerSession(sender)
    with pytest.raises(UnexpectedMessage, match=problem):
        session.send(message)
    assert session.frames_to_send() == []


def test_the_client_waits_for_welcome_before_writing() -> None:
    pair = SessionPair()
    pair.client.send(Hello("phone-1", 0, None))
    with pytest.raises(UnexpectedMessage, match=r"in state AWAITING_WELCOME$"):
        pair.client.send(SyncUpdate(DEAL, b"", cseq=1))


def test_a_ping_is_answered_with_a_pong_carrying_its_number() -> None:
    pair = live_pair()
    pair.client.send(Ping(7))
    server_events, client_events = pair.exchange()
    assert server_events == [PingReceived(7)]
    assert client_events == [PongReceived(7)]
    pair.server.send(Ping())
    assert pair.exchange() == ([PongReceived(None)], [PingReceived(None)])


def test_a_bad_document_id_is_refused_for_that_document_and_the_connection_stays_up() -> None:
    pair = live_pair()
    # Our client cannot send a bad id (send() raises); another client can:
    forged = encode_frame(SyncUpdate(DocId("Deals/7"), b"bad", cseq=2))
    [refused] = pair.server.receive(forged)
    assert isinstance(refused, DocumentRefused)
    assert (refused.doc, refused.cseq) == ("Deals/7", 2)
    assert isinstance(refused.error, SchemaViolation)
    assert pair.server.unacked.keys() == {2}  # the refusal still owes an answer
    pair.server.send(Error.for_document(refused.error, doc=refused.doc, cseq=refused.cseq))
    [frame] = pair.server.frames_to_send()
    assert decode_frame(frame) == Error(
        "Deals/7", 2, "schema_violation", "Deals/7: bad collection name 'Deals'"
    )
    assert pair.server.unacked == {}
    pair.client.send(SyncUpdate(DEAL, b"good", cseq=1))
    assert pair.to_server() == [UpdateReceived(DEAL, b"good", 1)]
    assert pair.server.state is SessionState.LIVE


def test_step_1_and_awareness_for_a_bad_document_are_refused_without_a_cseq() -> None:
    pair = live_pair()
    for message in (SyncStep1(DocId("nope"), b""), AwarenessUpdate(DocId("nope"), b"")):
        [refused] = pair.server.receive(encode_frame(message))
        assert isinstance(refused, DocumentRefused)
        assert (refused.doc, refused.cseq) == ("nope", None)
        assert refused.error.message == "nope: document id must be 'collection/record_id'"


def test_sending_a_bad_document_id_raises_schema_violation_and_sends_nothing() -> None:
    pair = live_pair()
    with pytest.raises(SchemaViolation, match=r"^contacts/a b: record id must be"):
        pair.client.send(SyncUpdate(DocId("contacts/a b"), b"", cseq=1))
    with pytest.raises(SchemaViolation):
        pair.server.send(SyncUpdate(DocId("contacts"), b"", seq=1))
    assert pair.client.frames_to_send() == pair.server.frames_to_send() == []
    assert pair.client.unacked == {}


def test_a_bad_document_id_from_the_server_is_a_protocol_error() -> None:
    pair = live_pair()
    with pytest.raises(ProtocolError, match=r"^sync update from the server: nope: document id"):
        pair.client.receive(encode_frame(SyncUpdate(DocId("nope"), b"", seq=1)))


def test_writes_carry_a_cseq_not_in_flight_and_server_frames_carry_none() -> None:
    pair = live_pair()
    with pytest.raises(ProtocolError, match=r"^a client's sync update carries a cseq and no seq$"):
        pair.client.send(SyncUpdate(DEAL, b""))
    with pytest.raises(ProtocolError, match=r"^a client's sync step 2 carries a cseq and no seq$"):
        pair.client.send(SyncStep2(DEAL, b"", seq=3, cseq=1))
    pair.client.send(SyncUpdate(DEAL, b"", cseq=1))
    with pytest.raises(ProtocolError, match=r"^sync step 2: cseq 1 is already in flight$"):
        pair.client.send(SyncStep2(CONTACT, b"", cseq=1))
    with pytest.raises(ProtocolError, match=r"^a server's sync update carries no cseq$"):
        pair.server.send(SyncUpdate(DEAL, b"", seq=1, cseq=1))
    pair.exchange()
    with pytest.raises(ProtocolError, match=r"^sync update: cseq 1 is already in flight$"):
        pair.server.receive(encode_frame(SyncUpdate(DEAL, b"", cseq=1)))


def test_only_a_write_in_flight_can_be_acked_or_refused() -> None:
    pair = live_pair()
    with pytest.raises(ProtocolError, match=r"^ack for cseq 9, which is not in flight$"):
        pair.server.send(Ack(DEAL, 9, 1))
    with pytest.raises(ProtocolError, match=r"^error for cseq 9, which is not in flight$"):
        pair.server.send(Error(DEAL, 9, "invalid_update", "deals/7: not an update"))
    with pytest.raises(ProtocolError, match=r"^ack for cseq 9, which is not in flight$"):
        pair.client.receive(encode_frame(Ack(DEAL, 9, 1)))
    pair.client.send(SyncUpdate(DEAL, b"", cseq=9))
    pair.exchange()
    with pytest.raises(ProtocolError, match=r"^ack for cseq 9 names 'contacts/42', the write"):
        pair.server.send(Ack(CONTACT, 9, 1))
    pair.server.send(Error(DEAL, 9, "invalid_update", "deals/7: not an update"))
    assert pair.to_client() == [ErrorReceived(DEAL, 9, "invalid_update", "deals/7: not an update")]
    assert pair.client.unacked == {}  # refused: it will never be acked


def test_unacked_keeps_the_writes_in_flight_in_the_order_sent_for_a_resend() -> None:
    pair = live_pair()
    writes: list[ClientWrite] = [SyncUpdate(DEAL, b"a", cseq=5), SyncStep2(CONTACT, b"b", cseq=2)]
    for write in writes:
        pair.client.send(write)
    assert list(pair.client.unacked.values()) == writes
    pair.client.unacked.clear()  # a copy
    assert len(pair.client.unacked) == 2
    pair.exchange()
    pair.server.send(Ack(CONTACT, 2, 1))
    pair.exchange()
    assert list(pair.client.unacked.values()) == writes[:1]


def test_step_1_is_answered_with_step_2_both_ways() -> None:
    pair = live_pair()
    pair.client.send(SyncStep1(DEAL, b"client-sv"))
    assert pair.to_server() == [SyncStep1Received(DEAL, b"client-sv")]
    pair.server.send(SyncStep2(DEAL, b"missing"))
    pair.server.send(SyncStep1(DEAL, b"server-sv"))
    assert pair.to_client() == [
        SyncStep2Received(DEAL, b"missing", None),
        SyncStep1Received(DEAL, b"server-sv"),
    ]
    pair.client.send(SyncStep2(DEAL, b"offline", cseq=1))  # a client's step 2 is a write
    assert pair.to_server() == [UpdateReceived(DEAL, b"offline", 1)]


def test_awareness_goes_both_ways_decoded() -> None:
    me, them = AwarenessState(7, 1, '{"n":"me"}', False), AwarenessState.removal(8, 2)
    pair = live_pair()
    pair.client.send(AwarenessUpdate(DEAL, encode_awareness_update([me])))
    pair.server.send(AwarenessUpdate(DEAL, encode_awareness_update([them])))
    assert pair.exchange() == (
        [AwarenessReceived(DEAL, encode_awareness_update([me]), (me,))],
        [AwarenessReceived(DEAL, encode_awareness_update([them]), (them,))],
    )


def test_awareness_that_a_stock_client_cannot_decode_is_a_protocol_error() -> None:
    pair = live_pair()
    pair.client.send(AwarenessUpdate(DEAL, b'\x02\x92\x21\x01\x18{"user":{"name":"fuzz"}}'))
    with pytest.raises(ProtocolError, match=r"^awareness update: truncated"):
        pair.to_server()


def test_after_bye_the_client_sends_nothing_but_still_hears_acks() -> None:
    pair = live_pair()
    pair.client.send(SyncUpdate(DEAL, b"", cseq=1))
    pair.client.send(Bye())
    assert pair.client.state is SessionState.CLOSED
    with pytest.raises(UnexpectedMessage, match=r"^cannot send ping: bye sent, state CLOSED$"):
        pair.client.send(Ping())
    assert pair.to_server() == [UpdateReceived(DEAL, b"", 1), ByeReceived()]
    assert pair.server.state is SessionState.CLOSED
    pair.server.send(Ack(DEAL, 1, 1))  # committed before the server closes
    pair.server.send(Ping())
    assert pair.to_client() == [Acked(DEAL, 1, 1), PingReceived(None)]
    assert pair.client.frames_to_send() == []  # no pong after bye
    with pytest.raises(
        UnexpectedMessage, match=r"^ping from the client after bye in state CLOSED$"
    ):
        pair.server.receive(encode_frame(Ping()))


# Frames that are CBOR maps with plausible keys and values, to get past the CBOR layer.
plausible_values = st.one_of(
    st.none(), st.booleans(), st.integers(-1, 3), st.integers(max_value=2**64 - 1), st.floats(),
    st.sampled_from(["deals/7", "nope", "hello", "sync", "ack", "x"]), st.text(max_size=5),
    st.binary(max_size=6), st.sampled_from([b"\x02\x00", b"\x00\x00", b"\x01\x01\x00"]),
    st.lists(st.sampled_from(["deals", "X", 1]), max_size=2),
)  # fmt: skip
plausible_frames = st.fixed_dictionaries(
    {"t": st.sampled_from(["hello", "welcome", "sync", "awareness", "caught_up", "ack",
                           "error", "ping", "pong", "bye", "nope"])},
    optional={key: plausible_values for key in
              ("v", "client", "cursor", "collections", "server", "doc", "y", "seq", "cseq",
               "data", "code", "message", "n")},
).map(cbor2.dumps)  # fmt: skip


@settings(max_examples=300)
@given(
    st.sampled_from(["new", "hello", "catching_up", "live"]),
    st.sampled_from([Role.CLIENT, Role.SERVER]),
    st.lists(
        st.one_of(st.binary(max_size=40), plausible_frames, messages.map(encode_frame)),
        min_size=1,
        max_size=4,
    ),
)
def test_any_frame_gives_events_or_a_protocol_error_never_anything_else(
    state: str, receiver: Role, frames: list[bytes]
) -> None:
    pair = SessionPair()
    if state != "new":
        pair.client.send(Hello("phone-1", 0, None))
        pair.client.send(Ping())
        pair.exchange()
    if state in ("catching_up", "live"):
        pair.server.send(Welcome(1, "s"))
        pair.exchange()
        pair.client.send(SyncUpdate(DEAL, b"", cseq=1))  # a write in flight, for acks and errors
        pair.exchange()
    if state == "live":
        pair.server.send(CaughtUp(1))
        pair.exchange()
    session = pair.server if receiver is Role.SERVER else pair.client
    for frame in frames:
        try:
            events = session.receive(frame)
        except ProtocolError:
            continue
        assert len(events) == 1


def test_close_codes_have_names() -> None:
    assert {code.name: code.value for code in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "POLICY_VIOLATION": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "TRY_AGAIN_LATER": 1013,
        "BAD_REQUEST": 4400,
        "UNAUTHORIZED": 4401,
        "FORBIDDEN": 4403,
        "SLOW_CONSUMER": 4408,
        "DOCUMENT_TOO_LARGE": 4413,
        "REFUSED_WRITE": 4422,
    }
    reconnect = {code for code in CloseCode if code.should_reconnect}
    assert reconnect == {1001, 1009, 1011, 1013, 4408}


def test_a_close_reason_fits_a_close_frame() -> None:
    assert close_reason("short") == "short"
    long = close_reason("é" * 100)  # 200 bytes
    assert len(long.encode()) <= 123 and long.endswith("...") and long.startswith("é" * 60)


def test_statistics_are_a_snapshot() -> None:
    pair = live_pair(server_cursor=4)
    pair.client.send(SyncUpdate(DEAL, b"", cseq=1))
    pair.exchange()
    snapshot = pair.server.statistics()
    assert snapshot == SessionStatistics(Role.SERVER, SessionState.LIVE, 4, 1, 2, 2)
    pair.server.send(Ack(DEAL, 1, 5))
    assert pair.server.statistics().unacked == 0 and snapshot.unacked == 1


WEB = "'fastapi', 'starlette', 'websockets', 'uvicorn', 'httpx'"


@pytest.mark.parametrize(
    ("module", "banned"),
    [
        # The sans-I/O core: no event loop, no database, no web.
        ("crdt_sync.protocol", "'asyncio', 'aiosqlite', " + WEB),
        ("crdt_sync.schema", "'asyncio', 'aiosqlite', " + WEB),
        ("crdt_sync.record", "'asyncio', 'aiosqlite', " + WEB),
        ("crdt_sync.cbor", "'asyncio', 'aiosqlite', " + WEB),
        ("crdt_sync.history", "'asyncio', 'aiosqlite', " + WEB),
        # The store and the engine do I/O, but know nothing of sockets or HTTP.
        ("crdt_sync.store", WEB),
        ("crdt_sync.engine", WEB),
        # The record doors serve before `crdt-sync serve` builds its HTTP app (server/front.py).
        ("crdt_sync.server.front", "'fastapi', 'pydantic'"),
        ("crdt_sync.server.runtime", "'fastapi', 'pydantic'"),
    ],
)
def test_the_core_imports_no_io_framework(module: str, banned: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"banned = {{{banned}}}\n"
        "print(sorted(banned & {name.partition('.')[0] for name in sys.modules}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"

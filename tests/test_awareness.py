"""protocol/awareness.py: awareness updates decoded as stock y-protocols clients decode them,
and each client id's presence owned by the connection that brought it."""

from __future__ import annotations

import json

import pytest
from pycrdt import Awareness, Doc

from crdt_sync.errors import ProtocolError
from crdt_sync.protocol.awareness import (
    MAX_OWNED_CLIENTS,
    MAX_STATE_BYTES,
    MAX_STATES_PER_UPDATE,
    AwarenessRoom,
    AwarenessState,
    decode_awareness_update,
    encode_awareness_update,
)

# The bytes: the count says 2 states, one follows.
TWO_STATES_ONE_SENT = b'\x02\x92\x21\x01\x18{"user":{"name":"fuzz"}}'


def entry(client: int, clock: int, state: object) -> bytes:
    text = json.dumps(state).encode()
    return encode_varuint(client) + encode_varuint(clock) + encode_varuint(len(text)) + text


def encode_varuint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append(0x80 | (number & 0x7F))
        number >>= 7
    out.append(number)
    return bytes(out)


def state(client: int, clock: int, value: object) -> AwarenessState:
    return AwarenessState(client, clock, json.dumps(value), value is None)


def test_what_pycrdts_awareness_writes_decodes_and_reencodes_byte_for_byte() -> None:
    awareness = Awareness(Doc())
    awareness.set_local_state({"user": {"name": "Ann", "color": "#f00"}, "cursor": None})
    update = awareness.encode_awareness_update([awareness.client_id])
    (decoded,) = decode_awareness_update(update)
    assert decoded.client == awareness.client_id and not decoded.is_removal
    assert json.loads(decoded.state) == {"user": {"name": "Ann", "color": "#f00"}, "cursor": None}
    assert encode_awareness_update([decoded]) == update


def test_a_null_state_is_a_removal_and_no_states_is_fine() -> None:
    assert decode_awareness_update(b"\x01" + entry(5, 3, None)) == (AwarenessState.removal(5, 3),)
    assert decode_awareness_update(b"\x00") == ()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (TWO_STATES_ONE_SENT, r"truncated: client id runs past the end"),
        (b'\x01\x92\x21\x01\x18{"user":{"name":"fuzz', r"truncated: a state of 24 bytes"),
        (b"", r"truncated: number of states"),
        (b"\x01" + entry(2**53, 1, {}), r"client id is larger than 2\*\*53 - 1"),
        (b"\x01" + entry(1, 2**60, {}), r"clock is larger than 2\*\*53 - 1"),
        (b"\x01\x01\x01\x02\xff\xfe", r"the state of client 1 is not JSON"),
        (b"\x01\x01\x01\x03NaN", r"the state of client 1 is not JSON"),
        (b"\x01\x01\x01\x04{}{}", r"the state of client 1 is not JSON"),
        (b"\x01" + entry(1, 1, [1, 2]), r"the state of client 1 is neither an object nor null"),
        (b"\x01" + entry(1, 1, "x"), r"neither an object nor null"),
        (b"\x01" + entry(1, 1, {}) + b"\x00", r"1 bytes after the last state"),
        (b"\x01\x01\x01\x01[", r"not JSON"),
    ],
)
def test_what_a_stock_client_could_not_decode_is_refused_naming_the_problem(
    data: bytes, problem: str
) -> None:
    with pytest.raises(ProtocolError, match=rf"^awareness update: .*{problem}"):
        decode_awareness_update(data)


def test_json_nested_past_pythons_recursion_is_refused_not_raised() -> None:
    deep = b"[" * 2000 + b"]" * 2000  # under the size limit
    data = b"\x01\x01\x01" + encode_varuint(len(deep)) + deep
    with pytest.raises(ProtocolError, match=r"the state of client 1 is not JSON"):
        decode_awareness_update(data)


def test_a_state_over_the_size_limit_and_too_many_states_are_refused() -> None:
    big = {"pad": "x" * MAX_STATE_BYTES}
    with pytest.raises(ProtocolError, match=rf"over the limit of {MAX_STATE_BYTES} "):
        decode_awareness_update(b"\x01" + entry(1, 1, big))
    many = encode_varuint(MAX_STATES_PER_UPDATE + 1) + entry(1, 1, {})
    with pytest.raises(ProtocolError, match=rf"over the limit of {MAX_STATES_PER_UPDATE}"):
        decode_awareness_update(many)


def test_a_room_relays_a_connections_own_states_and_drops_its_echoes_of_others() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    ann = state(1, 1, {"name": "Ann"})
    assert room.receive("a", [ann]) == (ann,)
    # Bob's y-websocket re-broadcasts Ann's state with his own: only his is relayed.
    bob = state(2, 1, {"name": "Bob"})
    assert room.receive("b", [bob, ann]) == (bob,)
    # Nor can Bob overwrite or remove Ann's presence, whatever the clock.
    assert room.receive("b", [state(1, 9, {"name": "Mallory"}), AwarenessState.removal(1, 9)]) == ()
    assert set(room.states()) == {ann, bob}


def test_a_stale_clock_is_dropped_and_a_removal_keeps_the_id_with_its_owner() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    room.receive("a", [state(1, 5, {"v": 5})])
    assert room.receive("a", [state(1, 4, {"v": 4})]) == ()
    assert room.receive("a", [AwarenessState.removal(1, 6)]) == (AwarenessState.removal(1, 6),)
    assert room.states() == ()
    assert room.receive("b", [state(1, 7, {"v": "b"})]) == ()  # still Ann's connection's id
    assert room.receive("a", [state(1, 7, {"v": 7})]) == (state(1, 7, {"v": 7}),)


def test_leaving_removes_what_the_connection_owned_one_clock_later() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    room.receive("a", [state(1, 5, {"v": 1}), state(3, 1, None)])  # 3: nothing to remove
    room.receive("b", [state(2, 1, {"v": 2})])
    assert room.leave("a") == (AwarenessState.removal(1, 6),)
    assert room.states() == (state(2, 1, {"v": 2}),)
    assert room.leave("a") == ()
    assert room.leave("b") == (AwarenessState.removal(2, 2),)
    assert not room
    # Freed: the id may be someone else's now (a reconnect gets a new connection).
    assert room.receive("c", [state(1, 7, {"v": 3})]) == (state(1, 7, {"v": 3}),)


def test_a_connection_owns_a_bounded_number_of_client_ids() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    room.receive("a", [state(n, 1, {}) for n in range(MAX_OWNED_CLIENTS)])
    with pytest.raises(ProtocolError, match=rf"at most {MAX_OWNED_CLIENTS} client ids"):
        room.receive("a", [state(MAX_OWNED_CLIENTS, 1, {})])
    assert room.receive("b", [state(100, 1, {})]) == (state(100, 1, {}),)

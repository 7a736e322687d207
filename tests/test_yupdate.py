"""crdt_sync.yupdate: the Yjs v1 reader refuses what JavaScript peers cannot decode exactly."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from crdt_sync.yupdate import (
    ClockRange,
    MalformedUpdate,
    _reads_plainly,
    check_update,
    read_state_vector,
    read_update,
)

from .yjs_bytes import delete_only, map_set, state_vector, var_uint

TOP = 2**53


def rich_update() -> bytes:
    """Every kind of content pycrdt writes: strings, numbers, nested maps and arrays, text,
    XML, deletes and formatting."""
    doc: Doc = Doc(client_id=4242)
    record = doc.get("record", type=Map)
    record["name"] = "Ann"
    record["n"] = 3.5
    record["big"] = 2**40
    record["flag"] = True
    record["none"] = None
    record["notes"] = Text("héllo 😀")
    record["list"] = Array([1, "x", {"a": [1, 2]}])
    record["bytes"] = b"\x00\x01"
    notes = record["notes"]
    assert isinstance(notes, Text)
    notes.format(0, 2, {"bold": True})
    notes.insert_embed(1, {"image": "x.png"})
    fragment = doc.get("xml", type=XmlFragment)
    fragment.children.append(XmlElement("p", {"class": "c"}, [XmlText("hi")]))
    with doc.transaction():
        record["name"] = "Bob"
        del record["n"]
    return doc.get_update()


RICH_UPDATE = rich_update()


def test_an_update_of_every_content_kind_reads_with_its_client_and_clocks() -> None:
    update = rich_update()
    decoded = read_update(update)
    assert len(decoded.structs) == 1 and decoded.structs[0].clock == 0
    assert decoded.structs[0].length > 10
    assert decoded.clients == {decoded.structs[0].client}
    assert decoded.deletes  # the overwritten name and the deleted key


def test_a_write_from_the_last_safe_client_id_reads() -> None:
    decoded = read_update(map_set(TOP - 1, 0, "phone", "1"))
    assert decoded.structs == (ClockRange(TOP - 1, 0, 1),)


@pytest.mark.parametrize("client", [TOP, TOP + 5, 2**64 - 1])
def test_a_struct_client_id_at_or_above_2_to_the_53_is_refused(client: int) -> None:
    with pytest.raises(MalformedUpdate, match=r"^client id is larger than 2\*\*53 - 1"):
        read_update(map_set(client, 0, "phone", "2"))


def test_the_bytes_of_the_issue_are_refused() -> None:
    # From issue 14: the /yjs update frame claiming client 2**53 (`00 02 44` is its y-sync header).
    update = (
        bytes.fromhex("0101808080808080801000280106")
        + b"record"
        + b"\x05phone\x01\x77"
        + var_uint(3)
        + b"+33"
        + b"\x00"
    )
    with pytest.raises(MalformedUpdate, match="client id"):
        read_update(update)


def test_a_delete_set_naming_a_client_id_past_2_to_the_53_is_refused() -> None:
    with pytest.raises(MalformedUpdate, match=r"^delete set client id is larger than 2\*\*53 - 1"):
        read_update(delete_only(TOP + 5, 0))
    assert read_update(delete_only(TOP - 1, 0)).deletes == (ClockRange(TOP - 1, 0, 1),)


def test_an_origin_naming_a_client_past_2_to_the_53_is_refused() -> None:
    item = bytes([0x88]) + var_uint(TOP) + var_uint(0) + var_uint(1) + bytes([126])
    update = var_uint(1) + var_uint(1) + var_uint(7) + var_uint(0) + item + var_uint(0)
    with pytest.raises(MalformedUpdate, match="origin client id"):
        read_update(update)


def test_a_clock_range_past_2_to_the_53_is_refused() -> None:
    with pytest.raises(MalformedUpdate, match="clock range ends past"):
        read_update(delete_only(7, TOP - 1, 2))


def test_state_vectors_read_and_refuse_client_ids_past_2_to_the_53() -> None:
    assert read_state_vector(state_vector({TOP - 1: 3, 5: 0})) == {TOP - 1: 3, 5: 0}
    with pytest.raises(MalformedUpdate, match="state vector client id"):
        read_state_vector(state_vector({TOP: 3}))
    with pytest.raises(MalformedUpdate, match="truncated"):
        read_state_vector(b"\x02\x05\x01")
    with pytest.raises(MalformedUpdate, match="bytes after the state vector"):
        read_state_vector(b"\x00\x00")


@pytest.mark.parametrize(
    ("update", "problem"),
    [
        (b"", "truncated"),
        (b"\x00", "truncated"),
        (b"\x00\x00\x00", "bytes after the update"),
        (map_set(5, 0, "k", "v")[:-3], "truncated"),
        # Bad UTF-8 in a key: lib0's TextDecoder is fatal, JavaScript throws.
        (map_set(5, 0, "k", "v").replace(b"\x01k", b"\x01\xff"), "not valid UTF-8"),
        # Content ref 11..31 and type refs past 6: no reader in yjs.
        (map_set(5, 0, "k", "v").replace(b"\x28", b"\x2b", 1), "unknown content ref 11"),
        # A JSON content (ref 2) that does not parse: JSON.parse throws.
        (
            var_uint(1)
            + var_uint(1)
            + var_uint(5)
            + var_uint(0)
            + b"\x22\x01\x01r\x01k"
            + var_uint(1)
            + var_uint(3)
            + b"{x}"
            + var_uint(0),
            "JSON content does not parse",
        ),
        # A lib0 any of unknown type 115.
        (map_set(5, 0, "k", "v").replace(b"\x77", b"\x73"), "unknown value type 115"),
        # A count larger than the bytes left (JavaScript: RangeError, Invalid array length).
        (var_uint(2**40) + b"\x00", "truncated: number of clients"),
    ],
)
def test_bytes_yjs_would_throw_on_are_refused_naming_the_problem(
    update: bytes, problem: str
) -> None:
    with pytest.raises(MalformedUpdate, match=problem):
        read_update(update)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.data())
def test_mutated_real_updates_read_or_are_refused_with_nothing_else_raised(
    data: st.DataObject,
) -> None:
    update = bytearray(RICH_UPDATE)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(update) - 1))
        update[position] = data.draw(st.integers(0, 255))
    try:
        read_update(bytes(update))
    except MalformedUpdate:
        pass


def plain_edits() -> list[bytes]:
    """What peers send all the time: keys set to plain values, text typed and deleted."""
    doc: Doc = Doc(client_id=2**32 - 1)
    record = doc.get("record", type=Map)
    updates = []
    for i in range(6):
        before = doc.get_state()
        with doc.transaction():
            record["company"] = f"Co {i} é😀"
            record["n"] = [i, -(2**40), 1.5, True, None, "x"][i]
            if i == 0:
                record["notes"] = Text("héllo")
            else:
                notes = record["notes"]
                assert isinstance(notes, Text)
                notes.insert(0, "ab")
                del notes[2:3]
        updates.append(doc.get_update(before))
    return updates


def test_the_check_walks_plain_updates_itself_and_defers_the_rest() -> None:
    assert all(_reads_plainly(update) for update in plain_edits())
    assert not _reads_plainly(RICH_UPDATE)  # JSON, embeds, formats, nested values
    check_update(RICH_UPDATE)


@pytest.mark.parametrize("client", [TOP, TOP + 1, 2**64])
def test_the_check_refuses_what_the_reader_refuses(client: int) -> None:
    with pytest.raises(MalformedUpdate, match=r"^client id is larger than 2\*\*53 - 1"):
        check_update(map_set(client, 0, "k", "v"))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.data())
def test_mutated_plain_updates_pass_the_check_only_if_the_reader_reads_them(
    data: st.DataObject,
) -> None:
    update = bytearray(data.draw(st.sampled_from(plain_edits())))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(update) - 1))
        update[position] = data.draw(st.integers(0, 255))
    try:
        read_update(bytes(update))
    except MalformedUpdate as exc:
        assert not _reads_plainly(bytes(update))
        with pytest.raises(MalformedUpdate, match=f"^{re.escape(str(exc))}$"):
            check_update(bytes(update))
    else:
        check_update(bytes(update))


def test_the_reader_imports_no_io_library() -> None:
    code = (
        "import sys, crdt_sync.yupdate; "
        "bad = {'asyncio', 'aiosqlite', 'fastapi', 'websockets', 'sqlite3'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

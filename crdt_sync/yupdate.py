"""A pure reader of Yjs v1 updates and state vectors: what JavaScript peers can decode (pure).

pycrdt (yrs) and Yjs in JavaScript do not accept the same bytes. JavaScript holds every
number as a double, so lib0's `readVarUint` rounds a client id or clock past 2**53 - 1 (or
throws "Integer out of Range"), while yrs keeps it modulo 2**53: such an update forks the
record between Node and the server for good. And Yjs throws on bytes yrs lets through (bad
UTF-8, JSON that does not parse, an unknown content or type ref), which makes a stock client
drop the update, or exit. `read_update` walks an update the way yjs 13's
`readClientsStructRefs` and `readDeleteSet` do (`src/utils/encoding.js`, `UpdateDecoderV1`,
the `readContent*` functions of `src/structs/`, lib0 `decoding.readAny`) and raises
`MalformedUpdate` wherever JavaScript would fail or lose precision, so the engine refuses
such an update before any replica sees it.

Layout (lib0 encoding: varUint is 7 bits a byte, low first; varString is varUint length + UTF-8):

    update       varUint n, n x client-structs, delete-set
    client-structs  varUint count, varUint client, varUint clock, count x struct
    struct       uint8 info; info & 31 = 0: GC (varUint len), 10: Skip (varUint len),
                 else an Item: [origin ID if info & 128] [right origin ID if info & 64]
                 [parent if neither: varUint 1 then varString key, or else an ID]
                 [varString parentSub if neither and info & 32] content (by info & 31)
    ID           varUint client, varUint clock
    delete-set   varUint n, n x (varUint client, varUint count, count x (varUint clock, len))
    state vector varUint n, n x (varUint client, varUint clock)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MAX_SAFE_INTEGER",
    "ClockRange",
    "DecodedUpdate",
    "Lib0Reader",
    "MalformedUpdate",
    "check_update",
    "read_state_vector",
    "read_update",
]

MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER
MAX_NESTING = 100  # lib0 `readAny` recurses: refuse values nested deeper than this

# Content refs (info & 31) of an Item; 0 (GC) and 10 (Skip) are structs of their own.
_DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC = range(1, 10)
_GC, _SKIP = 0, 10
_TYPE_REFS_WITH_NAME = (3, 5)  # YXmlElement, YXmlHook: a varString node name follows
_LAST_TYPE_REF = 6  # YXmlText; yjs has no type ref beyond it


class MalformedUpdate(ValueError):
    """The bytes are not an update (or state vector) every Yjs peer can decode; says where."""


@dataclass(frozen=True, slots=True)
class ClockRange:
    """`length` clocks of `client`, starting at `clock`."""

    client: int
    clock: int
    length: int


@dataclass(frozen=True, slots=True)
class DecodedUpdate:
    """The client ids an update names: its structs' ranges and its delete set's."""

    structs: tuple[ClockRange, ...]
    deletes: tuple[ClockRange, ...]

    @property
    def clients(self) -> frozenset[int]:
        return frozenset(r.client for r in self.structs) | {r.client for r in self.deletes}


class Lib0Reader:
    """lib0 `decoding` over untrusted bytes; every failure is a MalformedUpdate naming the offset.

    Also the reader of awareness updates (protocol/awareness.py), which share lib0's numbers.
    """

    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def error(self, problem: str) -> MalformedUpdate:
        return MalformedUpdate(f"{problem} (at byte {self.position})")

    def left(self) -> int:
        return len(self.data) - self.position

    def uint8(self, name: str) -> int:
        if self.position >= len(self.data):
            raise self.error(f"truncated: {name} missing")
        byte = self.data[self.position]
        self.position += 1
        return byte

    def var_uint(self, name: str) -> int:
        # lib0 readVarUint rounds (or throws) past 2**53 - 1: refused here whatever it is.
        data, position = self.data, self.position
        if position < len(data) and data[position] < 0x80:  # most numbers are one byte
            self.position += 1
            return data[position]
        number, shift = 0, 0
        while position < len(data):
            byte = data[position]
            position += 1
            number |= (byte & 0x7F) << shift
            shift += 7
            if number > MAX_SAFE_INTEGER:
                raise self.error(f"{name} is larger than 2**53 - 1, which JavaScript cannot hold")
            if byte < 0x80:
                self.position = position
                return number
        raise self.error(f"truncated: {name} runs past the end")

    def var_int(self, name: str) -> int:
        first = self.uint8(name)
        number = first & 0x3F
        if first & 0x80:
            shift = 6
            while True:
                byte = self.uint8(name)
                number |= (byte & 0x7F) << shift
                shift += 7
                if number > MAX_SAFE_INTEGER:
                    raise self.error(f"{name} is beyond 2**53 - 1 in magnitude")
                if byte < 0x80:
                    break
        return -number if first & 0x40 else number

    def count(self, name: str, each: int = 1) -> int:
        """A varUint count of items of at least `each` bytes: never more than the bytes left."""
        number = self.var_uint(name)
        if number * each > self.left():
            raise self.error(f"truncated: {name} is {number}, only {self.left()} bytes left")
        return number

    def var_bytes(self, name: str) -> bytes:
        length = self.var_uint(f"length of {name}")
        if length > self.left():
            raise self.error(f"truncated: {name} of {length} bytes, only {self.left()} left")
        start = self.position
        self.position += length
        return self.data[start : self.position]

    def var_string(self, name: str) -> str:
        raw = self.var_bytes(name)
        try:
            # lib0 decodes with a fatal TextDecoder: bad UTF-8 throws in JavaScript.
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{name} is not valid UTF-8") from None

    def fixed(self, size: int, name: str) -> bytes:
        if size > self.left():
            raise self.error(f"truncated: {name} needs {size} bytes")
        start = self.position
        self.position += size
        return self.data[start : self.position]

    def expect_end(self, what: str) -> None:
        if self.left():
            raise self.error(f"{self.left()} bytes after the {what}")


def read_update(update: bytes) -> DecodedUpdate:
    """Walk a Yjs v1 update as yjs would; the client ids and clock ranges it names.

    Raises:
        MalformedUpdate: truncated, trailing bytes, a number JavaScript cannot hold (a client
            id or clock at or above 2**53), or content yjs would throw on.
    """
    reader = Lib0Reader(bytes(update))
    structs = [_read_client_structs(reader) for _ in range(reader.count("number of clients", 3))]
    deletes: list[ClockRange] = []
    for _ in range(reader.count("number of clients in the delete set", 2)):
        client = reader.var_uint("delete set client id")
        for _ in range(reader.count("number of deletes", 2)):
            clock = reader.var_uint("delete set clock")
            length = reader.var_uint("delete set length")
            _check_clock(reader, clock + length)
            deletes.append(ClockRange(client, clock, length))
    reader.expect_end("update")
    return DecodedUpdate(tuple(structs), tuple(deletes))


def check_update(update: bytes) -> None:
    """Raise what `read_update` raises for `update`, and nothing if it reads; the write path's
    check (every update a peer sends), which needs no result.

    The common update (map keys set to plain values, text inserts, deletes) is walked by
    `_reads_plainly`, in one function with no per-number names or objects (a fifth of what
    `read_update` costs); anything else, and anything that walk doubts, is read in full.
    """
    if not _reads_plainly(update):
        read_update(update)


class _Doubt(Exception):
    """`_reads_plainly` cannot vouch for the bytes: `read_update` decides."""


def _uint(data: bytes, position: int) -> tuple[int, int]:
    """A lib0 varUint at `position` and the position after it; _Doubt past 2**53 - 1.

    IndexError if truncated."""
    byte = data[position]
    if byte < 0x80:
        return byte, position + 1
    return _uint_rest(data, position, byte & 0x7F, 7)


def _uint_rest(data: bytes, position: int, number: int, shift: int) -> tuple[int, int]:
    """The rest of a lib0 number whose byte at `position` said more follow: `number` holds
    its first `shift` bits. _Doubt past 2**53 - 1; IndexError if truncated."""
    while True:
        position += 1
        byte = data[position]
        number |= (byte & 0x7F) << shift
        shift += 7
        if number > MAX_SAFE_INTEGER:
            raise _Doubt
        if byte < 0x80:
            return number, position + 1


def _string_end(data: bytes, position: int) -> tuple[str, int]:
    """A varString at `position` (strict UTF-8, as lib0) and the position after it."""
    length, position = _uint(data, position)
    end = position + length
    if end > len(data):
        raise _Doubt
    return data[position:end].decode("utf-8"), end  # UnicodeDecodeError: a doubt


def _reads_plainly(update: bytes) -> bool:
    """True only if `read_update` accepts `update`: the same walk and every check it makes,
    for the content kinds peers send all the time (a string, a deleted run, a type, plain
    lib0 values); False for the rest (JSON, embeds, formats, nested values) and on any
    problem, for `read_update` to decide and name. A bound of `check_update`'s fast path."""
    data = bytes(update)
    size = len(data)
    try:
        clients, position = _uint(data, 0)
        if clients * 3 > size - position:
            return False
        for _ in range(clients):
            count, position = _uint(data, position)
            if count * 2 > size - position:
                return False
            _, position = _uint(data, position)  # the client id: below 2**53, as every number
            clock, position = _uint(data, position)
            for _ in range(count):
                info = data[position]
                position += 1
                ref = info & 0x1F
                if ref == _GC or ref == _SKIP:
                    length, position = _uint(data, position)
                    clock += length
                    if clock > MAX_SAFE_INTEGER:
                        return False
                    continue
                if info & 0x80:  # origin
                    _, position = _uint(data, position)
                    _, position = _uint(data, position)
                if info & 0x40:  # right origin
                    _, position = _uint(data, position)
                    _, position = _uint(data, position)
                if not info & 0xC0:
                    parent, position = _uint(data, position)
                    if parent == 1:
                        _, position = _string_end(data, position)
                    else:
                        _, position = _uint(data, position)
                        _, position = _uint(data, position)
                    if info & 0x20:
                        _, position = _string_end(data, position)
                if ref == _ANY:
                    values, position = _uint(data, position)
                    if values > size - position:
                        return False
                    for _ in range(values):
                        position = _plain_value_end(data, position)
                    clock += values
                elif ref == _STRING:
                    text, position = _string_end(data, position)
                    clock += len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2
                elif ref == _DELETED:
                    length, position = _uint(data, position)
                    clock += length
                elif ref == _TYPE:
                    type_ref, position = _uint(data, position)
                    if type_ref > _LAST_TYPE_REF:
                        return False
                    if type_ref in _TYPE_REFS_WITH_NAME:
                        _, position = _string_end(data, position)
                    clock += 1
                else:
                    return False
                if clock > MAX_SAFE_INTEGER:
                    return False
        clients, position = _uint(data, position)
        if clients * 2 > size - position:
            return False
        for _ in range(clients):
            _, position = _uint(data, position)
            deletes, position = _uint(data, position)
            if deletes * 2 > size - position:
                return False
            for _ in range(deletes):
                clock, position = _uint(data, position)
                length, position = _uint(data, position)
                if clock + length > MAX_SAFE_INTEGER:
                    return False
        return position == size
    except (_Doubt, IndexError, UnicodeDecodeError):
        return False


def _plain_value_end(data: bytes, position: int) -> int:
    """Past one lib0 value that is not an object or array (_Doubt for those: nested)."""
    kind = data[position]
    position += 1
    if kind in (127, 126, 121, 120):  # undefined, null, false, true
        return position
    if kind == 119:  # string
        return _string_end(data, position)[1]
    if kind == 125:  # varInt: 6 bits in the first byte, then 7 a byte
        byte = data[position]
        if not byte & 0x80:
            return position + 1
        return _uint_rest(data, position, byte & 0x3F, 6)[1]
    size = {124: 4, 123: 8, 122: 8}.get(kind)
    if size is not None and position + size <= len(data):
        return position + size
    raise _Doubt


def read_state_vector(state_vector: bytes) -> dict[int, int]:
    """A Yjs state vector (y-sync step 1), client id -> clock.

    Raises:
        MalformedUpdate: truncated, trailing bytes, or a client id or clock at or above 2**53.
    """
    reader = Lib0Reader(bytes(state_vector))
    clocks: dict[int, int] = {}
    for _ in range(reader.count("number of clients", 2)):
        client = reader.var_uint("state vector client id")
        clocks[client] = reader.var_uint("state vector clock")
    reader.expect_end("state vector")
    return clocks


def _check_clock(reader: Lib0Reader, end: int) -> None:
    if end > MAX_SAFE_INTEGER:
        raise reader.error("a clock range ends past 2**53 - 1, which JavaScript cannot hold")


def _read_client_structs(reader: Lib0Reader) -> ClockRange:
    count = reader.count("number of structs", 2)
    client = reader.var_uint("client id")
    start = clock = reader.var_uint("clock")
    for _ in range(count):
        info = reader.uint8("struct info")
        ref = info & 0x1F
        if ref in (_GC, _SKIP):
            clock += reader.var_uint("struct length")
        else:
            clock += _read_item(reader, info, ref)
        _check_clock(reader, clock)
    return ClockRange(client, start, clock - start)


def _read_item(reader: Lib0Reader, info: int, ref: int) -> int:
    """Read an Item's header and content; its length in clocks."""
    if info & 0x80:
        _read_id(reader, "origin")
    if info & 0x40:
        _read_id(reader, "right origin")
    if not info & 0xC0:  # no origins: the parent is written out
        if reader.var_uint("parent info") == 1:
            reader.var_string("parent type name")
        else:
            _read_id(reader, "parent")
        if info & 0x20:
            reader.var_string("parent key")
    read_content = _CONTENT.get(ref)
    if read_content is None:
        raise reader.error(f"unknown content ref {ref} (yjs knows 1 to 9)")
    return read_content(reader)


def _read_id(reader: Lib0Reader, name: str) -> None:
    reader.var_uint(f"{name} client id")
    reader.var_uint(f"{name} clock")


def _read_deleted(reader: Lib0Reader) -> int:
    return reader.var_uint("deleted length")


def _read_json_content(reader: Lib0Reader) -> int:
    length = reader.count("number of JSON values")
    for _ in range(length):
        text = reader.var_string("JSON value")
        if text != "undefined":  # yjs writes undefined so, and reads it back without parsing
            _parse_json(reader, text)
    return length


def _read_binary(reader: Lib0Reader) -> int:
    reader.var_bytes("binary content")
    return 1


def _read_string(reader: Lib0Reader) -> int:
    # A string's length in clocks is JavaScript's: UTF-16 code units.
    return len(reader.var_string("string content").encode("utf-16-le")) // 2


def _read_embed(reader: Lib0Reader) -> int:
    _parse_json(reader, reader.var_string("embed"))
    return 1


def _read_format(reader: Lib0Reader) -> int:
    reader.var_string("format key")
    _parse_json(reader, reader.var_string("format value"))
    return 1


def _read_type(reader: Lib0Reader) -> int:
    type_ref = reader.var_uint("type ref")
    if type_ref > _LAST_TYPE_REF:
        raise reader.error(f"unknown type ref {type_ref} (yjs knows 0 to {_LAST_TYPE_REF})")
    if type_ref in _TYPE_REFS_WITH_NAME:
        reader.var_string("XML node name")
    return 1


def _read_any_content(reader: Lib0Reader) -> int:
    length = reader.count("number of values")
    for _ in range(length):
        _read_any(reader, 0)
    return length


def _read_doc(reader: Lib0Reader) -> int:
    reader.var_string("subdocument guid")
    _read_any(reader, 0)
    return 1


_CONTENT: dict[int, Callable[[Lib0Reader], int]] = {
    _DELETED: _read_deleted,
    _JSON: _read_json_content,
    _BINARY: _read_binary,
    _STRING: _read_string,
    _EMBED: _read_embed,
    _FORMAT: _read_format,
    _TYPE: _read_type,
    _ANY: _read_any_content,
    _DOC: _read_doc,
}


def _read_any(reader: Lib0Reader, depth: int) -> None:
    """lib0 `readAny`: a type byte (127 - case), then the value."""
    if depth > MAX_NESTING:
        raise reader.error(f"a value nested deeper than {MAX_NESTING} levels")
    kind = reader.uint8("value type")
    if kind in (127, 126, 121, 120):  # undefined, null, false, true
        return
    if kind == 125:
        reader.var_int("integer")
    elif kind == 124:
        reader.fixed(4, "float32")
    elif kind == 123:
        reader.fixed(8, "float64")
    elif kind == 122:
        reader.fixed(8, "bigint")
    elif kind == 119:
        reader.var_string("string value")
    elif kind == 118:
        for _ in range(reader.count("number of object entries", 2)):
            reader.var_string("object key")
            _read_any(reader, depth + 1)
    elif kind == 117:
        for _ in range(reader.count("number of array items")):
            _read_any(reader, depth + 1)
    elif kind == 116:
        reader.var_bytes("bytes value")
    else:
        raise reader.error(f"unknown value type {kind} (lib0 knows 116 to 127)")


def _parse_json(reader: Lib0Reader, text: str) -> None:
    """JSON.parse would throw on what json.loads refuses, and on NaN / Infinity too."""
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise reader.error(f"JSON content does not parse: {text[:40]!r}") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(name)

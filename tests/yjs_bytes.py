"""Yjs v1 updates and state vectors written byte by byte, for the tests that forge them."""

from __future__ import annotations


def var_uint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append(0x80 | (number & 0x7F))
        number >>= 7
    out.append(number)
    return bytes(out)


def var_string(text: str) -> bytes:
    data = text.encode("utf-8", errors="surrogatepass")
    return var_uint(len(data)) + data


def map_set(client: int, clock: int, key: str, value: str, root: str = "record") -> bytes:
    """One Item: `root[key] = value` (an Any string) by `client` at `clock`, no delete set.

    With no origin, as a first write of the key, or a concurrent one: what a stock client
    claiming `client` would send for `record.set(key, value)`.
    """
    item = (
        bytes([0x28])  # info: ContentAny (8) | parentSub (0x20); no origins
        + var_uint(1)  # parent info: a root type named by ...
        + var_string(root)
        + var_string(key)
        + var_uint(1)  # one value
        + bytes([119])  # lib0 any: string
        + var_string(value)
    )
    return var_uint(1) + var_uint(1) + var_uint(client) + var_uint(clock) + item + var_uint(0)


def delete_only(client: int, clock: int, length: int = 1) -> bytes:
    """An update with no structs that deletes `length` clocks of `client` from `clock`."""
    return (
        var_uint(0)
        + var_uint(1)
        + var_uint(client)
        + var_uint(1)
        + var_uint(clock)
        + var_uint(length)
    )


def state_vector(clocks: dict[int, int]) -> bytes:
    return var_uint(len(clocks)) + b"".join(
        var_uint(client) + var_uint(clock) for client, clock in clocks.items()
    )

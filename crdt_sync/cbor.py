"""Strict CBOR reading for bytes from outside: /ws frames, request bodies, archives, answers.

Pure: no I/O of its own. cbor2 would otherwise turn tags into dates, bignums, decimals, regexes
or shared references; here every tag is refused, depth is bounded and keys are unique, so a
decoded value is only maps, lists, text, bytes, numbers, booleans and null.
"""

from __future__ import annotations

import io
from typing import IO

import cbor2


def strict_decoder(stream: IO[bytes], *, max_depth: int) -> cbor2.CBORDecoder:
    """A decoder over `stream`; its `decode()` raises cbor2.CBORDecodeError for anything else."""
    return cbor2.CBORDecoder(
        stream,
        tag_hook=_refuse_tag,
        semantic_decoders=_REFUSED_SEMANTIC_TAGS,
        max_depth=max_depth,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )


def load_one(data: bytes, *, max_depth: int) -> tuple[object, int]:
    """The first CBOR item of `data`, and how many bytes follow it.

    Raises:
        cbor2.CBORDecodeError: not valid CBOR, or a tag, a duplicate key, nesting too deep.
    """
    stream = io.BytesIO(data)
    value = strict_decoder(stream, max_depth=max_depth).decode()
    return value, len(data) - stream.tell()


def _refuse_tag(value: object, immutable: bool) -> object:
    # cbor2 reports it as CBORDecodeError("error decoding semantic tag N").
    raise ValueError("CBOR tags are not accepted")


# cbor2's built-in semantic tags (dates, bignums, decimals, regexes, MIME, sets, shared refs...);
# any other tag goes to tag_hook.
_REFUSED_SEMANTIC_TAGS = {
    tag: _refuse_tag for tag in [*range(300), 1363, 1364, 25441, 43000, 43001, 55799]
}

"""REST cursors: sync timestamps and page tokens, and the checks that they are ours (server layer).

Rule: a sync `timestamp` is the log position *after* what the answer covers, i.e. the seq of the
next update to come (`cursor + 1`). WatermelonDB refuses a timestamp that is not a number > 0,
and the log cursor of an empty store is 0; `since=T` then means "every change with seq >= T".
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..errors import BadRequest, SchemaViolation
from ..ids import DocId, Seq, split_doc_id


def timestamp_of(cursor: Seq) -> int:
    """The sync timestamp of a log cursor: everything up to `cursor` is covered."""
    return int(cursor) + 1


def parse_since(
    raw: str | None, current: Seq, *, start_over: str = "pull /api/sync/initial to start over"
) -> Seq:
    """The log cursor a `since` timestamp stands for; BadRequest unless this server issued it.

    A timestamp this server issued is a whole number from 1 to its current timestamp. Anything
    else (a date, a float, one from another server's future) would silently skip or resend
    changes, so it is refused rather than treated as a full resync.
    """
    if raw is None or raw == "" or raw == "null":
        raise BadRequest(
            "since is required: the timestamp of your last pull "
            "(for a first sync use /api/sync/initial)"
        )
    text = raw.strip()
    if text.endswith(".0"):  # JavaScript may print a whole number as 12.0
        text = text[:-2]
    if not text.isdigit():
        raise BadRequest(
            f"since must be a timestamp this server issued (a whole number), got {raw!r}"
        )
    value = int(text)
    if not 1 <= value <= timestamp_of(current):
        raise BadRequest(
            f"since={value} is not a timestamp this server issued (its timestamps run from 1 to "
            f"{timestamp_of(current)}); {start_over}"
        )
    return Seq(value - 1)


def encode_token(payload: Any) -> str:
    """An opaque page token: URL-safe base64 of compact JSON."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_token(token: str, what: str) -> Any:
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return json.loads(data)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not a page token this server issued") from None


def initial_page_token(cursor: Seq, after: DocId) -> str:
    return encode_token([int(cursor), after])


def parse_initial_page(token: str, current: Seq) -> tuple[Seq, DocId]:
    """(the stable cursor of the first page, the last document served); BadRequest if foreign."""
    payload = decode_token(token, "page")
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or type(payload[0]) is not int
        or not 0 <= payload[0] <= current
        or not isinstance(payload[1], str)
    ):
        raise BadRequest("page is not a page token this server issued")
    try:
        split_doc_id(payload[1])
    except SchemaViolation:
        raise BadRequest("page is not a page token this server issued") from None
    return Seq(payload[0]), DocId(payload[1])

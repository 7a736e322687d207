"""Request bodies: read with a size cap, then parse JSON or CBOR strictly (server layer).

Python's json module accepts NaN and Infinity, which are not JSON; cbor2 turns tags into
dates, sets and regexes. Both are refused here, so the routes only ever see plain values.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import cbor2
from fastapi import Request

from ..cbor import load_one
from ..errors import BadRequest, LimitExceeded


async def read_body(request: Request) -> bytes:
    """The whole body, or LimitExceeded (413) as soon as it passes the app's `max_body_bytes`."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise LimitExceeded(f"request body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LimitExceeded(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request, default: str) -> str:
    """The Content-Type without its parameters, lowercased; `default` when none is given."""
    return (request.headers.get("content-type") or default).split(";")[0].strip().lower()


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; BadRequest (400) for anything else."""
    return parse_json_object(await read_body(request))


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadRequest("the request body is empty; expected a JSON object")
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"expected a JSON object, got {_json_kind(value)}")
    return value


def parse_cbor_map(body: bytes) -> dict[str, Any]:
    """A CBOR map with text keys, no tags, nothing after it; BadRequest otherwise."""
    try:
        value, trailing = load_one(body, max_depth=8)
    except cbor2.CBORDecodeError as exc:
        raise BadRequest(f"malformed CBOR: {exc}") from None
    if trailing:
        raise BadRequest(f"malformed CBOR: {trailing} bytes after the map")
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise BadRequest("expected a CBOR map with text keys")
    return value


def decode_base64(value: object, what: str) -> bytes:
    """Standard or URL-safe base64, padded or not; BadRequest naming `what` otherwise."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a base64 string, got {_json_kind(value)}")
    text = value.strip().replace(" ", "+")  # a '+' in a query string arrives as a space
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _json_kind(value: object) -> str:
    kinds = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
        bytes: "bytes",
    }
    return kinds.get(type(value), type(value).__name__)

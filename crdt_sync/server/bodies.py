"""Request bodies: read with a size cap, then parse JSON or CBOR strictly (server layer).

Python's json module accepts NaN and Infinity, which are not JSON; cbor2 turns tags into
dates, sets and regexes. Both are refused here, so the routes only ever see plain values.
And every value is held to what the rest of the server and every peer can take (a 400
naming the limit, never a 500 further in): nesting at most `MAX_JSON_DEPTH` deep (json
recursed into a RecursionError at ~1,000), integers JavaScript holds exactly, numbers a
double holds (1e400 overflowed converting), strings without lone surrogates ("\ud800"
made pycrdt panic).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import math
import re
from typing import Any

import cbor2
from fastapi import Request

from ..cbor import load_one
from ..errors import BadRequest, LimitExceeded

MAX_JSON_DEPTH = 32  # a push is 5 deep (changes, collection, created, row, value)
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER: exact in every peer
_MAGNITUDE = "integers must be within +-(2**53 - 1), what JavaScript holds exactly"
# Only a \uD800-\uDFFF escape puts a surrogate in a str decoded from strict UTF-8.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


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
        # UTF-8 only (RFC 8259): json.loads would take UTF-16 and encoded surrogates too.
        text = body.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_int=_safe_int, parse_float=_finite_float
        )
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except _OutOfRange as exc:
        raise BadRequest(f"JSON number {exc}") from None
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise BadRequest(f"expected a JSON object, got {_json_kind(value)}")
    check_values(value, may_hold_surrogates=_ESCAPED_SURROGATE.search(text) is not None)
    return value


def check_values(value: object, *, may_hold_surrogates: bool = True) -> None:
    """BadRequest unless `value` nests at most MAX_JSON_DEPTH deep, every number is one
    JavaScript and a double hold, and no string (key or value) holds a lone surrogate."""
    stack: list[tuple[object, int, str]] = [(value, 0, "$")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels (at {where})")
            if isinstance(item, dict):
                for key, child in item.items():
                    if may_hold_surrogates and isinstance(key, str):
                        _check_unicode(key, f"{where}: a key")
                    stack.append((child, depth + 1, f"{where}.{key}"))
            else:
                stack.extend((child, depth + 1, f"{where}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, str):
            if may_hold_surrogates:
                _check_unicode(item, where)
        elif isinstance(item, bool):
            pass
        elif isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                raise BadRequest(f"{where}: {_MAGNITUDE}")
        elif isinstance(item, float) and not math.isfinite(item):
            raise BadRequest(f"{where}: numbers must be finite")


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
    check_values(value, may_hold_surrogates=False)  # CBOR text is strict UTF-8 (cbor2 checks)
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


class _OutOfRange(ValueError):
    """A JSON number the server and its peers cannot hold."""


def _safe_int(text: str) -> int:
    # Checked on the text first: int() of 5,000 digits refuses with a message about str().
    if len(text.lstrip("-")) > 16 or abs(number := int(text)) > MAX_SAFE_INTEGER:
        raise _OutOfRange(f"{_start(text)}: {_MAGNITUDE}")
    return number


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _OutOfRange(f"{_start(text)} is beyond a double's range")
    return number


def _start(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:24]}... ({len(text)} characters)"


def _check_unicode(text: str, where: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest(
                f"{where}: a lone surrogate (\\u{ord(text[exc.start]):04x}) is not Unicode text"
            ) from None


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

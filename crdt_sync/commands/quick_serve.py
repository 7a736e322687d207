"""`crdt-sync serve` with plain options, parsed without typer's machinery (entry layer).

This typer (0.29) coerces every option's value through a pydantic `TypeAdapter`: for
`serve`'s seventeen options that is pydantic imported (~65 ms) and the adapters built
(~17 ms) before the server starts, plus the whole command tree built (~17 ms), a fifth of the
time from a restart to the first record synced (benchmarks/README.md, live_bench (l)).

So `main` (the console entry point, and `python -m crdt_sync`) reads `serve`'s argument list
here first, before the CLI (cli.py, typer) is imported, and only when every word in it is a
plain option this table knows with a plain value (digits for numbers, in range; no `--help`,
no repeated option, no global option before `serve`, none of the options' environment
variables set): anything else goes to typer as before, which answers it (usage errors, help,
the environment). The defaults are those of `serving.serve`, which then runs without typer imported at all
(an error imports it to print its line, as every command's does); `tests/test_cli_edges.py`
checks that this table names every option typer gives `serve`, that both parse alike, and
that `cli.serve` and `serving.serve` have the same defaults.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

# The environment variables `serve`'s options read (typer's envvar=...): set, typer parses.
ENVIRONMENT = (
    "CRDT_SYNC_DB",
    "CRDT_SYNC_STORE",
    "CRDT_SYNC_BUS",
    "CRDT_SYNC_LOCK_TIMEOUT",
    "CRDT_SYNC_IDLE_TIMEOUT",
)
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def _text(value: str) -> str | None:
    return value if value and not value.startswith("-") else None


def _path(value: str) -> Path | None:
    return Path(value) if _text(value) is not None else None


def _integer(low: int, high: int | None = None) -> Callable[[str], int | None]:
    def parse(value: str) -> int | None:
        if not _DIGITS.fullmatch(value):
            return None
        number = int(value)
        return number if number >= low and (high is None or number <= high) else None

    return parse


def _seconds(low: float) -> Callable[[str], float | None]:
    def parse(value: str) -> float | None:
        if not _DECIMAL.fullmatch(value):
            return None
        number = float(value)
        return number if number >= low else None

    return parse


# option -> (parameter of `serve`, how its value is read); the ranges are typer's min/max.
VALUES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--db": ("db", _path),
    "--host": ("host", _text),
    "--port": ("port", _integer(0, 65535)),
    "--schema": ("schema", _path),
    "--log-level": ("log_level", _text),
    "--compact-rows": ("compact_rows", _integer(2)),
    "--compact-bytes": ("compact_bytes", _integer(1)),
    "--store": ("store", _text),
    "--bus": ("bus", _text),
    "--lock-timeout": ("lock_timeout", _seconds(0.001)),
    "--idle-timeout": ("idle_timeout", _seconds(0.001)),
}
REPEATABLE = {"--cors-origin": "cors_origin"}  # list[str] options, None when not given
FLAGS: dict[str, tuple[str, bool]] = {
    "--demo": ("demo", True),
    "--compact": ("compact", True),
    "--no-compact": ("compact", False),
    "--migrate-schema": ("migrate_schema", True),
}


def parse_serve(args: Sequence[str], serve: Callable[..., object]) -> dict[str, Any] | None:
    """`serve`'s keyword arguments for `args` (the words after the program's name), or None:
    typer should parse these."""
    if not args or args[0] != "serve" or any(os.environ.get(name) for name in ENVIRONMENT):
        return None
    given: dict[str, Any] = {}
    words = iter(args[1:])
    for word in words:
        option, has_value, value = word.partition("=")
        if option in FLAGS and not has_value:
            name, flag = FLAGS[option]
            if name in given:
                return None
            given[name] = flag
            continue
        if option in VALUES or option in REPEATABLE:
            if not has_value:
                value = next(words, "")
            if option in REPEATABLE:
                origin = _text(value)
                if origin is None:
                    return None
                given.setdefault(REPEATABLE[option], []).append(origin)
                continue
            name, read = VALUES[option]
            parsed = read(value)
            if parsed is None or name in given:
                return None
            given[name] = parsed
            continue
        return None  # --help, an unknown option, an argument: typer's to answer
    defaults = {
        name: parameter.default for name, parameter in inspect.signature(serve).parameters.items()
    }
    repeated = {name: () for name in REPEATABLE.values() if name not in given}  # as typer
    return {**defaults, **repeated, **given}


def main() -> int:
    """The console entry point: `serve` with plain options runs here, anything else in the
    CLI (cli.py, typer), as before."""
    from .serving import serve

    quick = parse_serve(sys.argv[1:], serve)
    if quick is None:
        from ..cli import app
        from .entry import run_cli

        return run_cli(app)
    try:
        serve(**quick)
    except BaseException as exc:  # noqa: BLE001 - what typer's main makes of it, below
        failed = exc
    else:
        return 0
    from .entry import run_quick  # typer: its exits, interrupts and one-line errors

    return run_quick(functools.partial(_raise, failed))


def _raise(exc: BaseException) -> NoReturn:
    raise exc

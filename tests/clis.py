"""Running `crdt-sync` as a user would: Typer's runner in-process, or a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map
from typer.testing import CliRunner

from crdt_sync.cli import app

from .peers import MuxPeer


@dataclass(frozen=True)
class Ran:
    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""

    def json(self) -> Any:
        return json.loads(self.stdout)

    def assert_one_line_error(self, exit_code: int, pattern: str = "") -> None:
        assert self.exit_code == exit_code, (self.exit_code, self.stdout, self.stderr)
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("error: ") or lines[0].startswith('{"error"'), lines[0]
        assert "Traceback" not in self.stderr
        assert pattern in lines[0], (pattern, lines[0])
        assert self.stdout == ""


def invoke(*args: str) -> Ran:
    """In-process, through Typer's CliRunner (call from a thread when an event loop runs)."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr, result.stdout_bytes)


async def invoke_async(*args: str) -> Ran:
    return await asyncio.to_thread(invoke, *args)


def run(*args: str) -> Ran:
    """`python -m crdt_sync ARGS` as a real subprocess (blocking: not with an in-loop server)."""
    done = subprocess.run(
        [sys.executable, "-m", "crdt_sync", *args], capture_output=True, timeout=120
    )
    return Ran(
        done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(), done.stdout
    )


async def run_async(*args: str) -> Ran:
    """A real subprocess that does not block the event loop (an in-loop server keeps serving)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crdt_sync",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(errors="replace"), err.decode(), out)


async def delete_over_ws(peer: MuxPeer, doc_id: str) -> int:
    doc: Doc = peer.document(doc_id)
    before = doc.get_state()
    doc.get("meta", type=Map)["deleted"] = True
    return await peer.wait_ack(await peer.write(doc_id, doc.get_update(before)))


@contextmanager
def serving(db: Path, *args: str) -> Iterator[int]:
    """`crdt-sync serve --port 0 ARGS` as a user runs it; yields the port it says it got."""
    log = db.with_name(db.name + ".serve.log")
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "crdt_sync", "serve", "--db", str(db), "--port", "0", *args],
            stdout=err,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"serving .* on http://127\.0\.0\.1:(\d+)", log.read_text())):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"serve said nothing in 30 s: {log.read_text()}"
            time.sleep(0.05)
        yield int(found.group(1))
    finally:
        process.terminate()
        process.wait(15)

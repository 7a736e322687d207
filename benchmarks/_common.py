"""What several benchmarks share: a free port, a server process started and awaited, a bulk fill.

Imported by the scripts beside it (`python benchmarks/x.py` puts this directory on sys.path).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    args: Sequence[str], port: int, log: Path, *, timeout: float = 30
) -> subprocess.Popen[bytes]:
    """Run `python ARGS` (a server on 127.0.0.1:`port`) and return once /health answers 200.

    Its stdout and stderr go to `log`. If it exits or does not answer within `timeout`
    seconds it is killed and RuntimeError says why, with the end of its log.
    """
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": path},
        )
    try:
        _wait_healthy(process, port, timeout)
    except RuntimeError as exc:
        _kill(process)
        tail = log.read_text(errors="replace")[-2000:]  # the log may go with a temporary dir
        raise RuntimeError(f"{exc}; the end of its log:\n{tail}") from None
    except BaseException:
        _kill(process)
        raise
    return process


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def _wait_healthy(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    import httpx  # here: live_bench imports this module under a peer python that may lack it

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer /health within {timeout:g} s")


def bulk_fill(path: Path, records: int, update: bytes, view_json: Callable[[int], str]) -> None:
    """Put contacts 0000000.. straight into a store's tables, far faster than appending.

    Contact i gets one log row (seq i + 1, `update` as its data) and a record row whose view
    is `view_json(i)`, called once per contact in order. The store's schema must exist: open
    a SQLiteStore on `path` once before.
    """
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")
        db.execute("BEGIN")
        for start in range(0, records, 50_000):
            ids = range(start, min(start + 50_000, records))
            db.executemany(
                "INSERT INTO updates (seq, doc_id, collection, data, origin, at, is_snapshot,"
                " prev_seq) VALUES (?, ?, 'contacts', ?, 'bulk', 0, 0, NULL)",
                ((i + 1, f"contacts/{i:07d}", update) for i in ids),
            )
            db.executemany(
                "INSERT INTO records (doc_id, collection, record_id, view, is_deleted, first_seq,"
                " last_seq, created_by, updated_at, size)"
                " VALUES (?, 'contacts', ?, ?, 0, ?, ?, 'bulk', 0, ?)",
                (
                    (f"contacts/{i:07d}", f"{i:07d}", view_json(i), i + 1, i + 1, len(update))
                    for i in ids
                ),
            )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()

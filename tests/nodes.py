"""Server nodes as real `crdt-sync serve` processes on one PostgreSQL store (and Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .conftest import free_socket


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    args: list[str] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str, token: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"ws://127.0.0.1:{self.port}{path}{sep}token={token}"

    def client(self, token: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.AsyncClient(base_url=self.http, headers=headers, timeout=10.0)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def signal(self, number: int) -> None:
        self.process.send_signal(number)


def spawn_node(
    store_url: str,
    log: Path,
    *,
    bus_url: str | None = None,
    port: int = 0,
    extra: Sequence[str] = (),
) -> Node:
    """`crdt-sync serve --store URL [--bus URL] [extra...]` as a subprocess; returns once it
    answers."""
    if not port:
        with free_socket() as sock:
            port = sock.getsockname()[1]
    args = ["serve", "--store", store_url, "--port", str(port), "--log-level", "warning"]
    if bus_url is not None:
        args += ["--bus", bus_url]
    args += extra
    with open(log, "ab") as out:  # stderr to a file: an unread pipe would block the server
        process = subprocess.Popen(
            [sys.executable, "-m", "crdt_sync", *args],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    node = Node(port, process, log, args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"node exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{node.http}/health", timeout=0.5).status_code == 200:
                return node
        except httpx.HTTPError:
            time.sleep(0.05)
    node.kill()
    raise AssertionError(f"node did not start within 60 s: {log.read_text()[-2000:]}")


def stop_all(nodes: list[Node]) -> Iterator[None]:
    """Kill every node still running (for fixtures' teardown)."""
    for node in nodes:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGCONT)  # a stopped process cannot die of TERM
            node.kill()
    yield
